import { copyFile, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { connect, type MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { StatusMessage } from '../../src/protocol/status.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'
import { mosquittoPasswd, type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * deploy/mosquitto/ as shipped (the config and pico.acl, with only their /etc paths pointed at a scratch
 * directory) on a real Mosquitto, with two bridges in MQTT_URL mode and displays that log in as their device
 * id (README, "Scaling out"). A delivery that must not happen is known to be missing when a message published
 * after it was acknowledged arrives: Mosquitto routes each message before its PUBACK and keeps a connection's
 * deliveries in order.
 */

const DEPLOY = new URL('../../deploy/mosquitto/', import.meta.url)
const USERS = { 'bridge-gpu1': 'gpu1-secret', 'bridge-gpu2': 'gpu2-secret', kitchen: 'k-pw', hall: 'h-pw' }
type User = keyof typeof USERS

async function shippedMosquitto(): Promise<RunningMosquitto> {
  return startMosquitto(async (dir) => {
    for (const [user, password] of Object.entries(USERS))
      mosquittoPasswd(join(dir, 'pico.passwd'), user, password)
    await copyFile(new URL('pico.acl', DEPLOY), join(dir, 'pico.acl'))
    const conf = await readFile(new URL('pico-a1111-bridge.conf', DEPLOY), 'utf8')
    // The test's own listener on a free port comes first (startMosquitto); the rest is as shipped.
    return conf
      .split('\n')
      .filter((line) => !line.startsWith('listener '))
      .join('\n')
      .replaceAll('/etc/mosquitto/', `${dir}/`)
  })
}

const urlFor = (m: RunningMosquitto, user: User) => `mqtt://${user}:${USERS[user]}@127.0.0.1:${m.port}`
const isDone = (id: string) => (s: StatusMessage) => s.request_id === id && s.state === 'done'
const isEnd = (id: string) => (s: StatusMessage) =>
  s.request_id === id && (s.state === 'done' || s.state === 'error' || s.state === 'cancelled')

async function client(
  m: RunningMosquitto,
  user: User | null,
  protocolVersion: 4 | 5 = 4,
): Promise<MqttClient> {
  const c = connect(user ? urlFor(m, user) : m.url, {
    protocolVersion,
    reconnectPeriod: 0,
    clientId: `${user ?? 'anon'}-${Math.random().toString(16).slice(2, 8)}`,
  })
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve())
    c.once('error', reject)
  })
  return c
}

/** Every topic `c` receives until a message on `syncTopic` arrives. */
function receivedUntil(c: MqttClient, syncTopic: string): Promise<string[]> {
  const topics: string[] = []
  return new Promise((resolve) =>
    c.on('message', (topic) => {
      if (topic === syncTopic) resolve(topics)
      else topics.push(topic)
    }),
  )
}

describe('the shipped Mosquitto ACL, displays and clients', () => {
  let mosquitto: RunningMosquitto
  const open: MqttClient[] = []
  const track = async (c: Promise<MqttClient>) => {
    const done = await c
    open.push(done)
    return done
  }

  beforeAll(async () => {
    mosquitto = await shippedMosquitto()
  })
  afterAll(async () => {
    await Promise.all(open.map((c) => c.endAsync(true)))
    await mosquitto?.stop()
  })

  it('refuses clients without a login or with a wrong password', async () => {
    await expect(client(mosquitto, null)).rejects.toThrow(/Not authorized|Connection refused/i)
    const wrong = `mqtt://kitchen:not-it@127.0.0.1:${mosquitto.port}`
    const c = connect(wrong, { protocolVersion: 4, reconnectPeriod: 0 })
    await expect(
      new Promise((resolve, reject) => {
        c.once('connect', resolve)
        c.once('error', reject)
      }),
    ).rejects.toThrow(/Not authorized|Bad username or password/i)
    c.end(true)
  })

  it('gives a bridge user the prompts of its shared subscription', async () => {
    const bridge = await track(client(mosquitto, 'bridge-gpu1', 5))
    const granted = await bridge.subscribeAsync('$share/pico-a1111-bridge/pico/+/prompt', { qos: 1 })
    expect(granted.map((g) => g.qos)).toEqual([1])
    const got = new Promise<string>((resolve) => bridge.on('message', (topic) => resolve(topic)))
    const kitchen = await track(client(mosquitto, 'kitchen'))
    await kitchen.publishAsync('pico/kitchen/prompt', 'a red fox', { qos: 1 })
    expect(await got).toBe('pico/kitchen/prompt')
  })

  it("keeps a display from reading another display's prompts, frames and status", async () => {
    const kitchen = await track(client(mosquitto, 'kitchen'))
    const hall = await track(client(mosquitto, 'hall'))
    const bridge = await track(client(mosquitto, 'bridge-gpu2'))
    // Mosquitto 2.0 grants these subscriptions and then delivers nothing that the ACL does not allow.
    await kitchen.subscribeAsync(['pico/hall/#', 'pico/+/prompt', 'pico/+/frame', 'pico/bridge/#'], {
      qos: 1,
    })
    const seen = receivedUntil(kitchen, 'pico/bridge/sync')
    await hall.publishAsync('pico/hall/prompt', 'not for the kitchen', { qos: 1 })
    await bridge.publishAsync('pico/hall/frame', Buffer.alloc(64), { qos: 1 })
    await bridge.publishAsync('pico/hall/status', '{"state":"done"}', { qos: 1 })
    await bridge.publishAsync('pico/bridge/sync', '', { qos: 1 })
    expect(await seen).toEqual([])
  })

  it('keeps a display from writing frames or status, its own or another', async () => {
    const kitchen = await track(client(mosquitto, 'kitchen'))
    const bridge = await track(client(mosquitto, 'bridge-gpu2'))
    await bridge.subscribeAsync('pico/#', { qos: 1 })
    const seen = receivedUntil(bridge, 'pico/kitchen/get')
    for (const topic of ['pico/kitchen/frame', 'pico/hall/frame', 'pico/kitchen/status', 'pico/hall/prompt'])
      await kitchen.publishAsync(topic, 'forged', { qos: 1 })
    // Allowed, and after the others on the same connection: once it is here, the others were dropped.
    await kitchen.publishAsync('pico/kitchen/get', '', { qos: 1 })
    expect(await seen).toEqual([])
  })
})

