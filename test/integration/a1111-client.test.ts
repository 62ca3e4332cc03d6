import { on, once } from 'node:events'
import pino from 'pino'
import sharp from 'sharp'
import { afterEach, describe, expect, it } from 'vitest'
import { AppError, type ErrorCode } from '../../src/errors.ts'
import { type A1111GeneratorOptions, createA1111Generator } from '../../src/generator/a1111.ts'
import { type GenerateProgress, type Generator, KEEP_UPSTREAM_IMAGES } from '../../src/generator/types.ts'
import { type FakeA1111, type FakeA1111Options, startFakeA1111 } from '../support/fake-a1111.ts'
import type { StateDict } from '../support/fake-a1111-state.ts'

/** The task id the bridge gives each job it sends to A1111 (`force_task_id`), to tell its own jobs apart. */
const BRIDGE_TASK = expect.stringMatching(/^task\(bridge-[0-9a-f-]{36}\)$/)

const log = pino({ level: 'silent' })
const PAYLOAD = { prompt: 'a red fox', steps: 4, width: 96, height: 64, seed: 1234 }
const open: Array<FakeA1111 | Generator> = []

afterEach(async () => {
  await Promise.all(open.splice(0).map((x) => x.close()))
})

async function fake(options: FakeA1111Options = {}): Promise<FakeA1111> {
  const server = await startFakeA1111(options)
  open.push(server)
  return server
}

function client(server: FakeA1111, options: Partial<A1111GeneratorOptions> = {}): Generator {
  const gen = createA1111Generator({ baseUrl: server.url, timeoutMs: 30_000, ...options }, { log })
  open.push(gen)
  return gen
}

const hooks = (signal = new AbortController().signal) => ({ signal })

