import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AppError } from '../../src/errors.ts'
import { type AnswerReader, createAnswerReader, decodeBase64 } from '../../src/generator/answer.ts'
import { readJsonValue, scanJson } from '../../src/generator/answer-scan.ts'
import { decodeBase64Bytes } from '../../src/generator/base64.ts'
import { makePng } from '../support/fake-a1111-image.ts'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const SEED = 20261202

/** An answer as A1111 sends it: bare base64 pictures, the request echoed, `info` as a JSON string. */
function a1111Answer(pngs: Buffer[], extra: Record<string, unknown> = {}): Buffer {
  const parameters = {
    prompt: 'a red fox',
    negative_prompt: '',
    steps: 20,
    width: 512,
    height: 512,
    seed: -1,
  }
  const info = JSON.stringify({
    prompt: 'a red fox',
    seed: 1234,
    all_seeds: [1234],
    infotexts: ['a red fox'],
  })
  return Buffer.from(
    JSON.stringify({ images: pngs.map((p) => p.toString('base64')), parameters, info, ...extra }),
  )
}

function chunks(body: Buffer, size = 64 * 1024): Buffer[] {
  const out: Buffer[] = []
  for (let at = 0; at < body.length; at += size) out.push(body.subarray(at, at + size))
  return out
}

async function rejection(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(AppError)
  return err as AppError
}

let png: Buffer
let small: Buffer
// Both paths, for every case: the worker pool (every body goes there) and the main thread.
let pooled: AnswerReader
let inPlace: AnswerReader

beforeAll(async () => {
  png = await makePng({ seed: 3, width: 512, height: 512, noise: true, done: 1 })
  small = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#c04010' } })
    .png()
    .toBuffer()
  pooled = createAnswerReader({ workerMinBytes: 0, aloneMaxBytes: 0, maxWorkers: 2 })
  inPlace = createAnswerReader({ workerMinBytes: Number.POSITIVE_INFINITY })
})

afterAll(async () => {
  await pooled.close()
  await inPlace.close()
})

const paths = () =>
  [
    ['worker', pooled],
    ['in place', inPlace],
  ] as const

