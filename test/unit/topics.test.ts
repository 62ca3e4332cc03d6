import { describe, expect, it } from 'vitest'
import { createTopics, DEVICE_ID_PATTERN, topicMatches } from '../../src/protocol/topics.ts'

describe('createTopics', () => {
  const topics = createTopics('pico')

  it('builds the device and bridge topics under the base', () => {
    expect(topics.base).toBe('pico')
    expect(topics.bridgeState).toBe('pico/bridge/state')
    expect(topics.device('kitchen', 'prompt')).toBe('pico/kitchen/prompt')
    expect(topics.device('kitchen', 'frame')).toBe('pico/kitchen/frame')
    expect(topics.device('kitchen', 'status')).toBe('pico/kitchen/status')
    expect(topics.device('kitchen', 'get')).toBe('pico/kitchen/get')
    expect(topics.device('kitchen', 'cancel')).toBe('pico/kitchen/cancel')
    expect(topics.inboundFilters).toEqual(['pico/+/prompt', 'pico/+/get', 'pico/+/cancel', 'pico/+/info'])
  })

  it('uses a multi-level base as it is', () => {
    const home = createTopics('home/pico')
    expect(home.bridgeState).toBe('home/pico/bridge/state')
    expect(home.device('d1', 'frame')).toBe('home/pico/d1/frame')
    expect(home.inboundFilters).toEqual([
      'home/pico/+/prompt',
      'home/pico/+/get',
      'home/pico/+/cancel',
      'home/pico/+/info',
    ])
  })

  it('has inbound filters that match exactly the topics parseInbound accepts', () => {
    for (const topic of ['pico/d1/prompt', 'pico/d1/get', 'pico/d1/cancel']) {
      expect(topics.inboundFilters.some((f) => topicMatches(f, topic))).toBe(true)
      expect(topics.parseInbound(topic)).not.toBeNull()
    }
    for (const topic of ['pico/d1/frame', 'pico/d1/status', 'pico/bridge/state']) {
      expect(topics.inboundFilters.some((f) => topicMatches(f, topic))).toBe(false)
    }
  })
})

describe('parseInbound', () => {
  const topics = createTopics('pico')

  it('reads the kind and the device id of prompt, get and cancel', () => {
    expect(topics.parseInbound('pico/kitchen/prompt')).toEqual({
      kind: 'prompt',
      deviceId: 'kitchen',
      rawId: 'kitchen',
    })
    expect(topics.parseInbound('pico/Pico-2_W/get')).toEqual({
      kind: 'get',
      deviceId: 'Pico-2_W',
      rawId: 'Pico-2_W',
    })
    expect(topics.parseInbound('pico/0/cancel')).toEqual({ kind: 'cancel', deviceId: '0', rawId: '0' })
  })

  it('accepts a 64-character id and refuses a 65-character one, keeping the raw id', () => {
    const id64 = 'a'.repeat(64)
    const id65 = 'a'.repeat(65)
    expect(topics.parseInbound(`pico/${id64}/prompt`)?.deviceId).toBe(id64)
    expect(topics.parseInbound(`pico/${id65}/prompt`)).toEqual({
      kind: 'prompt',
      deviceId: null,
      rawId: id65,
    })
  })

  it('gives deviceId null for ids with characters outside [A-Za-z0-9_-]', () => {
    for (const rawId of ['dev.1', 'dev 1', 'dév', 'dev:1', '+', '']) {
      expect(topics.parseInbound(`pico/${rawId}/prompt`)).toEqual({ kind: 'prompt', deviceId: null, rawId })
    }
  })

  it("refuses the reserved id 'bridge' but not ids that merely contain it", () => {
    expect(topics.parseInbound('pico/bridge/prompt')).toEqual({
      kind: 'prompt',
      deviceId: null,
      rawId: 'bridge',
    })
    expect(topics.parseInbound('pico/bridge2/prompt')?.deviceId).toBe('bridge2')
    expect(topics.parseInbound('pico/Bridge/get')?.deviceId).toBe('Bridge')
  })

  it('returns null for extra or missing levels', () => {
    expect(topics.parseInbound('pico/a/b/prompt')).toBeNull()
    expect(topics.parseInbound('pico/kitchen/prompt/')).toBeNull()
    expect(topics.parseInbound('pico/prompt')).toBeNull()
    expect(topics.parseInbound('pico')).toBeNull()
    expect(topics.parseInbound('pico/')).toBeNull()
  })

  it('returns null for the kinds the bridge itself publishes and for unknown kinds', () => {
    for (const kind of ['frame', 'status', 'state', 'Prompt', 'prompts', '']) {
      expect(topics.parseInbound(`pico/kitchen/${kind}`)).toBeNull()
    }
  })

  it('returns null for topics under another base', () => {
    expect(topics.parseInbound('home/pico/kitchen/prompt')).toBeNull()
    expect(topics.parseInbound('pico2/kitchen/prompt')).toBeNull()
    expect(topics.parseInbound('Pico/kitchen/prompt')).toBeNull()
    expect(topics.parseInbound('/pico/kitchen/prompt')).toBeNull()
  })

  it('reads topics under a multi-level base and not under its last level alone', () => {
    const home = createTopics('home/pico')
    expect(home.parseInbound('home/pico/kitchen/prompt')).toEqual({
      kind: 'prompt',
      deviceId: 'kitchen',
      rawId: 'kitchen',
    })
    expect(home.parseInbound('pico/kitchen/prompt')).toBeNull()
    expect(home.parseInbound('home/pico/a/kitchen/prompt')).toBeNull()
  })

  it('agrees with DEVICE_ID_PATTERN', () => {
    expect(DEVICE_ID_PATTERN.test('A-z_09')).toBe(true)
    expect(DEVICE_ID_PATTERN.test('a/b')).toBe(false)
    expect(DEVICE_ID_PATTERN.test('a\n')).toBe(false)
  })
})

