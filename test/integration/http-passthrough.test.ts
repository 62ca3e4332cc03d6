import { once } from 'node:events'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { expectedFrame, fetchPicture } from '../support/expected.ts'
import { type FakeA1111, type Fault, type RecordedRequest, startFakeA1111 } from '../support/fake-a1111.ts'
import { type HttpAnswer, type HttpOptions, hostPort, httpCall } from '../support/http.ts'

/** The task id the bridge gives each job it sends to A1111 (`force_task_id`), to tell its own jobs apart. */
const BRIDGE_TASK = expect.stringMatching(/^task\(bridge-[0-9a-f-]{36}\)$/)

/*
 * The HTTP listener as the older Python proxy's clients use it (README "HTTP"): real
 * requests on loopback against a bridge running in this process and a fake A1111 on a real socket.
 */

const KEY = 'pico-secret-key'
const FRAME_BYTES = 240 * 240 * 2
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

interface ErrorBody {
  error: { code: string; message: string }
}

/** A JSON error answer with exactly `{error: {code, message}}`, no upstream address and no stack trace. */
function expectError(res: HttpAnswer, status: number, code: string, a1111Url?: string): void {
  expect({ status: res.status, body: res.text() }).toMatchObject({ status })
  expect(res.headers['content-type']).toMatch(/^application\/json/)
  expect(res.json<ErrorBody>()).toEqual({ error: { code, message: expect.any(String) } })
  expect(res.json<ErrorBody>().error.message).not.toBe('')
  if (a1111Url !== undefined) {
    expect(res.text()).not.toContain(hostPort(a1111Url))
    expect(res.text()).not.toContain(a1111Url)
  }
  expect(res.text()).not.toMatch(/\bat .*:\d+:\d+|\.ts:\d+|node:internal/)
}

function txt2imgRequests(fake: FakeA1111): RecordedRequest[] {
  return fake.requests.filter((r) => r.path === '/sdapi/v1/txt2img')
}

