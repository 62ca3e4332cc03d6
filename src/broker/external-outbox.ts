import type { Logger } from 'pino'

/*
 * Frame chunks on their way to an external broker, per frame topic: up to one frame's worth in flight (QoS 1,
 * in order on the one connection), the rest waiting here, and a newer frame for a topic replaces what of the
 * older one still waits. A frame goes out whole without waiting for acknowledgements between its chunks: a
 * window of a few chunks made each frame wait for several broker round trips, and a bridge on Mosquitto
 * delivered frames more slowly than a plain publisher of the same bytes (bench/fanout.ts, path (b)). Memory
 * stays bounded by two frames per device (one in mqtt.js's hands, one waiting) while the broker is away; what
 * mqtt.js holds in flight it sends again after the reconnect (the session is persistent), and the rest
 * follows once connected.
 */

interface TopicQueue {
  /** The frame being sent, and how many of its chunks went to mqtt.js already. */
  frame: readonly Buffer[]
  next: number
  inFlight: number
  /** Chunks of this topic that may be in flight at once: the length of the frame last queued. */
  window: number
  /** The identity of the frame this queue is busy with: a resend of it is not queued twice. */
  tag: string | undefined
}

export interface TopicOutbox {
  /** Queues a frame's chunks; false when the same tagged frame is still on its way. */
  send(topic: string, chunks: readonly Buffer[], tag?: string): boolean
  /** The link is back: go on with what waits. */
  resume(): void
  queuedChunks(): number
  /** The topics with chunks still to go. */
  topics(): string[]
}

export function createTopicOutbox(deps: {
  /** Hands a chunk to the client at QoS 1; `done` runs once the broker acknowledged it, or it failed. */
  publish(topic: string, payload: Buffer, done: (err?: Error) => void): void
  connected(): boolean
  log: Logger
}): TopicOutbox {
  const queues = new Map<string, TopicQueue>()

  const waiting = (q: TopicQueue) => q.frame.length - q.next

  function pump(topic: string, q: TopicQueue): void {
    // A callback, not a promise per chunk: thousands of chunks a second go through here.
    while (q.inFlight < q.window && q.next < q.frame.length && deps.connected()) {
      const payload = q.frame[q.next++]!
      q.inFlight++
      deps.publish(topic, payload, (err) => {
        if (err) deps.log.warn({ topic, reason: err.message }, 'frame chunk not delivered')
        settle(topic, q)
      })
    }
  }

  function settle(topic: string, q: TopicQueue): void {
    q.inFlight--
    if (q.inFlight === 0 && waiting(q) === 0) {
      if (queues.get(topic) === q) queues.delete(topic)
      return
    }
    pump(topic, q)
  }

  return {
    send(topic, chunks, tag) {
      const q = queues.get(topic) ?? { frame: [], next: 0, inFlight: 0, window: 1, tag: undefined }
      if (tag !== undefined && q.tag === tag) return false
      q.frame = chunks
      q.next = 0
      q.window = Math.max(1, chunks.length)
      q.tag = tag
      queues.set(topic, q)
      pump(topic, q)
      return true
    },
    resume() {
      for (const [topic, q] of queues) pump(topic, q)
    },
    queuedChunks() {
      let n = 0
      for (const q of queues.values()) n += waiting(q) + q.inFlight
      return n
    },
    topics: () => [...queues.keys()],
  }
}