describe('topicMatches (MQTT 3.1.1 section 4.7)', () => {
  it('matches an exact filter only against the same levels', () => {
    expect(topicMatches('pico/a/frame', 'pico/a/frame')).toBe(true)
    expect(topicMatches('pico/a/frame', 'pico/a/frame/x')).toBe(false)
    expect(topicMatches('pico/a/frame', 'pico/a')).toBe(false)
    expect(topicMatches('pico/a/frame', 'pico/A/frame')).toBe(false)
    expect(topicMatches('pico/a/frame', 'pico/a/frame/')).toBe(false)
  })

  it("lets '+' stand for exactly one level, an empty one included", () => {
    expect(topicMatches('pico/+/prompt', 'pico/kitchen/prompt')).toBe(true)
    expect(topicMatches('pico/+/prompt', 'pico//prompt')).toBe(true)
    expect(topicMatches('pico/+/prompt', 'pico/a/b/prompt')).toBe(false)
    expect(topicMatches('pico/+/prompt', 'pico/prompt')).toBe(false)
    // 4.7.1.3: "sport/tennis/+" does not match "sport/tennis"; "+" does not match "/finance", "+/+" does.
    expect(topicMatches('sport/tennis/+', 'sport/tennis')).toBe(false)
    expect(topicMatches('+', '/finance')).toBe(false)
    expect(topicMatches('+/+', '/finance')).toBe(true)
    expect(topicMatches('/+', '/finance')).toBe(true)
  })

  it("lets '#' stand for any number of levels, the parent level included", () => {
    expect(topicMatches('pico/#', 'pico/a/frame')).toBe(true)
    expect(topicMatches('pico/#', 'pico/a')).toBe(true)
    // 4.7.1.2: "sport/#" also matches the singular "sport".
    expect(topicMatches('pico/#', 'pico')).toBe(true)
    expect(topicMatches('pico/#', 'picox/a')).toBe(false)
    expect(topicMatches('pico/#', 'home/pico/a')).toBe(false)
    expect(topicMatches('#', 'pico/a/frame')).toBe(true)
    expect(topicMatches('pico/+/#', 'pico/a')).toBe(true)
    expect(topicMatches('pico/+/#', 'pico')).toBe(false)
  })

  it("does not treat a '#' that is not the last level as a wildcard match", () => {
    expect(topicMatches('pico/#/frame', 'pico/a/frame')).toBe(false)
  })

  it("keeps '$' topics away from filters that start with a wildcard (4.7.2)", () => {
    expect(topicMatches('#', '$SYS/broker/clients')).toBe(false)
    expect(topicMatches('+/broker/clients', '$SYS/broker/clients')).toBe(false)
    expect(topicMatches('+/#', '$SYS/broker')).toBe(false)
    expect(topicMatches('$SYS/#', '$SYS/broker/clients')).toBe(true)
    expect(topicMatches('$SYS/+/clients', '$SYS/broker/clients')).toBe(true)
    expect(topicMatches('$SYS/broker/clients', '$SYS/broker/clients')).toBe(true)
  })
})