describe('readImageAnswer', () => {
  it('decodes the first picture of a real answer, counts the others and keeps parameters and info as sent', async () => {
    const body = a1111Answer([png, small])
    expect(body.length).toBeGreaterThan(600_000)
    for (const [, reader] of paths()) {
      const answer = await reader.readImageAnswer(chunks(body), { texts: true })
      expect(answer.image.equals(png)).toBe(true)
      expect((await sharp(answer.image).metadata()).width).toBe(512)
      expect(answer.imageCount).toBe(2)
      expect(answer.texts?.map((t) => t.toString('latin1'))).toEqual([
        png.toString('base64'),
        small.toString('base64'),
      ])
      expect(answer.parameters).toEqual(JSON.parse(body.toString()).parameters)
      expect(typeof answer.info).toBe('string')
      expect(answer.info).toBe(JSON.parse(body.toString()).info)
      expect(answer.shape.depth).toBe(2)
    }
  })

  it('leaves the base64 text out unless asked, and reads a body collected chunk by chunk', async () => {
    const body = a1111Answer([small, png])
    for (const [, reader] of paths()) {
      const collected = reader.body(body.length)
      for (const chunk of chunks(body, 1000)) collected.push(chunk)
      expect(collected.length).toBe(body.length)
      const answer = await reader.readImageAnswer(collected)
      expect(answer.image.equals(small)).toBe(true)
      expect(answer.imageCount).toBe(2)
      expect(answer.texts).toBeUndefined()
    }
  })

  it('tolerates a data: prefix, escaped slashes and pictures that are not strings', async () => {
    const b64 = small.toString('base64')
    const body = Buffer.from(
      `{"images": [null, 7, "data:image/png;base64,${b64}", "${b64.replaceAll('/', '\\/')}"], "info": "{}"}`,
    )
    for (const [, reader] of paths()) {
      const answer = await reader.readImageAnswer(body, { texts: true })
      expect(answer.image.equals(small)).toBe(true)
      expect(answer.imageCount).toBe(2)
      expect(answer.texts?.[1]?.toString('latin1')).toBe(b64)
      expect(answer.parameters).toBeUndefined()
    }
  })

  it('says E_A1111_NO_IMAGE for no images, `images: []` and images that are not strings', async () => {
    for (const text of [
      '{}',
      '{"images": []}',
      '{"images": "abc"}',
      '{"images": [1, null, {}]}',
      '{"images": null}',
    ]) {
      for (const [, reader] of paths()) {
        const err = await rejection(reader.readImageAnswer(Buffer.from(text)))
        expect(err.code, text).toBe('E_A1111_NO_IMAGE')
        expect(err.message).toMatch(/send_images/)
      }
    }
  })

  it('says E_BAD_IMAGE for a first picture that is not base64, by decoding it', async () => {
    const b64 = small.toString('base64')
    const bad = [
      `${b64.slice(0, 20)}!${b64.slice(21)}`,
      `${b64.slice(0, 8)}\\n${b64.slice(8)}`,
      'a',
      '====',
      '',
      `é${b64.slice(1)}`,
    ]
    for (const picture of bad) {
      const body = Buffer.from(JSON.stringify({ images: [picture.replaceAll('\\n', '\n')] }))
      for (const [, reader] of paths()) {
        const err = await rejection(reader.readImageAnswer(body))
        expect(err.code, picture).toBe('E_BAD_IMAGE')
        expect(err.message).toMatch(/not valid base64/)
      }
    }
  })

  it('says E_A1111_BAD_RESPONSE for what is not JSON, or not an object', async () => {
    const cases: [string, RegExp][] = [
      ['<html><body>502 Bad Gateway</body></html>', /'<' where a value should be .*A1111_BASE_URL/],
      ['', /empty/],
      ['{"images": ["abc', /never ends/],
      ['{"images": []', /ends before the value does/],
      ['{"images": [], }', /expected a key/],
      ['[1, 2]', /not an object/],
      ['{"images": ["QUJD"], "info": "\\q"}', /bad string in "info"/],
      ['{"images": ["QUJD"]} {}', /after the end/],
    ]
    for (const [text, message] of cases) {
      for (const [, reader] of paths()) {
        const err = await rejection(reader.readImageAnswer(Buffer.from(text)))
        expect(err.code, text).toBe('E_A1111_BAD_RESPONSE')
        expect(err.message, text).toMatch(message)
      }
    }
  })
})

