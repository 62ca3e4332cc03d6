import { once } from 'node:events'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Aedes, type AuthorizePublishHandler, type Client } from 'aedes'
import type { Logger } from 'pino'
import type { Topics } from '../protocol/topics.ts'
import type { BrokerAccess } from './access.ts'
import { createAccessHooks, remoteOf } from './access-hooks.ts'
import { createClientLimits } from './client-limits.ts'
import { createFrameDelivery, subscriptionFilters } from './delivery.ts'
import { aedesLimits, type BrokerLimits, createConnectionLimits, defaultBrokerLimits } from './limits.ts'
import { createListeners, type ListenerOptions, type Listeners } from './listeners.ts'
import { createMemoryRelease } from './memory-release.ts'
import type { BrokerHandlers, BrokerPort } from './port.ts'
import { createPresence, displayOfFilter } from './presence.ts'
import { createSubscriptionIndex } from './subscription-index.ts'

/*
 * The embedded MQTT broker (Aedes 1.x, MQTT 3.1.1), the first adapter of the broker port and the only module
 * that talks to Aedes. Messages devices send to the bridge go to the port's handlers inside Aedes' publish
 * authorisation, so the PUBACK waits for them; frames go out through the per-client outboxes of delivery.ts.
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

/** After this many new connections and this long without one, V8 gives back what it grew (memory-release.ts). */
const SURGE_CONNECTIONS = 500
const SURGE_QUIET_MS = 5_000

/** How long clients get to read what is left and close on a stop. */
const SOCKET_END_GRACE_MS = 1_000

export type EmbeddedBrokerOptions = ListenerOptions & {
  /** The limits that hold under abuse (limits.ts); unset, the settings' defaults. */
  limits?: BrokerLimits
}

