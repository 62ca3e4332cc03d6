import { mkdtemp, rm } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { connect, connectAsync, type IClientOptions, MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runPasswd } from '../../src/cli/passwd.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'

/*
 * The broker's limits as settings, tried by real clients (issue 10, README "Security"): failed logins
 * slowed per address, a takeover that only a logged-in client can cause, and persistent sessions whose
 * queues stay bounded.
 */

let dir: string
let passwdPath: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pab-limits-'))
  passwdPath = join(dir, 'passwd')
  for (const [user, password] of [
    ['kitchen', 'kitchen-pw'],
    ['hall', 'hall-pw'],
  ]) {
    const io = {
      stdin: Readable.from([`${password}\n`]),
      stdout: { write: () => true },
      stderr: { write: () => true },
    }
    expect(await runPasswd([passwdPath, user!, '--stdin'], io)).toBe(0)
  }
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** Connects from `localAddress` (another loopback address counts as another machine); rejects with the code. */
function login(port: number, options: IClientOptions, localAddress = '127.0.0.1'): Promise<MqttClient> {
  const client = new MqttClient(() => createConnection({ host: '127.0.0.1', port, localAddress }), {
    protocolVersion: 4,
    reconnectPeriod: 0,
    clientId: `c-${Math.random().toString(16).slice(2, 10)}`,
    ...options,
  })
  return new Promise((resolve, reject) => {
    client.once('connect', () => resolve(client))
    client.once('error', (err) => {
      client.end(true)
      reject(err)
    })
  })
}

const codeOf = (attempt: Promise<MqttClient>) =>
  attempt.then(
    (c) => {
      c.end(true)
      return 0
    },
    (err: { code?: number }) => err.code ?? -1,
  )

describe('failed logins from one address', () => {
  let bridge: TestBridge
  beforeAll(async () => {
    bridge = await startBridge({
      MQTT_PASSWORD_FILE: passwdPath,
      MQTT_LOGIN_FAILURES: 3,
      MQTT_LOGIN_LOCKOUT: 600,
    })
  })
  afterAll(() => bridge?.stop())

  it('refuse that address for a while, the right password too, and leave others alone', async () => {
    const port = bridge.mqttPort
    const wrong = { username: 'kitchen', password: 'guess' }
    for (let i = 0; i < 3; i++) expect(await codeOf(login(port, wrong))).toBe(4)
    // Locked: refused as not authorised without the password being checked.
    expect(await codeOf(login(port, { username: 'kitchen', password: 'kitchen-pw' }))).toBe(5)
    // Another address logs in as usual.
    const other = await login(port, { username: 'kitchen', password: 'kitchen-pw' }, '127.0.0.2')
    await other.endAsync()
    const line = await bridge.line(
      (l) => l.msg === 'MQTT logins from this address refused for a while: too many wrong passwords',
    )
    expect(line).toMatchObject({ remote: '127.0.0.1', failures: 3, lockoutMs: 600_000 })
    const refused = await bridge.line((l) => l.msg === 'MQTT login refused' && l.returnCode === 5)
    expect(refused.reason).toMatch(/too many failed logins from this address/)
    // No password in any line.
    const text = JSON.stringify(bridge.logs)
    expect(text).not.toContain('guess')
    expect(text).not.toContain('kitchen-pw')
  })
})

describe('a client-id takeover', () => {
  it('is counted and slowed only once the newcomer has logged in', async () => {
    const bridge = await startBridge({ MQTT_PASSWORD_FILE: passwdPath })
    try {
      const port = bridge.mqttPort
      const display = await login(port, { username: 'kitchen', password: 'kitchen-pw', clientId: 'kitchen' })
      let kicked = false
      display.on('close', () => {
        kicked = true
      })
      // Ten CONNECTs with the display's id and no login: each refused, none counted as a takeover.
      for (let i = 0; i < 10; i++) expect(await codeOf(login(port, { clientId: 'kitchen' }))).toBe(5)
      expect(kicked).toBe(false)
      expect(bridge.logs.some((l) => l.msg === 'MQTT client id taken over')).toBe(false)
      // The display itself reconnecting from elsewhere is not slowed by them.
      const again = await login(
        port,
        { username: 'kitchen', password: 'kitchen-pw', clientId: 'kitchen' },
        '127.0.0.2',
      )
      const line = await bridge.line((l) => l.msg === 'MQTT client id taken over')
      expect(line).toMatchObject({
        clientId: 'kitchen',
        delayMs: 0,
        remote: '127.0.0.2',
        previousRemote: '127.0.0.1',
      })
      await again.endAsync()
      display.end(true)
    } finally {
      await bridge.stop()
    }
  })
})