describe('two bridges with their own logins on the shipped Mosquitto', () => {
  let mosquitto: RunningMosquitto
  let fake: FakeA1111
  let bridges: TestBridge[] = []
  const queuedFor = (b: TestBridge, deviceId: string) =>
    b.logs.filter((l) => l.msg === 'prompt queued' && l.deviceId === deviceId)

  beforeAll(async () => {
    mosquitto = await shippedMosquitto()
    fake = await startFakeA1111({ stepMs: 25 })
    bridges = await Promise.all(
      (['bridge-gpu1', 'bridge-gpu2'] as const).map((user) =>
        startBridge({
          MQTT_URL: urlFor(mosquitto, user),
          MQTT_CLIENT_ID: user,
          A1111_BASE_URL: fake.url,
          A1111_PROGRESS_INTERVAL: 0.02,
        }),
      ),
    )
  })
  afterAll(async () => {
    await Promise.all(bridges.map((b) => b.stop()))
    await fake?.close()
    await mosquitto?.stop()
  })

  const display = (user: 'kitchen' | 'hall'): Promise<TestDevice> =>
    connectDevice(urlFor(mosquitto, user), user)

  it('turns prompts into pictures for displays that log in as themselves, on both bridges', async () => {
    const devices = await Promise.all([display('kitchen'), display('hall')])
    for (let k = 0; k < 2; k++)
      await Promise.all(
        devices.map(async (d) => {
          await d.prompt({ prompt: `picture ${k}`, request_id: `${d.id}-${k}`, steps: 2 })
          await d.waitForStatus(isDone(`${d.id}-${k}`))
          await d.waitForFrames(k + 1)
        }),
      )
    for (const b of bridges) expect(b.logs.some((l) => l.msg === 'prompt queued')).toBe(true)
    await Promise.all(devices.map((d) => d.close()))
  })

  it('a cancel reaches both bridges: the one with the job cancels it, the other says nothing', async () => {
    const kitchen = await display('kitchen')
    await kitchen.prompt({ prompt: 'slow', request_id: 'slow', steps: 150 })
    const started = await kitchen.waitForStatus((s) => s.state === 'generating' || isEnd('slow')(s))
    expect(started).toMatchObject({ request_id: 'slow', state: 'generating' })
    const holder = bridges.find((b) => queuedFor(b, 'kitchen').some((l) => l.prompt === 'slow'))!
    const other = bridges.find((b) => b !== holder)!
    const from = other.logs.length
    await kitchen.publish('cancel')
    const end = await kitchen.waitForStatus(isEnd('slow'))
    expect(end).toMatchObject({ state: 'cancelled', reason: 'requested' })
    const heard = await other.line(
      (l) => l.msg === 'cancel requested' && l.deviceId === 'kitchen' && other.logs.indexOf(l) >= from,
    )
    expect(heard.cancelled).toBe(0)
    expect(kitchen.statuses.filter((s) => s.request_id === 'slow' && s.state === 'cancelled')).toHaveLength(1)
    expect(kitchen.statuses.some((s) => s.state === 'error')).toBe(false)

    // Neither bridge keeps anything of it: the next prompt is done wherever it lands.
    await kitchen.prompt({ prompt: 'next', request_id: 'next', steps: 2 })
    expect((await kitchen.waitForStatus(isEnd('next'))).state).toBe('done')
    await kitchen.close()
  })

  it('a superseding prompt gets one picture whichever bridge takes it', async () => {
    const hall = await display('hall')
    const framesBefore = hall.frames.length
    await hall.prompt({ prompt: 'first', request_id: 'first', steps: 60 })
    const started = await hall.waitForStatus((s) => s.state === 'generating' || isEnd('first')(s))
    expect(started).toMatchObject({ request_id: 'first', state: 'generating' })
    await hall.prompt({ prompt: 'second', request_id: 'second', steps: 2 })
    const [first, second] = await Promise.all([
      hall.waitForStatus(isEnd('first')),
      hall.waitForStatus(isEnd('second')),
    ])
    const sameBridge = bridges.some((b) => {
      const prompts = queuedFor(b, 'hall').map((l) => l.prompt)
      return prompts.includes('first') && prompts.includes('second')
    })
    expect(second.state).toBe('done')
    // On one bridge the newer prompt wins; on two, each runs and makes its own picture.
    expect(first).toMatchObject(sameBridge ? { state: 'cancelled', reason: 'superseded' } : { state: 'done' })
    const pictures = sameBridge ? 1 : 2
    await hall.waitForFrames(framesBefore + pictures)
    expect(hall.frames).toHaveLength(framesBefore + pictures)
    for (const id of ['first', 'second'])
      expect(
        hall.statuses.filter((s) => s.request_id === id && s.state === 'done').length,
      ).toBeLessThanOrEqual(1)
    expect(hall.statuses.some((s) => s.state === 'error')).toBe(false)
    await hall.close()
  })
})
