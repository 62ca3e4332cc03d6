import type { Logger } from 'pino'
import { Pool } from 'undici'
import { AppError } from '../errors.ts'
import {
  createOwnJobTracker,
  type OwnJobTracker,
  type ProgressSnapshot,
  parseSnapshot,
} from './a1111-own-job.ts'
import type { GenerateHooks, GenerateProgress, GenerateResult, Generator, Txt2ImgPayload } from './types.ts'

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
}

const TXT2IMG = '/sdapi/v1/txt2img'
const PROGRESS = '/sdapi/v1/progress?skip_current_image=false'
const INTERRUPT = '/sdapi/v1/interrupt'
const OPTIONS = '/sdapi/v1/options'
/** Side requests (interrupt, progress) must never hold up a job for long. */
const SIDE_TIMEOUT_MS = 5000
const DETAIL_CHARS = 300

interface Answer {
  status: number
  contentType: string
  text: string
}

/** Creates the Generator for one A1111 server; its name is the server's host:port. */
export function createA1111Generator(options: A1111GeneratorOptions, deps: { log: Logger }): Generator {
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

  /** One HTTP exchange; the body is read with a cap so a rogue server cannot exhaust memory. */
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
    const contentType = String(res.headers['content-type'] ?? '')
    return {
      status: res.statusCode,
      contentType,
      text: Buffer.concat(chunks).toString('utf8'),
    } satisfies Answer
  }

  /** Best effort: without it A1111 keeps generating after we give up. Never rejects. */
  async function interruptUpstream(why: string): Promise<void> {
    try {
      const answer = await call('POST', INTERRUPT, undefined, AbortSignal.timeout(SIDE_TIMEOUT_MS))
      log.info({ why, status: answer.status }, 'asked A1111 to interrupt the generation')
    } catch (err) {
      log.warn({ err, why }, 'could not ask A1111 to interrupt the generation')
    }
  }

  /**
   * What A1111 runs right now; undefined if it cannot say, null if it has no /progress at all (servers such as
   * stable-diffusion.cpp), which also means there is nothing to poll.
   */
  async function snapshot(): Promise<ProgressSnapshot | undefined | null> {
    try {
      const answer = await call('GET', PROGRESS, undefined, AbortSignal.timeout(SIDE_TIMEOUT_MS))
      if (answer.status === 404) return null
      return answer.status === 200 ? parseSnapshot(answer.text) : undefined
    } catch {
      return undefined
    }
  }

  async function generate(payload: Txt2ImgPayload, hooks: GenerateHooks): Promise<GenerateResult> {
    hooks.signal.throwIfAborted()
    const started = performance.now()
    const http = new AbortController()
    // Interrupt only our own job: /sdapi/v1/interrupt stops whatever A1111 runs, which may be a job
    // someone started in the web UI while ours waits behind it (see a1111-own-job.ts).
    const before = await snapshot()
    const own = createOwnJobTracker(before ?? undefined)
    hooks.signal.throwIfAborted()
    let interrupting: Promise<void> | undefined
    let pendingInterrupt: string | undefined
    const interruptOurs = (why: string) => {
      if (own.started) interrupting ??= interruptUpstream(why)
      else {
        pendingInterrupt = why
        log.info({ why }, 'A1111 is busy with another job; ours is interrupted if it starts in time')
      }
    }
    let timedOut = false
    let graceTimer: NodeJS.Timeout | undefined
    const timeoutTimer = setTimeout(() => {
      timedOut = true
      interruptOurs('timeout')
      http.abort()
    }, options.timeoutMs)
    // An interrupted A1111 still answers 200 with the partial picture: wait for that answer,
    // so A1111 is free again when the next job starts, but not forever.
    const onCancel = () => {
      interruptOurs('cancelled')
      graceTimer = setTimeout(() => http.abort(), options.cancelGraceMs ?? 10_000)
    }
    hooks.signal.addEventListener('abort', onCancel, { once: true })
    const poller = startProgressPolling(before !== null, own, (update) => {
      if (pendingInterrupt !== undefined && own.started) {
        interrupting ??= interruptUpstream(pendingInterrupt)
        pendingInterrupt = undefined
      }
      if (update && own.started) hooks.onProgress?.(update)
    })
    try {
      const answer = await call('POST', TXT2IMG, JSON.stringify(payload), http.signal)
      log.debug(
        { status: answer.status, bytes: answer.text.length, ms: msSince(started) },
        'txt2img answered',
      )
      if (hooks.signal.aborted) throw hooks.signal.reason
      return readResult(answer)
    } catch (err) {
      await interrupting
      if (hooks.signal.aborted) throw hooks.signal.reason
      if (timedOut) throw timeoutError(err)
      throw toA1111Error(err, TXT2IMG)
    } finally {
      clearTimeout(timeoutTimer)
      clearTimeout(graceTimer)
      hooks.signal.removeEventListener('abort', onCancel)
      poller.stop()
    }
  }

  function timeoutError(cause: unknown): AppError {
    return new AppError(
      'E_GEN_TIMEOUT',
      `A1111 did not finish within ${timeoutS} s (A1111_TIMEOUT), so the bridge asked it to stop: ` +
        'use fewer steps or a smaller picture, or raise A1111_TIMEOUT',
      { cause, details: { timeoutMs: options.timeoutMs } },
    )
  }

  /**
   * Polls `/sdapi/v1/progress` while a job runs. It reports A1111's one global job, so idle
   * answers are skipped; failures only cost a debug line, and a 404 (servers without it, e.g. sd.cpp, §7)
   * ends the polling.
   */
  function startProgressPolling(
    enabled: boolean,
    own: OwnJobTracker,
    onProgress: (p: GenerateProgress | undefined) => void,
  ): { stop(): void } {
    const stopping = new AbortController()
    if (!enabled) stopping.abort()
    let timer: NodeJS.Timeout | undefined
    const schedule = () => {
      if (!stopping.signal.aborted) timer = setTimeout(poll, options.progressIntervalMs ?? 1000)
    }
    async function poll(): Promise<void> {
      let update: GenerateProgress | undefined
      try {
        const signal = AbortSignal.any([stopping.signal, AbortSignal.timeout(SIDE_TIMEOUT_MS)])
        const answer = await call('GET', PROGRESS, undefined, signal)
        if (answer.status === 404) {
          log.debug('A1111 has no /sdapi/v1/progress: no progress reports')
          stopping.abort()
        }
        if (answer.status === 200) {
          const seen = parseSnapshot(answer.text)
          if (seen) own.observe(seen)
          update = readProgress(answer.text)
        }
      } catch (err) {
        if (!stopping.signal.aborted) log.debug({ err }, 'progress poll failed')
      }
      if (!stopping.signal.aborted) report(update)
      schedule()
    }
    function report(update: GenerateProgress | undefined): void {
      try {
        onProgress(update)
      } catch (err) {
        // A bug in the listener must not stop the polling, nor the job.
        log.error({ err }, 'progress listener threw')
      }
    }
    schedule()
    return {
      stop() {
        stopping.abort()
        clearTimeout(timer)
      },
    }
  }

  function readResult(answer: Answer): GenerateResult {
    const body = readJson(answer, TXT2IMG)
    const images = Array.isArray(body.images) ? body.images.filter((s) => typeof s === 'string') : []
    const first = images[0]
    if (first === undefined) {
      throw new AppError(
        'E_A1111_NO_IMAGE',
        'A1111 answered without any picture: is "send_images" false, or did a script drop the output? ' +
          "See A1111's console",
      )
    }
    return {
      image: decodeImage(first),
      seed: seedFromInfo(body.info),
      upstream: { images, parameters: body.parameters, info: body.info },
    }
  }

  /** Throws the AppError for a non-200 answer or a body that is not a JSON object. */
  function readJson(answer: Answer, path: string): Record<string, unknown> {
    if (answer.status !== 200) throw statusError(answer, path, hasCredentials)
    let body: unknown
    try {
      body = JSON.parse(answer.text)
    } catch (err) {
      throw new AppError(
        'E_A1111_BAD_RESPONSE',
        `A1111 answered with something that is not JSON (${answer.contentType || 'no content type'}): ` +
          "is A1111_BASE_URL the address of A1111's API (usually port 7860)?",
        { cause: err, details: { path, contentType: answer.contentType, start: answer.text.slice(0, 120) } },
      )
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new AppError('E_A1111_BAD_RESPONSE', 'A1111 answered with JSON that is not an object')
    }
    return body as Record<string, unknown>
  }

  async function check(): Promise<void> {
    const timeoutMs = options.checkTimeoutMs ?? 5000
    try {
      readJson(await call('GET', OPTIONS, undefined, AbortSignal.timeout(timeoutMs)), OPTIONS)
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
  }

  return { name, generate, check, close }
}

