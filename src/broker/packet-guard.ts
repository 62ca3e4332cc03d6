import type { Duplex } from 'node:stream'

/*
 * Aedes 1.x accepts any packet size MQTT allows (256 MiB) and buffers it whole before a hook sees it
 * (`lib/client.js`, its parser). This guard reads the fixed header of each MQTT packet as the bytes arrive
 * (MQTT 3.1.1 section 2.2: one type byte, then the Remaining Length in 1-4 bytes of 7 bits each) and
 * destroys the connection as soon as a packet announces more than the limit. It also bounds what half-sent
 * packets may hold (issue 10, "Found by attacking it": all but the last byte of a 262 KB PUBLISH, keepalive
 * 0, held forever): a packet must be complete within a deadline of its first byte, and the bytes of
 * incomplete packets over all connections share one budget.
 */

export type PacketRefusal =
  | { reason: 'too large'; size: number }
  | { reason: 'too slow'; heldBytes: number }
  | { reason: 'over budget'; heldBytes: number }

export interface PacketGuardOptions {
  maxBytes: number
  /** A packet that is not complete this long after its first byte drops the connection. */
  deadlineMs: number
  /** Shared by every connection: the bytes of packets begun and not yet complete. */
  budget: PartialBudget
  onRefused(refusal: PacketRefusal): void
}

type State =
  | { phase: 'type' }
  | { phase: 'length'; value: number; shift: number }
  | { phase: 'body'; left: number }

export function guardPackets(socket: Duplex, options: PacketGuardOptions): void {
  let state: State = { phase: 'type' }
  /** Bytes of the packet under way, fixed header included. */
  let held = 0
  let timer: NodeJS.Timeout | null = null
  const { budget } = options

  function refuse(refusal: PacketRefusal): void {
    options.onRefused(refusal)
    socket.destroy()
  }

  const stopTimer = () => {
    if (timer) clearTimeout(timer)
    timer = null
  }
  socket.once('close', () => {
    stopTimer()
    budget.set(socket, 0)
  })
  budget.onEvict(socket, () => refuse({ reason: 'over budget', heldBytes: held }))

  socket.on('data', (data: Buffer) => {
    let i = 0
    let begun = false
    while (i < data.length) {
      if (state.phase === 'type') {
        state = { phase: 'length', value: 0, shift: 0 }
        held = 1
        begun = true
        i++
      } else if (state.phase === 'length') {
        const byte = data[i++]!
        held++
        const value = state.value + (byte & 0x7f) * 2 ** state.shift
        if (byte & 0x80) {
          // More than 4 length bytes is malformed; Aedes' parser rejects it, so leave that to the parser.
          state = state.shift >= 21 ? { phase: 'type' } : { phase: 'length', value, shift: state.shift + 7 }
          continue
        }
        if (value > options.maxBytes) {
          refuse({ reason: 'too large', size: value })
          return
        }
        state = value === 0 ? { phase: 'type' } : { phase: 'body', left: value }
      } else {
        const take = Math.min(state.left, data.length - i)
        i += take
        held += take
        state = state.left === take ? { phase: 'type' } : { phase: 'body', left: state.left - take }
      }
    }
    if (state.phase === 'type') {
      held = 0
      stopTimer()
    } else if (begun || timer === null) {
      // The packet left incomplete began in this chunk: its deadline counts from now.
      stopTimer()
      timer = setTimeout(() => refuse({ reason: 'too slow', heldBytes: held }), options.deadlineMs)
      timer.unref()
    }
    budget.set(socket, state.phase === 'type' ? 0 : held)
  })
}

/**
 * The bytes all connections hold in incomplete packets. Past the limit the connection holding the most is
 * dropped (a display's packets are small and complete at once; a trickling attacker holds the most).
 */
export interface PartialBudget {
  set(socket: Duplex, bytes: number): void
  onEvict(socket: Duplex, evict: () => void): void
  heldBytes(): number
}

export function createPartialBudget(maxBytes: number): PartialBudget {
  const held = new Map<Duplex, number>()
  const evictors = new WeakMap<Duplex, () => void>()
  let total = 0
  return {
    set(socket, bytes) {
      total += bytes - (held.get(socket) ?? 0)
      if (bytes === 0) held.delete(socket)
      else held.set(socket, bytes)
      while (total > maxBytes) {
        let largest: Duplex | undefined
        let most = 0
        for (const [s, n] of held) {
          if (n > most) {
            most = n
            largest = s
          }
        }
        if (!largest) break
        total -= most
        held.delete(largest)
        evictors.get(largest)?.()
      }
    },
    onEvict: (socket, evict) => evictors.set(socket, evict),
    heldBytes: () => total,
  }
}
