import { hostname } from 'node:os'
import type { IPublishPacket } from 'mqtt'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { Config } from '../config/schema.ts'
import { isDeviceId } from '../protocol/device-id.ts'
import type { Topics } from '../protocol/topics.ts'
import { brokerPort, type Link, openLink, redactUrl } from './external-link.ts'
import { createTopicOutbox } from './external-outbox.ts'
import type { BrokerHandlers, BrokerPort, BrokerReport } from './port.ts'

/*
 * The second adapter of the broker port: the bridge as one client of an external broker (Mosquitto, EMQX)
 * that displays and other bridges share (README, "Scaling out"; docs/protocol.md). Prompts, `get` and `info`
 * come through a shared subscription, so the bridges of one group take them in turn; the PUBACK of each waits
 * for intake (the journal's fsync). `cancel` is subscribed without sharing: every bridge hears it and the one
 * holding the device's job cancels it, the others hold nothing and say nothing. A bridge that stops leaves the
 * shared group first (stopTaking), so the broker hands new prompts to the others while it finishes its jobs.
 */

/** A device that sent something within this time counts as online (the bridge cannot see subscriptions). */
const SEEN_WINDOW_MS = 10 * 60 * 1000

export interface ExternalBrokerOptions {
  url: string
  username?: string | undefined
  password?: string | undefined
  clientId: string
  shareGroup: string
}