/** The error for a non-200 answer, by what A1111 means by each status. */
function statusError(answer: Answer, path: string, hasCredentials: boolean): AppError {
  const { status } = answer
  const detail = readableDetail(answer.text)
  const details = { status, path, detail }
  if (status === 404) {
    return new AppError(
      'E_A1111_NO_API',
      `A1111 has no API at this address (404 for ${path}): start A1111 with --api (add it to COMMANDLINE_ARGS), ` +
        'and check A1111_BASE_URL',
      { details },
    )
  }
  if (status === 401) {
    const fix = hasCredentials
      ? "check A1111_USERNAME and A1111_PASSWORD against A1111's --api-auth"
      : "set A1111_USERNAME and A1111_PASSWORD to A1111's --api-auth credentials"
    return new AppError('E_A1111_AUTH', `A1111 refused access (${detail || 'HTTP 401'}): ${fix}`, { details })
  }
  if (status >= 400 && status < 500) {
    const reason = detail || 'no reason given'
    return new AppError('E_A1111_REJECTED', `A1111 rejected the request (${status}): ${reason}`, { details })
  }
  if (status === 500) {
    return new AppError(
      'E_A1111_FAILED',
      `A1111 failed (500): ${detail || "no reason given; see A1111's console"}`,
      { details },
    )
  }
  return new AppError(
    'E_A1111_BAD_RESPONSE',
    `A1111 answered HTTP ${status}, which A1111 itself does not send: is a proxy in front of it failing?`,
    { details },
  )
}

