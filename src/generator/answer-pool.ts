import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import { AppError } from '../errors.ts'
import type { AnswerReply, AnswerTask } from './answer-worker.ts'
import type { JsonLimits } from './json-scan.ts'

/*
 * The worker threads of answer.ts and the memory they read from. The pool is node:worker_threads itself: one
 * kind of task, no queue policy beyond first come first served. Each worker has one SharedArrayBuffer of its
 * own, sized to the largest answer it was given: a body is copied into it when the worker takes the task (64
 * KB chunks: a fraction of a millisecond, into memory already touched) and read there; the picture comes back
 * in a transfer list. Until this, the body's memory travelled to the worker and back with every answer, and
 * each arrival counted as a megabyte of new external memory for V8, whose full collections of the daemon's
 * heap it brought on every few frames (issue 14). The buffer goes when its worker stops.
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
   * Reads the body made of `parts` (in order) in a worker; the parts are copied when a worker takes the task,
   * so they must not change until the read settles. Rejects with an AppError.
   */
  run(kind: AnswerTask['kind'], texts: boolean, parts: readonly Uint8Array[]): Promise<unknown>
  /** True once close() was called: later reads run in place. */
  readonly closed: boolean
  /** Lets running reads finish (2 s at most), then stops the workers. Idempotent. */
  close(): Promise<void>
  stats(): { workers: number; busy: number; queued: number }
}

// From src/ the worker is a .ts file that Node strips of its types; from dist/ it is the built .js.
const WORKER_URL = new URL(`./answer-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url)
const CLOSE_GRACE_MS = 2000
/** Memory is given in steps, so that the next answer, a little larger, still fits. */
const ROOM_STEP = 1024 * 1024

interface Task {
  kind: AnswerTask['kind']
  texts: boolean
  parts: readonly Uint8Array[]
  resolve: (value: unknown) => void
  reject: (err: AppError) => void
}

interface Slot {
  worker: Worker
  task: Task | undefined
  idle: NodeJS.Timeout | undefined
  crash: Error | undefined
  /** The memory this worker reads bodies from; larger ones get a new one. */
  shared: SharedArrayBuffer | undefined
}

/** Room for `size` bytes, rounded up to a step. */
export function roomSize(size: number): number {
  return Math.max(1, Math.ceil(size / ROOM_STEP)) * ROOM_STEP
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

  function run(kind: Task['kind'], texts: boolean, parts: readonly Uint8Array[]): Promise<unknown> {
    return new Promise((resolve, reject) => {
      queue.push({ kind, texts, parts, resolve, reject })
      dispatch()
    })
  }

  /** Copies the task's body into the slot's memory, a larger one if it does not fit; the new one goes along. */
  function load(slot: Slot, task: Task): { length: number; shared: SharedArrayBuffer | undefined } {
    let length = 0
    for (const part of task.parts) length += part.length
    let fresh: SharedArrayBuffer | undefined
    if (slot.shared === undefined || slot.shared.byteLength < length) {
      fresh = new SharedArrayBuffer(roomSize(length))
      slot.shared = fresh
    }
    const view = new Uint8Array(slot.shared)
    let at = 0
    for (const part of task.parts) {
      view.set(part, at)
      at += part.length
    }
    return { length, shared: fresh }
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
      const { length, shared } = load(slot, task)
      // The body is in memory the worker shares: nothing is handed over.
      task.parts = []
      const message: AnswerTask = { id: nextId++, kind: task.kind, shared, length, limits, texts: task.texts }
      slot.worker.postMessage(message)
    }
    if (onDrained !== undefined && slots.every((s) => s.task === undefined)) onDrained()
  }

  function spawn(): Slot {
    const worker = new Worker(options.workerUrl ?? WORKER_URL, {
      resourceLimits: { maxOldGenerationSizeMb: options.workerHeapMb },
    })
    const slot: Slot = { worker, task: undefined, idle: undefined, crash: undefined, shared: undefined }
    worker.unref()
    worker.on('message', (reply: AnswerReply) => {
      const task = slot.task
      slot.task = undefined
      worker.unref()
      if (!closed) slot.idle = setTimeout(() => retire(slot), idleMs).unref()
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
      // Its memory goes with it: an idle daemon holds none for answers.
      slot.shared = undefined
      void slot.worker.terminate()
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
