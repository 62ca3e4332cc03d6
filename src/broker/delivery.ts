import type { Client } from 'aedes'
import type { Logger } from 'pino'
import { topicMatches } from '../protocol/topics.ts'
import type { SubscriptionIndex } from './subscription-index.ts'

/*
 * Frame delivery that no single device can stall. Aedes fans every broker.publish() out through one
 * broker-wide queue with a fixed number of slots, so one display that stops reading would hold up frames
 * for everyone. Frames therefore skip that queue: each subscribed client
 * gets its own small outbox and is written to directly with client.publish(). Memory per client stays
 * bounded because a newer frame on a topic replaces whatever of the older one has not been written yet.
 *
 * The subscribers of a frame come from the broker's subscription index (subscription-index.ts), so a frame
 * costs in proportion to the clients subscribed to its topic, not to all those connected (issue 14).
 */

/** Chunks handed to a client's socket and not yet flushed; more waits in the outbox. */
const WRITE_WINDOW = 4

/*
 * Aedes drops a packet for a client when it has already delivered one with a higher (brokerId, counter) to
 * that client, a guard against loops in clusters. Direct publishes would take counters from the broker's own
 * sequence and overtake retained status messages that are still being stored, which Aedes would then drop.
 * Frames therefore carry a sequence of their own under a separate id; they reach each client in order.
 */
const FRAME_SEQUENCE_ID = 'pico-a1111-bridge/frames'

interface Outgoing {
  topic: string
  payload: Buffer
  qos: 0 | 1
}

interface Outbox {
  client: Client
  queue: Outgoing[]
  inFlight: number
  /** What the outbox is busy with, per topic: a resend of the same frame is not queued twice. */
  pending: Map<string, string>
  /**
   * A resend asked for once every chunk of the same frame was handed to the socket but before the writes
   * were done: the client may hold the whole frame already and be asking again, so it goes once they are.
   */
  again: Map<string, { chunks: readonly Buffer[]; qos: 0 | 1; tag: string }>
}

/** The part of Aedes' client the typings leave out: its subscriptions, keyed by filter. */
type ClientWithSubscriptions = Client & { subscriptions?: Record<string, { qos: number } | undefined> }

/** The filters a client subscribed with (Aedes keeps them on the client object). */
export function subscriptionFilters(client: Client): string[] {
  return Object.keys((client as ClientWithSubscriptions).subscriptions ?? {})
}

export interface FrameDelivery {
  /**
   * Queues chunks for every connected client whose subscriptions match `topic`. Chunks of an older frame on
   * the same topic that are still waiting are dropped first. With a `tag` (the frame's identity), a client
   * still receiving the same frame is left out. Returns how many clients will get the frame.
   */
  send(topic: string, chunks: readonly Buffer[], tag?: string): number
  /**
   * Queues chunks for one client (a frame resent because it subscribed or asked). With a `tag`, nothing is
   * queued while the same frame is still on its way to that client. Returns whether the chunks were queued.
   */
  sendTo(client: Client, topic: string, chunks: readonly Buffer[], tag?: string): boolean
  /** The QoS a client's subscriptions grant for `topic`, or null when it is not subscribed. */
  grantedQos(client: Client, topic: string): 0 | 1 | null
  /** Forgets a client that went away, with whatever was waiting for it. */
  forget(client: Client): void
  /** Chunks waiting in all outboxes (for health and metrics). */
  queuedChunks(): number
}

