import { Readable } from 'node:stream'

/*
 * The queue of QoS 1 and 2 messages Aedes keeps per persistent session (clean session 0), bounded (issue
 * 10: a session kept across a disconnect must not grow without end). It replaces the outgoing half of
 * Aedes' in-memory persistence (aedes-persistence `asyncPersistence.js`, whose queues have no bound and
 * keep an empty queue for every client id that ever acknowledged a message) with the same behaviour plus:
 *
 * - at most MQTT_SESSION_QUEUE messages per session and MQTT_SESSION_QUEUE_BYTES over all sessions; past
 *   either a new message is not kept for that session (as Mosquitto's max_queued_messages does): a
 *   connected client still gets it once, an offline one never does;
 * - a queue that empties is forgotten, so random client ids leave nothing behind;
 * - only subscriptions the broker granted are stored for a session (Aedes stores every filter of a
 *   SUBSCRIBE packet once one of them is granted, refused ones included).
 */

interface QueuedPacket {
  cmd: string
  brokerId: string
  brokerCounter: number
  topic: string
  payload: Buffer | string
  qos: number
  retain: boolean
  dup: boolean
  messageId?: number | undefined
  [key: string]: unknown
}

interface Subscriber {
  clientId: string
}

/** The methods of Aedes' persistence this store takes over or filters. */
interface Persistence {
  outgoingEnqueue(sub: Subscriber, packet: QueuedPacket): Promise<void>
  outgoingEnqueueCombi(subs: Subscriber[], packet: QueuedPacket): Promise<void>
  outgoingUpdate(client: { id: string }, packet: QueuedPacket): Promise<void>
  outgoingClearMessageId(client: { id: string }, packet: { messageId?: number }): Promise<unknown>
  outgoingStream(client: { id: string }): Readable
  addSubscriptions(client: { id: string }, subs: { topic: string }[]): Promise<void>
}

export interface SessionStore {
  /** Takes over the outgoing queues of `persistence` (the broker's, once it listens). */
  install(persistence: unknown, granted: (client: { id: string }, filter: string) => boolean): void
  /** Drops what is queued for a session that ends. */
  forget(clientId: string): void
  report(): { sessions: number; messages: number; bytes: number; dropped: number }
}

/** What a message costs beyond its payload and topic: the packet object and its queue slot. */
const PACKET_OVERHEAD_BYTES = 100

export function createSessionStore(
  options: { perSession: number; totalBytes: number },
  onDropped: (clientId: string, reason: 'session queue full' | 'all session queues full') => void,
): SessionStore {
  const queues = new Map<string, QueuedPacket[]>()
  let bytes = 0
  let dropped = 0

  // A PUBREL that took a PUBLISH's place has neither payload nor topic.
  const sizeOf = (p: QueuedPacket) =>
    Buffer.byteLength(p.payload ?? '') + Buffer.byteLength(p.topic ?? '') + PACKET_OVERHEAD_BYTES

  function remove(clientId: string, queue: QueuedPacket[], index: number): QueuedPacket {
    const [packet] = queue.splice(index, 1)
    bytes -= sizeOf(packet!)
    if (queue.length === 0) queues.delete(clientId)
    return packet!
  }

  function enqueue(clientId: string, packet: QueuedPacket): void {
    const queue = queues.get(clientId) ?? []
    const copy = copyPacket(packet)
    const size = sizeOf(copy)
    if (queue.length >= options.perSession || bytes + size > options.totalBytes) {
      dropped++
      onDropped(
        clientId,
        queue.length >= options.perSession ? 'session queue full' : 'all session queues full',
      )
      return
    }
    queue.push(copy)
    queues.set(clientId, queue)
    bytes += size
  }

  return {
    install(target, granted) {
      const p = target as Persistence
      const addSubscriptions = p.addSubscriptions.bind(p)
      p.addSubscriptions = (client, subs) =>
        addSubscriptions(
          client,
          subs.filter((s) => granted(client, s.topic)),
        )
      p.outgoingEnqueue = async (sub, packet) => enqueue(sub.clientId, packet)
      p.outgoingEnqueueCombi = async (subs, packet) => {
        for (const sub of subs) enqueue(sub.clientId, packet)
      }
      p.outgoingUpdate = async (client, packet) => {
        const queue = queues.get(client.id) ?? []
        for (let i = 0; i < queue.length; i++) {
          const kept = queue[i]!
          if (kept.brokerId === packet.brokerId) {
            if (kept.brokerCounter === packet.brokerCounter) {
              kept.messageId = packet.messageId
              return
            }
          } else if (kept.messageId === packet.messageId) {
            // A PUBREL in place of the PUBLISH it follows (QoS 2), as Aedes' own store does.
            bytes += sizeOf(packet) - sizeOf(kept)
            queue[i] = packet
            return
          }
        }
        // Not kept (its session's queue was full): it is sent once and not stored.
      }
      p.outgoingClearMessageId = async (client, packet) => {
        const queue = queues.get(client.id)
        if (!queue) return undefined
        const i = queue.findIndex((kept) => kept.messageId === packet.messageId)
        return i === -1 ? undefined : remove(client.id, queue, i)
      }
      // A copy of the list, so acknowledgements that arrive while it is read do not shift it.
      p.outgoingStream = (client) => Readable.from([...(queues.get(client.id) ?? [])])
    },
    forget(clientId) {
      const queue = queues.get(clientId)
      if (!queue) return
      for (const packet of queue) bytes -= sizeOf(packet)
      queues.delete(clientId)
    },
    report: () => ({
      sessions: queues.size,
      messages: [...queues.values()].reduce((n, q) => n + q.length, 0),
      bytes,
      dropped,
    }),
  }
}

/** A copy for one session's queue, as aedes-packet makes it: the packet identifier is the session's own. */
function copyPacket(p: QueuedPacket): QueuedPacket {
  const copy: QueuedPacket = {
    ...p,
    cmd: p.cmd || 'publish',
    payload: p.payload ?? Buffer.alloc(0),
    qos: p.qos || 0,
    retain: p.retain || false,
    dup: p.dup || false,
  }
  if (copy.qos > 0 || copy.cmd !== 'publish') copy.messageId = undefined
  return copy
}
