import { z } from 'zod'
import { addressList } from './address-list.ts'
import { devicesSetting, pixelFormat } from './devices.ts'

/*
 * Every setting, its type and its default, in one place. The names are the environment variable names and
 * also the keys of the JSON config file; the first group is the older Python proxy's, so its `.env` files keep
 * working. Values from the environment arrive as strings, so numbers and booleans are coerced here.
 */

import {
  a1111ServerList,
  bool,
  filePath,
  host,
  int,
  mqttUrl,
  nameList,
  optionalPort,
  port,
  seconds,
  topicWord,
} from './fields.ts'

export const TLS_SETTINGS = ['MQTT_TLS_PORT', 'MQTT_TLS_CERT', 'MQTT_TLS_KEY'] as const

/** The settings that give a listener its port (start-failure.ts names the one whose port is taken). */
export const LISTENER_PORTS = ['MQTT_PORT', 'HTTP_PORT', 'MQTT_TLS_PORT', 'MQTT_WS_PORT'] as const

export const configSchema = z
  .object({
    A1111_BASE_URL: a1111ServerList.optional(),
    A1111_USERNAME: z.string().optional(),
    A1111_PASSWORD: z.string().optional(),
    A1111_TIMEOUT: seconds.default(300),
    SERVICE_API_KEY: z.string().optional(),
    TARGET_WIDTH: int(1, 2048).default(240),
    TARGET_HEIGHT: int(1, 2048).default(240),
    LUMINANCE_INVERT: bool.default(false),
    /** The default panel's pixels (docs/protocol.md, "Pixel formats"); ST7789 and GC9A01 take rgb565-be. */
    PIXEL_FORMAT: pixelFormat.default('rgb565-be'),
    /** Each display's own panel, by device id (src/config/devices.ts): JSON in the environment. */
    DEVICES: devicesSetting.default({}),
    /** How a picture whose shape differs from the panel is fitted: crop (cover), letterbox (contain), stretch (fill). */
    RESIZE_FIT: z
      .enum(['cover', 'contain', 'fill'], { error: 'must be cover, contain or fill' })
      .default('cover'),
    /** Rows per frame chunk: 20 rows of 240 pixels is 9,600 bytes; a Pico W with a fragmented heap may need 10. */
    BAND_ROWS: int(1, 2048).default(20),
    /** zlib-compress each band (flag bit 0); MicroPython decodes it with deflate.DeflateIO. */
    FRAME_COMPRESS: bool.default(false),
    MQTT_HOST: host.default('0.0.0.0'),
    MQTT_PORT: port.default(1883),
    /** A Mosquitto password file (mosquitto_passwd or `pico-a1111-bridge passwd`); unset leaves the broker open. */
    MQTT_PASSWORD_FILE: filePath.optional(),
    /** A Mosquitto ACL file; unset, each user acts only as the display of its own name (admins for all). */
    MQTT_ACL_FILE: filePath.optional(),
    /** Let clients without a user name connect although MQTT_PASSWORD_FILE is set. */
    MQTT_ALLOW_ANONYMOUS: bool.default(false),
    /** Comma-separated users who may act for every display (automations, dashboards); ignored with an ACL file. */
    MQTT_ADMIN_USERS: nameList.default([]),
    /** Port of an MQTT-over-TLS listener (8883 by convention); needs MQTT_TLS_CERT and MQTT_TLS_KEY. */
    MQTT_TLS_PORT: optionalPort,
    /** PEM file of the TLS listener's certificate (its chain after it). */
    MQTT_TLS_CERT: filePath.optional(),
    /** PEM file of the TLS listener's private key. */
    MQTT_TLS_KEY: filePath.optional(),
    /** Port of an MQTT-over-WebSocket listener, path /mqtt; off unless set. */
    MQTT_WS_PORT: optionalPort,
    HTTP_HOST: host.default('0.0.0.0'),
    /** The reverse proxies whose X-Forwarded-For is believed; unset, the client's own address counts. */
    TRUST_PROXY: addressList.default([]),
    HTTP_PORT: z
      .preprocess(
        (v) => (typeof v === 'string' && v.trim().toLowerCase() === 'off' ? 'off' : v),
        z.union([z.literal('off'), port], { error: 'must be a port number (0-65535) or off' }),
      )
      .default(8080),
    BASE_TOPIC: z
      .string()
      .trim()
      .regex(/^[^#+/\s]+(\/[^#+/\s]+)*$/, {
        error: 'must be one or more topic levels without +, #, spaces or empty levels, e.g. pico',
      })
      .default('pico'),
    DATA_DIR: z.string().trim().min(1, { error: 'must not be empty' }).default('./data'),
    /** Days a display's last frame is kept in DATA_DIR after it was last made or sent; then it is forgotten. */
    FRAME_KEEP_DAYS: int(1, 36_500).default(30),
    /** Bytes of last frames kept in DATA_DIR over all displays; past it the least recently used are forgotten. */
    FRAME_STORE_MAX_BYTES: int(1_048_576, 2 ** 40).default(256 * 1024 * 1024),
    LOG_LEVEL: z
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], {
        error: 'must be one of fatal, error, warn, info, debug, trace, silent',
      })
      .default('info'),
    /** Jobs that may wait, all devices together; past it prompts get E_QUEUE_FULL. */
    QUEUE_MAX: int(1, 100_000).default(100),
    /** Further tries on other A1111 servers after one refused the connection or timed out. */
    A1111_RETRIES: int(0, 10).default(2),
    /** Seconds between progress polls of a running generation (A1111's /sdapi/v1/progress). */
    A1111_PROGRESS_INTERVAL: seconds.default(1),
    /** Seconds without any answer to those polls after which a server is hung: its job moves to another. */
    A1111_HUNG_TIMEOUT: seconds.default(15),
    /** A newer prompt from a device interrupts its running job (the picture it was making is dropped). */
    SUPERSEDE_RUNNING: bool.default(true),
    /** Prompts a device may send per minute (MQTT and the HTTP device route); 0 = no limit. */
    RATE_LIMIT: int(0, 10_000).default(30),
    /** Prompts one connection or one address may send per minute over all its devices; 0 = no limit. */
    RATE_LIMIT_SENDER: int(0, 1_000_000).default(120),
    /** `get` a display may send at once before it must wait GET_INTERVAL for each next one. */
    GET_BURST: int(1, 1000).default(3),
    /** Seconds between `get`s past the burst (a flood made 2.3 GB of frames from 1.3 MB of gets). */
    GET_INTERVAL: seconds.default(5),
    /** Send preview frames for prompts that do not say `preview`. */
    PREVIEW_DEFAULT: bool.default(false),
    /** Largest MQTT packet a client may send; larger ones close its connection (Aedes 1.x has no limit). */
    MQTT_MAX_PACKET: int(1024, 268_435_455).default(262_144),
    /** MQTT connections the embedded broker holds at once; past it new ones are refused at once. */
    MQTT_MAX_CONNECTIONS: int(1, 1_000_000).default(2000),
    /*
     * Limits that hold under abuse (README, "Security"; issue 10). Each bounds what one client, or all of
     * them, may make the embedded broker hold; the defaults leave a display a wide margin.
     */
    /** Seconds a new connection may take to send CONNECT before it is dropped (Aedes itself waits 30). */
    MQTT_CONNECT_TIMEOUT: seconds.default(5),
    /** Seconds one MQTT packet may take from its first byte to its last (keepalive 0 or not). */
    MQTT_PACKET_TIMEOUT: seconds.default(10),
    /** Bytes of half-received packets over all connections; past it the connection holding most is dropped. */
    MQTT_PARTIAL_BYTES: int(65_536, 2 ** 32).default(32 * 1024 * 1024),
    /** QoS 2 PUBLISH one client may have awaiting PUBREL; past it its connection is closed. */
    MQTT_MAX_INFLIGHT: int(1, 65_535).default(16),
    /**
     * Subscription filters one client may hold, and 256 bytes of filter for each; past either a filter is
     * granted nothing (SUBACK 0x80).
     */
    MQTT_MAX_SUBSCRIPTIONS: int(1, 100_000).default(64),
    /** Levels a topic or filter may have; the bridge's own are BASE_TOPIC plus two. */
    MQTT_MAX_TOPIC_LEVELS: int(3, 100).default(16),
    /** Retained messages clients may keep, over all clients (the bridge's own statuses are apart). */
    MQTT_MAX_RETAINED: int(0, 1_000_000).default(1000),
    /** Bytes of those retained messages, their topics included. */
    MQTT_MAX_RETAINED_BYTES: int(0, 2 ** 32).default(4 * 1024 * 1024),
    /** Persistent sessions (clean session 0) kept; past it a new one is refused unless one has expired. */
    MQTT_MAX_SESSIONS: int(0, 100_000).default(100),
    /** Seconds an offline persistent session is kept for sure; older ones make room for new ones. */
    MQTT_SESSION_EXPIRY: int(1, 30 * 86_400).default(86_400),
    /** QoS 1 and 2 messages kept for one persistent session; past it new ones are dropped for it. */
    MQTT_SESSION_QUEUE: int(0, 1_000_000).default(100),
    /** Bytes of those messages over all persistent sessions. */
    MQTT_SESSION_QUEUE_BYTES: int(0, 2 ** 32).default(16 * 1024 * 1024),
    /** Failed logins one address may make in a minute before its logins are refused for a while; 0 = off. */
    MQTT_LOGIN_FAILURES: int(0, 10_000).default(5),
    /** Seconds an address is refused after that; doubled for each lockout that follows, up to 64 times. */
    MQTT_LOGIN_LOCKOUT: seconds.default(60),
    /** An external broker (mqtt:// or mqtts://, user:pass allowed) to use instead of the embedded one. */
    MQTT_URL: mqttUrl.optional(),
    /** The login at MQTT_URL's broker, when the URL does not carry it. */
    MQTT_USERNAME: z.string().optional(),
    MQTT_PASSWORD: z.string().optional(),
    /** The bridge's client id at MQTT_URL's broker; unset, `pico-a1111-bridge-<hostname>`. */
    MQTT_CLIENT_ID: topicWord.optional(),
    /** The shared-subscription group that the bridges on one broker split prompts in. */
    MQTT_SHARE_GROUP: topicWord.default('pico-a1111-bridge'),
    /** Home Assistant's broker (mqtt:// or mqtts://, user:pass allowed), MQTT 5; unset, MQTT_URL's broker. */
    HA_MQTT_URL: mqttUrl.optional(),
    /** Publish Home Assistant discovery; unset, on when HA_MQTT_URL or MQTT_URL names a broker for it. */
    HA_DISCOVERY: bool.optional(),
    /** Home Assistant's discovery prefix (its MQTT integration's setting). */
    HA_DISCOVERY_PREFIX: z
      .string()
      .trim()
      .regex(/^[^#+/\s]+(\/[^#+/\s]+)*$/, {
        error: 'must be one or more topic levels without +, #, spaces or empty levels',
      })
      .default('homeassistant'),
    /** Time per step the demo generator pretends to take, so progress can be seen without a GPU. */
    DEMO_STEP_MS: int(0, 10_000).default(100),
    /** How long a stop may take before the daemon gives up waiting for running work. */
    SHUTDOWN_TIMEOUT: seconds.default(15),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.HA_DISCOVERY === true && c.HA_MQTT_URL === undefined && c.MQTT_URL === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['HA_DISCOVERY'],
        message:
          "needs Home Assistant's broker: set HA_MQTT_URL (the embedded broker speaks MQTT 3.1.1, Home Assistant needs 5)",
      })
    }
    c.A1111_BASE_URL?.forEach((server, i) => {
      if ((server.username === undefined) !== (server.password === undefined)) {
        ctx.addIssue({
          code: 'custom',
          path: ['A1111_BASE_URL', i],
          message: 'username and password go together',
        })
      }
    })
    if ((c.A1111_USERNAME === undefined) !== (c.A1111_PASSWORD === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: [c.A1111_USERNAME === undefined ? 'A1111_USERNAME' : 'A1111_PASSWORD'],
        message: 'A1111_USERNAME and A1111_PASSWORD go together: set both or neither',
      })
    }
    // A packet of the largest allowed size must fit in the budget of half-received packets.
    if (c.MQTT_PARTIAL_BYTES < c.MQTT_MAX_PACKET + 5) {
      ctx.addIssue({
        code: 'custom',
        path: ['MQTT_PARTIAL_BYTES'],
        message: `must be more than MQTT_MAX_PACKET (${c.MQTT_MAX_PACKET}), or no packet that large could arrive`,
      })
    }
    const ownLevels = c.BASE_TOPIC.split('/').length + 2
    if (c.MQTT_MAX_TOPIC_LEVELS < ownLevels) {
      ctx.addIssue({
        code: 'custom',
        path: ['MQTT_MAX_TOPIC_LEVELS'],
        message: `must be at least ${ownLevels}: the bridge's own topics are BASE_TOPIC and two more levels`,
      })
    }
    const tls = TLS_SETTINGS.filter((name) => c[name] !== undefined)
    if (tls.length > 0 && tls.length < TLS_SETTINGS.length) {
      for (const missing of TLS_SETTINGS.filter((name) => c[name] === undefined)) {
        ctx.addIssue({
          code: 'custom',
          path: [missing],
          message: `MQTT_TLS_PORT, MQTT_TLS_CERT and MQTT_TLS_KEY go together: ${tls.join(' and ')} ${tls.length === 1 ? 'is' : 'are'} set, ${missing} is not`,
        })
      }
    }
  })

