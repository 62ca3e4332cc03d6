import type { Aedes, Client, PreConnectHandler } from 'aedes'
import type { Logger } from 'pino'
import { remoteOf } from './access-hooks.ts'
import type { BrokerLimits } from './limits.ts'
import { createSessionStore, type SessionStore } from './session-store.ts'

/*
 * Persistent sessions (clean session 0) in the embedded broker (issue 10, "Limits that hold under abuse"):
 * at most MQTT_MAX_SESSIONS of them, one offline past MQTT_SESSION_EXPIRY ended to make room for a new one,
 * and their queues bounded (session-store.ts). A display uses clean sessions; these are for automations.
 */

type Limits = Pick<
  BrokerLimits,
  'maxPersistentSessions' | 'sessionExpiryMs' | 'sessionQueueMessages' | 'sessionQueueBytes'
>

/** Aedes' persistence, for ending an expired session. */
interface SessionPersistence {
  cleanSubscriptions(client: { id: string }): Promise<void>
  cleanIncoming?(client: { id: string }): Promise<void>
  delWill(client: { id: string }): Promise<unknown>
}

export interface PersistentSessions {
  /** Refuses a new persistent session past the bound, unless one offline has expired and makes room. */
  preConnect: PreConnectHandler
  /** Takes over Aedes' session queues and follows clients coming and going. */
  attach(broker: Aedes): void
  report(): { persistent_sessions: number } & ReturnType<SessionStore['report']>
}

export function createPersistentSessions(
  limits: Limits,
  deps: {
    log: Logger
    /** The caller's rate-limited warn, so the broker's warn lines share one budget. */
    warn(fields: Record<string, unknown>, msg: string): void
    monotonic: () => number
    /** The connected client with this id, if any. */
    connected(clientId: string): Client | undefined
    /** Whether the broker granted `filter` to `client` (only those are stored for a session). */
    granted(client: Client, filter: string): boolean
  },
): PersistentSessions {
  const { log, warn, monotonic } = deps
  /** Persistent sessions by id: undefined while connected, else when it went offline. */
  const persistent = new Map<string, number | undefined>()
  let persistence: SessionPersistence | null = null
  const sessions = createSessionStore(
    { perSession: limits.sessionQueueMessages, totalBytes: limits.sessionQueueBytes },
    (clientId, reason) => warn({ clientId, reason }, 'MQTT message not kept for an offline session'),
  )

  /** Ends the session offline longest if that is past MQTT_SESSION_EXPIRY; says whether one was ended. */
  function expireOne(): boolean {
    const now = monotonic()
    let oldest: string | undefined
    let since = Number.POSITIVE_INFINITY
    for (const [id, offline] of persistent) {
      if (offline !== undefined && offline < since) {
        since = offline
        oldest = id
      }
    }
    if (oldest === undefined || now - since < limits.sessionExpiryMs) return false
    const client = { id: oldest }
    persistent.delete(oldest)
    sessions.forget(oldest)
    const done = (err: unknown) =>
      err && log.warn({ err, clientId: oldest }, 'ending a persistent session failed')
    persistence?.cleanSubscriptions(client).catch(done)
    persistence?.cleanIncoming?.(client).catch(done)
    persistence?.delWill(client).catch(done)
    log.info({ clientId: oldest, offlineMs: Math.round(now - since) }, 'expired persistent session ended')
    return true
  }

  return {
    preConnect(client, packet, callback) {
      const clientId = packet.clientId
      const full = persistent.size >= limits.maxPersistentSessions
      if (packet.clean === false && !persistent.has(clientId) && full && !expireOne()) {
        warn(
          { remote: remoteOf(client), clientId, limit: limits.maxPersistentSessions },
          'MQTT connection refused: too many persistent sessions',
        )
        callback(new Error('too many persistent sessions'), false)
        return
      }
      callback(null, true)
    },

    attach(broker) {
      persistence = (broker as unknown as { persistence: SessionPersistence }).persistence
      // Aedes hands its own Client to addSubscriptions.
      sessions.install(persistence, (client, filter) => deps.granted(client as Client, filter))
      broker.on('clientReady', (client) => {
        if (client.clean) {
          persistent.delete(client.id)
          sessions.forget(client.id)
        } else persistent.set(client.id, undefined)
      })
      broker.on('clientDisconnect', (client) => {
        if (persistent.has(client.id) && deps.connected(client.id) === undefined)
          persistent.set(client.id, monotonic())
      })
    },

    report: () => ({ persistent_sessions: persistent.size, ...sessions.report() }),
  }
}