describe('hostile shapes are refused before JSON.parse builds them (issue 13)', () => {
  const hostile: [string, () => Buffer, RegExp][] = [
    ['2 MB of [', () => Buffer.alloc(2 * 1024 * 1024, '['), /nested deeper than 64 levels \(at byte 64 /],
    ['30 MB of [', () => Buffer.alloc(30 * 1024 * 1024, '['), /nested deeper than 64 levels/],
    [
      'deep objects in parameters',
      () => Buffer.from(`{"images":[],"parameters":${'{"a":'.repeat(100)}1${'}'.repeat(100)}}`),
      /nested deeper/,
    ],
    ['a million numbers', () => Buffer.from(`[${'0,'.repeat(1_000_000)}0]`), /more than 200000 values/],
    [
      'a million empty arrays',
      () => Buffer.from(`{"images":[${'[],'.repeat(1_000_000)}[]]}`),
      /more than 200000 values/,
    ],
    [
      'a 20 MB info string',
      () => Buffer.from(`{"images":["QUJD"],"info":"${'x'.repeat(20 * 1024 * 1024)}"}`),
      /a string of 20971520 bytes/,
    ],
  ]
  for (const [name, make, message] of hostile) {
    it(`refuses ${name}`, async () => {
      const body = make()
      for (const [, reader] of paths()) {
        for (const read of [() => reader.readImageAnswer(body), () => reader.readJson(body)]) {
          const err = await rejection(read())
          expect(err.code).toBe('E_A1111_BAD_RESPONSE')
          expect(err.message).toMatch(/refused before parsing/)
          expect(err.message).toMatch(message)
        }
      }
    })
  }

  it('reads pictures larger than the string limit: it applies outside `images`', async () => {
    const big = Buffer.alloc(600_000, 7)
    const body = a1111Answer([big])
    const answer = await inPlace.readImageAnswer(body)
    expect(answer.image.equals(big)).toBe(true)
    const strict = createAnswerReader({
      workerMinBytes: 0,
      aloneMaxBytes: 0,
      limits: { maxStringBytes: 1000 },
    })
    try {
      expect((await strict.readImageAnswer(body)).image.equals(big)).toBe(true)
      expect((await rejection(strict.readJson(body))).message).toMatch(/a string of 800000 bytes/)
    } finally {
      await strict.close()
    }
  })
})

describe('readJson', () => {
  it('parses the small answers (options, progress) as JSON.parse does', async () => {
    const progress = {
      progress: 0.5,
      eta_relative: 3.2,
      state: { job_count: 1, sampling_step: 10 },
      current_image: null,
    }
    for (const [, reader] of paths()) {
      expect(await reader.readJson(Buffer.from(JSON.stringify(progress)))).toEqual(progress)
      expect(
        await reader.readJson([Buffer.from('{"sd_model'), Buffer.from('_checkpoint": "v1-5"}')]),
      ).toEqual({
        sd_model_checkpoint: 'v1-5',
      })
    }
  })
})

describe('the event loop', () => {
  it('keeps turning while a 40 MB answer is read in a worker, and not while it is read in place', async () => {
    const body = a1111Answer(Array.from({ length: 66 }, () => png))
    expect(body.length).toBeGreaterThan(40 * 1024 * 1024)
    const ticksWhile = async (reader: AnswerReader) => {
      const collected = reader.body(body.length)
      for (const chunk of chunks(body)) collected.push(chunk)
      let ticks = 0
      const ticker = setInterval(() => ticks++, 1)
      try {
        // With the texts: the worker copies 40 MB out, which takes it tens of milliseconds.
        const answer = await reader.readImageAnswer(collected, { texts: true })
        expect(answer.imageCount).toBe(66)
        expect(answer.image.equals(png)).toBe(true)
      } finally {
        clearInterval(ticker)
      }
      return ticks
    }
    expect(await ticksWhile(inPlace)).toBe(0)
    expect(await ticksWhile(pooled)).toBeGreaterThanOrEqual(1)
  })
})

describe('the worker pool', () => {
  it('turns a worker that dies into an AppError for that answer, and starts another for the next', async () => {
    const crashing = [
      "import { parentPort } from 'node:worker_threads'; parentPort.on('message', () => { throw new Error('boom') })",
      "import { parentPort } from 'node:worker_threads'; parentPort.on('message', () => process.exit(3))",
    ]
    for (const source of crashing) {
      const reader = createAnswerReader({
        workerMinBytes: 0,
        aloneMaxBytes: 0,
        workerUrl: new URL(`data:text/javascript,${encodeURIComponent(source)}`),
      })
      try {
        const err = await rejection(reader.readJson(Buffer.from('{}')))
        expect(err.code).toBe('E_INTERNAL')
        expect(err.message).toMatch(/worker reading an A1111 answer stopped/)
        expect(reader.stats().workers).toBe(0)
        expect((await rejection(reader.readJson(Buffer.from('{}')))).code).toBe('E_INTERNAL')
      } finally {
        await reader.close()
      }
    }
  })

  it('reads a lone answer where it arrives, and sends a burst or a big one to the workers', async () => {
    const body = a1111Answer([png])
    const reader = createAnswerReader({ burstMs: 60_000, aloneMaxBytes: body.length })
    try {
      // The daemon's defaults: a 512x512 answer is large enough for a worker, small enough to read alone.
      expect(body.length).toBeGreaterThan(256 * 1024)
      expect((await reader.readImageAnswer(body)).image.equals(png)).toBe(true)
      expect(reader.stats().workers).toBe(0)
      // The next one within burstMs is part of a burst.
      expect((await reader.readImageAnswer(body)).image.equals(png)).toBe(true)
      expect(reader.stats().workers).toBe(1)
    } finally {
      await reader.close()
    }
    const strict = createAnswerReader({ aloneMaxBytes: body.length - 1 })
    try {
      expect((await strict.readImageAnswer(body)).image.equals(png)).toBe(true)
      expect(strict.stats().workers).toBe(1)
    } finally {
      await strict.close()
    }
  })

  it('runs reads side by side, up to its size, and queues the rest', async () => {
    const reader = createAnswerReader({ workerMinBytes: 0, aloneMaxBytes: 0, maxWorkers: 2 })
    try {
      const body = a1111Answer([png])
      const reads = [0, 1, 2, 3, 4].map(() => reader.readImageAnswer(body))
      expect(reader.stats()).toEqual({ workers: 2, busy: 2, queued: 3 })
      for (const answer of await Promise.all(reads)) expect(answer.image.equals(png)).toBe(true)
      expect(reader.stats()).toEqual({ workers: 2, busy: 0, queued: 0 })
    } finally {
      await reader.close()
    }
  })

  it('closes once, lets running reads finish, and reads in place afterwards', async () => {
    const reader = createAnswerReader({ workerMinBytes: 0, aloneMaxBytes: 0 })
    const running = reader.readImageAnswer(a1111Answer([small]))
    const closing = reader.close()
    expect(reader.close()).toBe(closing)
    expect((await running).image.equals(small)).toBe(true)
    await closing
    expect(reader.stats().workers).toBe(0)
    expect((await reader.readImageAnswer(a1111Answer([small]))).image.equals(small)).toBe(true)
    expect(reader.stats().workers).toBe(0)
  })

  it('does not keep the process alive, from src/ and from the built dist/', () => {
    const out = mkdtempSync(join(tmpdir(), 'answer-dist-'))
    try {
      execFileSync(process.execPath, [join(ROOT, 'scripts/build.ts'), '--out', out], { stdio: 'pipe' })
      for (const module of [join(ROOT, 'src/generator/answer.ts'), join(out, 'src/generator/answer.js')]) {
        // No close(): an idle worker must not hold the process, which exits as soon as the answer is read.
        const script = `
          const { createAnswerReader } = await import(${JSON.stringify(module)})
          const reader = createAnswerReader({ workerMinBytes: 0, aloneMaxBytes: 0 })
          const answer = await reader.readImageAnswer(Buffer.from('{"images": ["QUJD"]}'))
          console.log(answer.image.toString(), reader.stats().workers)`
        const file = join(out, 'read-one.mjs')
        writeFileSync(file, script)
        const run = spawnSync(process.execPath, [file], {
          encoding: 'utf8',
          timeout: 20_000,
        })
        expect(run.stderr).toBe('')
        expect(run.status, module).toBe(0)
        expect(run.stdout.trim()).toBe('ABC 1')
      }
    } finally {
      rmSync(out, { recursive: true, force: true })
    }
  })
})

describe('properties (fast-check, fixed seed)', () => {
  it('reads any JSON value as JSON.parse does', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = JSON.stringify(value)
        expect(readJsonValue(Buffer.from(text))).toEqual(JSON.parse(text))
      }),
      { seed: SEED, numRuns: 3000 },
    )
  })

  it('agrees with JSON.parse on which short texts are JSON, and throws nothing but AppError', () => {
    const alphabet = fc.constantFrom(...'{}[],:"\\ 0123456789.-+eEtrufalsn\n\tx'.split(''))
    fc.assert(
      fc.property(
        fc.array(alphabet, { maxLength: 40 }).map((cs) => cs.join('')),
        (text) => {
          let expected: unknown
          let valid = true
          try {
            expected = JSON.parse(text)
          } catch {
            valid = false
          }
          try {
            const value = readJsonValue(Buffer.from(text))
            expect(valid, text).toBe(true)
            expect(value).toEqual(expected)
          } catch (err) {
            expect(err, text).toBeInstanceOf(AppError)
            expect(valid, text).toBe(false)
          }
        },
      ),
      { seed: SEED, numRuns: 5000 },
    )
  })

  it('throws nothing but AppError on random bytes and on random JSON objects read as answers', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
          fc
            .dictionary(fc.constantFrom('images', 'info', 'parameters', 'x'), fc.jsonValue())
            .map((o) => Buffer.from(JSON.stringify(o))),
          fc
            .array(fc.oneof(fc.base64String(), fc.string(), fc.jsonValue()))
            .map((images) => Buffer.from(JSON.stringify({ images }))),
        ),
        async (body) => {
          try {
            const answer = await inPlace.readImageAnswer(body)
            expect(answer.image.length).toBeGreaterThan(0)
          } catch (err) {
            expect(err).toBeInstanceOf(AppError)
          }
          try {
            scanJson(body)
          } catch (err) {
            expect(err).toBeInstanceOf(AppError)
          }
        },
      ),
      { seed: SEED, numRuns: 3000 },
    )
  })

  it('decodes base64 held as bytes slice by slice, as the whole string would be, and refuses a stray byte in any slice', () => {
    // 300 KB of picture is 400 KB of base64: seven slices of 64 K characters, the last one short.
    const picture = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251))
    const text = Buffer.from(picture.toString('base64'), 'latin1')
    expect(decodeBase64Bytes(text)?.equals(picture)).toBe(true)
    expect(
      decodeBase64Bytes(Buffer.concat([Buffer.from('data:image/png;base64,'), text]))?.equals(picture),
    ).toBe(true)
    fc.assert(
      fc.property(
        // Not the last two characters: '=' there is padding, and valid base64 of another picture.
        fc.integer({ min: 0, max: text.length - 3 }),
        fc.constantFrom(0x21, 0x0a, 0x20, 0x3d, 0xe9),
        (at, stray) => {
          const bad = Buffer.from(text)
          bad[at] = stray
          expect(decodeBase64Bytes(bad)).toBeUndefined()
        },
      ),
      { seed: SEED, numRuns: 200 },
    )
  })

  it('decodes base64 of any bytes, as text or as bytes, and refuses any text Node would decode to fewer bytes', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 1, maxLength: 300 }),
        fc.string({ maxLength: 40 }),
        (bytes, noise) => {
          const b64 = Buffer.from(bytes).toString('base64')
          expect(decodeBase64(b64)?.equals(Buffer.from(bytes))).toBe(true)
          expect(decodeBase64(b64.replace(/=+$/, ''))?.equals(Buffer.from(bytes))).toBe(true)
          // The same text held as bytes decodes, or is refused, alike.
          expect(decodeBase64Bytes(Buffer.from(b64, 'latin1'))?.equals(Buffer.from(bytes))).toBe(true)
          const asBytes = Buffer.from(noise, 'latin1')
          expect(decodeBase64Bytes(asBytes)?.toString('hex')).toBe(
            decodeBase64(asBytes.toString('latin1'))?.toString('hex'),
          )
          const decoded = decodeBase64(noise)
          if (decoded !== undefined) {
            expect(noise).toMatch(/^[A-Za-z0-9+/_-]+={0,2}$/)
            expect(decoded.equals(Buffer.from(noise, 'base64'))).toBe(true)
          }
        },
      ),
      { seed: SEED, numRuns: 3000 },
    )
  })
})
