import { isDeviceId } from '../protocol/device-id.ts'
import { topicMatches } from '../protocol/topics.ts'

/*
 * Which displays are online: the device ids whose frame topic a connected client's filter covers under the
 * device's own name (`pico/kitchen/frame`, `pico/kitchen/#`, `pico/kitchen/+`). A `pico/#` watcher names no
 * device, a `pico/kitchen/status` subscriber is not waiting for frames, and a filter whose id level breaks
 * the device-id rule (`pico/bridge/state`, `pico/a b/frame`) names none either.
 *
 * Counted per (client, filter) pair as the broker's subscription index gains and loses them, so the set is
 * current without walking the clients, and a listener hears when a device's first pair comes or its last goes.
 */

export interface Presence {
  /** A client now holds `filter`; notifies when it makes its device online. */
  held(filter: string): void
  /** A client no longer holds `filter`; notifies when its device had no other. */
  released(filter: string): void
  /** The devices online now: the live set, read-only (a status looks one id up in it, not a copy). */
  deviceIds(): ReadonlySet<string>
  /** Hears each device that comes (`true`) or goes (`false`); returns the function that stops it. */
  listen(listener: (deviceId: string, online: boolean) => void): () => void
}

export function createPresence(baseTopic: string): Presence {
  const pairs = new Map<string, number>()
  const online = new Set<string>()
  const listeners = new Set<(deviceId: string, online: boolean) => void>()

  function notify(deviceId: string, online: boolean): void {
    for (const listener of listeners) listener(deviceId, online)
  }

  return {
    held(filter) {
      const id = displayOfFilter(filter, baseTopic)
      if (id === undefined) return
      const n = pairs.get(id) ?? 0
      pairs.set(id, n + 1)
      if (n > 0) return
      online.add(id)
      notify(id, true)
    },
    released(filter) {
      const id = displayOfFilter(filter, baseTopic)
      if (id === undefined) return
      const n = pairs.get(id) ?? 0
      if (n > 1) {
        pairs.set(id, n - 1)
        return
      }
      if (!pairs.delete(id)) return
      online.delete(id)
      notify(id, false)
    },
    deviceIds: () => online,
    listen(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
  }
}

/** The device a subscription filter names at its device level, or undefined when it names no valid device. */
export function deviceOfFilter(filter: string, baseTopic: string): string | undefined {
  if (!filter.startsWith(`${baseTopic}/`)) return undefined
  const rest = filter.slice(baseTopic.length + 1)
  const end = rest.indexOf('/')
  const id = end < 0 ? rest : rest.slice(0, end)
  return isDeviceId(id) ? id : undefined
}

/** The device whose frame topic the filter covers under the device's own name, if any. */
export function displayOfFilter(filter: string, baseTopic: string): string | undefined {
  const id = deviceOfFilter(filter, baseTopic)
  if (id === undefined || !topicMatches(filter, `${baseTopic}/${id}/frame`)) return undefined
  return id
}
