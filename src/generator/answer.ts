import { availableParallelism } from 'node:os'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { AppError } from '../errors.ts'
import {
  DEFAULT_LIMITS,
  type JsonLimits,
  type JsonShape,
  readImageParts,
  readJsonValue,
} from './answer-scan.ts'
import type { AnswerReply, AnswerTask } from './answer-worker.ts'

export { decodeBase64, type JsonLimits, type JsonShape } from './answer-scan.ts'

/*
 * Reads A1111 answers off the event loop. A small body (progress, options: a few KB) is read where it
 * arrives; a large one goes to a pool of worker threads, so a 40 MB answer, or four at once from four
 * servers, does not stall MQTT delivery and /health (issue 14, goal 4), and a hostile one costs a worker its
 * scan, never the daemon its memory (issue 13). Both paths run the same code (answer-scan.ts).
 *
 * The pool is node:worker_threads itself: one kind of task, no queue policy beyond first come first served,
 * and the transfer lists that hand the body over and the picture back without copying.
 */

export interface AnswerReaderOptions {
  /** Bodies of at least this many bytes are read in a worker; 256 KiB by default. */
  workerMinBytes?: number
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
  /** As given: A1111 sends a JSON string (read it with seedFromInfo); undefined when absent. */
  info: unknown
  shape: JsonShape
}

/**
 * A body collected chunk by chunk as it arrives: each chunk is copied at once (64 KB: microseconds) into
 * memory that goes to the worker whole, so a large answer costs the event loop no copy at the end.
 */
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

