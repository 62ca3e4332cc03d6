import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { limitedWarn } from './access-hooks.ts'
import { createPartialBudget, guardPackets } from './packet-guard.ts'

/*
 * What one connection may cost the broker before it has logged in, whichever listener it came through
 * (README, "Security"; issue 10, "Limits that hold under abuse"). The limits once a client is in are
 * client-limits.ts.
 */

/** A packet not complete this long after its first byte drops the connection (keepalive 0 or not). */
export const PACKET_DEADLINE_MS = 10_000

/** Bytes of incomplete packets over all connections (1,000 half-sent 262 KB packets held 264 MB). */
export const PARTIAL_BYTES_MAX = 32 * 1024 * 1024

/**
 * Options for Aedes itself (aedes.js `defaultOptions`): a socket that sends no CONNECT is dropped after 5 s
 * (Aedes waits 30 s); a client may hold 16 QoS 2 PUBLISH awaiting PUBREL (Aedes allows 1,000, each up to
 * MQTT_MAX_PACKET); topics and filters are at most 16 levels deep (the bridge's are 3 below its base).
 */
export const AEDES_LIMITS = { connectTimeout: 5_000, maxInflightInbound: 16, maxTopicLevels: 16 } as const

export interface ConnectionLimits {
  /**
   * Takes a new connection or refuses it (destroyed at once) when MQTT_MAX_CONNECTIONS are open; a taken
   * one has its packets guarded (packet-guard.ts). Returns whether it was taken.
   */
  admit(stream: Duplex, remote: string | undefined): boolean
  open(): number
  partialBytes(): number
}

export function createConnectionLimits(
  options: { maxConnections: number; maxPacketBytes: number; deadlineMs?: number; partialBytesMax?: number },
  deps: { log: Logger; monotonic: () => number },
): ConnectionLimits {
  const open = new Set<Duplex>()
  const budget = createPartialBudget(options.partialBytesMax ?? PARTIAL_BYTES_MAX)
  const warn = limitedWarn(deps.log, deps.monotonic)
  const deadlineMs = options.deadlineMs ?? PACKET_DEADLINE_MS

  return {
    admit(stream, remote) {
      if (open.size >= options.maxConnections) {
        warn(
          { remote, limit: options.maxConnections },
          'MQTT connection refused: MQTT_MAX_CONNECTIONS reached',
        )
        stream.destroy()
        return false
      }
      open.add(stream)
      stream.once('close', () => open.delete(stream))
      guardPackets(stream, {
        maxBytes: options.maxPacketBytes,
        deadlineMs,
        budget,
        onRefused(refusal) {
          const fields = { remote, ...refusal }
          if (refusal.reason === 'too large')
            warn({ ...fields, limit: options.maxPacketBytes }, 'MQTT packet too large')
          else warn(fields, 'MQTT connection dropped: a packet held too long or too much')
        },
      })
      return true
    },
    open: () => open.size,
    partialBytes: () => budget.heldBytes(),
  }
}
