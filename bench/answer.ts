import { monitorEventLoopDelay } from 'node:perf_hooks'
import { parseArgs } from 'node:util'
import { type AnswerReader, createAnswerReader } from '../src/generator/answer.ts'
import { makePng } from '../test/support/fake-a1111-image.ts'
import { machineInfo, ms, summarize, table } from './lib.ts'

/*
 * `node bench/answer.ts [--quick]` (add --max-semi-space-size=1 to measure as `npm start` runs): reading a
 * txt2img answer the way a1111.ts did (concatenate, toString, JSON.parse, a regex over the base64, decode) side
 * by side with answer.ts, in place and in its worker pool, for a realistic 660 KB answer (one noisy 512x512
 * PNG) and a 40 MB one (a batch of noisy 1536x1536 PNGs). Two figures each: milliseconds per answer read one
 * at a time, and the event loop's delay p99 and max while four answers are read at once (as from four servers).
 */

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false } } })
const quick = values.quick ?? false
const CHUNK_BYTES = 64 * 1024

/** An A1111 txt2img answer: images, the request echoed in `parameters`, `info` as a JSON string. */
function answerBody(pngs: Buffer[]): Buffer {
  const parameters = {
    prompt: 'a red fox in the snow',
    negative_prompt: '',
    steps: 20,
    width: 512,
    height: 512,
  }
  const info = JSON.stringify({
    prompt: parameters.prompt,
    seed: 1234,
    all_seeds: [1234],
    infotexts: ['...'],
  })
  return Buffer.from(JSON.stringify({ images: pngs.map((p) => p.toString('base64')), parameters, info }))
}

/** The body as undici hands it over: 64 KB chunks. */
function chunked(body: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let at = 0; at < body.length; at += CHUNK_BYTES)
    out.push(Buffer.from(body.subarray(at, at + CHUNK_BYTES)))
  return out
}

/** What a1111.ts did before answer.ts. */
function before(chunks: Buffer[]): Buffer {
  const text = Buffer.concat(chunks).toString('utf8')
  const body = JSON.parse(text) as { images: unknown[] }
  const first = body.images.filter((s) => typeof s === 'string')[0] as string
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(first)) throw new Error('not base64')
  return Buffer.from(first, 'base64')
}

interface Method {
  name: string
  read(chunks: Buffer[]): Promise<Buffer>
}

function methods(inPlace: AnswerReader, pooled: AnswerReader): Method[] {
  return [
    { name: 'before: JSON.parse + regex + Buffer.from', read: async (c) => before(c) },
    { name: 'answer.ts in place', read: async (c) => (await inPlace.readImageAnswer(c)).image },
    { name: 'answer.ts worker pool', read: async (c) => (await pooled.readImageAnswer(c)).image },
    {
      name: 'answer.ts worker pool, body() filled as chunks arrive',
      read: async (c) => {
        const body = pooled.body(c.reduce((n, chunk) => n + chunk.length, 0))
        // Each socket read is its own turn of the event loop.
        for (const chunk of c) {
          body.push(chunk)
          await new Promise((resolve) => setImmediate(resolve))
        }
        return (await pooled.readImageAnswer(body)).image
      },
    },
  ]
}

async function perAnswer(method: Method, chunks: Buffer[], runs: number): Promise<number[]> {
  const samples: number[] = []
  for (let i = 0; i < runs; i++) {
    const started = performance.now()
    await method.read(chunks)
    samples.push(performance.now() - started)
  }
  return samples
}

/**
 * Delay p99 and max (ms) of the event loop while rounds of four answers are read at once: the gaps between
 * the ticks of a 1 ms timer (what an MQTT keep-alive or /health waits), and monitorEventLoopDelay's p99.
 */
async function loopDelay(method: Method, chunks: Buffer[], rounds: number) {
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  const gaps: number[] = []
  let last = performance.now()
  const ticker = setInterval(() => {
    const now = performance.now()
    gaps.push(now - last)
    last = now
  }, 1)
  histogram.enable()
  const started = performance.now()
  for (let r = 0; r < rounds; r++) {
    await Promise.all([0, 1, 2, 3].map(() => method.read(chunks)))
    // A read on this thread never lets the loop turn: let its timers run before the next round.
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
  const wallMs = (performance.now() - started) / rounds
  await new Promise((resolve) => setTimeout(resolve, 5))
  histogram.disable()
  clearInterval(ticker)
  gaps.push(performance.now() - last)
  const s = summarize(gaps)
  return { p99: histogram.percentile(99) / 1e6, gapP95: s.p95, max: s.max, wallMs }
}

const small = await makePng({ seed: 7, width: 512, height: 512, noise: true, done: 1 })
const large = await makePng({ seed: 8, width: 1536, height: 1536, noise: true, done: 1 })
const largeCount = Math.ceil((40 * 1024 * 1024) / ((large.length * 4) / 3))
const bodies = [
  {
    name: '660 KB (one 512x512 PNG)',
    body: answerBody([small]),
    runs: quick ? 20 : 100,
    rounds: quick ? 5 : 25,
  },
  {
    name: `40 MB (${largeCount} 1536x1536 PNGs)`,
    body: answerBody(Array.from({ length: largeCount }, () => large)),
    runs: quick ? 3 : 12,
    rounds: quick ? 2 : 6,
  },
]

const inPlace = createAnswerReader({ workerMinBytes: Number.POSITIVE_INFINITY })
const pooled = createAnswerReader({ workerMinBytes: 0 })
const rows: (string | number)[][] = []
for (const { name, body, runs, rounds } of bodies) {
  const chunks = chunked(body)
  for (const method of methods(inPlace, pooled)) {
    // Warm up: JIT, and the pool's threads started.
    await Promise.all([0, 1, 2, 3].map(() => method.read(chunks)))
    const s = summarize(await perAnswer(method, chunks, runs))
    const delay = await loopDelay(method, chunks, rounds)
    rows.push([
      name,
      method.name,
      s.n,
      ms(s.p50),
      ms(s.p95),
      ms(delay.wallMs),
      ms(delay.gapP95),
      ms(delay.max),
      ms(delay.p99),
    ])
  }
}
await Promise.all([inPlace.close(), pooled.close()])

process.stdout.write(`${await machineInfo()}\n\n`)
process.stdout.write(
  `Method: each body is handed over as 64 KB chunks. "ms per answer": answers read one after another. ` +
    `"4 at once": rounds of four reads started together, with a 1 ms interval timer running: the gaps between ` +
    `its ticks, and perf_hooks.monitorEventLoopDelay (resolution 1 ms) p99. Bench process execArgv: ` +
    `${process.execArgv.join(' ') || '(none)'}; pool of ${pooled.stats().workers || 'up to os.availableParallelism()'} workers. ` +
    `"body() filled as chunks arrive" yields to the event loop after each chunk, as socket reads do, so its ` +
    `ms/answer includes 640 turns of the loop for 40 MB: compare its loop delay, not its time.\n\n`,
)
process.stdout.write(
  `${table(
    [
      'answer',
      'method',
      'n',
      'ms/answer p50',
      'p95',
      '4 at once: ms/round',
      'timer gap p95 ms',
      'max gap ms',
      'loop delay p99 ms',
    ],
    rows,
  )}\n`,
)
