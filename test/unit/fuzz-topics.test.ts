import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { isDeviceId } from '../../src/protocol/device-id.ts'
import { createTopics, topicMatches } from '../../src/protocol/topics.ts'

/*
 * The topic rules against any topic string (issue 10, "Fuzzing"): parseInbound names a device only when the
 * id passes the device-id rule and the topic is exactly `<base>/<id>/<kind>`, and topicMatches agrees with a
 * plain reading of MQTT 3.1.1 section 4.7.
 */

const SEED = 20_241_011
const topics = createTopics('pico')

const level = fc.oneof(
  fc.constantFrom(
    'pico',
    'bridge',
    'kitchen',
    'prompt',
    'get',
    'frame',
    'status',
    'info',
    'cancel',
    '',
    '$SYS',
  ),
  fc.string({ maxLength: 8 }),
  fc.stringMatching(/^[A-Za-z0-9_-]{1,70}$/),
)
const topic = fc.array(level, { minLength: 1, maxLength: 6 }).map((levels) => levels.join('/'))
const filter = fc
  .array(fc.oneof(level, fc.constant('+')), { minLength: 1, maxLength: 5 })
  .chain((levels) => fc.boolean().map((hash) => (hash ? [...levels, '#'] : levels).join('/')))

/** Section 4.7 read literally, as the reference for topicMatches. */
function reference(f: string, t: string): boolean {
  if (t.startsWith('$') && /^[+#]/.test(f)) return false
  const fl = f.split('/')
  const tl = t.split('/')
  if (fl.at(-1) === '#') {
    const head = fl.slice(0, -1)
    return tl.length >= head.length && head.every((x, i) => x === '+' || x === tl[i])
  }
  return fl.length === tl.length && fl.every((x, i) => x === '+' || x === tl[i])
}

describe('the topic rules, fuzzed', () => {
  it('parseInbound names a device only for <base>/<valid id>/<inbound kind>', () => {
    fc.assert(
      fc.property(topic, (t) => {
        const parsed = topics.parseInbound(t)
        if (parsed === null) return
        expect(t).toBe(`pico/${parsed.rawId}/${parsed.kind}`)
        expect(['prompt', 'get', 'cancel', 'info']).toContain(parsed.kind)
        expect(parsed.deviceId === null ? !isDeviceId(parsed.rawId) : parsed.deviceId === parsed.rawId).toBe(
          true,
        )
        if (parsed.deviceId !== null) expect(parsed.deviceId).toMatch(/^[A-Za-z0-9_-]{1,64}$/)
      }),
      { seed: SEED, numRuns: 5000 },
    )
  })

  it('the device topics it builds parse back to the same device', () => {
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/),
        fc.constantFrom('prompt', 'get', 'cancel', 'info'),
        (id, kind) => {
          const parsed = topics.parseInbound(topics.device(id, kind))
          expect(parsed).toEqual({ kind, rawId: id, deviceId: isDeviceId(id) ? id : null })
        },
      ),
      { seed: SEED, numRuns: 2000 },
    )
  })

  it('topicMatches agrees with MQTT 3.1.1 section 4.7', () => {
    fc.assert(
      fc.property(filter, topic, (f, t) => {
        expect(topicMatches(f, t)).toBe(reference(f, t))
      }),
      { seed: SEED, numRuns: 5000 },
    )
  })
})
