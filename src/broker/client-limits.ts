import type {
  Aedes,
  AuthorizeForwardHandler,
  AuthorizeSubscribeHandler,
  Client,
  PreConnectHandler,
  PublishPacket,
} from 'aedes'
import type { Logger } from 'pino'
import type { Topics } from '../protocol/topics.ts'
import { limitedWarn, remoteOf } from './access-hooks.ts'

/*
 * What a client that is in may hold in the broker (issue 10, "Limits that hold under abuse"): subscriptions,
 * retained messages, persistent sessions, and how often one client id may take over another connection.
 * Each is a wrapper around an Aedes hook or a check the publish hook calls; the access rules stay in
 * access-hooks.ts.
 */

/** Filters one client may hold; a display needs two or three. */
export const MAX_SUBSCRIPTIONS = 64
/** Retained messages clients may keep (the bridge's own statuses are not counted), and their bytes. */
export const MAX_CLIENT_RETAINED = 1_000
export const MAX_CLIENT_RETAINED_BYTES = 4 * 1024 * 1024
/** Persistent sessions (clean session 0) the broker keeps; a display uses clean sessions. */
export const MAX_PERSISTENT_SESSIONS = 100
/** Takeovers of one id within TAKEOVER_WINDOW_MS before each next one waits, doubling up to the cap. */
const TAKEOVERS_FREE = 2
const TAKEOVER_WINDOW_MS = 60_000
const TAKEOVER_DELAY_MS = 1_000
const TAKEOVER_DELAY_MAX_MS = 30_000
const TAKEOVER_IDS_KEPT = 10_000

export interface ClientLimits {
  preConnect: PreConnectHandler
  /** Wraps the access rules' subscribe hook: past MAX_SUBSCRIPTIONS a filter is granted nothing (0x80). */
  authorizeSubscribe(next: AuthorizeSubscribeHandler): AuthorizeSubscribeHandler
  /** Wraps the access rules' forward hook: nothing Aedes publishes under `$SYS/` reaches a client. */
  authorizeForward(next: AuthorizeForwardHandler): AuthorizeForwardHandler
  /**
   * For a publish the access rules allowed: a retain on a topic the bridge reads, or past the bound on
   * client retains, has its retain flag cleared (it is delivered, not kept).
   */
  checkRetain(client: Client | null, packet: PublishPacket): void
  /** Follows clients and their subscriptions (Aedes' events). */
  attach(broker: Aedes): void
}

export function createClientLimits(deps: {
  log: Logger
  topics: Topics
  monotonic: () => number
  /** The connected client with this id, if any (a new CONNECT with its id takes it over). */
  connected(clientId: string): Client | undefined
}): ClientLimits {
  const { log, topics, monotonic } = deps
  const warn = limitedWarn(log, monotonic)
  const filters = new WeakMap<Client, Set<string>>()
  const retained = new Map<string, number>()
  let retainedBytes = 0
  const persistent = new Set<string>()
  const takeovers = new Map<string, number[]>()

  function takeoverDelay(clientId: string): number {
    const now = monotonic()
    const recent = (takeovers.get(clientId) ?? []).filter((t) => now - t < TAKEOVER_WINDOW_MS)
    recent.push(now)
    takeovers.delete(clientId)
    takeovers.set(clientId, recent)
    if (takeovers.size > TAKEOVER_IDS_KEPT) takeovers.delete(takeovers.keys().next().value!)
    const over = recent.length - TAKEOVERS_FREE
    return over <= 0 ? 0 : Math.min(TAKEOVER_DELAY_MS * 2 ** (over - 1), TAKEOVER_DELAY_MAX_MS)
  }

  function forgetRetained(topic: string): void {
    const old = retained.get(topic)
    if (old === undefined) return
    retained.delete(topic)
    retainedBytes -= old
  }

  return {
    preConnect(client, packet, callback) {
      const clientId = packet.clientId
      if (packet.clean === false && !persistent.has(clientId) && persistent.size >= MAX_PERSISTENT_SESSIONS) {
        warn(
          { remote: remoteOf(client), clientId, limit: MAX_PERSISTENT_SESSIONS },
          'MQTT connection refused: too many persistent sessions',
        )
        callback(new Error('too many persistent sessions'), false)
        return
      }
      const previous = clientId ? deps.connected(clientId) : undefined
      if (!previous) {
        callback(null, true)
        return
      }
      const delayMs = takeoverDelay(clientId)
      // Both addresses, so whoever reads the log can tell a display reconnecting from two devices fighting.
      warn(
        { clientId, remote: remoteOf(client), previousRemote: remoteOf(previous), delayMs },
        'MQTT client id taken over',
      )
      if (delayMs === 0) callback(null, true)
      else setTimeout(() => callback(null, true), delayMs).unref()
    },

    authorizeSubscribe(next) {
      return (client, sub, callback) => {
        const held = filters.get(client) ?? new Set<string>()
        filters.set(client, held)
        if (!held.has(sub.topic) && held.size >= MAX_SUBSCRIPTIONS) {
          warn(
            { remote: remoteOf(client), clientId: client.id, filter: sub.topic, limit: MAX_SUBSCRIPTIONS },
            'MQTT subscription refused: too many',
          )
          callback(null, null)
          return
        }
        held.add(sub.topic)
        next(client, sub, callback)
      }
    },

    authorizeForward(next) {
      // Aedes' own `$SYS/<id>/new/clients`, `/new/subscribes` and heartbeats name every client and filter;
      // clients may not publish under `$SYS/` at all (embedded.ts), so everything there is Aedes'.
      return (client, packet) => (packet.topic.startsWith('$SYS/') ? null : next(client, packet))
    },

    checkRetain(client, packet) {
      if (!packet.retain || !client) return
      const bytes = Buffer.byteLength(packet.payload)
      if (topics.parseInbound(packet.topic)) {
        packet.retain = false
        return
      }
      if (bytes === 0) {
        forgetRetained(packet.topic)
        return
      }
      const old = retained.get(packet.topic) ?? 0
      const fits =
        (retained.has(packet.topic) || retained.size < MAX_CLIENT_RETAINED) &&
        retainedBytes - old + bytes <= MAX_CLIENT_RETAINED_BYTES
      if (!fits) {
        warn(
          { remote: remoteOf(client), clientId: client.id, topic: packet.topic },
          'MQTT retain not kept: store full',
        )
        packet.retain = false
        return
      }
      retained.set(packet.topic, bytes)
      retainedBytes += bytes - old
    },

    attach(broker) {
      broker.on('clientReady', (client) => {
        if (client.clean) persistent.delete(client.id)
        else persistent.add(client.id)
      })
      broker.on('unsubscribe', (unsubscriptions, client) => {
        const held = filters.get(client)
        for (const topic of unsubscriptions) held?.delete(topic)
      })
    },
  }
}