describe("the older proxy's clients against the bridge's HTTP listener", () => {
  let fake: FakeA1111
  let bridge: TestBridge
  const call = (path: string, options: HttpOptions = {}) => httpCall(bridge.httpPort!, path, options)
  const withKey = (headers: Record<string, string> = {}) => ({ 'X-API-Key': KEY, ...headers })

  beforeAll(async () => {
    fake = await startFakeA1111()
    bridge = await startBridge({
      A1111_BASE_URL: fake.url,
      HTTP_PORT: 0,
      SERVICE_API_KEY: KEY,
      A1111_TIMEOUT: 1,
    })
  })
  afterAll(async () => {
    await bridge?.stop()
    await fake?.close()
  })

  describe('the README examples', () => {
    it('binary: answers 115200 bytes of RGB565-BE, the frame of the picture A1111 drew', async () => {
      const payload = { prompt: 'a simple test image', steps: 10, width: 240, height: 240, seed: 4242 }
      const res = await call('/sdapi/v1/txt2img', {
        headers: withKey({ 'Content-Type': 'application/json', Accept: 'application/octet-stream' }),
        body: JSON.stringify(payload),
      })
      expect(res.status).toBe(200)
      expect(res.headers['content-type']).toBe('application/octet-stream')
      expect(res.headers['content-length']).toBe('115200')
      expect(res.headers['x-image-width']).toBe('240')
      expect(res.headers['x-image-height']).toBe('240')
      expect(res.headers['x-image-format']).toBe('rgb565-be')
      expect(res.body.length).toBe(FRAME_BYTES)
      // The A1111 body is forwarded as it came, nothing dropped; only the task id the bridge follows it by is added.
      expect(txt2imgRequests(fake).at(-1)!.body).toEqual({ ...payload, force_task_id: BRIDGE_TASK })

      const png = await fetchPicture(fake.url, payload)
      const expected = await expectedFrame(png, { width: 240, height: 240, fit: 'cover' })
      expect(res.body.equals(expected)).toBe(true)
    })

    it('JSON: image_base64 holds the same bytes, with the size, the format and what A1111 answered', async () => {
      const payload = { prompt: 'another test', steps: 10, width: 240, height: 240, seed: 4242 }
      const binary = await call('/sdapi/v1/txt2img', {
        headers: withKey({ 'Content-Type': 'application/json', Accept: 'application/octet-stream' }),
        body: payload,
      })
      expect(binary.status).toBe(200)

      const res = await call('/sdapi/v1/txt2img', {
        headers: withKey({ 'Content-Type': 'application/json', Accept: 'application/json' }),
        body: { ...payload, return_base64: true },
      })
      expect(res.status).toBe(200)
      expect(res.headers['content-type']).toMatch(/^application\/json/)
      const json = res.json<{
        image_base64: string
        width: number
        height: number
        format: string
        images: string[]
        parameters: Record<string, unknown>
        info: string
      }>()
      const pixels = Buffer.from(json.image_base64, 'base64')
      expect(pixels.length).toBe(FRAME_BYTES)
      expect(pixels.equals(binary.body)).toBe(true)
      expect(json).toMatchObject({ width: 240, height: 240, format: 'rgb565-be' })
      expect(json.images).toHaveLength(1)
      expect(Buffer.from(json.images[0]!, 'base64').subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true)
      expect(json.parameters).toMatchObject({ prompt: 'another test', seed: 4242, width: 240, height: 240 })
      expect(JSON.parse(json.info)).toMatchObject({ seed: 4242, prompt: 'another test' })

      // return_base64 is the bridge's flag, not A1111's.
      const sent = txt2imgRequests(fake).at(-1)!
      expect(sent.body).toEqual({ ...payload, force_task_id: BRIDGE_TASK })
      expect(sent.body).not.toHaveProperty('return_base64')
    })

    it('answers JSON for return_base64 alone, without an Accept header', async () => {
      const res = await call('/sdapi/v1/txt2img', {
        headers: withKey({ 'Content-Type': 'application/json' }),
        body: { prompt: 'a flag only', steps: 5, width: 240, height: 240, seed: 7, return_base64: true },
      })
      expect(res.status).toBe(200)
      expect(res.headers['content-type']).toMatch(/^application\/json/)
      const json = res.json<{ image_base64: string; format: string }>()
      expect(Buffer.from(json.image_base64, 'base64').length).toBe(FRAME_BYTES)
      expect(json.format).toBe('rgb565-be')
      expect(txt2imgRequests(fake).at(-1)!.body).not.toHaveProperty('return_base64')
    })

    it('reads the body as JSON without any Content-Type header (MicroPython urequests)', async () => {
      const payload = { prompt: 'no content type', steps: 5, width: 240, height: 240, seed: 99 }
      const res = await call('/sdapi/v1/txt2img', { headers: withKey(), body: JSON.stringify(payload) })
      expect(res.status).toBe(200)
      // Neither Accept nor a flag: the binary answer is the default.
      expect(res.headers['content-type']).toBe('application/octet-stream')
      expect(res.body.length).toBe(FRAME_BYTES)
      expect(txt2imgRequests(fake).at(-1)!.body).toEqual({ ...payload, force_task_id: BRIDGE_TASK })
      const png = await fetchPicture(fake.url, payload)
      expect(res.body.equals(await expectedFrame(png, { width: 240, height: 240, fit: 'cover' }))).toBe(true)
    })
  })

  describe('SERVICE_API_KEY', () => {
    const body = { prompt: 'a key test', steps: 2, width: 240, height: 240 }

    it('refuses a missing or wrong X-API-Key with 401 before anything reaches A1111', async () => {
      const before = txt2imgRequests(fake).length
      const missing = await call('/sdapi/v1/txt2img', {
        headers: { 'Content-Type': 'application/json' },
        body,
      })
      expectError(missing, 401, 'E_UNAUTHORIZED')
      const wrong = await call('/sdapi/v1/txt2img', {
        headers: { 'Content-Type': 'application/json', 'X-API-Key': `${KEY}x` },
        body,
      })
      expectError(wrong, 401, 'E_UNAUTHORIZED')
      expect(wrong.text()).not.toContain(KEY)
      expect(txt2imgRequests(fake).length).toBe(before)

      const right = await call('/sdapi/v1/txt2img', {
        headers: { 'Content-Type': 'application/json', 'x-api-key': KEY },
        body,
      })
      expect(right.status).toBe(200)
      expect(right.body.length).toBe(FRAME_BYTES)
      expect(txt2imgRequests(fake).length).toBe(before + 1)
    })

    it('leaves /health open and guards /text and the device routes', async () => {
      await expect.poll(async () => (await call('/health')).status).toBe(200)
      expectError(await call('/text?input=a%20fox'), 401, 'E_UNAUTHORIZED')
      expectError(await call('/api/v1/devices'), 401, 'E_UNAUTHORIZED')
      expectError(await call('/api/v1/jobs/abc'), 401, 'E_UNAUTHORIZED')
      expectError(
        await call('/api/v1/devices/kitchen/prompt', {
          headers: { 'Content-Type': 'application/json' },
          body: { prompt: 'a fox' },
        }),
        401,
        'E_UNAUTHORIZED',
      )
      expectError(await call('/api/v1/devices/kitchen/frame.png'), 401, 'E_UNAUTHORIZED')
      expectError(await call('/api/v1/devices', { headers: { 'X-API-Key': 'nope' } }), 401, 'E_UNAUTHORIZED')

      const devices = await call('/api/v1/devices', { headers: withKey() })
      expect(devices.status).toBe(200)
      expect(devices.json()).toHaveProperty('devices')
    })
  })

  describe('upstream failures', () => {
    const cases: [Fault, number, string][] = [
      ['no-api', 502, 'E_A1111_NO_API'],
      ['error500', 502, 'E_A1111_FAILED'],
      ['reject422', 422, 'E_A1111_REJECTED'],
      ['not-json', 502, 'E_A1111_BAD_RESPONSE'],
      ['no-images', 502, 'E_A1111_NO_IMAGE'],
      ['bad-image', 502, 'E_BAD_IMAGE'],
      ['bad-base64', 502, 'E_BAD_IMAGE'],
      ['bad-gateway', 502, 'E_A1111_BAD_RESPONSE'],
      ['drop', 502, 'E_A1111_UNREACHABLE'],
      ['hang', 504, 'E_GEN_TIMEOUT'],
    ]

    it.each(cases)('fault %s answers %i %s, and the next request works', async (fault, status, code) => {
      const body = { prompt: `fault ${fault}`, steps: 2, width: 240, height: 240 }
      const headers = withKey({ 'Content-Type': 'application/json' })
      fake.setFault(fault)
      try {
        const res = await call('/sdapi/v1/txt2img', { headers, body })
        expectError(res, status, code, fake.url)
      } finally {
        fake.setFault(null)
      }
      const next = await call('/sdapi/v1/txt2img', { headers, body })
      expect(next.status).toBe(200)
      expect(next.body.length).toBe(FRAME_BYTES)
    })
  })

  describe('bad requests', () => {
    it('answers 400 for a body that is not JSON', async () => {
      const before = txt2imgRequests(fake).length
      const res = await call('/sdapi/v1/txt2img', {
        headers: withKey({ 'Content-Type': 'application/json' }),
        body: '{"prompt": "a fox",',
      })
      expectError(res, 400, 'E_BAD_REQUEST')
      expect(txt2imgRequests(fake).length).toBe(before)
    })

    it('answers 400 for a JSON array', async () => {
      const before = txt2imgRequests(fake).length
      const res = await call('/sdapi/v1/txt2img', {
        headers: withKey({ 'Content-Type': 'application/json' }),
        body: '[{"prompt": "a fox"}]',
      })
      expectError(res, 400, 'E_BAD_REQUEST')
      expect(txt2imgRequests(fake).length).toBe(before)
    })

    it('answers 413 for a body over 1 MB', async () => {
      const before = txt2imgRequests(fake).length
      const res = await call('/sdapi/v1/txt2img', {
        headers: withKey({ 'Content-Type': 'application/json' }),
        body: { prompt: 'x'.repeat(1024 * 1024), steps: 2 },
      })
      expectError(res, 413, 'E_TOO_LARGE')
      expect(txt2imgRequests(fake).length).toBe(before)
    })
  })

  describe('GET /text (the sd-b64-api client)', () => {
    it('answers the PNG in base64 under "image-base64" and sends the prompt without its quotes', async () => {
      const res = await call('/text?input=%22monkey%20with%20a%20hat%22', { headers: withKey() })
      expect(res.status).toBe(200)
      expect(res.headers['content-type']).toMatch(/^application\/json/)
      const json = res.json<Record<string, string>>()
      expect(Object.keys(json)).toEqual(['image-base64'])
      const png = Buffer.from(json['image-base64']!, 'base64')
      expect(png.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true)
      const meta = await sharp(png).metadata()
      expect(meta).toMatchObject({ format: 'png', width: 512, height: 512 })
      expect(txt2imgRequests(fake).at(-1)!.body).toMatchObject({ prompt: 'monkey with a hat' })
    })

    it('answers 400 without ?input=', async () => {
      const before = txt2imgRequests(fake).length
      expectError(await call('/text', { headers: withKey() }), 400, 'E_BAD_REQUEST')
      expectError(await call('/text?input=', { headers: withKey() }), 400, 'E_BAD_REQUEST')
      expectError(await call('/text?input=%22%22', { headers: withKey() }), 400, 'E_BAD_REQUEST')
      expectError(await call('/text?input=%22%20%22', { headers: withKey() }), 400, 'E_BAD_REQUEST')
      expect(txt2imgRequests(fake).length).toBe(before)
    })
  })

  describe('GET /health', () => {
    it('answers 200 with the broker, the queue and the generators, without the A1111 address', async () => {
      await expect.poll(async () => (await call('/health')).status).toBe(200)
      const res = await call('/health')
      expect(res.status).toBe(200)
      const json = res.json<{
        broker: { clients: number }
        queue: { waiting: number; running: number }
        generators: { state: string }[]
      }>()
      expect(json.broker.clients).toEqual(expect.any(Number))
      expect(json.queue).toEqual(expect.objectContaining({ waiting: 0, running: 0 }))
      expect(json.generators.length).toBeGreaterThan(0)
      expect(json.generators.every((g) => g.state === 'up')).toBe(true)
      expect(res.text()).not.toContain(hostPort(fake.url))
    })
  })
})

