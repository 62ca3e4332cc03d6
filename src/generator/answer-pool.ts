import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { AppError } from '../errors.ts'
import type { AnswerReply, AnswerTask } from './answer-worker.ts'
import type { JsonLimits } from './json-scan.ts'

/*
 * The worker threads of answer.ts and the memory that travels with them. The pool is node:worker_threads
 * itself: one kind of task, no queue policy beyond first come first served, and the transfer lists that hand
 * the body over and the picture back without copying. A body's memory comes back with the answer and is kept
 * as a spare for the next body (answer-worker.ts says why), until the last worker goes idle and stops.
 */

/** A worker's answer that is not an error. */
export type AnswerSuccess = Extract<AnswerReply, { ok: true }>

export interface AnswerPoolOptions {
  maxWorkers: number
  /** A worker idle this long is stopped. */
  idleMs: number
  /** The old-generation heap of each worker. */
  workerHeapMb: number
  limits: JsonLimits
  /** The worker script; answer-worker.ts (or .js, from dist/) when not given. */
  workerUrl?: URL | undefined
  /** Turns a worker's answer into what the read resolves with; called on the main thread. */
  fromReply: (reply: AnswerSuccess) => unknown
}

export interface AnswerPool {
  /**
   * Reads the first `length` bytes of `memory` in a worker; the memory moves to it and must not be touched
   * after. Rejects with an AppError.
   */
  run(kind: AnswerTask['kind'], texts: boolean, memory: ArrayBuffer, length: number): Promise<unknown>
  /** The smallest spare that holds `size` bytes, taken out of the spares. */
  takeSpare(size: number): ArrayBuffer | undefined
  /** True once close() was called: later reads run in place. */
  readonly closed: boolean
  /** Lets running reads finish (2 s at most), then stops the workers. Idempotent. */
  close(): Promise<void>
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
  resolve: (value: unknown) => void
  reject: (err: AppError) => void
}

interface Slot {
  worker: Worker
  task: Task | undefined
  idle: NodeJS.Timeout | undefined
  crash: Error | undefined
}

/** Fresh memory for a body of `size` bytes, rounded up to a step. */
export function roomFor(size: number): ArrayBuffer {
  return new ArrayBuffer(Math.ceil(size / SPARE_STEP) * SPARE_STEP)
}

/** Creates a pool; it starts no thread until the first task. */
export function createAnswerPool(options: AnswerPoolOptions): AnswerPool {
  const { maxWorkers, idleMs, limits } = options
  const slots: Slot[] = []
  const queue: Task[] = []
  let nextId = 1
  let closed = false
  let closing: Promise<void> | undefined
  let onDrained: (() => void) | undefined
  // Memory back from the workers, already paged in, for the next bodies: two per worker at most.
  const spare: ArrayBuffer[] = []
  const maxSpares = 2 * maxWorkers

  function run(kind: Task['kind'], texts: boolean, memory: ArrayBuffer, length: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      queue.push({ kind, texts, body: memory, length, resolve, reject })
      dispatch()
    })
  }

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
      resourceLimits: { maxOldGenerationSizeMb: options.workerHeapMb },
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

  function settle(task: Task, reply: AnswerReply): void {
    if (reply.ok) {
      task.resolve(options.fromReply(reply))
      return
    }
    const cause = reply.cause === undefined ? undefined : new Error(reply.cause)
    const details = reply.details as Record<string, unknown> | undefined
    task.reject(new AppError(reply.code, reply.message, details ? { cause, details } : { cause }))
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
    run,
    takeSpare,
    get closed() {
      return closed
    },
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
