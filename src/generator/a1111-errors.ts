import { AppError } from '../errors.ts'

/*
 * What A1111's failures mean, as AppErrors that say what the user should change: its status codes, its error
 * bodies and the network errors of a server that is not there.
 */

/** Longest piece of an A1111 error body that goes into a message. */
const DETAIL_CHARS = 300

export interface A1111Answer {
  status: number
  contentType: string
  /** The body as it came, for the answer reader. */
  chunks: readonly Buffer[]
  bytes: number
  /** The body as text: for small answers (progress, errors) only. */
  readonly text: string
}

export function answerOf(status: number, contentType: string, chunks: Buffer[], bytes: number): A1111Answer {
  let text: string | undefined
  return {
    status,
    contentType,
    chunks,
    bytes,
    get text() {
      text ??= Buffer.concat(chunks).toString('utf8')
      return text
    },
  }
}

/** A body that is not A1111's JSON: the reader's reason, with the hint about the address. */
export function notA1111(err: unknown, answer: A1111Answer): unknown {
  if (!(err instanceof AppError) || err.code !== 'E_A1111_BAD_RESPONSE') return err
  return new AppError(
    'E_A1111_BAD_RESPONSE',
    `A1111 answered with something that is not its JSON (${answer.contentType || 'no content type'}: ` +
      `${err.message}): is A1111_BASE_URL the address of A1111's API (usually port 7860)?`,
    { cause: err, details: { contentType: answer.contentType, bytes: answer.bytes } },
  )
}

/** The error for a non-200 answer, by what A1111 means by each status. */
export function statusError(answer: A1111Answer, path: string, hasCredentials: boolean): AppError {
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
export function toA1111Error(err: unknown, path: string): unknown {
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
