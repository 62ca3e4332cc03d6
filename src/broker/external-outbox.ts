import type { Logger } from 'pino'

/*
 * Frame chunks on their way to an external broker, per frame topic: a few at a time in flight (QoS 1, in
 * order), the rest waiting here, and a newer frame for a topic replaces what of the older one still waits.
 * Memory stays bounded by one frame per device while the broker is away; what mqtt.js holds in flight it
 * sends again after the reconnect (the session is persistent), and the rest follows once connected.
 */

/** Chunks per topic handed to mqtt.js and not yet acknowledged. */
const WINDOW = 4

interface TopicQueue {
  waiting: Buffer[]
  inFlight: number
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
  publish(topic: string, payload: Buffer): Promise<void>
  connected(): boolean
  log: Logger
}): TopicOutbox {
  const queues = new Map<string, TopicQueue>()

  function pump(topic: string, q: TopicQueue): void {
    while (deps.connected() && q.inFlight < WINDOW && q.waiting.length > 0) {
      const payload = q.waiting.shift()!
      q.inFlight++
      deps.publish(topic, payload).then(
        () => settle(topic, q),
        (err: unknown) => {
          deps.log.warn({ topic, reason: (err as Error).message }, 'frame chunk not delivered')
          settle(topic, q)
        },
      )
    }
  }

  function settle(topic: string, q: TopicQueue): void {
    q.inFlight--
    if (q.inFlight === 0 && q.waiting.length === 0) {
      if (queues.get(topic) === q) queues.delete(topic)
      return
    }
    pump(topic, q)
  }

  return {
    send(topic, chunks, tag) {
      const q = queues.get(topic) ?? { waiting: [], inFlight: 0, tag: undefined }
      if (tag !== undefined && q.tag === tag) return false
      q.waiting = [...chunks]
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
      for (const q of queues.values()) n += q.waiting.length + q.inFlight
      return n
    },
    topics: () => [...queues.keys()],
  }
}