export function createEmbeddedBroker(
  options: EmbeddedBrokerOptions,
  deps: {
    log: Logger
    topics: Topics
    /** Who may connect and do what (MQTT_PASSWORD_FILE, MQTT_ACL_FILE). */
    access: BrokerAccess
    onChunkSent?: (bytes: number) => void
    monotonic?: () => number
  },
): BrokerPort {
  const { log, topics } = deps
  const clients = new Map<string, Client>()
  const monotonic = deps.monotonic ?? (() => performance.now())
  // Limits that hold under abuse (limits.ts, client-limits.ts), for every listener alike.
  const settings = options.limits ?? defaultBrokerLimits()
  const connections = createConnectionLimits(
    { ...settings, maxPacketBytes: options.maxPacketBytes },
    { log, monotonic },
  )
  const limits = createClientLimits(settings, { log, topics, monotonic, connected: (id) => clients.get(id) })
  const hooks = createAccessHooks(deps.access, {
    ...{ log, monotonic, afterLogin: limits.afterLogin },
    login: { failures: settings.loginFailures, lockoutMs: settings.loginLockoutMs },
  })
  let aedes: Aedes | null = null
  let listeners: Listeners | null = null
  let bound: Awaited<ReturnType<Listeners['listen']>> | null = null
  let handlers: BrokerHandlers | null = null
  let closing: Promise<void> | null = null
  let retainedSequence = 0

  // Who holds which filter (for frames) and which displays that makes online, from Aedes' events below.
  const subscribers = createSubscriptionIndex<Client>()
  const presence = createPresence(topics.base)
  const hold = (client: Client, filter: string) => subscribers.add(client, filter) && presence.held(filter)
  const release = (client: Client, filter: string) =>
    subscribers.remove(client, filter) && presence.released(filter)
  const releaseAll = (client: Client) => {
    for (const filter of subscribers.drop(client)) presence.released(filter)
  }

  const delivery = createFrameDelivery({
    subscribers,
    log,
    onChunkSent: deps.onChunkSent,
    mayRead: hooks.mayRead,
    closedFound: releaseAll,
  })
  const surge = createMemoryRelease({
    ...{ afterConnections: SURGE_CONNECTIONS, quietMs: SURGE_QUIET_MS, log },
    busy: () => delivery.queuedChunks() > 0,
  })

  const authorizePublish: AuthorizePublishHandler = (client, packet, callback) => {
    // Aedes' default rule, kept: clients may not publish into $SYS (aedes#597).
    if (packet.topic.startsWith('$SYS/')) {
      callback(new Error('$SYS topics are reserved for the broker'))
      return
    }
    // A refused publish is acknowledged and reaches nobody (access-hooks.ts says why).
    if (!hooks.checkPublish(client, packet)) {
      callback(null)
      return
    }
    limits.checkRetain(client, packet)
    const inbound = client && handlers ? topics.parseInbound(packet.topic) : null
    if (!client || !inbound || !handlers) {
      callback(null)
      return
    }
    const { kind, deviceId, rawId } = inbound
    // The acknowledgement (QoS 1 PUBACK) waits for intake, which has the prompt on disk by then. Only this
    // client's next packets wait meanwhile; other clients are not held up.
    Promise.resolve()
      .then(() =>
        handlers?.inbound({
          ...{ kind, deviceId, rawId, payload: toBuffer(packet.payload), clientId: client.id },
          remote: remoteOf(client),
        }),
      )
      .catch((err: unknown) => {
        // A bug in intake must not cost the client its connection; the message is logged and acknowledged.
        log.error({ err, topic: packet.topic, clientId: client.id }, 'inbound message handler failed')
      })
      .finally(() => callback(null))
  }

  /** Tells the handlers about each device whose frame topic a new subscription covers, once per device. */
  function frameSubscriptions(client: Client, filters: string[]): void {
    const notified = new Set<string>()
    for (const filter of filters) {
      const deviceId = displayOfFilter(filter, topics.base)
      if (deviceId === undefined || notified.has(deviceId)) continue
      notified.add(deviceId)
      handlers?.frameSubscribed(deviceId, client.id)
    }
  }

  function trackClients(broker: Aedes): void {
    broker.on('clientReady', (client) => {
      clients.set(client.id, client)
      // A persistent session's subscriptions come back from the store without a subscribe event.
      for (const filter of subscriptionFilters(client)) hold(client, filter)
      log.debug({ clientId: client.id, clean: client.clean }, 'client connected')
    })
    broker.on('clientDisconnect', (client) => {
      if (clients.get(client.id) === client) clients.delete(client.id)
      delivery.forget(client)
      releaseAll(client)
      log.debug({ clientId: client.id }, 'client disconnected')
    })
    broker.on('subscribe', (subs, client) => {
      // Aedes reports a refused subscription with the SUBACK failure code 128 in place of a QoS.
      const granted = subs.filter((s) => (s.qos as number) !== 128).map((s) => s.topic)
      // A client closed meanwhile has had its disconnect already; it is not indexed again.
      if (granted.length === 0 || client.closed) return
      for (const filter of granted) hold(client, filter)
      frameSubscriptions(client, granted)
    })
    broker.on('unsubscribe', (filters, client) => {
      for (const filter of filters) release(client, filter)
    })
    broker.on('clientError', (client, err) => {
      log.debug({ clientId: client.id, reason: err.message }, 'client error')
    })
    broker.on('connectionError', (_client, err) => {
      log.debug({ reason: err.message }, 'connection error')
    })
  }

  function publishRetained(topic: string, payload: string): Promise<void> {
    const broker = aedes
    if (!broker) return Promise.reject(new Error('the broker is not open'))
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
  }

  return {
    async open(h) {
      handlers = h
      const { authenticate, authorizeSubscribe, authorizeForward } = hooks
      const broker = new Aedes({
        ...{ authenticate, authorizePublish, preConnect: limits.preConnect, ...aedesLimits(settings) },
        authorizeSubscribe: limits.authorizeSubscribe(authorizeSubscribe),
        authorizeForward: limits.authorizeForward(authorizeForward),
        drainTimeout: DRAIN_TIMEOUT_MS,
        concurrency: 1000,
      })
      await broker.listen()
      trackClients(broker)
      limits.attach(broker)
      aedes = broker
      // A user removed from the password file, or given a new password, is not left connected.
      deps.access.onUsersChanged((admitted) => {
        for (const client of clients.values()) {
          const session = hooks.sessionOf(client)
          if (!session || admitted(session)) continue
          log.info({ clientId: client.id, user: session.user }, 'MQTT client disconnected: its login is gone')
          client.close()
        }
      })
    },

    async listen() {
      const broker = aedes
      if (!broker) throw new Error('the broker is not open')
      listeners = createListeners(options, (stream, req) => {
        const remote = (stream as Partial<Socket>).remoteAddress ?? req?.socket.remoteAddress
        // The connection limits keep the one record per socket (close() ends them through it).
        if (!connections.admit(stream, remote)) return
        surge.connected()
        broker.handle(stream, req)
      })
      bound = await listeners.listen()
      return bound
    },

    close() {
      closing ??= (async () => {
        const broker = aedes
        surge.stop()
        listeners?.close()
        // Half-close first so what was already written (the retained offline state, the last bands) reaches
        // the clients; Aedes' own close destroys sockets outright.
        await endSockets(connections.streams(), SOCKET_END_GRACE_MS)
        if (broker) await new Promise<void>((resolve) => broker.close(() => resolve()))
        clients.clear()
        aedes = null
      })()
      return closing
    },

    publishStatus: (deviceId, body) => publishRetained(topics.device(deviceId, 'status'), body),
    publishBridgeState: (state) => publishRetained(topics.bridgeState, JSON.stringify({ state })),

    sendFrame(deviceId, chunks, target = {}) {
      const topic = topics.device(deviceId, 'frame')
      const only = target.onlyClientId === undefined ? undefined : clients.get(target.onlyClientId)
      if (only && delivery.grantedQos(only, topic) !== null) {
        return delivery.sendTo(only, topic, chunks, target.tag) ? 1 : 0
      }
      return delivery.send(topic, chunks, target.tag)
    },

    connectedDeviceIds: () => presence.deviceIds(),
    onPresence: (listener) => presence.listen(listener),
    connectedClients: () => clients.size,
    queuedChunks: () => delivery.queuedChunks(),
    report: () => ({
      kind: 'embedded',
      clients: clients.size,
      queued_chunks: delivery.queuedChunks(),
      access: deps.access.mode,
      anonymous: deps.access.allowAnonymous,
      listeners: {
        mqtt: bound?.port ?? null,
        mqtts: bound?.tlsPort ?? null,
        ws: bound?.wsPort ?? null,
      },
      sessions: limits.report(),
    }),
  }
}

async function endSockets(sockets: Duplex[], graceMs: number): Promise<void> {
  const closed = sockets.map((socket) => {
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
