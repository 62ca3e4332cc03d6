import { once } from 'node:events'
import { createServer, type Server, type Socket } from 'node:net'
import { Aedes, type AuthorizePublishHandler, type Client } from 'aedes'
import type { Logger } from 'pino'
import { createFrameDelivery, type FrameDelivery } from './delivery.ts'
import { guardPacketSize } from './packet-guard.ts'

/*
 * The embedded MQTT broker (Aedes 1.x, MQTT 3.1.1): the only module that talks to Aedes. It hands the
 * messages devices send to the bridge to `onInbound`, publishes retained status, and delivers frames
 * through the per-client outboxes of delivery.ts.
 */

/** Aedes destroys a client whose socket has not drained for this long (its default of 60 s is too lenient). */
const DRAIN_TIMEOUT_MS = 15_000
/*
 * Aedes drops a message for a client that was already sent one with a higher (brokerId, counter), a guard
 * against loops in clusters. Retained messages take longer to get through Aedes (they are stored first), so
 * a prompt a client publishes right after could overtake a status the bridge published before it, and the
 * status would be dropped for anyone subscribed to both (a `pico/#` dashboard). The bridge's retained
 * messages therefore count under an id of their own; among themselves they stay in order.
 */
const RETAINED_SEQUENCE_ID = 'pico-a1111-bridge/retained'

/** How long clients get to read what is left and close on a stop. */
const SOCKET_END_GRACE_MS = 1_000

export interface InboundMessage {
  topic: string
  payload: Buffer
  clientId: string
}

export interface BrokerOptions {
  host: string
  port: number
  maxPacketBytes: number
}

export interface BrokerEvents {
  /**
   * A message from a client on a topic the bridge reads. The broker acknowledges it (QoS 1 PUBACK) once the
   * promise settles, so what the handler records is recorded before the sender hears it arrived.
   */
  onInbound(msg: InboundMessage): Promise<void>
  /** A client subscribed; `filters` are the ones granted. */
  onSubscribe(client: Client, filters: string[]): void
  onClientChange?(connected: number): void
}

export interface EmbeddedBroker {
  start(): Promise<{ port: number }>
  stop(): Promise<void>
  /** Publishes a retained message through the broker (status, bridge state). */
  publishRetained(topic: string, payload: string | Buffer): Promise<void>
  readonly delivery: FrameDelivery
  connectedClients(): number
  /** The connected clients, for working out which devices are online. */
  clients(): Iterable<Client>
}

export function createEmbeddedBroker(
  options: BrokerOptions,
  events: BrokerEvents,
  deps: { log: Logger; isInbound: (topic: string) => boolean; onChunkSent?: (bytes: number) => void },
): EmbeddedBroker {
  const log = deps.log
  const clients = new Map<string, Client>()
  let aedes: Aedes | null = null
  let server: Server | null = null
  let stopping: Promise<void> | null = null
  let retainedSequence = 0
  const sockets = new Set<Socket>()

  const delivery = createFrameDelivery({
    clients: () => clients.values(),
    log,
    onChunkSent: deps.onChunkSent,
  })

  const authorizePublish: AuthorizePublishHandler = (client, packet, callback) => {
    // Aedes' default rule, kept: clients may not publish into $SYS (aedes#597).
    if (packet.topic.startsWith('$SYS/')) {
      callback(new Error('$SYS topics are reserved for the broker'))
      return
    }
    if (!client || !deps.isInbound(packet.topic)) {
      callback(null)
      return
    }
    // The acknowledgement (QoS 1 PUBACK) waits for intake, which has the prompt on disk by then. Only this
    // client's next packets wait meanwhile; other clients are not held up.
    Promise.resolve()
      .then(() =>
        events.onInbound({ topic: packet.topic, payload: toBuffer(packet.payload), clientId: client.id }),
      )
      .catch((err: unknown) => {
        // A bug in intake must not cost the client its connection; the message is logged and acknowledged.
        log.error({ err, topic: packet.topic, clientId: client.id }, 'inbound message handler failed')
      })
      .finally(() => callback(null))
  }

  function trackClients(broker: Aedes): void {
    broker.on('clientReady', (client) => {
      clients.set(client.id, client)
      log.debug({ clientId: client.id, clean: client.clean }, 'client connected')
      events.onClientChange?.(clients.size)
    })
    broker.on('clientDisconnect', (client) => {
      if (clients.get(client.id) === client) clients.delete(client.id)
      delivery.forget(client)
      log.debug({ clientId: client.id }, 'client disconnected')
      events.onClientChange?.(clients.size)
    })
    broker.on('subscribe', (subs, client) => {
      // Aedes reports a refused subscription with the SUBACK failure code 128 in place of a QoS.
      const granted = subs.filter((s) => (s.qos as number) !== 128).map((s) => s.topic)
      if (granted.length > 0) events.onSubscribe(client, granted)
    })
    broker.on('clientError', (client, err) => {
      log.debug({ clientId: client.id, err: err.message }, 'client error')
    })
    broker.on('connectionError', (_client, err) => {
      log.debug({ err: err.message }, 'connection error')
    })
  }

  return {
    delivery,
    connectedClients: () => clients.size,
    clients: () => clients.values(),

    async start() {
      const broker = new Aedes({ authorizePublish, drainTimeout: DRAIN_TIMEOUT_MS, concurrency: 1000 })
      await broker.listen()
      trackClients(broker)
      aedes = broker
      const srv = createServer((socket) => {
        sockets.add(socket)
        socket.once('close', () => sockets.delete(socket))
        guardPacketSize(socket, options.maxPacketBytes, (size) => {
          log.warn(
            { remote: socket.remoteAddress, size, limit: options.maxPacketBytes },
            'MQTT packet too large',
          )
        })
        broker.handle(socket)
      })
      server = srv
      srv.listen({ host: options.host, port: options.port })
      await Promise.race([
        once(srv, 'listening'),
        once(srv, 'error').then(([err]) => {
          throw err
        }),
      ])
      const address = srv.address()
      return { port: typeof address === 'object' && address ? address.port : options.port }
    },

    publishRetained(topic, payload) {
      const broker = aedes
      if (!broker) return Promise.reject(new Error('broker is not running'))
      return new Promise((resolve, reject) => {
        broker.publish(
          {
            cmd: 'publish',
            topic,
            payload: Buffer.from(payload),
            qos: 1,
            retain: true,
            dup: false,
            ...{ brokerId: RETAINED_SEQUENCE_ID, brokerCounter: ++retainedSequence },
          },
          (err) => (err ? reject(err) : resolve()),
        )
      })
    },

    stop() {
      stopping ??= (async () => {
        const srv = server
        const broker = aedes
        if (srv) srv.close()
        // Half-close first so what was already written (the retained offline state, the last bands) reaches
        // the clients; Aedes' own close destroys sockets outright.
        await endSockets(sockets, SOCKET_END_GRACE_MS)
        if (broker) await new Promise<void>((resolve) => broker.close(() => resolve()))
        clients.clear()
      })()
      return stopping
    },
  }
}

async function endSockets(sockets: Set<Socket>, graceMs: number): Promise<void> {
  const closed = [...sockets].map((socket) => {
    socket.end()
    return once(socket, 'close').catch(() => undefined)
  })
  const timer = new Promise((resolve) => setTimeout(resolve, graceMs).unref())
  await Promise.race([Promise.all(closed), timer])
  for (const socket of sockets) socket.destroy()
}

function toBuffer(payload: string | Buffer): Buffer {
  return typeof payload === 'string' ? Buffer.from(payload) : payload
}
