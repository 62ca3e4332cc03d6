import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt'
import type { Logger } from 'pino'

/*
 * The bridge's one connection to an external broker (MQTT_URL; README, "Scaling out"): an mqtt.js client at
 * MQTT 5 with a persistent session, reconnecting with backoff, falling back to MQTT 3.1.1 once when the broker
 * refuses protocol 5, and telling a refused login apart from a broker that cannot be reached. The password
 * never leaves this module: logs and reports carry the URL without it.
 */

/** How long the broker keeps the session (subscriptions, unacknowledged prompts) while the bridge is away. */
const SESSION_EXPIRY_S = 24 * 60 * 60
const BACKOFF_FIRST_MS = 250
const BACKOFF_MAX_MS = 30_000

/*
 * CONNACK codes. A broker that speaks only 3.1.1 answers a protocol-5 CONNECT with return code 1 (MQTT 3.1.1
 * section 3.2.2.3); a protocol-5 broker that will not take 5 says 0x84. A refused login is 4 or 5 in 3.1.1,
 * 0x86 or 0x87 in 5 (MQTT 5 section 3.2.2.2).
 */
const PROTOCOL_REFUSED = new Set([1, 0x84])
const LOGIN_REFUSED = new Set([4, 5, 0x86, 0x87, 0x8c])

/** The broker refused the bridge's login: a settings problem (exit 78 at start, see main.ts). */
export class BrokerLoginRefused extends Error {
  override name = 'BrokerLoginRefused'
  readonly exitCode = 78
}

export interface LinkOptions {
  url: string
  username?: string | undefined
  password?: string | undefined
  clientId: string
  will: { topic: string; payload: string }
}

export interface LinkEvents {
  /** Each CONNACK that accepted the bridge; `sessionPresent` false means subscriptions must be made again. */
  connected(info: { sessionPresent: boolean; protocol: 4 | 5 }): void
  /** A PUBLISH from the broker; its PUBACK goes out once the promise settles (mqtt.js handleMessage). */
  message(packet: IPublishPacket): Promise<void>
}

export interface Link {
  readonly client: MqttClient
  protocol(): 4 | 5
  connected(): boolean
  /**
   * Settles after the first attempt: resolves once connected, or once the broker could not be reached (the
   * link keeps trying); rejects with BrokerLoginRefused when the broker refused the login.
   */
  readonly firstAttempt: Promise<void>
  close(): Promise<void>
}

/** The URL without its password (`mqtt://bridge@host:1883`), for logs, the listening line and /health. */
export function redactUrl(url: string): string {
  const u = new URL(url)
  u.password = ''
  return u.toString().replace(/\/$/, '')
}

/** The broker's port: the URL's, else 1883 for mqtt:// and 8883 for mqtts://. */
export function brokerPort(url: string): number {
  const u = new URL(url)
  if (u.port !== '') return Number(u.port)
  return u.protocol === 'mqtts:' ? 8883 : 1883
}

/**
 * Opens the link. mqtt.js is loaded here, on the first link, not with the daemon: a bridge with its embedded
 * broker and no Home Assistant never needs it (2 MB of heap and some 80 modules, issue 14).
 */