/** Awaits the rejection and checks it is an AppError with this code, for assertions on its message. */
async function failure(promise: Promise<unknown>, code: ErrorCode): Promise<AppError> {
  const err = await promise.then(
    () => expect.fail(`expected ${code}, but it resolved`),
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(AppError)
  expect((err as AppError).code).toBe(code)
  return err as AppError
}

const txt2imgCalls = (server: FakeA1111) => server.requests.filter((r) => r.path === '/sdapi/v1/txt2img')

describe('A1111 client against the fake A1111', () => {
  it('returns the first picture as a PNG of the requested size and the seed from info', async () => {
    const server = await fake()
    const result = await client(server).generate({ ...PAYLOAD, [KEEP_UPSTREAM_IMAGES]: true }, hooks())
    const meta = await sharp(result.image).metadata()
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 96, 64])
    expect(result.seed).toBe(1234)
    expect(JSON.parse(result.upstream.info as string).seed).toBe(1234)
    expect(result.upstream.images[0]).toBe(result.image.toString('base64'))
    expect((result.upstream.parameters as Record<string, unknown>).steps).toBe(4)
    const [call] = txt2imgCalls(server)
    expect(call?.method).toBe('POST')
    // The symbol asking for the pictures back is not sent.
    expect(call?.body).toEqual({ ...PAYLOAD, force_task_id: BRIDGE_TASK })
  })

  it('keeps no base64 text of the pictures unless the payload asks for it', async () => {
    const server = await fake()
    const result = await client(server).generate(PAYLOAD, hooks())
    expect(result.image.length).toBeGreaterThan(0)
    expect(result.upstream.images).toEqual([])
    expect(result.seed).toBe(1234)
  })

  it('reports the seed A1111 picked for seed -1', async () => {
    const server = await fake()
    const result = await client(server).generate({ ...PAYLOAD, seed: -1 }, hooks())
    const info = JSON.parse(result.upstream.info as string)
    expect(result.seed).not.toBe(-1)
    expect(result.seed).toBe(info.seed)
    expect(info.all_seeds).toEqual([result.seed])
  })

  it('always sends Content-Type: application/json', async () => {
    const server = await fake()
    const gen = client(server)
    await gen.generate(PAYLOAD, hooks())
    await gen.check()
    for (const r of server.requests) expect(r.headers['content-type']).toBe('application/json')
  })

  it('sends HTTP Basic auth when credentials are set', async () => {
    const server = await fake({ auth: { username: 'sd', password: 's3cret' } })
    await client(server, { username: 'sd', password: 's3cret' }).generate(PAYLOAD, hooks())
    const expected = `Basic ${Buffer.from('sd:s3cret').toString('base64')}`
    expect(txt2imgCalls(server)[0]?.headers.authorization).toBe(expected)
  })

  it('E_A1111_AUTH names the settings when A1111 wants credentials and none are set', async () => {
    const server = await fake({ auth: { username: 'sd', password: 's3cret' } })
    const err = await failure(client(server).generate(PAYLOAD, hooks()), 'E_A1111_AUTH')
    expect(err.message).toContain('Not authenticated')
    expect(err.message).toMatch(/A1111_USERNAME and A1111_PASSWORD/)
  })

  it('E_A1111_AUTH for a wrong password, which never appears in the error', async () => {
    const server = await fake({ auth: { username: 'sd', password: 's3cret' } })
    const gen = client(server, { username: 'sd', password: 'hunter2' })
    const err = await failure(gen.generate(PAYLOAD, hooks()), 'E_A1111_AUTH')
    expect(err.message).toContain('Incorrect username or password')
    expect(err.message).toContain('A1111_PASSWORD')
    expect(JSON.stringify({ message: err.message, details: err.details })).not.toContain('hunter2')
    await failure(gen.check(), 'E_A1111_AUTH')
  })

  it('E_A1111_UNREACHABLE when the port refuses connections, without the address in the message', async () => {
    const server = await fake()
    await server.close()
    const gen = client(server)
    const err = await failure(gen.generate(PAYLOAD, hooks()), 'E_A1111_UNREACHABLE')
    expect(err.message).toBe(
      'A1111 is not reachable (connection refused): is it running, and is A1111_BASE_URL right?',
    )
    expect(err.message).not.toContain(new URL(server.url).port)
    expect(err.cause).toBeDefined()
    await failure(gen.check(), 'E_A1111_UNREACHABLE')
  })

  it('E_A1111_UNREACHABLE when A1111 drops the connection mid-request', async () => {
    const server = await fake({ fault: 'drop' })
    const err = await failure(client(server).generate(PAYLOAD, hooks()), 'E_A1111_UNREACHABLE')
    expect(err.message).toContain('connection reset')
  })

  it('E_A1111_NO_API tells to start A1111 with --api', async () => {
    const server = await fake({ fault: 'no-api' })
    const gen = client(server)
    const err = await failure(gen.generate(PAYLOAD, hooks()), 'E_A1111_NO_API')
    expect(err.message).toContain('start A1111 with --api')
    await failure(gen.check(), 'E_A1111_NO_API')
  })

  it('E_A1111_REJECTED shows what A1111 found wrong in the request', async () => {
    const server = await fake({ fault: 'reject422' })
    const err = await failure(client(server).generate(PAYLOAD, hooks()), 'E_A1111_REJECTED')
    expect(err.message).toContain('steps: value is not a valid integer')
    expect(err.message).toContain('width: value is not a valid integer')
  })

  it('E_A1111_REJECTED for a payload A1111 really refuses', async () => {
    const server = await fake()
    const err = await failure(
      client(server).generate({ ...PAYLOAD, steps: 'many' }, hooks()),
      'E_A1111_REJECTED',
    )
    expect(err.message).toBe('A1111 rejected the request (422): steps: value is not a valid integer')
  })

  it('E_A1111_FAILED shows the exception A1111 raised', async () => {
    const server = await fake({ fault: 'error500' })
    const err = await failure(client(server).generate(PAYLOAD, hooks()), 'E_A1111_FAILED')
    expect(err.message).toContain('OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB')
  })

  it('E_A1111_BAD_RESPONSE for a status A1111 does not send (a failing proxy)', async () => {
    const server = await fake({ fault: 'bad-gateway' })
    const err = await failure(client(server).generate(PAYLOAD, hooks()), 'E_A1111_BAD_RESPONSE')
    expect(err.message).toContain('502')
    expect(err.message).toContain('proxy')
  })

  it('E_A1111_BAD_RESPONSE for a body that is not JSON', async () => {
    const server = await fake({ fault: 'not-json' })
    const err = await failure(client(server).generate(PAYLOAD, hooks()), 'E_A1111_BAD_RESPONSE')
    expect(err.message).toContain('not JSON')
    expect(err.message).toContain('A1111_BASE_URL')
  })

  it('E_A1111_BAD_RESPONSE for an answer larger than the cap', async () => {
    const server = await fake()
    const err = await failure(
      client(server, { maxBodyBytes: 4096 }).generate(PAYLOAD, hooks()),
      'E_A1111_BAD_RESPONSE',
    )
    expect(err.message).toContain('larger than 4096 bytes')
  })

  it('E_A1111_NO_IMAGE for an answer without pictures', async () => {
    const server = await fake({ fault: 'no-images' })
    const err = await failure(client(server).generate(PAYLOAD, hooks()), 'E_A1111_NO_IMAGE')
    expect(err.message).toContain('without any picture')
  })

  it('E_BAD_IMAGE for a picture that is not base64', async () => {
    const server = await fake({ fault: 'bad-base64' })
    await failure(client(server).generate(PAYLOAD, hooks()), 'E_BAD_IMAGE')
  })

  it('passes base64 that is not a picture on, for the image pipeline to refuse', async () => {
    const server = await fake({ fault: 'bad-image' })
    const result = await client(server).generate(PAYLOAD, hooks())
    expect(result.image.toString()).toBe('this is not a picture')
    await expect(sharp(result.image).metadata()).rejects.toThrow()
  })

  it('E_GEN_TIMEOUT names A1111_TIMEOUT and interrupts A1111', async () => {
    const server = await fake({ fault: 'hang' })
    const err = await failure(client(server, { timeoutMs: 200 }).generate(PAYLOAD, hooks()), 'E_GEN_TIMEOUT')
    expect(err.message).toContain('within 0.2 s (A1111_TIMEOUT)')
    expect(server.interrupts).toBe(1)
  })

  it('rejects at once with the reason when cancelled before the call, sending nothing', async () => {
    const server = await fake()
    const controller = new AbortController()
    const reason = new Error('superseded')
    controller.abort(reason)
    await expect(client(server).generate(PAYLOAD, hooks(controller.signal))).rejects.toBe(reason)
    expect(server.requests).toHaveLength(0)
  })

  it('interrupts A1111 when cancelled mid-generation and discards the partial picture', async () => {
    // 150 steps of 200 ms: far longer than the test timeout, so only the interrupt can end it in time.
    const server = await fake({ stepMs: 200 })
    const controller = new AbortController()
    const reason = new Error('superseded')
    const job = client(server).generate({ ...PAYLOAD, steps: 150 }, hooks(controller.signal))
    await once(server.events, 'step')
    controller.abort(reason)
    await expect(job).rejects.toBe(reason)
    expect(server.interrupts).toBe(1)
    const state = server.state()
    expect(state.interrupted).toBe(true)
    expect(state.job_count).toBe(0)
  })

  it('reports rising progress with previews after show_progress_every_n_steps', async () => {
    const server = await fake({ stepMs: 15 })
    const updates: GenerateProgress[] = []
    const gen = client(server, { progressIntervalMs: 20 })
    await gen.generate({ ...PAYLOAD, steps: 40 }, { ...hooks(), onProgress: (p) => updates.push(p) })
    expect(updates.length).toBeGreaterThan(2)
    const values = updates.map((u) => u.progress)
    expect(values).toEqual([...values].sort((a, b) => a - b))
    for (const u of updates) {
      expect(u.progress).toBeGreaterThan(0)
      expect(u.progress).toBeLessThanOrEqual(1)
      expect(u.etaS).toBeGreaterThanOrEqual(0)
    }
    const previews = updates.flatMap((u) => (u.preview ? [u.preview] : []))
    expect(previews.length).toBeGreaterThan(0)
    const meta = await sharp(previews[0]).metadata()
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 96, 64])
    // The snapshot before the job asks for the state only; the polls while it runs want the preview.
    const [snapshot, ...polls] = server.requests.filter((r) => r.path === '/sdapi/v1/progress')
    expect(snapshot?.query.get('skip_current_image')).toBe('true')
    expect(polls.length).toBeGreaterThan(2)
    expect(polls.every((r) => r.query.get('skip_current_image') === 'false')).toBe(true)
  })

  it('finishes the job and stops polling when the server has no /progress', async () => {
    const server = await fake({ stepMs: 10, fault: 'no-progress' })
    const updates: GenerateProgress[] = []
    const gen = client(server, { progressIntervalMs: 5 })
    const result = await gen.generate(
      { ...PAYLOAD, steps: 30 },
      { ...hooks(), onProgress: (p) => updates.push(p) },
    )
    expect(result.seed).toBe(1234)
    expect(updates).toHaveLength(0)
    expect(server.requests.filter((r) => r.path === '/sdapi/v1/progress')).toHaveLength(1)
  })

  it('check() resolves against a running A1111; the name is host:port without credentials', async () => {
    const server = await fake()
    const port = new URL(server.url).port
    const gen = createA1111Generator(
      { baseUrl: `http://sd:s3cret@127.0.0.1:${port}`, timeoutMs: 1000 },
      { log },
    )
    open.push(gen)
    expect(gen.name).toBe(`127.0.0.1:${port}`)
    await expect(gen.check()).resolves.toBeUndefined()
    expect(server.requests.map((r) => r.path)).toEqual(['/sdapi/v1/options'])
    await gen.close()
    await gen.close()
  })
})

