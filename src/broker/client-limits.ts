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
import type { BrokerLimits } from './limits.ts'
import { createPersistentSessions, type PersistentSessions } from './persistent-sessions.ts'

/*
 * What a client that is in may hold in the broker (issue 10, "Limits that hold under abuse"): subscriptions,
 * retained messages, persistent sessions and their queues (persistent-sessions.ts), and how often one client
 * id may take over another connection. Each is a wrapper around an Aedes hook or a check the publish hook calls; the access rules stay
 * in access-hooks.ts. The numbers are settings (limits.ts).
 */

/** Takeovers of one id within TAKEOVER_WINDOW_MS before each next one waits, doubling up to the cap. */
const TAKEOVERS_FREE = 2
const TAKEOVER_WINDOW_MS = 60_000
const TAKEOVER_DELAY_MS = 1_000
const TAKEOVER_DELAY_MAX_MS = 30_000
const TAKEOVER_IDS_KEPT = 10_000
/**
 * The bridge's own retained statuses kept, one per device id; past it the least recently published is
 * emptied. As many as the device list keeps (jobs/device-registry.ts), so a prompt on each of a million
 * invented ids cannot keep a million statuses.
 */
const BRIDGE_STATUSES_KEPT = 10_000
/**
 * Bytes of subscription filters one client may hold, per filter MQTT_MAX_SUBSCRIPTIONS allows it: a display's
 * filters are some 20 bytes each, and 64 filters of 60 KB each (ids no display has) held 4 MB per client.
 */
const FILTER_BYTES_PER_SUBSCRIPTION = 256

type Limits = Pick<BrokerLimits, 'maxSubscriptions' | 'maxClientRetained' | 'maxClientRetainedBytes'> &
  Parameters<typeof createPersistentSessions>[0]

export interface ClientLimits {
  preConnect: PreConnectHandler
  /**
   * After a login was accepted: a CONNECT with the id of a connected client (which will take it over) is
   * logged, and past a few in a minute waits before it goes on. Runs after the password check, so a client
   * that cannot log in cannot slow a display's reconnect or kick it.
   */
  afterLogin(client: Client, proceed: () => void): void
  /** Wraps the access rules' subscribe hook: past MQTT_MAX_SUBSCRIPTIONS, or their bytes, a filter gets 0x80. */
  authorizeSubscribe(next: AuthorizeSubscribeHandler): AuthorizeSubscribeHandler
  /** Wraps the access rules' forward hook: nothing Aedes publishes under `$SYS/` reaches a client. */
  authorizeForward(next: AuthorizeForwardHandler): AuthorizeForwardHandler
  /**
   * For a publish the access rules allowed: a retain on a topic the bridge reads, or past the bound on
   * client retains, has its retain flag cleared (it is delivered, not kept).
   */
  checkRetain(client: Client | null, packet: PublishPacket): void
  /** Follows clients and their subscriptions (Aedes' events) and bounds its session queues. */
  attach(broker: Aedes): void
  report: PersistentSessions['report']
}