describe('an A1111 that is not there', () => {
  let bridge: TestBridge
  let url: string

  beforeAll(async () => {
    const gone = await startFakeA1111()
    url = gone.url
    await gone.close()
    bridge = await startBridge({ A1111_BASE_URL: url, HTTP_PORT: 0 })
  })
  afterAll(async () => {
    await bridge?.stop()
  })

  it('answers 502 E_A1111_UNREACHABLE for a txt2img request', async () => {
    const res = await httpCall(bridge.httpPort!, '/sdapi/v1/txt2img', {
      headers: { 'Content-Type': 'application/json' },
      body: { prompt: 'nobody home', steps: 2, width: 240, height: 240 },
    })
    expectError(res, 502, 'E_A1111_UNREACHABLE', url)
  })

  it('makes /health answer 503 once the check has found every generator down', async () => {
    await expect.poll(async () => (await httpCall(bridge.httpPort!, '/health')).status).toBe(503)
    const res = await httpCall(bridge.httpPort!, '/health')
    expect(res.status).toBe(503)
    const json = res.json<{ generators: { state: string }[] }>()
    expect(json.generators.length).toBeGreaterThan(0)
    expect(json.generators.every((g) => g.state === 'down')).toBe(true)
    expect(res.text()).not.toContain(hostPort(url))
  })
})