describe('persistent sessions', () => {
  it('keep at most MQTT_SESSION_QUEUE messages for an offline client, and a connected one still gets the rest', async () => {
    const bridge = await startBridge({ MQTT_SESSION_QUEUE: 20 })
    try {
      const options = { protocolVersion: 4 as const, reconnectPeriod: 0, clientId: 'keeper', clean: false }
      const keeper = await connectAsync(bridge.mqttUrl, options)
      await keeper.subscribeAsync('free/queued', { qos: 1 })
      await keeper.endAsync()
      const publisher = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0 })
      for (let i = 0; i < 150; i++) await publisher.publishAsync('free/queued', String(i), { qos: 1 })
      await bridge.line((l) => l.msg === 'MQTT message not kept for an offline session')
      const back = connect(bridge.mqttUrl, options)
      const got: string[] = []
      const waiters: { until: () => boolean; resolve: () => void }[] = []
      back.on('message', (_t, payload) => {
        got.push(String(payload))
        for (const w of waiters) if (w.until()) w.resolve()
      })
      const when = (until: () => boolean) =>
        new Promise<void>((resolve) => (until() ? resolve() : waiters.push({ until, resolve })))
      await new Promise((resolve) => back.once('connect', resolve))
      // The queue is sent after CONNACK while new messages flow too, so their order is not fixed.
      await publisher.publishAsync('free/queued', 'marker', { qos: 1 })
      await when(() => got.length >= 21)
      await publisher.publishAsync('free/queued', 'last', { qos: 1 })
      await when(() => got.includes('last'))
      // The first twenty, as Mosquitto's max_queued_messages keeps them, and what came once it was back.
      const queued = Array.from({ length: 20 }, (_, i) => String(i))
      expect(got.filter((m) => m !== 'marker' && m !== 'last')).toEqual(queued)
      expect(got).toHaveLength(22)
      await back.endAsync()
      await publisher.endAsync()
    } finally {
      await bridge.stop()
    }
  })
})

describe('a client that only subscribes', () => {
  it('under invented ids leaves none of them in the device list once it is gone', async () => {
    const bridge = await startBridge({ HTTP_PORT: 0 })
    try {
      const devices = async () => {
        const res = await fetch(`http://127.0.0.1:${bridge.httpPort}/api/v1/devices`)
        return ((await res.json()) as { devices: { id: string; connected: boolean }[] }).devices
      }
      const kitchen = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, clientId: 'kitchen-1' })
      await kitchen.publishAsync('pico/kitchen/info', JSON.stringify({ panel: { width: 240, height: 240 } }))
      const ghost = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, clientId: 'ghost-1' })
      await ghost.subscribeAsync(['pico/ghost-a/frame', 'pico/ghost-b/frame'])
      await bridge.line(
        (l) => l.msg === 'frame topic subscribed; sending the last frame' && l.deviceId === 'ghost-b',
      )
      // While it is connected the ids it listens on are shown as connected displays.
      expect((await devices()).map((d) => d.id)).toEqual(['ghost-a', 'ghost-b', 'kitchen'])
      await ghost.endAsync()
      await bridge.line((l) => l.msg === 'client disconnected' && l.clientId === 'ghost-1')
      // kitchen sent something, so it stays; it counts as connected only once it listens for frames.
      expect((await devices()).map((d) => d.id)).toEqual(['kitchen'])
      await kitchen.endAsync()
    } finally {
      await bridge.stop()
    }
  })
})

describe('takeovers of one client id in a row', () => {
  it('go through at once twice, then each waits longer than the one before', async () => {
    const bridge = await startBridge()
    try {
      const options = { protocolVersion: 4 as const, reconnectPeriod: 0, clientId: 'kitchen' }
      const clients: MqttClient[] = []
      for (let i = 0; i < 4; i++) clients.push(await connectAsync(bridge.mqttUrl, options))
      const delays = bridge.logs.filter((l) => l.msg === 'MQTT client id taken over').map((l) => l.delayMs)
      expect(delays).toEqual([0, 0, 1000])
      for (const c of clients) c.end(true)
    } finally {
      await bridge.stop()
    }
  })
})

