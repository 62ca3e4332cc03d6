import { once } from 'node:events'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createFrameAssembler } from '../../src/protocol/frame.ts'
import type { StatusMessage } from '../../src/protocol/status.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'
import { httpCall } from '../support/http.ts'

/*
 * The defects the house issue found by trying it: the last picture sent again on every subscription that
 * named the device, replayed jobs racing new prompts, and journal lines replayed without a check.
 */

interface Watcher {
  client: MqttClient
  id: string
  frames: number
  nextFrame(): Promise<void>
}

async function watcher(url: string, id: string): Promise<Watcher> {
  const client = connect(url, { clientId: id, protocolVersion: 4, clean: true, reconnectPeriod: 0 })
  const assembler = createFrameAssembler()
  const w: Watcher = {
    client,
    id,
    frames: 0,
    nextFrame: () =>
      new Promise((resolve) => {
        const target = w.frames + 1
        const check = () => {
          if (w.frames < target) return
          client.off('message', check)
          resolve()
        }
        client.on('message', check)
      }),
  }
  client.on('message', (topic, payload) => {
    if (topic.endsWith('/frame') && assembler.push(payload)) w.frames++
  })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
  })
  return w
}

describe('defects of the old house', () => {
  const cleanup: (() => Promise<unknown>)[] = []
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn()
  })

  /** Resends the bridge started for a client, read off its log (written before the SUBACK goes out). */
  const resendsFor = (b: TestBridge, clientId: string) =>
    b.logs.filter(
      (l) => l.msg === 'frame topic subscribed; sending the last frame' && l.clientId === clientId,
    ).length

  it('sends the last frame once per subscription that covers the frame topic, and get only to the asker', async () => {
    const b = await startBridge()
    cleanup.push(() => b.stop())
    const maker = await connectDevice(b.mqttUrl, 'hall')
    cleanup.push(() => maker.close())
    await maker.prompt('a lamp')
    await maker.waitForStatus((s) => s.state === 'done')

    // The firmware's order: frame, then status in a packet of its own, then get.
    const pico = await watcher(b.mqttUrl, 'pico-hall')
    cleanup.push(() => pico.client.endAsync())
    const first = pico.nextFrame()
    await pico.client.subscribeAsync('pico/hall/frame', { qos: 1 })
    expect(resendsFor(b, 'pico-hall')).toBe(1)
    await first
    await pico.client.subscribeAsync('pico/hall/status', { qos: 1 })
    expect(resendsFor(b, 'pico-hall')).toBe(1)

    // Both in one packet count once; a device-level wildcard names no device.
    const both = await watcher(b.mqttUrl, 'both-hall')
    const dash = await watcher(b.mqttUrl, 'dash')
    cleanup.push(
      () => both.client.endAsync(),
      () => dash.client.endAsync(),
    )
    await both.client.subscribeAsync(['pico/hall/frame', 'pico/hall/status', 'pico/hall/#'], { qos: 1 })
    await dash.client.subscribeAsync('pico/+/frame', { qos: 1 })
    expect(resendsFor(b, 'both-hall')).toBe(1)
    expect(resendsFor(b, 'dash')).toBe(0)
    await both.nextFrame()

    // get: the asker alone gets the frame; the other subscribers of the topic are not sent a copy.
    const queuedBefore = b.logs.filter((l) => l.msg === 'frame queued').length
    const again = pico.nextFrame()
    await pico.client.publishAsync('pico/hall/get', '', { qos: 1 })
    await again
    const queued = b.logs.filter((l) => l.msg === 'frame queued').slice(queuedBefore)
    expect(queued.map((l) => l.clients)).toEqual([1])
    expect([pico.frames, both.frames, dash.frames]).toEqual([2, 1, 0])
  })

  it('queues the replayed jobs before a new prompt can arrive, so the new prompt wins', async () => {
    const fake: FakeA1111 = await startFakeA1111({ stepMs: 30 })
    cleanup.push(() => fake.close())
    const dir = await mkdtemp(join(tmpdir(), 'pab-replay-'))
    cleanup.push(() => rm(dir, { recursive: true, force: true }))
    const stale = {
      op: 'add',
      job: {
        id: 'a1b2c3d4e5f6',
        deviceId: 'race',
        createdAt: new Date().toISOString(),
        prompt: { prompt: 'stale' },
      },
    }
    await writeFile(join(dir, 'jobs.journal'), `${JSON.stringify(stale)}\n`)
    const port = await freePort()
    // The display is already trying to connect, its prompt queued in mqtt.js, when the bridge comes up.
    const early = connect(`mqtt://127.0.0.1:${port}`, {
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 20,
    })
    cleanup.push(() => early.endAsync(true))
    const statuses: StatusMessage[] = []
    early.on('message', (_t, p) => p.length > 0 && statuses.push(JSON.parse(String(p)) as StatusMessage))
    early.subscribe('pico/race/status', { qos: 1 })
    const sent = early.publishAsync(
      'pico/race/prompt',
      JSON.stringify({ prompt: 'fresh', request_id: 'fresh' }),
      {
        qos: 1,
      },
    )
    const b = await startBridge({ A1111_BASE_URL: fake.url, MQTT_PORT: port }, dir)
    cleanup.push(() => b.stop())
    await sent
    await new Promise<void>((resolve) => {
      const check = () => statuses.some((s) => s.request_id === 'fresh' && s.state === 'done') && resolve()
      early.on('message', check)
      check()
    })
    // The stale job ran first (it was in line before the listener opened) and the fresh one superseded it.
    const prompts = fake.requests
      .filter((r) => r.path === '/sdapi/v1/txt2img')
      .map((r) => (r.body as { prompt: string }).prompt)
    expect(prompts).toEqual(['stale', 'fresh'])
    const done = b.logs.filter((l) => l.msg === 'job done').map((l) => l.jobId)
    expect(done).not.toContain('a1b2c3d4e5f6')
    expect(done).toHaveLength(1)
    // What makes it so: the replay part starts before the listener that lets a new prompt in.
    const order = b.logs.filter((l) => l.msg === 'part started').map((l) => l.part)
    expect(order.indexOf('replay')).toBeGreaterThan(order.indexOf('job journal'))
    expect(order.indexOf('replay')).toBeLessThan(order.indexOf('mqtt listener'))
    expect(b.logs.find((l) => l.msg === 'listening')?.replayed).toBe(1)
  })

  it('replays thousands of journaled jobs before it listens (the replay is linear)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'pab-many-'))
    cleanup.push(() => rm(dir, { recursive: true, force: true }))
    const lines = Array.from({ length: 3000 }, (_, i) =>
      JSON.stringify({
        op: 'add',
        job: {
          id: `j${String(i).padStart(11, '0')}`,
          deviceId: `display-${i % 1000}`,
          createdAt: new Date().toISOString(),
          prompt: { prompt: `picture ${i}` },
        },
      }),
    )
    await writeFile(join(dir, 'jobs.journal'), `${lines.join('\n')}\n`)
    // A fake that takes its time, so the jobs wait in line: 1,000 displays, 3 journaled jobs each.
    const fake = await startFakeA1111({ latencyMs: 60_000 })
    cleanup.push(() => fake.close())
    const b = await startBridge({ A1111_BASE_URL: fake.url, SHUTDOWN_TIMEOUT: 1, HTTP_PORT: 0 }, dir)
    cleanup.push(() => b.stop())
    // Each display keeps its newest job (the older two are superseded), all in line before the listener.
    expect(b.logs.find((l) => l.msg === 'listening')?.replayed).toBe(3000)
    const health = await httpCall(b.httpPort!, '/health')
    expect(health.json<{ queue: { waiting: number; running: number } }>().queue).toEqual({
      waiting: 999,
      running: 1,
    })
  }, 60_000)

  it('reports journal lines that no longer parse instead of running them, and writes nothing outside DATA_DIR', async () => {
    const root = await mkdtemp(join(tmpdir(), 'pab-stale-'))
    cleanup.push(() => rm(root, { recursive: true, force: true }))
    const dir = join(root, 'data')
    await mkdir(dir)
    const line = (id: string, deviceId: string, prompt: Record<string, unknown>) =>
      JSON.stringify({ op: 'add', job: { id, deviceId, createdAt: new Date().toISOString(), prompt } })
    await writeFile(
      join(dir, 'jobs.journal'),
      [
        line('aaaaaaaaaaaa', 'kept', { prompt: 'still fine' }),
        line('bbbbbbbbbbbb', '../../escape', { prompt: 'out of DATA_DIR' }),
        line('cccccccccccc', 'greedy', { prompt: 'too many steps', steps: 1e9 }),
        '',
      ].join('\n'),
    )
    const b = await startBridge({}, dir)
    cleanup.push(() => b.stop())
    expect(b.logs.find((l) => l.msg === 'listening')?.replayed).toBe(1)
    const skipped = b.logs.filter((l) => l.msg === 'journal line skipped')
    expect(skipped.map((l) => l.line)).toEqual([2, 3])
    expect(JSON.stringify(skipped)).not.toContain('out of DATA_DIR')
    const kept = await connectDevice(b.mqttUrl, 'kept')
    cleanup.push(() => kept.close())
    await kept.waitForFrames(1)
    expect((await readdir(root)).sort()).toEqual(['data'])
  })
})

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}
