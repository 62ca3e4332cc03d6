import { parentPort } from 'node:worker_threads'
import { AppError } from '../errors.ts'
import { lowerThisThread } from '../image/background-threads.ts'
import { type JsonLimits, readImageParts, readJsonValue } from './answer-scan.ts'

/*
 * The worker thread of answer.ts: reads one answer at a time, from memory it shares with the main thread
 * (answer-pool.ts), which writes the next body into it once this one is answered. Memory already touched is
 * written at a tenth of the cost of fresh memory (40 MB: 2-3 ms against 25-45 ms of page faults on the event
 * loop), so it is kept. Nothing handed back may point into it: the picture is decoded into memory of its own,
 * and the pictures' base64 text is copied out here, where page faults cost nobody.
 */

export interface AnswerTask {
  id: number
  kind: 'image' | 'json'
  /** New memory to read bodies from from now on; absent, the last one given. */
  shared: SharedArrayBuffer | undefined
  /** The answer is the first `length` bytes of that memory. */
  length: number
  limits: JsonLimits
  /** Copy out the base64 text of the pictures too. */
  texts: boolean
}

export type AnswerReply = { id: number } & (
  | {
      ok: true
      kind: 'image'
      image: ArrayBuffer
      imageCount: number
      /** With `texts`: the base64 text of every picture, one after another; `spans` says where each is. */
      text: ArrayBuffer | undefined
      spans: [number, number][]
      parameters: unknown
      info: unknown
      shape: ReturnType<typeof readImageParts>['shape']
    }
  | { ok: true; kind: 'json'; value: unknown }
  | { ok: false; code: AppError['code']; message: string; details?: unknown; cause?: string }
)

let shared = new SharedArrayBuffer(0)

function answer(task: AnswerTask): { reply: AnswerReply; transfer: ArrayBuffer[] } {
  const { id } = task
  if (task.shared !== undefined) shared = task.shared
  const bytes = Buffer.from(shared, 0, task.length)
  if (task.kind === 'json') {
    return { reply: { id, ok: true, kind: 'json', value: readJsonValue(bytes, task.limits) }, transfer: [] }
  }
  const { image, images, parameters, info, shape } = readImageParts(bytes, task.limits)
  const spans: [number, number][] = []
  let text: Buffer | undefined
  if (task.texts) {
    let total = 0
    for (const one of images) total += one.length
    text = Buffer.allocUnsafeSlow(total)
    for (const one of images) {
      const at = spans.at(-1)?.[1] ?? 0
      spans.push([at, at + one.copy(text, at)])
    }
  }
  const reply: AnswerReply = {
    id,
    ok: true,
    kind: 'image',
    image: image.buffer as ArrayBuffer,
    imageCount: images.length,
    text: text?.buffer as ArrayBuffer | undefined,
    spans,
    parameters,
    info,
    shape,
  }
  const transfer = [reply.image]
  if (reply.text !== undefined) transfer.push(reply.text)
  return { reply, transfer }
}

// Reading an answer can wait for the event loop, which answers MQTT and /health (background-threads.ts).
lowerThisThread()

parentPort?.on('message', (task: AnswerTask) => {
  let out: { reply: AnswerReply; transfer: ArrayBuffer[] }
  try {
    out = answer(task)
  } catch (err) {
    // AppErrors cross as plain data; anything else is a bug, reported with its stack on the main thread.
    const { id } = task
    const reply: AnswerReply =
      err instanceof AppError
        ? {
            id,
            ok: false,
            code: err.code,
            message: err.message,
            details: err.details,
            cause: causeOf(err),
          }
        : {
            id,
            ok: false,
            code: 'E_INTERNAL',
            message: 'reading an A1111 answer failed',
            cause: String((err as Error)?.stack ?? err),
          }
    out = { reply, transfer: [] }
  }
  parentPort?.postMessage(out.reply, out.transfer)
})

function causeOf(err: AppError): string | undefined {
  return err.cause instanceof Error ? err.cause.message : undefined
}
