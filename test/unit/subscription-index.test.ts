import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createPresence } from '../../src/broker/presence.ts'
import { createSubscriptionIndex } from '../../src/broker/subscription-index.ts'

/*
 * The broker's subscription index (issue 14) against the plainest model there is: every client's filters in
 * a list, and a topic matched by trying each filter with MQTT 3.1.1 section 4.7 read literally. Whatever
 * mix of subscribes, unsubscribes and disconnects comes, a topic gets exactly the (client, filter) pairs
 * the brute force gives, each once; and the presence count built on the same events names the devices a
 * brute-force walk of the model names.
 */

const SEED = 20_261_203

/** Few level names, so that random filters and topics match often; `$` ones for section 4.7.2. */
const level = fc.constantFrom('pico', 'kitchen', 'hall', 'frame', 'status', 'bridge', '', '$SYS', '$x')
const topicArb = fc
  .array(level, { minLength: 1, maxLength: 4 })
  .map((levels) => levels.join('/'))
  .filter((t) => t !== '')
const filterArb = fc.oneof(
  fc.constantFrom('#', '+', '+/#', '$SYS/#', 'pico/#', 'pico/+/frame', 'pico/kitchen/frame', '+/+'),
  fc
    .array(fc.oneof({ weight: 3, arbitrary: level }, { weight: 1, arbitrary: fc.constant('+') }), {
      minLength: 1,
      maxLength: 4,
    })
    .chain((levels) => fc.boolean().map((hash) => (hash ? [...levels, '#'] : levels).join('/')))
    .filter((f) => f !== ''),
)
const clientArb = fc.integer({ min: 0, max: 5 })
const opArb = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ op: fc.constant('add' as const), client: clientArb, filter: filterArb }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant('remove' as const), client: clientArb, filter: filterArb }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('drop' as const), client: clientArb }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('match' as const), topic: topicArb }) },
)

/** MQTT 3.1.1 section 4.7, one level at a time. */
function matches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false
  const f = filter.split('/')
  const t = topic.split('/')
  const at = (i: number): boolean => {
    if (i === f.length) return i === t.length
    if (f[i] === '#') return true
    if (i === t.length) return false
    return (f[i] === '+' || f[i] === t[i]) && at(i + 1)
  }
  return at(0)
}

interface Client {
  n: number
}

describe('the subscription index', () => {
  it('gives a topic exactly the (client, filter) pairs a brute-force matcher gives', () => {
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 1, maxLength: 80 }),
        fc.array(topicArb, { maxLength: 8 }),
        (ops, extra) => {
          const clients: Client[] = Array.from({ length: 6 }, (_, n) => ({ n }))
          const index = createSubscriptionIndex<Client>()
          const model = new Map<Client, string[]>()
          const presence = createPresence('pico')
          const online = new Set<string>()
          presence.listen((id, up) => {
            expect(online.has(id)).toBe(!up)
            if (up) online.add(id)
            else online.delete(id)
          })

          const check = (topic: string) => {
            const got: string[] = []
            index.match(topic, (c, f) => got.push(`${c.n} ${f}`))
            const want: string[] = []
            for (const [c, filters] of model)
              for (const f of filters) if (matches(f, topic)) want.push(`${c.n} ${f}`)
            expect(got.sort(), topic).toEqual(want.sort())
          }

          for (const op of ops) {
            if (op.op === 'match') {
              check(op.topic)
              continue
            }
            const client = clients[op.client]!
            const held = model.get(client) ?? []
            if (op.op === 'add') {
              const fresh = !held.includes(op.filter)
              expect(index.add(client, op.filter)).toBe(fresh)
              if (fresh) {
                model.set(client, [...held, op.filter])
                presence.held(op.filter)
              }
            } else if (op.op === 'remove') {
              const had = held.includes(op.filter)
              expect(index.remove(client, op.filter)).toBe(had)
              if (had) {
                model.set(
                  client,
                  held.filter((f) => f !== op.filter),
                )
                presence.released(op.filter)
              }
            } else {
              const dropped = index.drop(client)
              expect([...dropped].sort()).toEqual([...held].sort())
              for (const f of dropped) presence.released(f)
              model.delete(client)
            }
            for (const [c, filters] of model) if (filters.length === 0) model.delete(c)
            expect(index.size()).toBe(model.size)
            expect([...index.filtersOf(client)].sort()).toEqual([...(model.get(client) ?? [])].sort())
          }
          for (const topic of extra) check(topic)

          // A device is online while some client's filter covers `pico/<id>/frame` under the id's own name.
          const expected = new Set<string>()
          for (const filters of model.values())
            for (const f of filters) {
              const id = f.split('/')[1]
              if (
                f.startsWith('pico/') &&
                id &&
                !/[+#]/.test(id) &&
                id !== 'bridge' &&
                /^[A-Za-z0-9_-]+$/.test(id)
              )
                if (matches(f, `pico/${id}/frame`)) expected.add(id)
            }
          expect(presence.deviceIds()).toEqual(expected)
          expect(online).toEqual(expected)
        },
      ),
      { seed: SEED, numRuns: 3000 },
    )
  })
})
