import { parentPort } from 'node:worker_threads'
import { AppError } from '../errors.ts'
import { lowerThisThread } from '../image/background-threads.ts'
import { type JsonLimits, readImageParts, readJsonValue } from './answer-scan.ts'

/*
 * The worker thread of answer.ts: reads one answer at a time. The body's memory goes back to the main thread
 * after each answer, to carry the next one: writing into memory already touched costs a tenth of what fresh
 * memory does (40 MB: 2-3 ms against 25-45 ms here, all of it page faults on the event loop). So nothing
 * handed back may point into it: the pictures' base64 text is copied out here, where faults cost nobody.
 */

export interface AnswerTask {
  id: number
  kind: 'image' | 'json'
  /** Memory to give back; the answer is its first `length` bytes. */
  body: ArrayBuffer
  length: number
  limits: JsonLimits
  /** Copy out the base64 text of the pictures too. */
  texts: boolean
}

export type AnswerReply = { id: number; body: ArrayBuffer } & (
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

function answer(task: AnswerTask): { reply: AnswerReply; transfer: ArrayBuffer[] } {
  const { id, body } = task
  const bytes = Buffer.from(body, 0, task.length)
  if (task.kind === 'json') {
    return {
      reply: { id, body, ok: true, kind: 'json', value: readJsonValue(bytes, task.limits) },
      transfer: [body],
    }
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
    body,
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
  const transfer = [body, reply.image]
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
    const { id, body } = task
    const reply: AnswerReply =
      err instanceof AppError
        ? {
            id,
            body,
            ok: false,
            code: err.code,
            message: err.message,
            details: err.details,
            cause: causeOf(err),
          }
        : {
            id,
            body,
            ok: false,
            code: 'E_INTERNAL',
            message: 'reading an A1111 answer failed',
            cause: String((err as Error)?.stack ?? err),
          }
    out = { reply, transfer: [body] }
  }
  parentPort?.postMessage(out.reply, out.transfer)
})

function causeOf(err: AppError): string | undefined {
  return err.cause instanceof Error ? err.cause.message : undefined
}
