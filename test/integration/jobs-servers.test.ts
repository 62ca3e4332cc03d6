import { afterEach, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'

/** Prompts the fake received, in order. */
const promptsOf = (fake: FakeA1111) =>
  fake.requests
    .filter((r) => r.path === '/sdapi/v1/txt2img')
    .map((r) => (r.body as { prompt: string }).prompt)

describe('jobs users can watch and trust', () => {
  const cleanup: (() => Promise<void>)[] = []
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn()
  })
  async function fakes(...options: Parameters<typeof startFakeA1111>[0][]): Promise<FakeA1111[]> {
    const started = await Promise.all(options.map((o) => startFakeA1111(o)))
    for (const f of started) cleanup.push(() => f.close())
    return started
  }
  async function bridge(settings: Record<string, unknown>): Promise<TestBridge> {
    const b = await startBridge({ A1111_PROGRESS_INTERVAL: 0.05, ...settings })
    cleanup.push(() => b.stop())
    return b
  }

  it('reports progress while generating and the position while waiting, in order', async () => {
    const [fake] = await fakes({ stepMs: 40 })
    const b = await bridge({ A1111_BASE_URL: fake!.url })
    const first = await connectDevice(b.mqttUrl, 'p1')
    const second = await connectDevice(b.mqttUrl, 'p2')
    cleanup.push(
      () => first.close(),
      () => second.close(),
    )
    await first.prompt('one')
    await first.waitForStatus((s) => s.state === 'generating')
    await second.prompt('two')
    await first.waitForStatus((s) => s.state === 'done')
    await second.waitForStatus((s) => s.state === 'done')

    const progress = first.statuses.filter((s) => s.state === 'generating').map((s) => s.progress as number)
    expect(progress.some((p) => p > 0 && p < 1)).toBe(true)
    expect([...progress].sort((a, b) => a - b)).toEqual(progress)
    expect(first.statuses.some((s) => s.state === 'generating' && typeof s.eta_s === 'number')).toBe(true)
    const states = second.statuses.map((s) => s.state)
    expect(states.indexOf('queued')).toBeLessThan(states.indexOf('generating'))
    expect(second.statuses.find((s) => s.state === 'queued')?.position).toBe(1)
  })

  it('sends preview frames before the final frame when asked', async () => {
    const [fake] = await fakes({ stepMs: 60 })
    const b = await bridge({ A1111_BASE_URL: fake!.url })
    const device = await connectDevice(b.mqttUrl, 'preview')
    cleanup.push(() => device.close())
    await device.prompt({ prompt: 'a slow picture', preview: true, steps: 30 })
    const done = await device.waitForStatus((s) => s.state === 'done')
    const txt2img = fake!.requests.find((r) => r.path === '/sdapi/v1/txt2img')!
    expect(txt2img.body).toMatchObject({ override_settings: { show_progress_every_n_steps: 5 } })
    await expect.poll(() => device.frames.filter((f) => !f.preview).length).toBe(1)
    const previews = device.frames.filter((f) => f.preview)
    expect(previews.length).toBeGreaterThan(0)
    expect(device.frames.at(-1)!.preview).toBe(false)
    expect(device.frames.at(-1)!.frameId).toBe(done.frame_id)
    expect(previews.every((p) => p.frameId < (done.frame_id as number))).toBe(true)
    // Only the final frame is kept: asking for the last frame gives it, not a preview.
    await device.publish('get')
    await expect.poll(() => device.frames.length).toBe(previews.length + 2)
    expect(device.frames.at(-1)!.preview).toBe(false)
  })

  it('lets the newest prompt interrupt the running job, on the server that runs it only', async () => {
    const [a, other] = await fakes({ stepMs: 40 }, { stepMs: 40 })
    const b = await bridge({ A1111_BASE_URL: `${a!.url},${other!.url}` })
    const device = await connectDevice(b.mqttUrl, 'newest')
    cleanup.push(() => device.close())
    await device.prompt({ prompt: 'old', request_id: 'old' })
    await device.waitForStatus((s) => s.request_id === 'old' && s.state === 'generating')
    await new Promise<void>((resolve) => a!.events.once('step', () => resolve()))
    await device.prompt({ prompt: 'new', request_id: 'new' })
    const old = await device.waitForStatus((s) => s.request_id === 'old' && s.state === 'cancelled')
    expect(old.reason).toBe('superseded')
    await device.waitForStatus((s) => s.request_id === 'new' && s.state === 'done')
    await expect.poll(() => a!.interrupts).toBe(1)
    expect(other!.interrupts).toBe(0)
    expect(device.frames).toHaveLength(1)
    expect(device.statuses.some((s) => s.request_id === 'old' && s.state === 'sending')).toBe(false)
  })

  it.each([
    ['refuses connections', 'refuse'],
    ['hangs', 'hang'],
    ['dies in the middle of a job', 'die'],
  ] as const)('moves a job to the other server when one %s', async (_what, how) => {
    const [bad, good] = await fakes({ stepMs: 20 }, { stepMs: 20 })
    if (how === 'refuse') await bad!.close()
    if (how === 'hang') bad!.setFault('hang')
    if (how === 'die') bad!.events.once('step', () => void bad!.close())
    // Only the hanging server gets a short A1111_TIMEOUT: a 1 s budget for the good one raced under load.
    const servers = [{ url: bad!.url, timeout: 1 }, { url: good!.url }]
    const b = await bridge({ A1111_BASE_URL: servers })
    const device = await connectDevice(b.mqttUrl, `failover-${how}`)
    cleanup.push(() => device.close())
    await device.prompt('survive')
    const done = await device.waitForStatus((s) => s.state === 'done' || s.state === 'error')
    expect(done.state).toBe('done')
    expect(promptsOf(good!)).toEqual(['survive'])
    if (how !== 'refuse') expect(promptsOf(bad!)).toEqual(['survive'])
  })

  it('moves a job off a server that took it and then stopped answering, within about 20 s', async () => {
    const [frozen, good] = await fakes({ fault: 'frozen' }, { stepMs: 20 })
    // The default A1111_HUNG_TIMEOUT (15 s) and A1111_TIMEOUT (300 s): the hang is noticed, not timed out.
    const b = await bridge({ A1111_BASE_URL: `${frozen!.url},${good!.url}` })
    const device = await connectDevice(b.mqttUrl, 'frozen-server')
    cleanup.push(() => device.close())
    const sent = performance.now()
    await device.prompt('somewhere that answers')
    const done = await device.waitForStatus((s) => s.state === 'done' || s.state === 'error')
    expect(done.state).toBe('done')
    expect(performance.now() - sent).toBeLessThan(25_000)
    expect(promptsOf(frozen!)).toEqual(['somewhere that answers'])
    expect(promptsOf(good!)).toEqual(['somewhere that answers'])
    const moved = b.logs.find((l) => l.msg === 'generation failed; trying again')
    expect(moved).toMatchObject({ code: 'E_A1111_HUNG' })
    const health = b.logs.find((l) => l.msg === 'generator down' && l.id === 'a1111-1')
    expect(health).toBeDefined()
  }, 45_000)

  it('does not retry a prompt A1111 rejected (422)', async () => {
    const [picky, other] = await fakes({ fault: 'reject422' }, {})
    const b = await bridge({ A1111_BASE_URL: `${picky!.url},${other!.url}` })
    const device = await connectDevice(b.mqttUrl, 'rejected')
    cleanup.push(() => device.close())
    await device.prompt('bad for A1111')
    const status = await device.waitForStatus((s) => s.state === 'error')
    expect(status.error).toMatchObject({ code: 'E_A1111_REJECTED' })
    expect(promptsOf(picky!)).toEqual(['bad for A1111'])
    expect(promptsOf(other!)).toEqual([])
  })

  it('tries other servers only, and fails with the server error when the tries are used up', async () => {
    const dead = await Promise.all([1, 2, 3].map(() => startFakeA1111()))
    const urls = dead.map((f) => f.url).join(',')
    await Promise.all(dead.map((f) => f.close()))
    const b = await bridge({ A1111_BASE_URL: urls, A1111_RETRIES: 1 })
    const device = await connectDevice(b.mqttUrl, 'all-down')
    cleanup.push(() => device.close())
    await device.prompt('nobody home')
    const status = await device.waitForStatus((s) => s.state === 'error')
    expect(status.error).toMatchObject({ code: 'E_A1111_UNREACHABLE' })
    expect(b.logs.filter((l) => l.msg === 'generation failed; trying again')).toHaveLength(1)
  })

  it('does not try a single hung server again (that would hold the job for another A1111_TIMEOUT)', async () => {
    const [hung] = await fakes({ fault: 'hang' })
    const b = await bridge({ A1111_BASE_URL: hung!.url, A1111_TIMEOUT: 0.5 })
    const device = await connectDevice(b.mqttUrl, 'hung')
    cleanup.push(() => device.close())
    await device.prompt('patience')
    const status = await device.waitForStatus((s) => s.state === 'error')
    expect(status.error).toMatchObject({ code: 'E_GEN_TIMEOUT' })
    expect(promptsOf(hung!)).toEqual(['patience'])
  })

  it('serves owners round-robin, so one HTTP client cannot starve a device', async () => {
    const [fake] = await fakes({ stepMs: 10 })
    const b = await bridge({ A1111_BASE_URL: fake!.url, HTTP_PORT: 0 })
    const device = await connectDevice(b.mqttUrl, 'fair')
    cleanup.push(() => device.close())
    const url = `http://127.0.0.1:${b.httpPort}/sdapi/v1/txt2img`
    const post = (prompt: string) =>
      fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt }),
      })
    const firstStarted = new Promise<void>((resolve) => fake!.events.once('begin', () => resolve()))
    const flood = [post('http 1')]
    await firstStarted
    for (let i = 2; i <= 5; i++) flood.push(post(`http ${i}`))
    await expect.poll(() => fake!.requests.length).toBeGreaterThanOrEqual(1)
    await expect
      .poll(
        async () => (await fetch(`http://127.0.0.1:${b.httpPort}/health`).then((r) => r.json())) as unknown,
      )
      .toMatchObject({ queue: { waiting: 4 } })
    await device.prompt('device prompt')
    await device.waitForStatus((s) => s.state === 'done')
    await Promise.all(flood.map((p) => p.then((r) => r.arrayBuffer())))
    expect(promptsOf(fake!)).toEqual(['http 1', 'device prompt', 'http 2', 'http 3', 'http 4', 'http 5'])
  })

  it('limits prompts per device per minute', async () => {
    const b = await bridge({ RATE_LIMIT: 3 })
    const device = await connectDevice(b.mqttUrl, 'chatty')
    const calm = await connectDevice(b.mqttUrl, 'calm')
    cleanup.push(
      () => device.close(),
      () => calm.close(),
    )
    for (let i = 0; i < 3; i++) await device.prompt(`prompt ${i}`)
    const from = device.statuses.length
    await device.prompt('one too many')
    const limited = await device.waitForStatus((s) => s.state === 'error', from)
    expect(limited.error).toMatchObject({ code: 'E_RATE_LIMITED' })
    expect((limited.error as { message: string }).message).toMatch(/RATE_LIMIT/)
    await calm.prompt('my first')
    await calm.waitForStatus((s) => s.state === 'done')
  })

  it('exposes Prometheus metrics', async () => {
    const b = await bridge({ HTTP_PORT: 0 })
    const device = await connectDevice(b.mqttUrl, 'metrics')
    cleanup.push(() => device.close())
    await device.prompt('count me')
    await device.waitForStatus((s) => s.state === 'done')
    const res = await fetch(`http://127.0.0.1:${b.httpPort}/metrics`)
    expect(res.status).toBe(200)
    const text = await res.text()
    expect(text).toMatch(/pab_jobs_total\{outcome="done"\} 1/)
    expect(text).toMatch(/pab_frames_sent_total\{kind="final"\} 1/)
    expect(text).toMatch(/pab_queue_waiting 0/)
    expect(text).toMatch(/pab_mqtt_clients 1/)
    expect(text).toMatch(/pab_frame_chunks_queued 0/)
    expect(text).toMatch(/pab_generator_up\{generator="demo"\} 1/)
    expect(text).toMatch(/pab_frame_bytes_sent_total 115488/)
    expect(text).toMatch(/pab_generation_seconds_count\{generator="demo",result="ok"\} 1/)
    expect(text).toMatch(/pab_journal_write_seconds_count 1/)
  })
})