/**
 * A1111's error bodies made readable: the wrapper's `{error, detail, body, errors}` (500 shows
 * "OutOfMemoryError: CUDA out of memory..."), FastAPI's `{"detail": [{loc, msg}]}` ("steps: value is not a
 * valid integer"), `{"detail": "..."}`, sd.cpp's `{"error": "..."}`, or the start of a text body.
 */
export function readableDetail(text: string): string {
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return text
      .replace(/<[^>]*>/g, ' ')
      .replace(/\s+/g, ' ')
      .trim()
      .slice(0, DETAIL_CHARS)
  }
  if (typeof body !== 'object' || body === null) return String(body).slice(0, DETAIL_CHARS)
  const b = body as Record<string, unknown>
  let out: string
  if (Array.isArray(b.detail)) out = b.detail.map(describeIssue).join('; ')
  else if (typeof b.errors === 'string' && b.errors !== '') {
    out = typeof b.error === 'string' && b.error !== '' ? `${b.error}: ${b.errors}` : b.errors
  } else if (typeof b.detail === 'string' && b.detail !== '') out = b.detail
  else if (typeof b.error === 'string') out = b.error
  else if (typeof b.message === 'string') out = b.message
  else out = JSON.stringify(body)
  return out.slice(0, DETAIL_CHARS)
}

/** `{"loc": ["body", "steps"], "msg": "..."}` becomes `steps: ...`; a problem with the whole body says "body". */
function describeIssue(issue: unknown): string {
  if (typeof issue !== 'object' || issue === null) return String(issue)
  const { loc, msg } = issue as { loc?: unknown; msg?: unknown }
  const path = Array.isArray(loc) ? loc.slice(1).filter((p) => typeof p === 'string') : []
  const where = path.length > 0 ? path.join('.') : Array.isArray(loc) ? String(loc[0] ?? 'body') : 'body'
  return `${where}: ${typeof msg === 'string' ? msg : 'invalid'}`
}

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'ECONNABORTED'])
const REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
  UND_ERR_CLOSED: 'the bridge has closed its connections',
  UND_ERR_DESTROYED: 'the bridge has closed its connections',
}

