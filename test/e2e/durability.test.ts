import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { connectDevice } from '../support/device.ts'
import { spawnDaemon } from '../support/spawn.ts'

describe('nothing acknowledged is lost', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pab-durable-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  const env = (extra: Record<string, string> = {}) => ({
    MQTT_HOST: '127.0.0.1',
    MQTT_PORT: '0',
    HTTP_PORT: 'off',
    DATA_DIR: join(dir, 'data'),
    RATE_LIMIT: '0',
    ...extra,
  })

  it('runs every acknowledged prompt after kill -9 and a restart', async () => {
    // Slow demo generation (20 steps of 250 ms): the daemon is killed long before the four jobs are done.
    const first = spawnDaemon(env({ DEMO_STEP_MS: '250' }), [], dir)
    const { mqttPort } = await first.listening
    const ids = ['d1', 'd2', 'd3', 'd4']
    const senders = await Promise.all(
      ids.map((id) => connectDevice(`mqtt://127.0.0.1:${mqttPort}`, id, { subscribe: false })),
    )
    // publishAsync at QoS 1 resolves on PUBACK: from here on the bridge has promised these four jobs.
    await Promise.all(senders.map((d, i) => d.prompt({ prompt: `picture ${i}`, request_id: `r${i}` }, 1)))
    first.child.kill('SIGKILL')
    expect((await first.exit).signal).toBe('SIGKILL')
    await Promise.all(senders.map((d) => d.close().catch(() => {})))

    const second = spawnDaemon(env({ DEMO_STEP_MS: '0' }), [], dir)
    const ready = await second.listening
    expect(second.lines.find((l) => l.msg === 'listening')?.replayed).toBe(4)
    const devices = await Promise.all(
      ids.map((id) => connectDevice(`mqtt://127.0.0.1:${ready.mqttPort}`, id)),
    )
    // Each device gets its frame: live if its job finished after it subscribed, else as the last frame.
    const frames = await Promise.all(devices.map((d) => d.waitForFrames(1)))
    expect(frames.every(([f]) => f!.pixels.length === 240 * 240 * 2)).toBe(true)
    await Promise.all(devices.map((d) => d.close()))
    second.child.kill('SIGTERM')
    expect((await second.exit).code).toBe(0)

    // The journal keeps nothing once the jobs are done: a third start replays none.
    const third = spawnDaemon(env(), [], dir)
    await third.listening
    expect(third.lines.find((l) => l.msg === 'listening')?.replayed).toBe(0)
    third.child.kill('SIGTERM')
    await third.exit
  })

  it('starts with a damaged job journal and frame file, keeping what can be read', async () => {
    const data = join(dir, 'data')
    const { mkdir } = await import('node:fs/promises')
    await mkdir(join(data, 'frames'), { recursive: true })
    const good = {
      op: 'add',
      job: {
        id: 'aaaaaaaaaaaa',
        deviceId: 'kept',
        createdAt: new Date().toISOString(),
        prompt: {
          prompt: 'kept prompt',
          negativePrompt: '',
          seed: 5,
          steps: 20,
          cfgScale: 7,
          width: 512,
          height: 512,
        },
      },
    }
    await writeFile(
      join(data, 'jobs.journal'),
      `${JSON.stringify(good)}\n\u0000\u0001garbage\n{"op":"add","job":{"id":"tr`,
    )
    await writeFile(join(data, 'frames', 'broken.frame'), Buffer.from('PFS1\u0000\u0000\u0000\u0010{"devi'))

    const daemon = spawnDaemon(env({ DEMO_STEP_MS: '0' }), [], dir)
    const { mqttPort } = await daemon.listening
    expect(daemon.lines.some((l) => l.msg === 'job journal was damaged; kept what was readable')).toBe(true)
    expect(daemon.lines.some((l) => l.msg === 'stored frame unreadable; ignoring it')).toBe(true)
    expect(daemon.lines.find((l) => l.msg === 'listening')?.replayed).toBe(1)
    const kept = await connectDevice(`mqtt://127.0.0.1:${mqttPort}`, 'kept')
    await kept.waitForFrames(1)
    const fresh = await connectDevice(`mqtt://127.0.0.1:${mqttPort}`, 'fresh')
    await fresh.prompt('after the damage')
    await fresh.waitForStatus((s) => s.state === 'done')
    await Promise.all([kept.close(), fresh.close()])
    daemon.child.kill('SIGTERM')
    expect((await daemon.exit).code).toBe(0)
    // The rewritten journal is clean again.
    expect((await readFile(join(data, 'jobs.journal'), 'utf8')).includes('garbage')).toBe(false)
  })
})
