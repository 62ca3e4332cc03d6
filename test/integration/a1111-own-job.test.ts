import { once } from 'node:events'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { createA1111Generator } from '../../src/generator/a1111.ts'
import type { GenerateProgress } from '../../src/generator/types.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'

/**
 * A person's job from the web UI, 40 steps of the fake's, running once this resolves; `interruptsAtEnd` is
 * how many interrupts A1111 had had when it ended.
 */
async function theirJob(fake: FakeA1111, size: { width?: number; height?: number }) {
  const answer = fetch(`${fake.url}/sdapi/v1/txt2img`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'theirs', steps: 40, ...size }),
  })
  await once(fake.events, 'begin')
  let interruptsAtEnd: number | undefined
  fake.events.once('end', () => {
    interruptsAtEnd = fake.interrupts
  })
  return { answer, interruptsAtEnd: () => interruptsAtEnd }
}

/** Cancels our job: theirs ends untouched, and ours is interrupted once it begins (not left running). */
async function cancelOursSparingTheirs(
  fake: FakeA1111,
  ours: Promise<unknown>,
  cancel: AbortController,
  theirs: Awaited<ReturnType<typeof theirJob>>,
): Promise<void> {
  cancel.abort(new Error('cancelled by the test'))
  await expect(ours).rejects.toThrow('cancelled by the test')
  expect((await theirs.answer).status).toBe(200)
  expect(theirs.interruptsAtEnd()).toBe(0)
  await expect.poll(() => fake.interrupts).toBe(1)
}

const txt2imgCount = (fake: FakeA1111) => fake.requests.filter((r) => r.path === '/sdapi/v1/txt2img').length

describe('someone else using the same A1111', () => {
  let fake: FakeA1111
  afterEach(async () => {
    await fake?.close()
  })

  it('neither reports their progress as ours nor interrupts their job when ours is cancelled', async () => {
    fake = await startFakeA1111({ stepMs: 20 })
    const gen = createA1111Generator(
      { baseUrl: fake.url, timeoutMs: 30_000, progressIntervalMs: 20 },
      { log: pino({ level: 'silent' }) },
    )
    // A person's job from the web UI, 40 steps (about 0.8 s), already running.
    const theirs = await theirJob(fake, {})

    const updates: GenerateProgress[] = []
    const cancel = new AbortController()
    const ours = gen.generate(
      { prompt: 'ours', steps: 40 },
      { signal: cancel.signal, onProgress: (p) => updates.push(p) },
    )
    await expect.poll(() => txt2imgCount(fake)).toBe(2)
    // Their job runs for a while yet; A1111's progress is theirs, not ours.
    await once(fake.events, 'step')
    await once(fake.events, 'step')
    expect(updates).toEqual([])
    await cancelOursSparingTheirs(fake, ours, cancel, theirs)
    await gen.close()
  })

  it('looks at the server while the job is being recorded, and sends the job only once it is', async () => {
    fake = await startFakeA1111({ cachedAnswer: true })
    const gen = createA1111Generator(
      { baseUrl: fake.url, timeoutMs: 30_000 },
      { log: pino({ level: 'silent' }) },
    )
    let recordedOk: () => void = () => {}
    const recorded = new Promise<void>((resolve) => {
      recordedOk = resolve
    })
    const snapshot = once(fake.events, 'request')
    const ours = gen.generate(
      { prompt: 'ours', steps: 4 },
      { signal: new AbortController().signal, recorded },
    )
    const [first] = (await snapshot) as [{ path: string }]
    expect(first.path).toBe('/sdapi/v1/progress')
    // The snapshot is answered; still no job until the journal's write is done.
    await expect.poll(() => fake.requests.length).toBe(1)
    await new Promise((resolve) => setImmediate(resolve))
    expect(txt2imgCount(fake)).toBe(0)
    recordedOk()
    const result = await ours
    expect(result.image.subarray(1, 4).toString('latin1')).toBe('PNG')
    expect(txt2imgCount(fake)).toBe(1)

    const refused = Object.assign(new Error('DATA_DIR cannot be written'), { code: 'E_STORAGE' })
    const failing = gen.generate(
      { prompt: 'never recorded', steps: 4 },
      { signal: new AbortController().signal, recorded: Promise.reject(refused) },
    )
    await expect(failing).rejects.toBe(refused)
    expect(txt2imgCount(fake)).toBe(1)
    expect(fake.interrupts).toBe(0)
    await gen.close()
  })
})

