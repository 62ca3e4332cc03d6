import type { Duplex } from 'node:stream'

/*
 * Aedes 1.x accepts any packet size MQTT allows (256 MiB) and buffers it whole before a hook sees it
 * (`lib/client.js`, its parser). This guard reads the fixed header of each MQTT packet as the bytes arrive
 * (MQTT 3.1.1 section 2.2: one type byte, then the Remaining Length in 1-4 bytes of 7 bits each) and
 * destroys the connection as soon as a packet announces more than the limit. It also bounds what half-sent
 * packets may hold (issue 10, "Found by attacking it": all but the last byte of a 262 KB PUBLISH, keepalive
 * 0, held forever): a packet must be complete within a deadline of its first byte, and the bytes of
 * incomplete packets over all connections share one budget; past it the connection holding the most is
 * dropped (a display's packets are small and complete at once; a trickling attacker holds the most).
 *
 * Every idle display is one connection here (issue 14, goal 3: memory per idle display), so each costs one
 * small record of numbers and one map entry; the 'data' and 'close' listeners are shared by all connections,
 * and a timer exists only while a packet is incomplete.
 */

export type PacketRefusal =
  | { reason: 'too large'; size: number }
  | { reason: 'too slow'; heldBytes: number }
  | { reason: 'over budget'; heldBytes: number }

export interface PacketGuardOptions {
  maxBytes: number
  /** A packet that is not complete this long after its first byte drops the connection. */
  deadlineMs: number
  /** Bytes of incomplete packets over all connections. */
  partialBytesMax: number
  /** Told before the connection is destroyed; `remote` is what `guard` was given. */
  onRefused(remote: string | undefined, refusal: PacketRefusal): void
}

export interface PacketGuard {
  /** Guards a stream until it closes (then it is forgotten). */
  guard(stream: Duplex, remote: string | undefined): void
  /** Streams guarded and not closed yet. */
  size(): number
  streams(): Duplex[]
  /** The bytes connections hold in incomplete packets. */
  heldBytes(): number
}

/** Where a connection is in its packet: the type byte next, the Remaining Length, or the body. */
const TYPE = 0
const LENGTH = 1
const BODY = 2

interface Connection {
  readonly stream: Duplex
  readonly remote: string | undefined
  phase: typeof TYPE | typeof LENGTH | typeof BODY
  /** The Remaining Length read so far (LENGTH), or the body bytes still to come (BODY). */
  value: number
  shift: number
  /** Bytes of the packet under way, fixed header included. */
  held: number
  /** What this connection counts in the shared budget (its `held` while a packet is incomplete). */
  counted: number
  timer: NodeJS.Timeout | null
}

export function createPacketGuard(options: PacketGuardOptions): PacketGuard {
  const connections = new Map<Duplex, Connection>()
  /** Connections with an incomplete packet; the only ones the budget has to look at. */
  const partial = new Set<Connection>()
  let total = 0

  function count(c: Connection, bytes: number): void {
    total += bytes - c.counted
    c.counted = bytes
    if (bytes === 0) partial.delete(c)
    else partial.add(c)
    while (total > options.partialBytesMax) {
      let largest: Connection | undefined
      for (const p of partial) if (!largest || p.counted > largest.counted) largest = p
      if (!largest) break
      refuse(largest, { reason: 'over budget', heldBytes: largest.held })
    }
  }

  function refuse(c: Connection, refusal: PacketRefusal): void {
    forget(c)
    options.onRefused(c.remote, refusal)
    c.stream.destroy()
  }

  /** Stops the deadline and takes the connection's bytes out of the budget. */
  function forget(c: Connection): void {
    if (c.timer) clearTimeout(c.timer)
    c.timer = null
    total -= c.counted
    c.counted = 0
    partial.delete(c)
  }

  function tooSlow(c: Connection): void {
    c.timer = null
    refuse(c, { reason: 'too slow', heldBytes: c.held })
  }

  function onClose(this: Duplex): void {
    const c = connections.get(this)
    if (!c) return
    connections.delete(this)
    forget(c)
  }

  function onData(this: Duplex, data: Buffer): void {
    const c = connections.get(this)
    if (!c || this.destroyed) return
    let i = 0
    let begun = false
    while (i < data.length) {
      if (c.phase === TYPE) {
        c.phase = LENGTH
        c.value = 0
        c.shift = 0
        c.held = 1
        begun = true
        i++
      } else if (c.phase === LENGTH) {
        const byte = data[i++]!
        c.held++
        // A shift, not 2 ** shift: the sum stays a small integer (at most 28 bits), never a boxed double.
        c.value += (byte & 0x7f) << c.shift
        if (byte & 0x80) {
          // More than 4 length bytes is malformed; Aedes' parser rejects it, so leave that to the parser.
          if (c.shift >= 21) c.phase = TYPE
          else c.shift += 7
          continue
        }
        if (c.value > options.maxBytes) {
          refuse(c, { reason: 'too large', size: c.value })
          return
        }
        c.phase = c.value === 0 ? TYPE : BODY
      } else {
        const take = Math.min(c.value, data.length - i)
        i += take
        c.held += take
        c.value -= take
        if (c.value === 0) c.phase = TYPE
      }
    }
    if (c.phase === TYPE) {
      c.held = 0
      if (c.timer) clearTimeout(c.timer)
      c.timer = null
    } else if (begun || c.timer === null) {
      // The packet left incomplete began in this chunk: its deadline counts from now.
      if (c.timer) clearTimeout(c.timer)
      c.timer = setTimeout(tooSlow, options.deadlineMs, c)
      c.timer.unref()
    }
    if (c.counted !== 0 || c.held !== 0) count(c, c.held)
  }

  return {
    guard(stream, remote) {
      const c: Connection = {
        stream,
        remote,
        phase: TYPE,
        value: 0,
        shift: 0,
        held: 0,
        counted: 0,
        timer: null,
      }
      connections.set(stream, c)
      // 'on', not 'once': a stream closes once, and 'once' wraps each listener in a bound function and a record.
      stream.on('close', onClose)
      stream.on('data', onData)
    },
    size: () => connections.size,
    streams: () => [...connections.keys()],
    heldBytes: () => total,
  }
}