export function createExternalBroker(
  options: ExternalBrokerOptions,
  deps: {
    log: Logger
    topics: Topics
    clock: Clock
    onChunkSent?: (bytes: number) => void
    /** A frame id some bridge (this one or another) sent a device, from its status topic. */
    frameIdSeen?: (deviceId: string, frameId: number) => void
  },
): BrokerPort {
  const { log, topics, clock } = deps
  const stateTopic = `${topics.base}/bridge/${options.clientId}/state`
  const shownUrl = redactUrl(options.url)
  const lastSeen = new Map<string, number>()
  let link: Link | null = null
  let handlers: BrokerHandlers | null = null
  let listening = false
  let openGate: () => void = () => {}
  const gate = new Promise<void>((resolve) => {
    openGate = resolve
  })
  let closing: Promise<void> | null = null
  /** False once stopTaking ran: the shared filters are left and not taken again. */
  let taking = true

  const outbox = createTopicOutbox({
    publish(topic, payload, done) {
      if (!link) return done(new Error('the broker is closed'))
      link.client.publish(topic, payload, { qos: 1 }, (err) => {
        if (!err) deps.onChunkSent?.(payload.length)
        done(err)
      })
    },
    connected: () => link?.connected() ?? false,
    log,
  })

  /** The filters for this protocol: shared where the broker has shared subscriptions (MQTT 5 section 4.8.2). */
  function filters(protocol: 4 | 5): string[] {
    return topics.inboundFilters.map((filter) =>
      protocol === 5 && !filter.endsWith('/cancel') ? `$share/${options.shareGroup}/${filter}` : filter,
    )
  }
  const shared = (filter: string) => filter.startsWith('$share/')
  const statusFilter = `${topics.base}/+/status`
  const statusPrefix = `${topics.base}/`

  function subscribe(protocol: 4 | 5): void {
    // A stopping bridge takes no new prompts, even after a reconnect: only cancels for the jobs it holds.
    const wanted = filters(protocol).filter((f) => taking || !shared(f))
    // rh 1: a filter the session holds already is not sent its retained messages again (MQTT 5, 3.8.3.1).
    const subscribeOptions = protocol === 5 ? { qos: 1 as const, rh: 1 } : { qos: 1 as const }
    // Every device's status, retained ones included on each connect: the frame ids other bridges sent
    // (nl: not this bridge's own, at MQTT 5).
    link?.client
      .subscribeAsync(statusFilter, protocol === 5 ? { qos: 0, nl: true } : { qos: 0 })
      .catch((err: unknown) => log.warn({ reason: (err as Error).message }, 'status subscription failed'))
    link?.client.subscribeAsync(wanted, subscribeOptions).then(
      (granted) => {
        const refused = granted.filter((g) => g.qos > 2).map((g) => g.topic)
        if (refused.length > 0)
          log.error({ refused }, 'the MQTT broker refused subscriptions; prompts on them are lost')
        else log.debug({ filters: wanted }, 'subscribed')
      },
      (err: unknown) =>
        log.warn({ reason: (err as Error).message }, 'subscribing failed; retried on reconnect'),
    )
  }

  /*
   * Each bridge numbers a device's frames itself, and a display drops a frame older than the one it shows
   * (docs/protocol.md, "Previews and frame ids"): the next picture made here is numbered after the last one
   * any bridge announced in the device's status (`sending`, `done`).
   */
  function statusHeard(packet: IPublishPacket): boolean {
    const { topic } = packet
    if (!topic.endsWith('/status') || !topic.startsWith(statusPrefix)) return false
    const deviceId = topic.slice(statusPrefix.length, -'/status'.length)
    const text = packet.payload.toString()
    if (!isDeviceId(deviceId) || !text.includes('"frame_id"')) return true
    try {
      const frameId = (JSON.parse(text) as { frame_id?: unknown }).frame_id
      if (Number.isInteger(frameId)) deps.frameIdSeen?.(deviceId, frameId as number)
    } catch {
      // Not the bridge's JSON: someone else wrote there; nothing to learn.
    }
    return true
  }

  async function inbound(packet: IPublishPacket): Promise<void> {
    if (statusHeard(packet)) return
    // Messages that a persistent session holds arrive right after CONNACK; they wait (unacknowledged) until
    // the jobs from the journal are in line (bridge-parts.ts: replay comes before listen).
    await gate
    const parsed = topics.parseInbound(packet.topic)
    if (!parsed || !handlers) return
    if (parsed.deviceId) lastSeen.set(parsed.deviceId, clock.monotonic())
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
    await handlers.inbound({
      ...parsed,
      payload,
      // The sender is not known on an external broker (MQTT 5 has no such property); frames go to the topic.
      clientId: `via ${options.clientId}`,
      redelivered: packet.dup === true,
    })
  }

  /**
   * Unsubscribes the shared filters. mqtt.js handles packets in order and each message's handler before the
   * next, so once the UNSUBACK is read every prompt the broker sent before it is journaled and in line.
   */
  async function leaveShared(): Promise<void> {
    const client = link?.client
    if (!client) return
    await client.unsubscribeAsync(filters(5).filter(shared)).catch((err: unknown) => {
      log.warn({ reason: (err as Error).message }, 'leaving the shared subscriptions failed')
    })
  }

  function publishRetained(topic: string, body: string): Promise<void> {
    if (!link) return Promise.reject(new Error('the broker is not open'))
    return link.client.publishAsync(topic, body, { qos: 1, retain: true }).then(() => undefined)
  }

  return {
    async open(h) {
      handlers = h
      const opened = await openLink(
        {
          ...options,
          will: { topic: stateTopic, payload: JSON.stringify({ state: 'offline' }) },
        },
        {
          connected({ sessionPresent, protocol }) {
            // At MQTT 5 on every connect: a session kept from a run that stopped cleanly has left the shared
            // group (stopTaking) and must join it again. A 3.1.1 session keeps its plain subscriptions.
            if (protocol === 5 || !sessionPresent) subscribe(protocol)
            if (!taking && sessionPresent && protocol === 5) leaveShared().catch(() => {})
            // A broker that lost its retained messages (restarted without persistence) hears it again.
            if (listening) publishRetained(stateTopic, JSON.stringify({ state: 'online' })).catch(() => {})
            outbox.resume()
          },
          message: inbound,
        },
        log,
      )
      // close() came while mqtt.js was loading (openLink): it found no link to close, so this one goes now.
      if (closing) {
        await opened.close()
        return
      }
      link = opened
      await opened.firstAttempt
    },

    async listen() {
      listening = true
      openGate()
      return { port: brokerPort(options.url) }
    },

    async stopTaking() {
      if (!taking) return
      taking = false
      if (!link?.connected() || link.protocol() !== 5) return
      await leaveShared()
      log.info({ group: options.shareGroup }, 'left the shared subscriptions: other bridges take new prompts')
    },

    close() {
      closing ??= (async () => {
        const waiting = outbox.queuedChunks()
        if (waiting > 0)
          log.warn({ chunks: waiting, devices: outbox.topics() }, 'frame chunks not delivered at stop')
        openGate()
        await link?.close()
        link = null
      })()
      return closing
    },

    publishStatus: (deviceId, body) => publishRetained(topics.device(deviceId, 'status'), body),
    publishBridgeState: (state) => publishRetained(stateTopic, JSON.stringify({ state })),

    sendFrame(deviceId, chunks, target = {}) {
      // The broker fans out to whoever subscribed; a frame for one client goes to the topic all the same.
      return outbox.send(topics.device(deviceId, 'frame'), chunks, target.tag) ? 1 : 0
    },

    connectedDeviceIds() {
      const since = clock.monotonic() - SEEN_WINDOW_MS
      const ids = new Set<string>()
      for (const [id, at] of lastSeen) {
        if (at >= since) ids.add(id)
        else lastSeen.delete(id)
      }
      return ids
    },
    connectedClients() {
      return this.connectedDeviceIds().size
    },
    queuedChunks: () => outbox.queuedChunks(),
    report() {
      return {
        kind: 'external',
        url: shownUrl,
        connected: link?.connected() ?? false,
        protocol: link?.protocol() ?? 5,
        client_id: options.clientId,
        clients: this.connectedDeviceIds().size,
        queued_chunks: outbox.queuedChunks(),
      }
    },
  }
}

/** The adapter's options from the settings; the client id defaults to one per machine. */
export function externalBrokerOptions(config: Config, url: string): ExternalBrokerOptions {
  return {
    url,
    username: config.MQTT_USERNAME,
    password: config.MQTT_PASSWORD,
    clientId: config.MQTT_CLIENT_ID ?? `pico-a1111-bridge-${hostname()}`,
    shareGroup: config.MQTT_SHARE_GROUP,
  }
}

/** What the listening line says about the broker: which one, and for an external one where and whether up. */
export function brokerLine(report: BrokerReport): Record<string, unknown> {
  if (report.kind === 'embedded') return { broker: 'embedded' }
  return {
    broker: 'external',
    mqttUrl: report.url,
    mqttConnected: report.connected,
    clientId: report.client_id,
  }
}
