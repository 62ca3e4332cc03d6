import type { Client } from 'aedes'
import { subscriptionFilters } from './delivery.ts'

/**
 * The device ids that have a connected client subscribed under their own name (`pico/kitchen/frame`,
 * `pico/kitchen/#`): those are the displays that are online. A `pico/#` watcher names no device.
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

/** The device a subscription filter names at its device level, or undefined for `+`, `#` or other bases. */
export function deviceOfFilter(filter: string, baseTopic: string): string | undefined {
  const levels = filter.split('/')
  const depth = baseTopic.split('/').length
  const id = levels[depth]
  if (!id || id === '+' || id === '#' || levels.slice(0, depth).join('/') !== baseTopic) return undefined
  return id
}
