import type { MqttClient } from 'mqtt'
import type { Logger } from 'pino'
import { maskUrlPasswords } from '../config/secrets.ts'

/*
 * The link to Home Assistant's broker: one mqtt.js client at MQTT 5 (Home Assistant requires a broker that
 * speaks MQTT 5; the embedded Aedes 1.x speaks 3.1.1 only, README "Home Assistant"). It reconnects by itself
 * and never holds anyone up: a publish while it is offline is dropped, not queued, and everything it stands
 * for is published again on the next connect, so a broker that is down costs Home Assistant a late update,
 * never the displays a frame. Its will says `offline` on the bridge's availability topic; its birth, sent on
 * every connect, says `online` (MQTT 5.0 section 3.1.2.5, Will Flag).
 */

const RECONNECT_MS = 5_000
const CONNECT_TIMEOUT_MS = 10_000
const STOP_WAIT_MS = 2_000

export interface HaLinkHandlers {
  /** The link is (again) connected: subscribe and publish everything retained once more. */
  connected(): void
  message(topic: string, payload: Buffer): void
}

export interface HaLink {
  /** Connects, and keeps reconnecting; resolves once the first attempt is under way. */
  start(handlers: HaLinkHandlers): Promise<void>
  /** Publishes when connected (true), drops it otherwise or when the broker could not take it (false). */
  publish(topic: string, payload: string | Buffer, options?: { retain?: boolean }): boolean
  subscribe(filters: string[]): void
  isConnected(): boolean
  /** Says offline on the availability topic and disconnects; idempotent. */
  stop(): Promise<void>
}

/** `mqtt://host:port` without the user and password, for log lines. */
export function brokerLabel(url: string): string {
  try {
    const u = new URL(url)
    return `${u.protocol}//${u.host}`
  } catch {
    return '(unparsable URL)'
  }
}

export function createHaLink(options: {
  url: string
  /** The login when the URL does not carry one. */
  username?: string | undefined
  password?: string | undefined
  clientId: string
  availabilityTopic: string
  log: Logger
}): HaLink {
  const { log, availabilityTopic } = options
  const broker = brokerLabel(options.url)
  let client: MqttClient | null = null
  let stopped: Promise<void> | null = null
  /** The largest packet the broker takes (MQTT 5 CONNACK Maximum Packet Size), when it says. */
  let maxPacketBytes = Number.POSITIVE_INFINITY
  let outage = false

  return {
    async start(handlers) {
      // Loaded with the first link, not with the daemon (external-link.ts says why).
      const { connect } = await import('mqtt')
      // Stopped while mqtt.js was loading: nothing to connect.
      if (stopped) return
      client = connect(options.url, {
        protocolVersion: 5,
        clientId: options.clientId,
        ...(options.username === undefined ? {} : { username: options.username, password: options.password }),
        clean: true,
        reconnectPeriod: RECONNECT_MS,
        connectTimeout: CONNECT_TIMEOUT_MS,
        resubscribe: false,
        queueQoSZero: false,
        will: { topic: availabilityTopic, payload: Buffer.from('offline'), qos: 1, retain: true },
      })
      client.on('connect', (connack) => {
        maxPacketBytes = connack.properties?.maximumPacketSize ?? Number.POSITIVE_INFINITY
        outage = false
        log.info({ broker }, 'Home Assistant link connected')
        client?.publish(availabilityTopic, 'online', { qos: 1, retain: true })
        handlers.connected()
      })
      client.on('message', (topic, payload) => handlers.message(topic, payload))
      client.on('error', (err) => {
        // One warning per outage; the retries after it are quiet until the link is back.
        const fields = { broker, code: 'E_HA_LINK', reason: maskUrlPasswords(err.message) }
        if (outage) log.debug(fields, 'Home Assistant link still down')
        else log.warn(fields, 'Home Assistant link failed; retrying')
        outage = true
      })
      client.on('offline', () => {
        if (!outage)
          log.warn({ broker, code: 'E_HA_LINK', reason: 'disconnected' }, 'Home Assistant link lost')
        outage = true
      })
    },
    publish(topic, payload, publishOptions = {}) {
      if (!client?.connected || stopped) return false
      const bytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
      // Topic, header and properties fit in what is left of a kilobyte; a broker closes a link that sends more.
      if (bytes + Buffer.byteLength(topic) + 1024 > maxPacketBytes) {
        log.warn(
          { topic, bytes, maxPacketBytes, code: 'E_HA_LINK', reason: 'too large' },
          'message not sent to Home Assistant',
        )
        return false
      }
      client.publish(topic, payload, { qos: 1, retain: publishOptions.retain ?? false }, (err) => {
        if (err)
          log.debug({ topic, code: 'E_HA_LINK', reason: err.message }, 'message to Home Assistant lost')
      })
      return true
    },
    subscribe(filters) {
      client?.subscribe(filters, { qos: 1 }, (err) => {
        if (err)
          log.warn({ filters, code: 'E_HA_LINK', reason: err.message }, 'Home Assistant subscription failed')
      })
    },
    isConnected: () => client?.connected === true,
    stop() {
      stopped ??= (async () => {
        const c = client
        if (!c) return
        if (c.connected) {
          // An orderly disconnect does not send the will (MQTT 5.0 section 3.14.4), so say offline first.
          const said = c.publishAsync(availabilityTopic, 'offline', { qos: 1, retain: true })
          await within(
            said.then(() => c.endAsync()),
            STOP_WAIT_MS,
          )
        }
        await c.endAsync(true)
      })()
      return stopped
    },
  }
}

/** Waits for `work` at most `ms`; a broker that stopped answering must not hold up the daemon's stop. */
async function within(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms).unref()
  })
  await Promise.race([work.catch(() => {}), late])
  clearTimeout(timer)
}
