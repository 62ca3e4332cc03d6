import { availableParallelism } from 'node:os'
import { type AnswerSuccess, createAnswerPool, roomSize } from './answer-pool.ts'
import { readImageParts, readJsonValue } from './answer-scan.ts'
import { DEFAULT_LIMITS, type JsonLimits, type JsonShape } from './json-scan.ts'

export { decodeBase64, type JsonLimits, type JsonShape } from './answer-scan.ts'

/*
 * Reads A1111 answers off the event loop. A small body (progress, options: a few KB) is read where it
 * arrives, and so is a display's picture (up to 1 MiB) when it comes alone; a larger one, or one of a burst,
 * goes to a pool of worker threads, so a 40 MB answer, or four at once from four servers, does not stall
 * MQTT delivery and /health (issue 14, goal 4), and a hostile one costs a worker its scan, never the daemon
 * its memory (issue 13). Both paths run the same code (answer-scan.ts); the pool and
 * the memory it recycles are in answer-pool.ts.
 */

export interface AnswerReaderOptions {
  /** Bodies of at least this many bytes are read in a worker; 256 KiB by default. */
  workerMinBytes?: number
  /**
   * A body up to this size that comes alone (no other large one read in the last `burstMs`, no worker busy)
   * is read where it arrives: 1 MiB by default (a 512x512 answer is 660 KB); 0 sends every large one to a
   * worker.
   */
  aloneMaxBytes?: number
  /** How close together large answers come to count as a burst; 100 ms by default. */
  burstMs?: number
  /** Worker threads at most; os.availableParallelism() by default. */
  maxWorkers?: number
  /** A worker idle this long is stopped (a new one starts in about 30 ms); 30 s by default. */
  idleMs?: number
  /** The old-generation heap of each worker: an answer that needs more fails alone. 256 MB by default. */
  workerHeapMb?: number
  limits?: Partial<JsonLimits>
  /** Another worker script: tests give one that dies, to see its read fail alone. */
  workerUrl?: URL
}

/** A txt2img/img2img answer (`{images, parameters, info}`), as the bridge uses it. */
export interface ImageAnswer {
  /** The first picture in `images`, decoded from base64 (PNG from A1111 by default). */
  image: Buffer
  /** The pictures in `images` (its strings), the first one included; only the first is decoded. */
  imageCount: number
  /** With `{ texts: true }`: the base64 text of each picture, the first included, as bytes (ASCII). */
  texts: Buffer[] | undefined
  /** The request as A1111 understood it, parsed; undefined when absent. */
  parameters: unknown
  /** As given: A1111 sends a JSON string (read it with seedFromInfo, a1111-info.ts); undefined when absent. */
  info: unknown
  shape: JsonShape
}

/** A body collected chunk by chunk as it arrives, each chunk copied at once into memory of its own. */
export interface AnswerBody {
  push(chunk: Buffer): void
  readonly length: number
}

/** What a read takes: the body as one Buffer, its chunks as received, or an AnswerBody filled as it came. */
export type AnswerBytes = Buffer | readonly Buffer[] | AnswerBody

export interface AnswerReader {
  /**
   * An empty AnswerBody. `expectedBytes` (the content-length, when the server sends one) saves growing it.
   * Read it once, with readImageAnswer or readJson, and push nothing after.
   */
  body(expectedBytes?: number): AnswerBody
  /**
   * A txt2img/img2img answer: the first picture decoded, the others only counted, or kept as base64 text with
   * `texts` (the HTTP passthrough's JSON mode gives them back).
   * Rejects with an AppError (E_A1111_BAD_RESPONSE, E_A1111_NO_IMAGE, E_BAD_IMAGE, E_INTERNAL).
   */
  readImageAnswer(body: AnswerBytes, options?: { texts?: boolean }): Promise<ImageAnswer>
  /** Any other answer, parsed once its shape is checked. Rejects with an AppError. */
  readJson(body: AnswerBytes): Promise<unknown>
  /** Lets running reads finish (2 s at most), then stops the workers; later reads run in place. Idempotent. */
  close(): Promise<void>
  /** Workers started, busy, and reads waiting for one. */
  stats(): { workers: number; busy: number; queued: number }
}

