/*
 * The waiting line, one lane per owner (a device, or one HTTP client), served round-robin: the next job comes
 * from the owner whose turn was longest ago (an owner new to the line first), so a device that sends prompt
 * after prompt, or a client that fires ten requests at once, gets one turn per round like everyone else.
 * Pure: no clock, no I/O.
 *
 * The lanes with waiting items are kept sorted in the order they get their turn, so taking the next item,
 * listing the line and finding an item's lane cost no sorting. The queue asks for the whole order after
 * every job it queues; with a sort per step that made replaying 1,000 journaled jobs take 31 s at start
 * (issue 13, "Replay is slow with many open jobs").
 */

export interface Lanes<T> {
  /** Adds at the back of the owner's lane. Items are distinct: an item is in the line at most once. */
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

interface Lane<T> {
  readonly owner: string
  readonly items: T[]
  /** When the owner was last served: -Infinity for a retried job, -1 for an owner new to the line. */
  key: number
  /** Which lane came first, for owners with the same key. */
  readonly seq: number
}

export function createLanes<T>(): Lanes<T> {
  const lanes = new Map<string, Lane<T>>()
  /** The lanes with waiting items, the one whose turn was longest ago first (ties: the older lane). */
  const rotation: Lane<T>[] = []
  const laneOfItem = new Map<T, Lane<T>>()
  /** The turn number at which each owner was last served; -Infinity lets a retried job go first. */
  const lastTurn = new Map<string, number>()
  let turn = 0
  let seq = 0
  let size = 0

  const before = (a: Lane<T>, b: Lane<T>) => a.key < b.key || (a.key === b.key && a.seq < b.seq)

  /** Where `lane` belongs in the rotation (binary search: the rotation is sorted and keys never tie with seq). */
  function indexOf(lane: Lane<T>): number {
    let lo = 0
    let hi = rotation.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (before(rotation[mid]!, lane)) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  function laneFor(owner: string): Lane<T> {
    let lane = lanes.get(owner)
    if (!lane) {
      lane = { owner, items: [], key: lastTurn.get(owner) ?? -1, seq: seq++ }
      lanes.set(owner, lane)
      rotation.splice(indexOf(lane), 0, lane)
    }
    return lane
  }

  function dropIfEmpty(lane: Lane<T>): void {
    if (lane.items.length > 0) return
    lanes.delete(lane.owner)
    rotation.splice(indexOf(lane), 1)
  }

  function take(index: number): T {
    const lane = rotation[index]!
    const item = lane.items.shift()!
    laneOfItem.delete(item)
    size--
    rotation.splice(index, 1)
    lastTurn.delete(lane.owner)
    lastTurn.set(lane.owner, turn)
    lane.key = turn++
    // The newest turn is the largest key: the lane goes to the back of the rotation.
    if (lane.items.length > 0) rotation.push(lane)
    else lanes.delete(lane.owner)
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
      const lane = laneFor(owner)
      lane.items.push(item)
      laneOfItem.set(item, lane)
      size++
    },
    pushFront(owner, item) {
      lastTurn.set(owner, Number.NEGATIVE_INFINITY)
      const existing = lanes.get(owner)
      if (existing) {
        rotation.splice(indexOf(existing), 1)
        existing.key = Number.NEGATIVE_INFINITY
        rotation.splice(indexOf(existing), 0, existing)
      }
      const lane = existing ?? laneFor(owner)
      lane.items.unshift(item)
      laneOfItem.set(item, lane)
      size++
    },
    replace(old, item) {
      const lane = laneOfItem.get(old)
      if (!lane) return false
      lane.items[lane.items.indexOf(old)] = item
      laneOfItem.delete(old)
      laneOfItem.set(item, lane)
      return true
    },
    remove(item) {
      const lane = laneOfItem.get(item)
      if (!lane) return false
      lane.items.splice(lane.items.indexOf(item), 1)
      laneOfItem.delete(item)
      size--
      dropIfEmpty(lane)
      return true
    },
    shift(accept = () => true) {
      for (let i = 0; i < rotation.length; i++) {
        if (accept(rotation[i]!.items[0]!)) return take(i)
      }
      return undefined
    },
    find(match) {
      for (const lane of lanes.values()) {
        const hit = lane.items.find(match)
        if (hit !== undefined) return hit
      }
      return undefined
    },
    get size() {
      return size
    },
    ordered() {
      // Served in rotation order, each owner goes to the back after its turn: so round after round, every
      // lane gives its next item in rotation order.
      const out: T[] = []
      for (let round = 0, left = rotation; left.length > 0; round++) {
        const next: Lane<T>[] = []
        for (const lane of left) {
          out.push(lane.items[round]!)
          if (lane.items.length > round + 1) next.push(lane)
        }
        left = next
      }
      return out
    },
  }
}
