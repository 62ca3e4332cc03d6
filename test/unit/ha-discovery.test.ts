import { describe, expect, it } from 'vitest'
import { configSchema } from '../../src/config/schema.ts'
import { maskSecrets } from '../../src/config/secrets.ts'
import { bridgeDiscovery, createHaTopics, displayDiscovery } from '../../src/ha/discovery.ts'
import { brokerLabel } from '../../src/ha/link.ts'
import { haStatus, promptState } from '../../src/ha/states.ts'
import { discoveryProblems } from '../support/ha-discovery-rules.ts'

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

describe('Home Assistant discovery against its rules (test/support/ha-discovery-rules.ts)', () => {
  const topics = createHaTopics('pico', 'homeassistant')
  const origin = { name: 'pico-a1111-bridge', sw: '1.0.0' }
  const display = () =>
    displayDiscovery(topics, origin, {
      ...{ deviceId: 'kitchen', panel: '240x240 rgb565-be', fw: '1.4.0' },
      telemetry: new Set(['rssi', 'heap_free', 'battery_v', 'fw'] as const),
    })

  it('finds nothing wrong with the display and bridge messages, unique ids across both', () => {
    const ids = new Set<string>()
    expect(discoveryProblems(display(), ids)).toEqual([])
    expect(discoveryProblems(bridgeDiscovery(topics, origin), ids)).toEqual([])
    expect(ids.size).toBe(10 + 3)
  })

  it('catches what Home Assistant would refuse, so a passing check means something', () => {
    const body = display()
    const cmps = body.cmps as Record<string, Record<string, unknown>>
    cmps.prompt!.max = 300
    cmps.picture!.url_topic = 'pico/kitchen/ha/url'
    delete cmps.status!.state_topic
    cmps.again!.platform = 'knob'
    body.o = { sw: '1.0.0', url: 'not a url' }
    body.availability_mode = 'some'
    expect(discoveryProblems(body)).toEqual([
      'origin has no name',
      'origin support_url is not a URL',
      'device: availability_mode some',
      'cmps.prompt: max 300 is over 255',
      'cmps.picture: an image needs exactly one of image_topic and url_topic',
      'cmps.picture: content_type cannot go with url_topic',
      'cmps.status: a sensor needs a state_topic',
      'cmps.again: platform knob',
    ])
    expect(discoveryProblems({ ...display(), dev: { name: 'x' } })).toEqual([
      'device has neither identifiers nor connections',
    ])
    const twice = new Set<string>()
    discoveryProblems(display(), twice)
    expect(discoveryProblems(display(), twice)).toHaveLength(10)
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