/** The code of a network error; Happy Eyeballs wraps several in an AggregateError. */
function errorCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined
  const e = err as { code?: unknown; errors?: unknown[]; cause?: unknown }
  if (typeof e.code === 'string') return e.code
  if (Array.isArray(e.errors) && e.errors.length > 0) return errorCode(e.errors[0])
  return errorCode(e.cause)
}

/** Network failures become E_A1111_UNREACHABLE; AppErrors pass; anything else is a bug and is rethrown. */
function toA1111Error(err: unknown, path: string): unknown {
  if (err instanceof AppError) return err
  const code = errorCode(err)
  if (code === undefined || !(/^E[A-Z]/.test(code) || code.startsWith('UND_ERR'))) return err
  if (RESET_CODES.has(code)) {
    return new AppError(
      'E_A1111_UNREACHABLE',
      "A1111 closed the connection before answering (connection reset): did it crash or restart? See A1111's console",
      { cause: err, details: { code, path } },
    )
  }
  const reason = REASONS[code] ?? code
  return new AppError(
    'E_A1111_UNREACHABLE',
    `A1111 is not reachable (${reason}): is it running, and is A1111_BASE_URL right?`,
    { cause: err, details: { code, path } },
  )
}

function readProgress(text: string): GenerateProgress | undefined {
  let body: {
    progress?: unknown
    eta_relative?: unknown
    state?: { job_count?: unknown }
    current_image?: unknown
  }
  try {
    body = JSON.parse(text)
  } catch {
    return undefined
  }
  // Idle (job_count 0): our job has not started, or has just ended.
  if (typeof body !== 'object' || body === null || body.state?.job_count === 0) return undefined
  if (typeof body.progress !== 'number') return undefined
  const progress = Math.min(1, Math.max(0, body.progress))
  const eta = body.eta_relative
  // After the last step job_no has moved on, progress is 1.01 (shown as 1) and the eta goes negative.
  const etaS = progress > 0 && typeof eta === 'number' && Number.isFinite(eta) ? Math.max(0, eta) : undefined
  const preview = typeof body.current_image === 'string' ? tryDecode(body.current_image) : undefined
  return { progress, etaS, preview }
}

/** Bare base64 in A1111 (no `data:` prefix); a prefix from other servers is tolerated. */
function tryDecode(text: string): Buffer | undefined {
  const b64 = text.replace(/^data:[^,]*;base64,/, '')
  const valid = /^[A-Za-z0-9+/]+={0,2}$/.test(b64) && b64.length % 4 !== 1
  if (!valid) return undefined
  const bytes = Buffer.from(b64, 'base64')
  return bytes.length > 0 ? bytes : undefined
}

function decodeImage(text: string): Buffer {
  const bytes = tryDecode(text)
  if (bytes === undefined) {
    throw new AppError('E_BAD_IMAGE', 'A1111 sent a picture that is not valid base64', {
      details: { length: text.length, start: text.slice(0, 16) },
    })
  }
  return bytes
}

/** `info` is a JSON string written by Python; read it tolerantly, -1 when it has no seed. */
export function seedFromInfo(info: unknown): number {
  let parsed: unknown = info
  if (typeof info === 'string') {
    try {
      parsed = JSON.parse(info)
    } catch {
      // Python may write NaN or Infinity, which JSON.parse refuses; the seed is still there.
      const match = /"seed":\s*(\d+)/.exec(info)
      return match ? Number(match[1]) : -1
    }
  }
  if (typeof parsed !== 'object' || parsed === null) return -1
  const { seed, all_seeds } = parsed as { seed?: unknown; all_seeds?: unknown }
  if (Number.isSafeInteger(seed)) return seed as number
  const first = Array.isArray(all_seeds) ? all_seeds[0] : undefined
  return Number.isSafeInteger(first) ? (first as number) : -1
}

function formatSeconds(ms: number): string {
  return String(Math.round(ms) / 1000)
}

function msSince(start: number): number {
  return Math.round(performance.now() - start)
}