describe('the fake A1111 itself', () => {
  async function progressOf(server: FakeA1111, skip = false) {
    const res = await fetch(`${server.url}/sdapi/v1/progress?skip_current_image=${skip}`)
    return (await res.json()) as { progress: number; state: StateDict; current_image: string | null }
  }

  it('answers progress when idle with the shape of a fresh A1111', async () => {
    const server = await fake()
    const res = await fetch(`${server.url}/sdapi/v1/progress?skip_current_image=false`)
    expect(await res.text()).toBe(
      '{"progress":0.0,"eta_relative":0.0,"state":{"skipped":false,"interrupted":false,' +
        '"stopping_generation":false,"job":"","job_count":0,"job_timestamp":"0","job_no":0,' +
        '"sampling_step":0,"sampling_steps":0},"current_image":null,"textinfo":null}',
    )
  })

  it('computes progress as 0.01 + step/steps and shows a preview from step 10', async () => {
    const server = await fake({ stepMs: 100 })
    const job = fetch(`${server.url}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'fox', steps: 12, width: 64, height: 64 }),
    })
    const seen: Array<Awaited<ReturnType<typeof progressOf>>> = []
    for await (const [state] of on(server.events, 'step') as AsyncIterable<[StateDict]>) {
      if (state.sampling_step === 2 || state.sampling_step === 10) seen.push(await progressOf(server))
      if (state.sampling_step >= 10) break
    }
    for (const p of seen) {
      expect(p.progress).toBeCloseTo(0.01 + p.state.sampling_step / 12, 10)
      expect(p.state.job).toBe('scripts_txt2img')
      expect(p.current_image === null).toBe(p.state.sampling_step < 10)
    }
    expect(seen.map((p) => p.current_image === null)).toEqual([true, false])
    expect((await job).status).toBe(200)
    const idle = await progressOf(server)
    expect(idle.progress).toBe(0)
    expect(idle.state).toMatchObject({
      job: '',
      job_count: 0,
      job_no: 1,
      sampling_step: 0,
      sampling_steps: 12,
    })
  })

  it('loses an interrupt sent while idle, as begin() resets the flag', async () => {
    const server = await fake()
    const res = await fetch(`${server.url}/sdapi/v1/interrupt`, { method: 'POST' })
    expect([res.status, await res.text()]).toEqual([200, '{}'])
    expect(server.state().interrupted).toBe(true)
    let steps = 0
    server.events.on('step', () => steps++)
    const answer = await fetch(`${server.url}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'fox', steps: 5, width: 64, height: 64 }),
    })
    expect(answer.status).toBe(200)
    expect(steps).toBe(5)
    expect(server.state().interrupted).toBe(false)
    expect(server.interrupts).toBe(1)
  })

  it('checks credentials before the body, and answers unknown routes and wrong methods like starlette', async () => {
    const server = await fake({ auth: { username: 'sd', password: 's3cret' } })
    const bad = await fetch(`${server.url}/sdapi/v1/txt2img`, { method: 'POST', body: '{bad' })
    expect([bad.status, await bad.json()]).toEqual([
      401,
      { error: 'HTTPException', detail: 'Not authenticated', body: '', errors: '' },
    ])
    const missing = await fetch(`${server.url}/sdapi/v1/nothing`)
    expect([missing.status, await missing.text()]).toEqual([404, '{"detail":"Not Found"}'])
    const wrong = await fetch(`${server.url}/sdapi/v1/txt2img`)
    expect([wrong.status, wrong.headers.get('allow'), await wrong.text()]).toEqual([
      405,
      'POST',
      '{"detail":"Method Not Allowed"}',
    ])
  })

  it('cachedAnswer: every txt2img, whatever it asks, gets the same 660 KB body, and the job still runs', async () => {
    const server = await fake({ cachedAnswer: true })
    const ends: StateDict[] = []
    server.events.on('end', (s: StateDict) => ends.push(s))
    const post = (prompt: string) =>
      fetch(`${server.url}/sdapi/v1/txt2img`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt, seed: -1, width: 64, height: 64 }),
      }).then((res) => res.text())
    const [first, second] = [await post('fox'), await post('owl')]
    expect(second).toBe(first)
    expect(first.length).toBeGreaterThan(600_000)
    expect(ends).toHaveLength(2)
    // The bridge's own client reads it like any answer: a noisy 512x512 PNG and seed 42.
    const result = await client(server).generate(PAYLOAD, hooks())
    const meta = await sharp(result.image).metadata()
    expect([meta.format, meta.width, meta.height, result.seed]).toEqual(['png', 512, 512, 42])
    expect(result.image.length).toBeGreaterThan(450_000)
    server.setFault('error500')
    await failure(client(server).generate(PAYLOAD, hooks()), 'E_A1111_FAILED')
  })

  it('validates bodies like FastAPI 0.94: text/plain is not a dict, steps must be an integer', async () => {
    const server = await fake()
    const post = (body: string, type: string) =>
      fetch(`${server.url}/sdapi/v1/txt2img`, { method: 'POST', headers: { 'content-type': type }, body })
    const plain = await post('{"prompt": "fox"}', 'text/plain')
    expect([plain.status, await plain.text()]).toEqual([
      422,
      '{"detail":[{"loc":["body"],"msg":"value is not a valid dict","type":"type_error.dict"}]}',
    ])
    const steps = await post('{"steps": "many"}', 'application/json')
    expect([steps.status, await steps.text()]).toEqual([
      422,
      '{"detail":[{"loc":["body","steps"],"msg":"value is not a valid integer","type":"type_error.integer"}]}',
    ])
    const broken = await post('{bad', 'application/json')
    const decoded = (await broken.json()) as { detail: unknown[] }
    expect(decoded.detail[0]).toMatchObject({
      loc: ['body', 1],
      msg: 'Expecting property name enclosed in double quotes: line 1 column 2 (char 1)',
      type: 'value_error.jsondecode',
    })
    expect(txt2imgCalls(server)).toHaveLength(3)
  })
})