describe('an A1111 that follows jobs by their task id (its web UI is on)', () => {
  let fake: FakeA1111
  afterEach(async () => {
    await fake?.close()
  })

  const quiet = pino({ level: 'silent' })
  const noHooks = () => ({ signal: new AbortController().signal })
  /** The paths asked for from request `from` on. */
  const pathsFrom = (from: number) => fake.requests.slice(from).map((r) => `${r.method} ${r.path}`)
  /** A fake of 20 ms a step, and a generator that has learnt from one job that it follows task ids. */
  async function learnedGenerator(options: { progressIntervalMs?: number }) {
    fake = await startFakeA1111({ stepMs: 20 })
    const gen = createA1111Generator({ baseUrl: fake.url, timeoutMs: 30_000, ...options }, { log: quiet })
    await gen.generate({ prompt: 'learn', steps: 1, width: 64, height: 64 }, noHooks())
    await expect.poll(() => pathsFrom(0).includes('POST /internal/progress')).toBe(true)
    return gen
  }

  it('learns it from the first job, then sends each job at once, under the id A1111 reports', async () => {
    fake = await startFakeA1111({ cachedAnswer: true })
    const gen = createA1111Generator({ baseUrl: fake.url, timeoutMs: 30_000 }, { log: quiet })
    await gen.generate({ prompt: 'first', steps: 4 }, noHooks())
    // The first job looks at the server before it goes; once done, its id is asked after.
    await expect
      .poll(() => pathsFrom(0))
      .toEqual(['GET /sdapi/v1/progress', 'POST /sdapi/v1/txt2img', 'POST /internal/progress'])
    const asked = fake.requests[2]!.body as { id_task: string }
    expect(asked.id_task).toBe(fake.tasks[0])
    expect((fake.requests[1]!.body as { force_task_id: string }).force_task_id).toBe(fake.tasks[0])

    const from = fake.requests.length
    const result = await gen.generate({ prompt: 'second', steps: 4 }, noHooks())
    expect(result.image.subarray(1, 4).toString('latin1')).toBe('PNG')
    // No snapshot: the job is the first thing the server hears of it, and nothing follows.
    expect(pathsFrom(from)).toEqual(['POST /sdapi/v1/txt2img'])
    expect(fake.tasks[1]).toMatch(/^task\(bridge-/)
    expect(fake.tasks[1]).not.toBe(fake.tasks[0])
    await gen.close()
  })

  it("neither reports a person's job as ours nor interrupts it, and interrupts ours once it runs", async () => {
    const gen = await learnedGenerator({ progressIntervalMs: 20 })

    const theirs = await theirJob(fake, { width: 64, height: 64 })
    const from = fake.requests.length
    const updates: GenerateProgress[] = []
    const cancel = new AbortController()
    const ours = gen.generate(
      { prompt: 'ours', steps: 40, width: 64, height: 64 },
      { signal: cancel.signal, onProgress: (p) => updates.push(p) },
    )
    await expect.poll(() => fake.tasks.length).toBe(3)
    // Sent at once, without a snapshot; A1111 says ours waits behind theirs.
    expect(pathsFrom(from)[0]).toBe('POST /sdapi/v1/txt2img')
    await expect
      .poll(() => pathsFrom(from).filter((p) => p === 'POST /internal/progress').length)
      .toBeGreaterThanOrEqual(2)
    expect(updates).toEqual([])
    await cancelOursSparingTheirs(fake, ours, cancel, theirs)
    await gen.close()
  })

  it('interrupts at once a job of its own that A1111 says is running', async () => {
    const gen = await learnedGenerator({})
    const cancel = new AbortController()
    const ours = gen.generate(
      { prompt: 'ours', steps: 200, width: 64, height: 64 },
      { signal: cancel.signal },
    )
    await once(fake.events, 'step')
    cancel.abort(new Error('cancelled by the test'))
    await expect(ours).rejects.toThrow('cancelled by the test')
    // Long before its 200 steps (4 s) and before any poll (1 s): asked, then interrupted.
    expect(fake.interrupts).toBe(1)
    expect(fake.state().sampling_step).toBeLessThan(100)
    await gen.close()
  })

  it.each([
    ['no-webui', 'started with --nowebui'],
    ['no-task-ids', 'a version that ignores force_task_id'],
  ] as const)('keeps looking before each job on an A1111 %s (%s)', async (fault, _what) => {
    fake = await startFakeA1111({ cachedAnswer: true, fault })
    const gen = createA1111Generator({ baseUrl: fake.url, timeoutMs: 30_000 }, { log: quiet })
    await gen.generate({ prompt: 'first', steps: 4 }, noHooks())
    await expect.poll(() => pathsFrom(0).length).toBe(3)
    const from = fake.requests.length
    await gen.generate({ prompt: 'second', steps: 4 }, noHooks())
    expect(pathsFrom(from)).toEqual(['GET /sdapi/v1/progress', 'POST /sdapi/v1/txt2img'])
    await gen.close()
  })

  it('asks again, ten minutes on, a server that did not follow task ids (restarted with its web UI)', async () => {
    fake = await startFakeA1111({ cachedAnswer: true, fault: 'no-webui' })
    let t = 0
    const clock = { now: () => new Date(), monotonic: () => t }
    const gen = createA1111Generator({ baseUrl: fake.url, timeoutMs: 30_000 }, { log: quiet, clock })
    const asks = () => pathsFrom(0).filter((p) => p === 'POST /internal/progress').length
    await gen.generate({ prompt: 'first', steps: 4 }, noHooks())
    await expect.poll(asks).toBe(1)
    t += 9 * 60_000
    await gen.generate({ prompt: 'soon after', steps: 4 }, noHooks())
    fake.setFault(null)
    t += 60_000
    await gen.generate({ prompt: 'ten minutes on', steps: 4 }, noHooks())
    await expect.poll(asks).toBe(2)
    const from = fake.requests.length
    await gen.generate({ prompt: 'followed by its id', steps: 4 }, noHooks())
    expect(pathsFrom(from)).toEqual(['POST /sdapi/v1/txt2img'])
    // 'soon after' was not asked about: one look in ten minutes.
    expect(asks()).toBe(2)
    await gen.close()
  })

  it('takes a job as its own when the web UI goes away, and looks first again from the next job on', async () => {
    const gen = await learnedGenerator({ progressIntervalMs: 20 })
    // A1111 restarted with --nowebui: /internal/progress is gone.
    fake.setFault('no-webui')
    const lost = fake.requests.length
    const updates: GenerateProgress[] = []
    await gen.generate(
      { prompt: 'ours', steps: 20, width: 64, height: 64 },
      { signal: new AbortController().signal, onProgress: (p) => updates.push(p) },
    )
    expect(updates.length).toBeGreaterThan(0)
    // Asked once during the job (404: taken as ours) and once after it, which settles it for the next ones.
    await expect.poll(() => pathsFrom(lost).filter((p) => p === 'POST /internal/progress').length).toBe(2)
    const from = fake.requests.length
    await gen.generate({ prompt: 'next', steps: 1, width: 64, height: 64 }, noHooks())
    expect(pathsFrom(from).slice(0, 2)).toEqual(['GET /sdapi/v1/progress', 'POST /sdapi/v1/txt2img'])
    await gen.close()
  })
})