export type Config = Readonly<z.infer<typeof configSchema>>

export interface A1111Server {
  url: string
  username: string | undefined
  password: string | undefined
  timeoutS: number
}

/** The A1111 servers with their credentials and timeout, the shared settings filling what a server leaves out. */
export function a1111Servers(config: Config): A1111Server[] {
  return (config.A1111_BASE_URL ?? []).map((server) => {
    const ownAuth = server.username !== undefined
    return {
      url: server.url,
      username: ownAuth ? server.username : config.A1111_USERNAME,
      password: ownAuth ? server.password : config.A1111_PASSWORD,
      timeoutS: server.timeout ?? config.A1111_TIMEOUT,
    }
  })
}

/** The setting names, for picking them out of the environment. */
export const SETTING_NAMES: readonly string[] = Object.keys(configSchema.shape)

/** Settings whose values never appear in logs or in --check-config output. */
export const SECRET_SETTINGS: ReadonlySet<string> = new Set(['A1111_PASSWORD', 'SERVICE_API_KEY'])

/**
 * Settings that hold the path of a file, shown although a name says PASSWORD or KEY: the path is no secret,
 * the file's contents are, and those are never logged (an AuthFileError names a file and a line only).
 */
export const PATH_SETTINGS: ReadonlySet<string> = new Set([
  'MQTT_PASSWORD_FILE',
  'MQTT_ACL_FILE',
  'MQTT_TLS_CERT',
  'MQTT_TLS_KEY',
])
