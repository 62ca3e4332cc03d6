import { describe, expect, it } from 'vitest'
import { defaultUrl } from '../../src/cli/device.ts'

describe('the simulated device finds the bridge', () => {
  it('at MQTT_URL when the bridge uses an external broker', () => {
    expect(defaultUrl({ MQTT_URL: 'mqtt://broker.lan:1883', MQTT_PORT: '1884' })).toBe(
      'mqtt://broker.lan:1883',
    )
  })

  it('at MQTT_PORT on this machine, else 1883', () => {
    expect(defaultUrl({ MQTT_PORT: '18830' })).toBe('mqtt://127.0.0.1:18830')
    expect(defaultUrl({})).toBe('mqtt://127.0.0.1:1883')
    // 0 means "any free port" to the bridge, which a client cannot guess; nonsense falls back too.
    expect(defaultUrl({ MQTT_PORT: '0' })).toBe('mqtt://127.0.0.1:1883')
    expect(defaultUrl({ MQTT_PORT: 'abc' })).toBe('mqtt://127.0.0.1:1883')
  })
})