export function createFrameDelivery(deps: {
  /** Who holds which filter, kept current by the broker from Aedes' subscription events. */
  subscribers: SubscriptionIndex<Client>
  log: Logger
  onChunkSent?: (bytes: number) => void
  /** Whether the access rules let `client` read `topic` (an ACL file can refuse part of a wildcard). */
  mayRead?: (client: Client, topic: string) => boolean
  /** A closed client was found in the index (Aedes never said it disconnected): the broker forgets it. */
  closedFound?: (client: Client) => void
}): FrameDelivery {
  const outboxes = new Map<Client, Outbox>()
  let sequence = 0

  /** The QoS one filter of a client grants a frame, or null when Aedes no longer has it. */
  function qosOf(client: Client, filter: string): 0 | 1 | null {
    const sub = (client as ClientWithSubscriptions).subscriptions?.[filter]
    if (!sub) return null
    // Frames go at QoS 1 at most. A persistent (clean=false) session would make Aedes store every QoS 1
    // frame for an offline client without bound, so those get QoS 0.
    return sub.qos >= 1 && client.clean ? 1 : 0
  }

  function grantedQos(client: Client, topic: string): 0 | 1 | null {
    if (deps.mayRead?.(client, topic) === false) return null
    let best: 0 | 1 | null = null
    for (const filter of deps.subscribers.filtersOf(client)) {
      if (!topicMatches(filter, topic)) continue
      const qos = qosOf(client, filter)
      if (qos !== null && (best === null || qos > best)) best = qos
    }
    return best
  }

  /** The clients subscribed to `topic`, each with the best QoS its matching filters grant. */
  function subscribersOf(topic: string): Map<Client, 0 | 1> {
    const found = new Map<Client, 0 | 1>()
    let gone: Client[] | undefined
    deps.subscribers.match(topic, (client, filter) => {
      if (client.closed) {
        gone ??= []
        gone.push(client)
        return
      }
      const qos = qosOf(client, filter)
      if (qos === null) return
      const had = found.get(client)
      if (had === undefined || qos > had) found.set(client, qos)
    })
    // A client Aedes closed without telling (it never said it disconnected) is not visited again.
    if (gone) for (const client of gone) deps.closedFound?.(client)
    return found
  }
  function outboxOf(client: Client): Outbox {
    let box = outboxes.get(client)
    if (!box) {
      box = { client, queue: [], inFlight: 0, pending: new Map(), again: new Map() }
      outboxes.set(client, box)
    }
    return box
  }

  function enqueue(client: Client, topic: string, chunks: readonly Buffer[], qos: 0 | 1, tag?: string): void {
    const box = outboxOf(client)
    box.queue = box.queue.filter((o) => o.topic !== topic)
    box.again.delete(topic)
    if (tag === undefined) box.pending.delete(topic)
    else box.pending.set(topic, tag)
    for (const payload of chunks) box.queue.push({ topic, payload, qos })
    pump(box)
  }

  function pump(box: Outbox): void {
    while (box.inFlight < WRITE_WINDOW && box.queue.length > 0) {
      const next = box.queue.shift()!
      if (box.client.closed) {
        forget(box.client)
        return
      }
      box.inFlight++
      box.client.publish(
        {
          cmd: 'publish',
          topic: next.topic,
          payload: next.payload,
          qos: next.qos,
          retain: false,
          dup: false,
          ...{ brokerId: FRAME_SEQUENCE_ID, brokerCounter: ++sequence },
        },
        (err) => {
          box.inFlight--
          if (err) {
            deps.log.debug({ err, clientId: box.client.id }, 'frame chunk not delivered')
            forget(box.client)
            return
          }
          deps.onChunkSent?.(next.payload.length)
          if (box.queue.length === 0 && box.inFlight === 0) {
            box.pending.clear()
            const again = [...box.again]
            box.again.clear()
            for (const [topic, a] of again) enqueue(box.client, topic, a.chunks, a.qos, a.tag)
          }
          if (outboxes.get(box.client) === box) pump(box)
        },
      )
    }
  }

  /**
   * Whether the same frame is still on its way to the client, so a resend is not queued. One asked for
   * after its last chunk was handed over is kept for when the writes are done (a client that stopped
   * reading never gets there, and holds one frame at most).
   */
  function onItsWay(client: Client, topic: string, chunks: readonly Buffer[], qos: 0 | 1, tag?: string) {
    const box = outboxes.get(client)
    if (tag === undefined || box?.pending.get(topic) !== tag) return false
    if (!box.queue.some((o) => o.topic === topic)) box.again.set(topic, { chunks, qos, tag })
    return true
  }

  function forget(client: Client): void {
    const box = outboxes.get(client)
    if (box) box.queue.length = 0
    outboxes.delete(client)
  }

  return {
    send(topic, chunks, tag) {
      let count = 0
      for (const [client, qos] of subscribersOf(topic)) {
        if (deps.mayRead?.(client, topic) === false) continue
        if (onItsWay(client, topic, chunks, qos, tag)) continue
        enqueue(client, topic, chunks, qos, tag)
        count++
      }
      return count
    },
    sendTo(client, topic, chunks, tag) {
      const qos = grantedQos(client, topic)
      if (qos === null || client.closed) return false
      if (onItsWay(client, topic, chunks, qos, tag)) return false
      enqueue(client, topic, chunks, qos, tag)
      return true
    },
    grantedQos,
    forget,
    queuedChunks() {
      let n = 0
      for (const box of outboxes.values()) n += box.queue.length + box.inFlight
      return n
    },
  }
}
