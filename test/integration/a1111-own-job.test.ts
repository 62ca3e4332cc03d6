import { once } from 'node:events'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { createA1111Generator } from '../../src/generator/a1111.ts'
import type { GenerateProgress } from '../../src/generator/types.ts'
import { type FakeA1111, startFakeA1111 } from '../support/fake-a1111.ts'

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
    const theirs = fetch(`${fake.url}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'theirs', steps: 40 }),
    })
    await once(fake.events, 'begin')
    let interruptsWhenTheirsEnded: number | undefined
    fake.events.once('end', () => {
      interruptsWhenTheirsEnded = fake.interrupts
    })

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
    cancel.abort(new Error('cancelled by the test'))

    await expect(ours).rejects.toThrow('cancelled by the test')
    expect((await theirs).status).toBe(200)
    expect(interruptsWhenTheirsEnded).toBe(0)
    // Ours was interrupted once it began, so A1111 is not left rendering it for nobody.
    await expect.poll(() => fake.interrupts).toBe(1)
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
