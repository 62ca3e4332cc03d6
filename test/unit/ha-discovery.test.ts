import { describe, expect, it } from 'vitest'
import { configSchema } from '../../src/config/schema.ts'
import { maskSecrets } from '../../src/config/secrets.ts'
import { createHaTopics, displayDiscovery } from '../../src/ha/discovery.ts'
import { brokerLabel } from '../../src/ha/link.ts'
import { haStatus, promptState } from '../../src/ha/states.ts'

describe('Home Assistant discovery (pure parts)', () => {
  const topics = createHaTopics('home/pico', 'homeassistant')

  it('reads only its own command topics', () => {
    expect(topics.parseCommand('home/pico/kitchen/ha/set/prompt')).toEqual({
      deviceId: 'kitchen',
      command: 'prompt',
    })
    expect(topics.parseCommand('home/pico/kitchen/ha/set/reboot')).toBeNull()
    expect(topics.parseCommand('home/pico/kitchen/prompt')).toBeNull()
    expect(topics.parseCommand('pico/kitchen/ha/set/prompt')).toBeNull()
  })

  it('makes node ids of the allowed characters only, the bridge apart from every display', () => {
    expect(topics.nodeId('kitchen')).toBe('home_pico_kitchen')
    expect(topics.bridgeNodeId).toBe('home_pico_bridge')
    expect(topics.discovery(topics.nodeId('kitchen'))).toBe('homeassistant/device/home_pico_kitchen/config')
  })

  it('adds a diagnostic sensor only for telemetry the display has reported', () => {
    const origin = { name: 'pico-a1111-bridge', sw: '1.0.0' }
    const base = { deviceId: 'kitchen', panel: undefined, fw: undefined }
    const none = displayDiscovery(topics, origin, { ...base, telemetry: new Set() }).cmps as object
    const some = displayDiscovery(topics, origin, { ...base, telemetry: new Set(['rssi'] as const) })
      .cmps as object
    expect(Object.keys(none)).not.toContain('rssi')
    expect(some).toMatchObject({ rssi: { platform: 'sensor', entity_category: 'diagnostic' } })
  })

  it('turns a status message into the Status and Progress sensors', () => {
    expect(haStatus({ state: 'generating', progress: 0.456, job: 'j1' })).toEqual({
      state: 'generating',
      progress: 46,
      job: 'j1',
    })
    expect(haStatus({ state: 'error', error: { code: 'E_BAD_PROMPT', message: 'empty' } })).toMatchObject({
      state: 'error',
      progress: 0,
      error_code: 'E_BAD_PROMPT',
      error: 'empty',
    })
    expect(haStatus({ state: 'done', frame_id: 3, seed: 7 })).toMatchObject({ progress: 100, seed: 7 })
  })

  it('keeps the text entity within Home Assistant’s 255 characters', () => {
    expect(promptState('x'.repeat(300))).toHaveLength(255)
    expect(promptState('short')).toBe('short')
  })
})

describe('Home Assistant settings', () => {
  it('takes an mqtt:// URL with a login and never shows its password', () => {
    const config = configSchema.parse({ HA_MQTT_URL: 'mqtt://bridge:s3cret@ha.local:1883' })
    expect(config.HA_DISCOVERY_PREFIX).toBe('homeassistant')
    expect(JSON.stringify(maskSecrets(config))).not.toContain('s3cret')
    expect(brokerLabel(config.HA_MQTT_URL!)).toBe('mqtt://ha.local:1883')
  })

  it('refuses other schemes, and HA_DISCOVERY without a broker for it', () => {
    expect(configSchema.safeParse({ HA_MQTT_URL: 'http://ha.local:8123' }).success).toBe(false)
    const r = configSchema.safeParse({ HA_DISCOVERY: 'true' })
    expect(r.success).toBe(false)
    expect(r.error?.issues[0]?.path).toEqual(['HA_DISCOVERY'])
  })
})
