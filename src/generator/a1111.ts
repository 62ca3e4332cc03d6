import type { Logger } from 'pino'
import { Pool } from 'undici'
import { type Clock, systemClock } from '../clock.ts'
import { AppError } from '../errors.ts'
import { type A1111Answer as Answer, answerOf, notA1111, statusError, toA1111Error } from './a1111-errors.ts'
import { seedFromInfo } from './a1111-info.ts'
import { createOwnJobLookup } from './a1111-own-job-lookup.ts'
import { startProgressPolling } from './a1111-progress.ts'
import { type AnswerReader, createAnswerReader } from './answer.ts'
import {
  type GenerateHooks,
  type GenerateResult,
  type Generator,
  KEEP_UPSTREAM_IMAGES,
  type Txt2ImgPayload,
} from './types.ts'

/*
 * The A1111 client: the Generator port over A1111's HTTP API. One keep-alive pool
 * per server; every failure becomes an AppError that says what the user should change.
 */

export interface A1111GeneratorOptions {
  /** e.g. `http://127.0.0.1:7860` (a path prefix from `--subpath` is kept). */
  baseUrl: string
  /** Basic auth for A1111 started with `--api-auth`. */
  username?: string | undefined
  password?: string | undefined
  /** The whole generation, queue wait included (A1111_TIMEOUT). */
  timeoutMs: number
  /** How often `/sdapi/v1/progress` is polled while a job runs; 1000 by default. */
  progressIntervalMs?: number
  /** How long a cancelled job may take to answer after its interrupt; 10000 by default. */
  cancelGraceMs?: number
  /** The largest answer read; 64 MB by default. */
  maxBodyBytes?: number
  /** The deadline of `check()`; 5000 by default. */
  checkTimeoutMs?: number
  /** No answer to the progress polls for this long while a job runs: the server is hung; 15000 by default. */
  hungAfterMs?: number
}

const TXT2IMG = '/sdapi/v1/txt2img'
const PROGRESS = '/sdapi/v1/progress?skip_current_image=false'
const INTERRUPT = '/sdapi/v1/interrupt'
const OPTIONS = '/sdapi/v1/options'
/** Side requests (interrupt, progress) must never hold up a job for long. */
const SIDE_TIMEOUT_MS = 5000

