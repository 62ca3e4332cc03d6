import { describe, expect, it } from 'vitest'
import { createLanes } from '../../src/jobs/lanes.ts'

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