describe('persistent sessions in number', () => {
  it('past MQTT_MAX_SESSIONS refuse a new one, while a known one comes back and clean ones connect', async () => {
    const bridge = await startBridge({ MQTT_MAX_SESSIONS: 2 })
    try {
      const session = (clientId: string, clean = false) =>
        connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0, clientId, clean })
      for (const id of ['s1', 's2']) await (await session(id)).endAsync()
      // Refused before CONNACK: the broker closes the connection.
      const refused = connect(bridge.mqttUrl, {
        protocolVersion: 4,
        reconnectPeriod: 0,
        clientId: 's3',
        clean: false,
      })
      let acked = false
      refused.on('connect', () => {
        acked = true
      })
      await new Promise<void>((resolve) => refused.once('close', () => resolve()))
      refused.end(true)
      expect(acked).toBe(false)
      await bridge.line((l) => l.msg === 'MQTT connection refused: too many persistent sessions')
      await (await session('s1')).endAsync()
      await (await session('s3', true)).endAsync()
    } finally {
      await bridge.stop()
    }
  })
})

describe('ids that break the device-id rule', () => {
  it('in a subscription filter name no display, however long', async () => {
    const bridge = await startBridge({ HTTP_PORT: 0 })
    try {
      const ghost = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, clientId: 'ghost-2' })
      // 60 KB is past what a client's filters may hold (SUBACK 0x80); the others are granted.
      const filters = ['x'.repeat(60_000), 'x'.repeat(65), 'a b', 'ok-id'].map((id) => `pico/${id}/frame`)
      const codes = await ghost.subscribeAsync(filters).then(
        (grants) => grants.map((g) => g.qos),
        // mqtt.js rejects a SUBACK that refuses a filter, with the packet on the error.
        (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
      )
      expect(codes).toEqual([128, 0, 0, 0])
      await bridge.line((l) => l.msg === 'frame topic subscribed; sending the last frame')
      const res = await fetch(`http://127.0.0.1:${bridge.httpPort}/api/v1/devices`)
      const { devices } = (await res.json()) as { devices: { id: string }[] }
      expect(devices.map((d) => d.id)).toEqual(['ok-id'])
      const subscribed = bridge.logs.filter((l) => l.msg === 'frame topic subscribed; sending the last frame')
      expect(subscribed.map((l) => l.deviceId)).toEqual(['ok-id'])
      await ghost.endAsync()
    } finally {
      await bridge.stop()
    }
  })
})

describe('invented ids by the ten thousand', () => {
  it('leave at most 10,000 of the bridge’s retained statuses: the oldest is emptied', async () => {
    // No HTTP listener: this is about the broker's store, not the dashboard's view of the devices.
    const bridge = await startBridge({ LOG_LEVEL: 'error', RATE_LIMIT_SENDER: 0 })
    try {
      const watcher = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0 })
      await watcher.subscribeAsync('pico/+/status', { qos: 0 })
      let statuses = 0
      const emptied = new Promise<string>((resolve) =>
        watcher.on('message', (topic, payload) => (payload.length === 0 ? resolve(topic) : statuses++)),
      )
      // A prompt that does not parse: the bridge answers each id with a retained error status.
      const flooder = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0 })
      for (let i = 0; i <= 10_000; i++) flooder.publish(`pico/id-${i}/prompt`, '{', { qos: 0 })
      await flooder.publishAsync('pico/id-10000/cancel', '', { qos: 1 })
      // The first id's status is emptied once the 10,001st is kept, and only that one.
      expect(await emptied).toBe('pico/id-0/status')
      expect(statuses).toBeGreaterThan(10_000)
      const late = await connectAsync(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0 })
      const kept: string[] = []
      const last = new Promise<void>((resolve) =>
        late.on('message', (topic) => {
          kept.push(topic)
          if (topic === 'pico/id-1/status') resolve()
        }),
      )
      await late.subscribeAsync(['pico/id-0/status', 'pico/id-1/status'], { qos: 0 })
      await last
      expect(kept).toEqual(['pico/id-1/status'])
      await Promise.all([watcher.endAsync(), flooder.endAsync(), late.endAsync()])
    } finally {
      await bridge.stop()
    }
  }, 60_000)
})
