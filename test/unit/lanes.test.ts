import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createLanes } from '../../src/jobs/lanes.ts'
import { executedBlocks } from '../support/executed-blocks.ts'

const LANES = new URL('../../src/jobs/lanes.ts', import.meta.url)

describe('round-robin lanes', () => {
  it('serves the owner whose turn was longest ago, a newcomer before one just served', () => {
    const lanes = createLanes<string>()
    lanes.push('http', 'h1')
    expect(lanes.shift()).toBe('h1')
    for (const h of ['h2', 'h3', 'h4']) lanes.push('http', h)
    lanes.push('kitchen', 'k1')
    lanes.push('hall', 'a1')
    expect(lanes.ordered()).toEqual(['k1', 'a1', 'h2', 'h3', 'h4'])
    expect([lanes.shift(), lanes.shift(), lanes.shift()]).toEqual(['k1', 'a1', 'h2'])
    lanes.push('kitchen', 'k2')
    // kitchen was served before http's last turn, so it goes next; then http again.
    expect(lanes.ordered()).toEqual(['k2', 'h3', 'h4'])
    expect(lanes.size).toBe(3)
  })

  it('puts a retried item first and skips items the caller cannot take now', () => {
    const lanes = createLanes<string>()
    lanes.push('a', 'a1')
    lanes.push('b', 'b1')
    expect(lanes.shift((item) => item !== 'a1')).toBe('b1')
    lanes.pushFront('b', 'b1-retry')
    expect(lanes.ordered()).toEqual(['b1-retry', 'a1'])
    expect(lanes.replace('a1', 'a2')).toBe(true)
    expect(lanes.remove('b1-retry')).toBe(true)
    expect(lanes.ordered()).toEqual(['a2'])
    expect(lanes.find((i) => i.startsWith('a'))).toBe('a2')
    expect(lanes.remove('missing')).toBe(false)
  })
})

/** The lanes as first written (sorting the owners at every step): the meaning the faster lanes must keep. */
function referenceLanes() {
  const lanes = new Map<string, string[]>()
  const lastTurn = new Map<string, number>()
  let turn = 0
  const rank = (turns: Map<string, number>, o: string) => turns.get(o) ?? -1
  const rotation = () => [...lanes.keys()].sort((a, b) => rank(lastTurn, a) - rank(lastTurn, b))
  const laneOf = (item: string) => [...lanes].find(([, lane]) => lane.includes(item))
  const drop = (owner: string) => {
    if (lanes.get(owner)?.length === 0) lanes.delete(owner)
  }
  return {
    push(owner: string, item: string) {
      lanes.set(owner, [...(lanes.get(owner) ?? []), item])
    },
    pushFront(owner: string, item: string) {
      lanes.set(owner, [item, ...(lanes.get(owner) ?? [])])
      lastTurn.set(owner, Number.NEGATIVE_INFINITY)
    },
    replace(old: string, item: string) {
      const found = laneOf(old)
      if (found) found[1][found[1].indexOf(old)] = item
      return found !== undefined
    },
    remove(item: string) {
      const found = laneOf(item)
      if (found) {
        found[1].splice(found[1].indexOf(item), 1)
        drop(found[0])
      }
      return found !== undefined
    },
    shift(accept: (item: string) => boolean) {
      const owner = rotation().find((o) => accept(lanes.get(o)![0]!))
      if (owner === undefined) return undefined
      const item = lanes.get(owner)!.shift()!
      drop(owner)
      lastTurn.delete(owner)
      lastTurn.set(owner, turn++)
      return item
    },
    ordered() {
      const copies = new Map([...lanes].map(([o, lane]) => [o, [...lane]]))
      const turns = new Map(lastTurn)
      const out: string[] = []
      for (let t = turn; copies.size > 0; t++) {
        const owner = [...copies.keys()].sort((a, b) => rank(turns, a) - rank(turns, b))[0]!
        const lane = copies.get(owner)!
        out.push(lane.shift()!)
        if (lane.length === 0) copies.delete(owner)
        turns.set(owner, t)
      }
      return out
    },
  }
}

describe('round-robin lanes, against the first version', () => {
  const owner = fc.constantFrom('a', 'b', 'c', 'd')
  const step = fc.oneof(
    fc.record({ op: fc.constant('push' as const), owner }),
    fc.record({ op: fc.constant('pushFront' as const), owner }),
    fc.record({ op: fc.constant('shift' as const), refuse: fc.option(owner, { nil: undefined }) }),
    fc.record({ op: fc.constant('remove' as const), pick: fc.nat() }),
    fc.record({ op: fc.constant('replace' as const), pick: fc.nat() }),
  )

  it('takes and lists the same items in the same order after any sequence of operations', () => {
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
        const lanes = createLanes<string>()
        const model = referenceLanes()
        let next = 0
        for (const s of steps) {
          const waiting = model.ordered()
          if (s.op === 'push' || s.op === 'pushFront') {
            const item = `${s.owner}${next++}`
            lanes[s.op](s.owner, item)
            model[s.op](s.owner, item)
          } else if (s.op === 'shift') {
            // Refusing one owner's items, as the queue does for jobs no free server can take.
            const accept = (item: string) => !item.startsWith(s.refuse ?? '-')
            expect(lanes.shift(accept)).toBe(model.shift(accept))
          } else if (waiting.length > 0) {
            const item = waiting[s.pick % waiting.length]!
            if (s.op === 'remove') expect(lanes.remove(item)).toBe(model.remove(item))
            else {
              const other = `${item[0]}${next++}`
              expect(lanes.replace(item, other)).toBe(model.replace(item, other))
            }
          }
          expect(lanes.ordered()).toEqual(model.ordered())
          expect(lanes.size).toBe(model.ordered().length)
        }
      }),
    )
  })

  it('lists n waiting items with work proportional to n (the queue lists them after every job it queues)', async () => {
    const work = (n: number) =>
      executedBlocks(LANES, ({ createLanes: create }: typeof import('../../src/jobs/lanes.ts')) => {
        const lanes = create<number>()
        for (let i = 0; i < n; i++) lanes.push(`device-${i % (n / 2)}`, i)
        lanes.ordered()
        // A busy server takes nothing: shift looks at each owner once.
        lanes.shift(() => false)
        lanes.remove(n - 1)
      })
    const [small, large] = [await work(1_000), await work(2_000)]
    // The first version sorted the owners for every item listed: twice the items took about eight times
    // the work, and replaying 1,000 journaled jobs took 31 s (issue 13).
    expect(large / small).toBeLessThan(2.5)
  })
})