describe('a full queue', () => {
  let fake: FakeA1111
  let bridge: TestBridge

  beforeAll(async () => {
    fake = await startFakeA1111({ stepMs: 20 })
    bridge = await startBridge({ A1111_BASE_URL: fake.url, HTTP_PORT: 0, QUEUE_MAX: 1 })
  })
  afterAll(async () => {
    await bridge?.stop()
    await fake?.close()
  })

  it('answers 503 E_QUEUE_FULL with Retry-After when QUEUE_MAX jobs already wait', async () => {
    const port = bridge.httpPort!
    const body = { prompt: 'a long one', steps: 150, width: 240, height: 240 }
    const headers = { 'Content-Type': 'application/json' }
    const first = new AbortController()
    const second = new AbortController()
    const running = httpCall(port, '/sdapi/v1/txt2img', { headers, body, signal: first.signal })
    const waiting = httpCall(port, '/sdapi/v1/txt2img', { headers, body, signal: second.signal })
    // Both are in: one generating, one waiting (QUEUE_MAX 1).
    await expect
      .poll(async () => (await httpCall(port, '/health')).json<{ queue: unknown }>().queue)
      .toEqual({ waiting: 1, running: 1 })

    // The running job's request has reached A1111; the refused one must add none.
    await expect.poll(() => txt2imgRequests(fake).length).toBeGreaterThan(0)
    const before = txt2imgRequests(fake).length
    const res = await httpCall(port, '/sdapi/v1/txt2img', { headers, body })
    expectError(res, 503, 'E_QUEUE_FULL', fake.url)
    expect(Number(res.headers['retry-after'])).toBeGreaterThan(0)
    expect(txt2imgRequests(fake).length).toBe(before)

    first.abort()
    second.abort()
    await expect(running).rejects.toThrow()
    await expect(waiting).rejects.toThrow()
    await expect
      .poll(async () => (await httpCall(port, '/health')).json<{ queue: unknown }>().queue)
      .toEqual({
        waiting: 0,
        running: 0,
      })
  })
})