export function createClientLimits(
  limits: Limits,
  deps: {
    log: Logger
    topics: Topics
    monotonic: () => number
    /** The connected client with this id, if any (a new CONNECT with its id takes it over). */
    connected(clientId: string): Client | undefined
  },
): ClientLimits {
  const { log, topics, monotonic } = deps
  const warn = limitedWarn(log, monotonic)
  /** Each subscribing client's filters (see Held); a client that never subscribes has none. */
  const filters = new WeakMap<Client, Held>()
  const retained = new Map<string, number>()
  let retainedBytes = 0
  const takeovers = new Map<string, number[]>()
  const statuses = new Map<string, true>()
  const statusDepth = topics.base.split('/').length + 2
  const isStatusTopic = (topic: string) =>
    topic.startsWith(`${topics.base}/`) &&
    topic.endsWith('/status') &&
    topic.split('/').length === statusDepth
  const sessions = createPersistentSessions(limits, {
    ...{ log, warn, monotonic, connected: deps.connected },
    granted: (client, filter) => filters.get(client)?.granted.includes(filter) ?? false,
  })

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

  /** Takes a filter from those a client asked for, and from those granted too on an unsubscribe. */
  function forgetFilter(client: Client, topic: string, granted = false): void {
    const held = filters.get(client)
    if (held && granted) held.granted = without(held.granted, topic)
    if (!held?.asked.includes(topic)) return
    held.asked = without(held.asked, topic)
    held.bytes -= Buffer.byteLength(topic)
  }

  function forgetRetained(topic: string): void {
    const old = retained.get(topic)
    if (old === undefined) return
    retained.delete(topic)
    retainedBytes -= old
  }

  return {
    preConnect: sessions.preConnect,

    afterLogin(client, proceed) {
      const previous = client.id ? deps.connected(client.id) : undefined
      if (!previous) {
        proceed()
        return
      }
      const delayMs = takeoverDelay(client.id)
      // Both addresses, so whoever reads the log can tell a display reconnecting from two devices fighting.
      warn(
        { clientId: client.id, remote: remoteOf(client), previousRemote: remoteOf(previous), delayMs },
        'MQTT client id taken over',
      )
      if (delayMs === 0) proceed()
      else setTimeout(proceed, delayMs).unref()
    },

    authorizeSubscribe(next) {
      const maxBytes = limits.maxSubscriptions * FILTER_BYTES_PER_SUBSCRIPTION
      return (client, sub, callback) => {
        const held = filters.get(client) ?? { asked: NONE, granted: NONE, bytes: 0 }
        filters.set(client, held)
        const bytes = Buffer.byteLength(sub.topic)
        const isNew = !held.asked.includes(sub.topic)
        const tooMany = isNew && held.asked.length >= limits.maxSubscriptions
        const tooLong = isNew && held.bytes + bytes > maxBytes
        if (tooMany || tooLong) {
          warn(
            {
              remote: remoteOf(client),
              clientId: client.id,
              filter: sub.topic.slice(0, 200),
              limit: tooMany ? limits.maxSubscriptions : maxBytes,
            },
            tooMany ? 'MQTT subscription refused: too many' : 'MQTT subscription refused: filters too long',
          )
          callback(null, null)
          return
        }
        if (isNew) {
          held.asked = held.asked.concat(sub.topic)
          held.bytes += bytes
        }
        next(client, sub, (err, result) => {
          if (!result) forgetFilter(client, sub.topic)
          else if (!held.granted.includes(sub.topic)) held.granted = held.granted.concat(sub.topic)
          callback(err, result)
        })
      }
    },

    authorizeForward(next) {
      // Aedes' own `$SYS/<id>/new/clients`, `/new/subscribes` and heartbeats name every client and filter;
      // clients may not publish under `$SYS/` at all (embedded.ts), so everything there is Aedes'.
      return (client, packet) => (packet.topic.startsWith('$SYS/') ? null : next(client, packet))
    },

    checkRetain(client, packet) {
      if (!packet.retain || !client) return
      // The topic is kept with the message: 1,000 retains of a 60 KB topic and a 1-byte payload are 60 MB.
      const bytes = Buffer.byteLength(packet.topic) + Buffer.byteLength(packet.payload)
      if (topics.parseInbound(packet.topic)) {
        packet.retain = false
        return
      }
      if (Buffer.byteLength(packet.payload) === 0) {
        forgetRetained(packet.topic)
        return
      }
      const old = retained.get(packet.topic) ?? 0
      const fits =
        (retained.has(packet.topic) || retained.size < limits.maxClientRetained) &&
        retainedBytes - old + bytes <= limits.maxClientRetainedBytes
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
      sessions.attach(broker)
      broker.on('unsubscribe', (unsubscriptions, client) => {
        for (const topic of unsubscriptions) forgetFilter(client, topic, true)
      })
      broker.on('publish', (packet, client) => {
        // The bridge's own retained statuses (no client): kept for BRIDGE_STATUSES_KEPT device ids at most.
        if (client || !packet.retain || !isStatusTopic(packet.topic)) return
        statuses.delete(packet.topic)
        if (packet.payload.length === 0) return
        statuses.set(packet.topic, true)
        if (statuses.size <= BRIDGE_STATUSES_KEPT) return
        const oldest = statuses.keys().next().value!
        statuses.delete(oldest)
        broker.publish(
          { cmd: 'publish', topic: oldest, payload: Buffer.alloc(0), qos: 0, retain: true, dup: false },
          () => undefined,
        )
      })
    },

    report: () => sessions.report(),
  }
}

/**
 * A client's filters asked for (granted or being granted, by this wrapper and the access rules both), their
 * bytes, and those granted: arrays of exactly their length, replaced on a change (a display holds two; two
 * Sets cost it some 300 bytes, two such arrays 130).
 */
type Held = { asked: readonly string[]; granted: readonly string[]; bytes: number }
const NONE: readonly string[] = []
const without = (list: readonly string[], item: string) => list.filter((x) => x !== item)
