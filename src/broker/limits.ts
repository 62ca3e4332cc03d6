import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { type Config, configSchema } from '../config/schema.ts'
import { limitedWarn } from './access-hooks.ts'
import { createPacketGuard } from './packet-guard.ts'

/*
 * What one connection may cost the broker before it has logged in, whichever listener it came through
 * (README, "Security"; issue 10, "Limits that hold under abuse"). The limits once a client is in are
 * client-limits.ts. Every number is a setting (src/config/schema.ts holds the defaults).
 */

/** The broker's limits, in the units the code uses. */
export interface BrokerLimits {
  maxConnections: number
  /** A socket that sends no CONNECT in this time is dropped (MQTT_CONNECT_TIMEOUT). */
  connectTimeoutMs: number
  /** A packet not complete this long after its first byte drops the connection (MQTT_PACKET_TIMEOUT). */
  packetDeadlineMs: number
  /** Bytes of incomplete packets over all connections (1,000 half-sent 262 KB packets held 264 MB). */
  partialBytesMax: number
  /** QoS 2 PUBLISH awaiting PUBREL per client (Aedes allows 1,000, each up to MQTT_MAX_PACKET). */
  maxInflightInbound: number
  maxTopicLevels: number
  maxSubscriptions: number
  maxClientRetained: number
  maxClientRetainedBytes: number
  maxPersistentSessions: number
  sessionExpiryMs: number
  sessionQueueMessages: number
  sessionQueueBytes: number
  loginFailures: number
  loginLockoutMs: number
}

export function brokerLimits(config: Config): BrokerLimits {
  return {
    maxConnections: config.MQTT_MAX_CONNECTIONS,
    connectTimeoutMs: config.MQTT_CONNECT_TIMEOUT * 1000,
    packetDeadlineMs: config.MQTT_PACKET_TIMEOUT * 1000,
    partialBytesMax: config.MQTT_PARTIAL_BYTES,
    maxInflightInbound: config.MQTT_MAX_INFLIGHT,
    maxTopicLevels: config.MQTT_MAX_TOPIC_LEVELS,
    maxSubscriptions: config.MQTT_MAX_SUBSCRIPTIONS,
    maxClientRetained: config.MQTT_MAX_RETAINED,
    maxClientRetainedBytes: config.MQTT_MAX_RETAINED_BYTES,
    maxPersistentSessions: config.MQTT_MAX_SESSIONS,
    sessionExpiryMs: config.MQTT_SESSION_EXPIRY * 1000,
    sessionQueueMessages: config.MQTT_SESSION_QUEUE,
    sessionQueueBytes: config.MQTT_SESSION_QUEUE_BYTES,
    loginFailures: config.MQTT_LOGIN_FAILURES,
    loginLockoutMs: config.MQTT_LOGIN_LOCKOUT * 1000,
  }
}

/** The limits the settings give when none is set (the schema holds every default). */
export function defaultBrokerLimits(): BrokerLimits {
  return brokerLimits(configSchema.parse({}))
}

/** The options Aedes itself takes for these limits (aedes.js `defaultOptions`). */
export function aedesLimits(limits: BrokerLimits) {
  return {
    connectTimeout: limits.connectTimeoutMs,
    maxInflightInbound: limits.maxInflightInbound,
    maxTopicLevels: limits.maxTopicLevels,
  }
}

export interface ConnectionLimits {
  /**
   * Takes a new connection or refuses it (destroyed at once) when MQTT_MAX_CONNECTIONS are open; a taken
   * one has its packets guarded (packet-guard.ts) until it closes. Returns whether it was taken.
   */
  admit(stream: Duplex, remote: string | undefined): boolean
  open(): number
  /** The connections taken and not closed yet. */
  streams(): Duplex[]
  partialBytes(): number
}

export function createConnectionLimits(
  options: Pick<BrokerLimits, 'maxConnections' | 'packetDeadlineMs' | 'partialBytesMax'> & {
    maxPacketBytes: number
  },
  deps: { log: Logger; monotonic: () => number },
): ConnectionLimits {
  const warn = limitedWarn(deps.log, deps.monotonic)
  // The guard's record of each connection is also its place in the count: nothing else is kept per socket.
  const guard = createPacketGuard({
    maxBytes: options.maxPacketBytes,
    deadlineMs: options.packetDeadlineMs,
    partialBytesMax: options.partialBytesMax,
    onRefused(remote, refusal) {
      const fields = { remote, ...refusal }
      if (refusal.reason === 'too large')
        warn({ ...fields, limit: options.maxPacketBytes }, 'MQTT packet too large')
      else warn(fields, 'MQTT connection dropped: a packet held too long or too much')
    },
  })

  return {
    admit(stream, remote) {
      if (guard.size() >= options.maxConnections) {
        warn(
          { remote, limit: options.maxConnections },
          'MQTT connection refused: MQTT_MAX_CONNECTIONS reached',
        )
        stream.destroy()
        return false
      }
      guard.guard(stream, remote)
      return true
    },
    open: () => guard.size(),
    streams: () => guard.streams(),
    partialBytes: () => guard.heldBytes(),
  }
}