describe('a client that hangs up', () => {
  let fake: FakeA1111
  let bridge: TestBridge

  beforeAll(async () => {
    fake = await startFakeA1111({ stepMs: 50 })
    bridge = await startBridge({ A1111_BASE_URL: fake.url, HTTP_PORT: 0 })
  })
  afterAll(async () => {
    await bridge?.stop()
    await fake?.close()
  })

  it('cancels its job, which interrupts A1111, and the next request is served', async () => {
    const port = bridge.httpPort!
    const headers = { 'Content-Type': 'application/json' }
    const client = new AbortController()
    const stepped = once(fake.events, 'step')
    const pending = httpCall(port, '/sdapi/v1/txt2img', {
      headers,
      body: { prompt: 'a slow one', steps: 100, width: 240, height: 240 },
      signal: client.signal,
    })
    await stepped
    expect(fake.interrupts).toBe(0)
    client.abort()
    await expect(pending).rejects.toThrow()
    await expect.poll(() => fake.interrupts).toBe(1)

    const payload = { prompt: 'a quick one', steps: 2, width: 240, height: 240, seed: 5 }
    const next = await httpCall(port, '/sdapi/v1/txt2img', { headers, body: payload })
    expect(next.status).toBe(200)
    const png = await fetchPicture(fake.url, payload)
    expect(next.body.equals(await expectedFrame(png, { width: 240, height: 240, fit: 'cover' }))).toBe(true)
  })
})

describe('/health while conversions run', () => {
  let fake: FakeA1111
  let bridge: TestBridge

  beforeAll(async () => {
    fake = await startFakeA1111({ noise: true })
    bridge = await startBridge({ A1111_BASE_URL: fake.url, HTTP_PORT: 0 })
  })
  afterAll(async () => {
    await bridge?.stop()
    await fake?.close()
  })

  it('keeps answering 200 during 10 concurrent txt2img requests', async () => {
    const port = bridge.httpPort!
    await expect.poll(async () => (await httpCall(port, '/health')).status).toBe(200)
    const jobs = Array.from({ length: 10 }, (_, i) =>
      httpCall(port, '/sdapi/v1/txt2img', {
        headers: { 'Content-Type': 'application/json', Accept: 'application/octet-stream' },
        body: { prompt: `noise ${i}`, steps: 5, width: 512, height: 512, seed: 100 + i },
      }),
    )
    const health: number[] = []
    for (let i = 0; i < 5; i++) health.push((await httpCall(port, '/health')).status)
    const answers = await Promise.all(jobs)
    expect(health).toEqual([200, 200, 200, 200, 200])
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200))
    expect(answers.every((a) => a.body.length === FRAME_BYTES)).toBe(true)
  })
})