// From src/ the worker is a .ts file that Node strips of its types; from dist/ it is the built .js.
const WORKER_URL = new URL(`./answer-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url)
const CLOSE_GRACE_MS = 2000
/** Bodies are given room in steps, so that the next answer, a little larger, still fits. */
const SPARE_STEP = 1024 * 1024

interface Task {
  kind: AnswerTask['kind']
  texts: boolean
  body: ArrayBuffer
  length: number
  resolve: (value: never) => void
  reject: (err: AppError) => void
}

interface Slot {
  worker: Worker
  task: Task | undefined
  idle: NodeJS.Timeout | undefined
  crash: Error | undefined
}

/** Creates a reader; it starts no thread until the first large answer. */
export function createAnswerReader(options: AnswerReaderOptions = {}): AnswerReader {
  const limits: JsonLimits = Object.freeze({ ...DEFAULT_LIMITS, ...options.limits })
  const workerMinBytes = options.workerMinBytes ?? 256 * 1024
  const maxWorkers = Math.max(1, options.maxWorkers ?? availableParallelism())
  const idleMs = options.idleMs ?? 30_000
  const slots: Slot[] = []
  const queue: Task[] = []
  let nextId = 1
  let closed = false
  let closing: Promise<void> | undefined
  let onDrained: (() => void) | undefined
  // Memory back from the workers, already paged in, for the next bodies: two per worker at most.
  const spare: ArrayBuffer[] = []
  const maxSpares = 2 * maxWorkers

  /** Bodies from body(): their memory, and how much of it is filled. */
  const collected = new WeakMap<AnswerBody, { memory: ArrayBuffer; length: number }>()

  function body(expectedBytes = 0): AnswerBody {
    const state = { memory: new ArrayBuffer(0), length: 0 }
    const collector: AnswerBody = {
      push(chunk) {
        const needed = state.length + chunk.length
        if (needed > state.memory.byteLength) {
          const grown =
            takeSpare(Math.max(needed, expectedBytes)) ?? roomFor(Math.max(needed * 2, expectedBytes))
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

  function read(kind: Task['kind'], body: AnswerBytes, texts = false): Promise<unknown> {
    const state = collected.get(body as AnswerBody)
    if (state !== undefined) {
      collected.delete(body as AnswerBody)
      if (!closed && state.length >= workerMinBytes) return enqueue(kind, texts, state.memory, state.length)
      body = Buffer.from(state.memory, 0, state.length)
    }
    const parts = Buffer.isBuffer(body) ? [body] : (body as readonly Buffer[])
    let size = 0
    for (const part of parts) size += part.length
    if (closed || size < workerMinBytes) {
      const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts, size)
      try {
        return Promise.resolve(
          kind === 'image' ? inPlace(bytes, limits, texts) : readJsonValue(bytes, limits),
        )
      } catch (err) {
        return Promise.reject(err)
      }
    }
    // One copy, into memory that is then moved to the worker, not copied again.
    const memory = takeSpare(size) ?? roomFor(size)
    const own = Buffer.from(memory, 0, size)
    let at = 0
    for (const part of parts) at += part.copy(own, at)
    return enqueue(kind, texts, memory, size)
  }

  function enqueue(
    kind: Task['kind'],
    texts: boolean,
    memory: ArrayBuffer,
    length: number,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      queue.push({ kind, texts, body: memory, length, resolve: resolve as Task['resolve'], reject })
      dispatch()
    })
  }

  /** The smallest spare that holds `size` bytes. */
  function takeSpare(size: number): ArrayBuffer | undefined {
    let best = -1
    for (let i = 0; i < spare.length; i++) {
      const length = spare[i]!.byteLength
      if (length >= size && (best < 0 || length < spare[best]!.byteLength)) best = i
    }
    return best < 0 ? undefined : spare.splice(best, 1)[0]
  }

  function keepSpare(body: ArrayBuffer): void {
    if (closed || body.byteLength === 0) return
    spare.push(body)
    // Keep the largest: a small body fits in a large spare, not the other way round.
    if (spare.length > maxSpares) {
      spare.sort((a, b) => b.byteLength - a.byteLength)
      spare.length = maxSpares
    }
  }

  function dispatch(): void {
    while (queue.length > 0) {
      const slot =
        slots.find((s) => s.task === undefined) ?? (slots.length < maxWorkers ? spawn() : undefined)
      if (slot === undefined) return
      const task = queue.shift()!
      clearTimeout(slot.idle)
      slot.task = task
      // Busy, a worker keeps the process alive until it answers; idle, it does not.
      slot.worker.ref()
      const message: AnswerTask = {
        id: nextId++,
        kind: task.kind,
        body: task.body,
        length: task.length,
        limits,
        texts: task.texts,
      }
      slot.worker.postMessage(message, [task.body])
    }
    if (onDrained !== undefined && slots.every((s) => s.task === undefined)) onDrained()
  }

  function spawn(): Slot {
    const worker = new Worker(options.workerUrl ?? WORKER_URL, {
      resourceLimits: { maxOldGenerationSizeMb: options.workerHeapMb ?? 256 },
    })
    const slot: Slot = { worker, task: undefined, idle: undefined, crash: undefined }
    worker.unref()
    worker.on('message', (reply: AnswerReply) => {
      const task = slot.task
      slot.task = undefined
      worker.unref()
      if (!closed) slot.idle = setTimeout(() => retire(slot), idleMs).unref()
      keepSpare(reply.body)
      if (task !== undefined) settle(task, reply)
      dispatch()
    })
    worker.on('error', (err) => {
      slot.crash = err
    })
    worker.on('exit', (code) => {
      clearTimeout(slot.idle)
      const at = slots.indexOf(slot)
      if (at >= 0) slots.splice(at, 1)
      const task = slot.task
      slot.task = undefined
      if (task !== undefined) task.reject(crashError(slot.crash, code, closed))
      dispatch()
    })
    slots.push(slot)
    return slot
  }

  function retire(slot: Slot): void {
    const at = slots.indexOf(slot)
    if (at >= 0 && slot.task === undefined) {
      slots.splice(at, 1)
      void slot.worker.terminate()
      // The last worker gone: the daemon is idle, and holds no memory for answers.
      if (slots.length === 0) spare.length = 0
    }
  }

  async function shutDown(): Promise<void> {
    closed = true
    if (queue.length > 0 || slots.some((s) => s.task !== undefined)) {
      let timer: NodeJS.Timeout | undefined
      await new Promise<void>((resolve) => {
        onDrained = resolve
        timer = setTimeout(resolve, CLOSE_GRACE_MS)
      })
      clearTimeout(timer)
    }
    spare.length = 0
    for (const task of queue.splice(0)) {
      task.reject(new AppError('E_SHUTTING_DOWN', 'the bridge is stopping: the A1111 answer was not read'))
    }
    await Promise.all(
      slots.splice(0).map((slot) => {
        clearTimeout(slot.idle)
        return slot.worker.terminate()
      }),
    )
  }

  return {
    body,
    readImageAnswer: (body, opts) => read('image', body, opts?.texts) as Promise<ImageAnswer>,
    readJson: (body) => read('json', body),
    close() {
      closing ??= shutDown()
      return closing
    },
    stats: () => ({
      workers: slots.length,
      busy: slots.filter((s) => s.task !== undefined).length,
      queued: queue.length,
    }),
  }
}

function roomFor(size: number): ArrayBuffer {
  return new ArrayBuffer(Math.ceil(size / SPARE_STEP) * SPARE_STEP)
}

/** On this thread: the texts are views into the caller's body, which they keep alive. */
function inPlace(bytes: Buffer, limits: JsonLimits, texts: boolean): ImageAnswer {
  const { image, images, parameters, info, shape } = readImageParts(bytes, limits)
  return { image, imageCount: images.length, texts: texts ? images : undefined, parameters, info, shape }
}

function settle(task: Task, reply: AnswerReply): void {
  if (!reply.ok) {
    const cause = reply.cause === undefined ? undefined : new Error(reply.cause)
    const details = reply.details as Record<string, unknown> | undefined
    task.reject(new AppError(reply.code, reply.message, details ? { cause, details } : { cause }))
    return
  }
  if (reply.kind === 'json') {
    task.resolve(reply.value as never)
    return
  }
  const text = reply.text === undefined ? undefined : Buffer.from(reply.text)
  const parts: ImageAnswer = {
    image: Buffer.from(reply.image),
    imageCount: reply.imageCount,
    texts: text && reply.spans.map(([start, end]) => text.subarray(start, end)),
    parameters: reply.parameters,
    info: reply.info,
    shape: reply.shape,
  }
  task.resolve(parts as never)
}

/** A worker that died with a read in hand: out of memory is the answer's fault, anything else a bug. */
function crashError(err: Error | undefined, exitCode: number, closed: boolean): AppError {
  if (closed && err === undefined) {
    return new AppError('E_SHUTTING_DOWN', 'the bridge is stopping: the A1111 answer was not read')
  }
  if ((err as { code?: unknown } | undefined)?.code === 'ERR_WORKER_OUT_OF_MEMORY') {
    return new AppError(
      'E_A1111_BAD_RESPONSE',
      "A1111's answer needed more memory to read than a worker may use: it is not an answer A1111 sends",
      { cause: err },
    )
  }
  return new AppError('E_INTERNAL', `the worker reading an A1111 answer stopped (exit code ${exitCode})`, {
    cause: err,
  })
}