/** Creates the Generator for one A1111 server; its name is the server's host:port. */
export function createA1111Generator(
  options: A1111GeneratorOptions,
  deps: { log: Logger; answers?: AnswerReader; clock?: Clock },
): Generator {
  const log = deps.log
  const url = new URL(options.baseUrl)
  const name = `${url.hostname}:${url.port || (url.protocol === 'https:' ? '443' : '80')}`
  const basePath = url.pathname.replace(/\/+$/, '')
  const username = options.username ?? (url.username === '' ? undefined : decodeURIComponent(url.username))
  const password = options.password ?? decodeURIComponent(url.password)
  const headers: Record<string, string> = {
    // Without it FastAPI reads a string body as bytes and answers 422 "value is not a valid dict" (§5.1).
    'content-type': 'application/json',
    accept: 'application/json',
  }
  if (username !== undefined) {
    headers.authorization = `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}`
  }
  const hasCredentials = username !== undefined
  const timeoutS = formatSeconds(options.timeoutMs)
  const maxBodyBytes = options.maxBodyBytes ?? 64 * 1024 * 1024
  // Our own timers bound every request, so undici's 300 s header/body timeouts must not cut long jobs short.
  const pool = new Pool(url.origin, { connections: 8, headersTimeout: 0, bodyTimeout: 0 })
  const reader = deps.answers ?? createAnswerReader()
  const clock = deps.clock ?? systemClock

  /**
   * One HTTP exchange; the body is read with a cap so a rogue server cannot exhaust memory, and kept as the
   * chunks that came: a large answer is parsed off the event loop (answer.ts), a small one read as text.
   */
  async function call(method: 'GET' | 'POST', path: string, body: string | undefined, signal: AbortSignal) {
    const res = await pool.request({ method, path: basePath + path, headers, body, signal })
    let bytes = 0
    const chunks: Buffer[] = []
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      bytes += chunk.length
      if (bytes > maxBodyBytes) {
        res.body.destroy()
        throw new AppError('E_A1111_BAD_RESPONSE', `A1111 sent an answer larger than ${maxBodyBytes} bytes`)
      }
      chunks.push(chunk)
    }
    return answerOf(res.statusCode, String(res.headers['content-type'] ?? ''), chunks, bytes)
  }

  /** Best effort: without it A1111 keeps generating after we give up. Never rejects. */
  async function interruptUpstream(why: string): Promise<void> {
    try {
      const answer = await call('POST', INTERRUPT, undefined, AbortSignal.timeout(SIDE_TIMEOUT_MS))
      log.info({ why, status: answer.status }, 'asked A1111 to interrupt the generation')
    } catch (err) {
      log.warn({ why, reason: (err as Error).message }, 'could not ask A1111 to interrupt the generation')
    }
  }

  const lookup = createOwnJobLookup({ call, clock, log, sideTimeoutMs: SIDE_TIMEOUT_MS })

  async function generate(payload: Txt2ImgPayload, hooks: GenerateHooks): Promise<GenerateResult> {
    hooks.signal.throwIfAborted()
    const started = clock.monotonic()
    const http = new AbortController()
    // Interrupt only our own job: /sdapi/v1/interrupt stops whatever A1111 runs, which may be a job
    // someone started in the web UI while ours waits behind it (a1111-own-job-lookup.ts). The job itself
    // goes out once the prompt's journal write is done (issue 14).
    const { taskId, own, hasProgress, answeredAt } = await lookup.prepare(hooks.recorded)
    hooks.signal.throwIfAborted()
    let interrupting: Promise<void> | undefined
    /** A look at our task before an interrupt (followed by its id), which then sends it if ours runs. */
    let asking: Promise<void> | undefined
    let pendingInterrupt: string | undefined
    const interruptPending = () => {
      if (pendingInterrupt !== undefined && own.started) {
        interrupting ??= interruptUpstream(pendingInterrupt)
        pendingInterrupt = undefined
      }
    }
    const interruptOurs = (why: string) => {
      if (own.started) {
        interrupting ??= interruptUpstream(why)
        return
      }
      pendingInterrupt = why
      // Followed by its id: ask now whether ours runs, rather than at the next poll.
      if (own.check !== undefined)
        asking ??= own.check(AbortSignal.timeout(SIDE_TIMEOUT_MS)).then(interruptPending)
      else log.info({ why }, 'A1111 is busy with another job; ours is interrupted if it starts in time')
    }
    let failure: AppError | undefined
    let graceTimer: NodeJS.Timeout | undefined
    const giveUp = (err: AppError, why: string) => {
      failure ??= err
      interruptOurs(why)
      http.abort()
    }
    const timeoutTimer = setTimeout(() => giveUp(timeoutError(), 'timeout'), options.timeoutMs)
    // An interrupted A1111 still answers 200 with the partial picture: wait for that answer,
    // so A1111 is free again when the next job starts, but not forever.
    const onCancel = () => {
      interruptOurs('cancelled')
      graceTimer = setTimeout(() => http.abort(), options.cancelGraceMs ?? 10_000)
    }
    hooks.signal.addEventListener('abort', onCancel, { once: true })
    const poller = !hasProgress
      ? { stop() {} }
      : startProgressPolling({
          intervalMs: options.progressIntervalMs ?? 1000,
          hungAfterMs: options.hungAfterMs ?? 15_000,
          fetch: (signal) =>
            call('GET', PROGRESS, undefined, AbortSignal.any([signal, AbortSignal.timeout(SIDE_TIMEOUT_MS)])),
          own,
          lastAnswerAt: answeredAt,
          monotonic: clock.monotonic,
          log,
          onProgress(update) {
            interruptPending()
            if (update && own.started) hooks.onProgress?.(update)
          },
          onHung: (silentMs) => giveUp(hungError(silentMs), 'hung'),
        })
    try {
      const answer = await call(
        'POST',
        TXT2IMG,
        JSON.stringify({ ...payload, force_task_id: taskId }),
        http.signal,
      )
      // answer.bytes, not answer.text.length: the text of a 660 KB answer is built where it is asked for, and
      // the log's arguments are evaluated at every level (1-2 ms and 1.3 MB of garbage a frame, issue 14).
      log.debug(
        { status: answer.status, bytes: answer.bytes, ms: Math.round(clock.monotonic() - started) },
        'txt2img answered',
      )
      if (hooks.signal.aborted) throw hooks.signal.reason
      const result = await readResult(answer, payload[KEEP_UPSTREAM_IMAGES] === true)
      lookup.succeeded(taskId)
      return result
    } catch (err) {
      // A hung server may never answer the interrupt either: do not wait for it.
      if (failure?.code !== 'E_A1111_HUNG') {
        await asking
        await interrupting
      }
      if (hooks.signal.aborted) throw hooks.signal.reason
      if (failure) throw failure
      throw toA1111Error(err, TXT2IMG)
    } finally {
      clearTimeout(timeoutTimer)
      clearTimeout(graceTimer)
      hooks.signal.removeEventListener('abort', onCancel)
      poller.stop()
    }
  }

  function timeoutError(): AppError {
    return new AppError(
      'E_GEN_TIMEOUT',
      `A1111 did not finish within ${timeoutS} s (A1111_TIMEOUT), so the bridge asked it to stop: ` +
        'use fewer steps or a smaller picture, or raise A1111_TIMEOUT',
      { details: { timeoutMs: options.timeoutMs } },
    )
  }

  function hungError(silentMs: number): AppError {
    return new AppError(
      'E_A1111_HUNG',
      `A1111 stopped answering (no answer to its progress for ${formatSeconds(silentMs)} s): ` +
        "the job moves to another server if there is one; see A1111's console",
      { details: { silentMs: Math.round(silentMs) } },
    )
  }

  async function readResult(answer: Answer, keepImages: boolean): Promise<GenerateResult> {
    if (answer.status !== 200) throw statusError(answer, TXT2IMG, hasCredentials)
    const read = await reader.readImageAnswer(answer.chunks, { texts: keepImages }).catch((err: unknown) => {
      throw notA1111(err, answer)
    })
    const texts = read.texts ?? []
    return {
      image: read.image,
      seed: seedFromInfo(read.info),
      // Only the passthrough's JSON mode gives the pictures back as base64: kept when it sets
      // KEEP_UPSTREAM_IMAGES, and turned into strings when it reads them.
      upstream: {
        get images() {
          return texts.map((t) => t.toString('latin1'))
        },
        parameters: read.parameters,
        info: read.info,
      },
    }
  }

  /** Throws the AppError for a non-200 answer or a body that is not a JSON object. */
  async function readJson(answer: Answer, path: string): Promise<Record<string, unknown>> {
    if (answer.status !== 200) throw statusError(answer, path, hasCredentials)
    const body = await reader.readJson(answer.chunks).catch((err: unknown) => {
      throw notA1111(err, answer)
    })
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new AppError('E_A1111_BAD_RESPONSE', 'A1111 answered with JSON that is not an object')
    }
    return body as Record<string, unknown>
  }

  async function check(): Promise<void> {
    const timeoutMs = options.checkTimeoutMs ?? 5000
    try {
      await readJson(await call('GET', OPTIONS, undefined, AbortSignal.timeout(timeoutMs)), OPTIONS)
    } catch (err) {
      if (err instanceof DOMException && err.name === 'TimeoutError') {
        throw new AppError(
          'E_A1111_UNREACHABLE',
          `A1111 did not answer within ${formatSeconds(timeoutMs)} s: is it running, or stuck?`,
          { cause: err },
        )
      }
      throw toA1111Error(err, OPTIONS)
    }
  }

  let closing: Promise<void> | undefined
  function close(): Promise<void> {
    closing ??= closePool()
    return closing
  }
  async function closePool(): Promise<void> {
    // A hung request would keep pool.close() waiting; after a moment the rest is cut.
    const grace = new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), 1000).unref())
    if ((await Promise.race([pool.close(), grace])) === 'late') await pool.destroy()
    await reader.close()
  }

  return { name, generate, check, close }
}

function formatSeconds(ms: number): string {
  return String(Math.round(ms) / 1000)
}
