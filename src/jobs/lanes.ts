/*
 * The waiting line, one lane per owner (a device, or one HTTP client), served round-robin: the next job comes
 * from the owner whose turn was longest ago (an owner new to the line first), so a device that sends prompt
 * after prompt, or a client that fires ten requests at once, gets one turn per round like everyone else.
 * Pure: no clock, no I/O.
 */

export interface Lanes<T> {
  /** Adds at the back of the owner's lane. */
  push(owner: string, item: T): void
  /** Adds at the front of the owner's lane and gives the owner the next turn (a job being retried). */
  pushFront(owner: string, item: T): void
  /** Puts `item` where `old` was. */
  replace(old: T, item: T): boolean
  remove(item: T): boolean
  /** Takes the next item that `accept` takes, from the owner whose turn was longest ago. */
  shift(accept?: (item: T) => boolean): T | undefined
  find(match: (item: T) => boolean): T | undefined
  readonly size: number
  /** Every waiting item in the order it would be taken if nothing else arrived. */
  ordered(): T[]
}

/** Owners remembered after their lane emptied, so a returning owner does not jump ahead. */
const REMEMBERED_OWNERS = 10_000

export function createLanes<T>(): Lanes<T> {
  const lanes = new Map<string, T[]>()
  /** The turn number at which each owner was last served; -Infinity lets a retried job go first. */
  const lastTurn = new Map<string, number>()
  let turn = 0
  let size = 0

  /** Owners with waiting items, the one whose turn was longest ago first (ties: who came first). */
  function rotation(turns: Map<string, number>): string[] {
    return [...lanes.keys()].sort((a, b) => (turns.get(a) ?? -1) - (turns.get(b) ?? -1))
  }

  function laneOf(item: T): [string, T[]] | undefined {
    for (const entry of lanes) if (entry[1].includes(item)) return entry
    return undefined
  }

  function take(owner: string): T {
    const lane = lanes.get(owner)!
    const item = lane.shift()!
    if (lane.length === 0) lanes.delete(owner)
    size--
    lastTurn.delete(owner)
    lastTurn.set(owner, turn++)
    if (lastTurn.size > REMEMBERED_OWNERS) {
      for (const old of lastTurn.keys()) {
        if (!lanes.has(old)) {
          lastTurn.delete(old)
          break
        }
      }
    }
    return item
  }

  return {
    push(owner, item) {
      const lane = lanes.get(owner)
      if (lane) lane.push(item)
      else lanes.set(owner, [item])
      size++
    },
    pushFront(owner, item) {
      const lane = lanes.get(owner)
      if (lane) lane.unshift(item)
      else lanes.set(owner, [item])
      lastTurn.set(owner, Number.NEGATIVE_INFINITY)
      size++
    },
    replace(old, item) {
      const found = laneOf(old)
      if (!found) return false
      found[1][found[1].indexOf(old)] = item
      return true
    },
    remove(item) {
      const found = laneOf(item)
      if (!found) return false
      const [owner, lane] = found
      lane.splice(lane.indexOf(item), 1)
      if (lane.length === 0) lanes.delete(owner)
      size--
      return true
    },
    shift(accept = () => true) {
      for (const owner of rotation(lastTurn)) {
        if (accept(lanes.get(owner)![0]!)) return take(owner)
      }
      return undefined
    },
    find(match) {
      for (const lane of lanes.values()) {
        const hit = lane.find(match)
        if (hit !== undefined) return hit
      }
      return undefined
    },
    get size() {
      return size
    },
    ordered() {
      const copies = new Map([...lanes].map(([owner, lane]) => [owner, [...lane]]))
      const turns = new Map(lastTurn)
      const out: T[] = []
      let t = turn
      while (out.length < size) {
        const owner = [...copies.keys()]
          .filter((o) => copies.get(o)!.length > 0)
          .sort((a, b) => (turns.get(a) ?? -1) - (turns.get(b) ?? -1))[0]!
        out.push(copies.get(owner)!.shift()!)
        turns.set(owner, t++)
      }
      return out
    },
  }
}
