import type { Client } from 'aedes'
import { isDeviceId } from '../protocol/device-id.ts'
import { subscriptionFilters } from './delivery.ts'

/**
 * The device ids that have a connected client subscribed under their own name (`pico/kitchen/frame`,
 * `pico/kitchen/#`): those are the displays that are online. A `pico/#` watcher names no device, and a
 * filter whose id level breaks the device-id rule (`pico/bridge/state`, `pico/a b/frame`) names none either.
 */
export function subscribedDeviceIds(clients: Iterable<Client>, baseTopic: string): Set<string> {
  const ids = new Set<string>()
  for (const client of clients) {
    for (const filter of subscriptionFilters(client)) {
      const id = deviceOfFilter(filter, baseTopic)
      if (id) ids.add(id)
    }
  }
  return ids
}

/** The device a subscription filter names at its device level, or undefined when it names no valid device. */
export function deviceOfFilter(filter: string, baseTopic: string): string | undefined {
  const levels = filter.split('/')
  const depth = baseTopic.split('/').length
  const id = levels[depth]
  if (id === undefined || !isDeviceId(id) || levels.slice(0, depth).join('/') !== baseTopic) return undefined
  return id
}