export async function openLink(options: LinkOptions, events: LinkEvents, log: Logger): Promise<Link> {
  const { connect } = await import('mqtt')
  const url = new URL(options.url)
  const username = options.username ?? (decodeURIComponent(url.username) || undefined)
  const password = options.password ?? (decodeURIComponent(url.password) || undefined)
  url.username = ''
  url.password = ''
  const shownUrl = redactUrl(options.url)
  let protocol: 4 | 5 = 5
  let everConnected = false
  let closing = false
  let backoffMs = BACKOFF_FIRST_MS
  let retry: NodeJS.Timeout | undefined
  let loginRefusedLogged = false
  let unreachableLogged = false
  let settleFirst: (err?: Error) => void = () => {}
  const firstAttempt = new Promise<void>((resolve, reject) => {
    settleFirst = (err) => (err ? reject(err) : resolve())
  })
  firstAttempt.catch(() => {})

  const mqttOptions: IClientOptions = {
    clientId: options.clientId,
    username,
    password,
    protocolVersion: 5,
    clean: false,
    properties: { sessionExpiryInterval: SESSION_EXPIRY_S },
    // Reconnects are this module's (with backoff, keeping the stores: in-flight QoS 1 is sent again).
    reconnectPeriod: 0,
    resubscribe: false,
    connectTimeout: 10_000,
    will: { topic: options.will.topic, payload: Buffer.from(options.will.payload), qos: 1, retain: true },
  }
  const client = connect(url.toString(), mqttOptions)

  // mqtt.js sends the PUBACK of a QoS 1 message only after handleMessage calls back, and handles the next
  // packet only then: acknowledgements leave in the order the messages came (MQTT 5 section 4.6).
  client.handleMessage = (packet, done) => {
    events.message(packet).then(
      () => done(),
      (err: unknown) => {
        log.error({ err, topic: packet.topic }, 'inbound message handler failed')
        done()
      },
    )
  }

  client.on('connect', (connack) => {
    everConnected = true
    backoffMs = BACKOFF_FIRST_MS
    loginRefusedLogged = false
    unreachableLogged = false
    log.info(
      { url: shownUrl, protocol, sessionPresent: connack.sessionPresent },
      'connected to the MQTT broker',
    )
    events.connected({ sessionPresent: connack.sessionPresent, protocol })
    settleFirst()
  })

  client.on('error', (err) => {
    const code = (err as Error & { code?: unknown }).code
    if (typeof code === 'number' && PROTOCOL_REFUSED.has(code) && protocol === 5) {
      protocol = 4
      client.options.protocolVersion = 4
      delete client.options.properties
      log.warn(
        { url: shownUrl, code, reason: err.message },
        'the MQTT broker does not take MQTT 5: using 3.1.1 without shared subscriptions (every bridge on it gets every prompt)',
      )
      backoffMs = 0
      return
    }
    if (typeof code === 'number' && LOGIN_REFUSED.has(code)) {
      if (!everConnected) {
        closing = true
        client.end(true)
        settleFirst(
          new BrokerLoginRefused(
            `the MQTT broker at ${shownUrl} refused the login of ${username ?? 'an anonymous client'} (${err.message}): check MQTT_URL, MQTT_USERNAME and MQTT_PASSWORD`,
          ),
        )
        return
      }
      if (!loginRefusedLogged)
        log.error({ url: shownUrl, code, reason: err.message }, 'the MQTT broker refused the login; retrying')
      loginRefusedLogged = true
      return
    }
    if (!unreachableLogged)
      log.warn(
        { url: shownUrl, code: String(code ?? 'error'), reason: err.message },
        'MQTT broker not reachable; retrying',
      )
    unreachableLogged = true
  })

  client.on('close', () => {
    if (closing) return
    if (everConnected && !retry) log.warn({ url: shownUrl }, 'lost the MQTT broker; reconnecting')
    // Before the first CONNACK a broker that cannot be reached lets the start go on (the link keeps trying);
    // after a protocol refusal (backoff 0) the 3.1.1 attempt goes out at once and settles it.
    if (!everConnected && backoffMs > 0) settleFirst()
    schedule()
  })

  function schedule(): void {
    if (closing || retry) return
    const delay = backoffMs
    backoffMs = Math.min(Math.max(backoffMs * 2, BACKOFF_FIRST_MS), BACKOFF_MAX_MS)
    retry = setTimeout(() => {
      retry = undefined
      if (closing) return
      client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore })
    }, delay)
  }

  return {
    client,
    protocol: () => protocol,
    connected: () => client.connected,
    firstAttempt,
    async close() {
      closing = true
      clearTimeout(retry)
      settleFirst()
      await client.endAsync(!client.connected).catch(() => {})
    },
  }
}
