import { createLanes } from './lanes.ts'

/*
 * The queue's waiting line: the round-robin lanes of lanes.ts plus an index of each device's waiting item,
 * so that a newer prompt finds the one it replaces at once (a replay of thousands of jobs stays linear).
 * Pure: no clock, no I/O.
 */

export interface WaitingLine<T> {
  /**
   * Adds an item at the back of its owner's lane, or, when its device already has an item waiting, in that
   * item's place. Returns the item it replaced.
   */
  add(item: T): T | undefined
  /** Puts an item back at the front of its owner's lane (a job being retried). */
  pushFront(item: T): void
  remove(item: T): void
  /** Takes the next item that `accept` takes, from the owner whose turn was longest ago. */
  shift(accept: (item: T) => boolean): T | undefined
  hasDevice(deviceId: string): boolean
  ordered(): T[]
  readonly size: number
}

export function createWaitingLine<T>(keys: {
  owner(item: T): string
  deviceId(item: T): string | undefined
}): WaitingLine<T> {
  const lanes = createLanes<T>()
  const byDevice = new Map<string, T>()

  function forget(item: T): void {
    const id = keys.deviceId(item)
    if (id !== undefined && byDevice.get(id) === item) byDevice.delete(id)
  }

  return {
    add(item) {
      const id = keys.deviceId(item)
      const older = id === undefined ? undefined : byDevice.get(id)
      if (older) lanes.replace(older, item)
      else lanes.push(keys.owner(item), item)
      if (id !== undefined) byDevice.set(id, item)
      return older
    },
    pushFront(item) {
      lanes.pushFront(keys.owner(item), item)
      const id = keys.deviceId(item)
      if (id !== undefined && !byDevice.has(id)) byDevice.set(id, item)
    },
    remove(item) {
      lanes.remove(item)
      forget(item)
    },
    shift(accept) {
      const item = lanes.shift(accept)
      if (item !== undefined) forget(item)
      return item
    },
    hasDevice: (deviceId) => byDevice.has(deviceId),
    ordered: () => lanes.ordered(),
    get size() {
      return lanes.size
    },
  }
}