/** Creates a reader; it starts no thread until the first large answer. */
export function createAnswerReader(options: AnswerReaderOptions = {}): AnswerReader {
  const limits: JsonLimits = Object.freeze({ ...DEFAULT_LIMITS, ...options.limits })
  const workerMinBytes = options.workerMinBytes ?? 256 * 1024
  const aloneMaxBytes = options.aloneMaxBytes ?? 1024 * 1024
  const burstMs = options.burstMs ?? 100
  /** When the last large body was read (performance.now()). */
  let lastLargeAt = Number.NEGATIVE_INFINITY
  const pool = createAnswerPool({
    maxWorkers: Math.max(1, options.maxWorkers ?? availableParallelism()),
    idleMs: options.idleMs ?? 30_000,
    workerHeapMb: options.workerHeapMb ?? 256,
    limits,
    workerUrl: options.workerUrl,
    fromReply,
  })

  /** Bodies from body(): their memory, and how much of it is filled. */
  const collected = new WeakMap<AnswerBody, { memory: ArrayBuffer; length: number }>()

  function body(expectedBytes = 0): AnswerBody {
    const state = { memory: new ArrayBuffer(0), length: 0 }
    const collector: AnswerBody = {
      push(chunk) {
        const needed = state.length + chunk.length
        if (needed > state.memory.byteLength) {
          const grown = new ArrayBuffer(roomSize(Math.max(needed * 2, expectedBytes)))
          new Uint8Array(grown).set(new Uint8Array(state.memory, 0, state.length))
          state.memory = grown
        }
        new Uint8Array(state.memory).set(chunk, state.length)
        state.length = needed
      },
      get length() {
        return state.length
      },
    }
    collected.set(collector, state)
    return collector
  }

  function read(kind: 'image' | 'json', body: AnswerBytes, texts = false): Promise<unknown> {
    const state = collected.get(body as AnswerBody)
    let parts: readonly Uint8Array[]
    if (state !== undefined) {
      collected.delete(body as AnswerBody)
      parts = [new Uint8Array(state.memory, 0, state.length)]
    } else parts = Buffer.isBuffer(body) ? [body] : (body as readonly Buffer[])
    let size = 0
    for (const part of parts) size += part.length
    if (!pool.closed && size >= workerMinBytes && !alone(size)) {
      // Into the worker's memory when a worker takes it (answer-pool.ts).
      return pool.run(kind, texts, parts)
    }
    const bytes =
      parts.length === 1
        ? Buffer.from(parts[0]!.buffer, parts[0]!.byteOffset, size)
        : Buffer.concat(parts, size)
    try {
      return Promise.resolve(kind === 'image' ? inPlace(bytes, limits, texts) : readJsonValue(bytes, limits))
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * A display's picture comes alone (a generation takes seconds): read here it costs about 1 ms of the event
   * loop, while the worker's hop, the copy into its memory and its lower priority cost as much again and
   * more (issue 14, goal 1). Answers that come in a burst (the HTTP passthrough under load, several servers)
   * go to the workers, so the event loop stays free for MQTT and /health (goal 4).
   */
  function alone(size: number): boolean {
    const now = performance.now()
    const burst = now - lastLargeAt < burstMs
    lastLargeAt = now
    if (size > aloneMaxBytes || burst) return false
    const { busy, queued } = pool.stats()
    return busy === 0 && queued === 0
  }

  return {
    body,
    readImageAnswer: (body, opts) => read('image', body, opts?.texts) as Promise<ImageAnswer>,
    readJson: (body) => read('json', body),
    close: () => pool.close(),
    stats: () => pool.stats(),
  }
}

/** On this thread: the texts are views into the caller's body, which they keep alive. */
function inPlace(bytes: Buffer, limits: JsonLimits, texts: boolean): ImageAnswer {
  const { image, images, parameters, info, shape } = readImageParts(bytes, limits)
  return { image, imageCount: images.length, texts: texts ? images : undefined, parameters, info, shape }
}

/** From a worker: the picture and the texts arrive as memory of their own, moved, not copied. */
function fromReply(reply: AnswerSuccess): unknown {
  if (reply.kind === 'json') return reply.value
  const text = reply.text === undefined ? undefined : Buffer.from(reply.text)
  const parts: ImageAnswer = {
    image: Buffer.from(reply.image),
    imageCount: reply.imageCount,
    texts: text && reply.spans.map(([start, end]) => text.subarray(start, end)),
    parameters: reply.parameters,
    info: reply.info,
    shape: reply.shape,
  }
  return parts
}
