/**
 * The one catalogue of expected failures. The codes are part of the public interface: they reach devices in
 * `error` status messages and HTTP clients in JSON bodies, so they never change meaning. Messages may be
 * reworded; they are written for the person who has to act on them.
 */
/** What each code means to the parts that react to it. */
export interface ErrorTraits {
  /** The HTTP status of an answer with this code. */
  status: number
  /** Seconds a client should wait before trying again, for the busy answers. */
  retryAfterS?: number
  /** The job may succeed on another server: the queue moves it there (within A1111_RETRIES). */
  movesJob: boolean
  /** The server is not usable now: the health monitor marks it down until a probe succeeds. */
  marksDown: boolean
}

const client = (status: number, retryAfterS?: number): ErrorTraits =>
  retryAfterS === undefined
    ? { status, movesJob: false, marksDown: false }
    : { status, retryAfterS, movesJob: false, marksDown: false }

export const ERROR_TRAITS = {
  E_BAD_PROMPT: client(422), // the prompt payload is not valid
  E_BAD_REQUEST: client(400), // an HTTP request body or parameter is not valid
  E_TOO_LARGE: client(413), // an HTTP body or an MQTT payload over its limit
  E_BAD_INFO: client(422), // a display's info message is not valid (the display keeps its panel)
  E_QUEUE_FULL: client(503, 10), // too many jobs are waiting
  E_RATE_LIMITED: client(429, 60), // this device sent too many prompts
  E_NOT_FOUND: client(404), // no such job, device, frame or route
  E_METHOD_NOT_ALLOWED: client(405), // the route exists, the method does not
  E_UNSUPPORTED_MEDIA: client(415), // a body in a content type the route does not take
  E_CANCELLED: client(409), // the job was cancelled before it finished (DELETE, a newer prompt, shutdown)
  E_JOB_FINISHED: client(409), // the job has already ended, so it cannot be cancelled
  E_UNAUTHORIZED: client(401), // missing or wrong API key
  E_SHUTTING_DOWN: client(503, 30), // the bridge is stopping and takes no new work
  E_STORAGE: client(503, 30), // DATA_DIR cannot be written (full, read-only): the prompt was not accepted
  E_GEN_TIMEOUT: { status: 504, movesJob: true, marksDown: true }, // A1111 did not finish within A1111_TIMEOUT
  E_A1111_UNREACHABLE: { status: 502, movesJob: true, marksDown: true }, // refused, reset, DNS failure
  E_A1111_HUNG: { status: 504, movesJob: true, marksDown: true }, // took the job, then stopped answering
  E_A1111_NO_API: { status: 502, movesJob: false, marksDown: true }, // 404: A1111 runs without --api
  E_A1111_AUTH: { status: 502, movesJob: false, marksDown: true }, // 401: --api-auth credentials wrong
  E_A1111_REJECTED: client(422), // 422 (or another 4xx): A1111 refused the request
  E_A1111_FAILED: { status: 502, movesJob: false, marksDown: false }, // 500: out of memory, bad checkpoint
  E_A1111_BAD_RESPONSE: { status: 502, movesJob: false, marksDown: false }, // not the JSON A1111 sends
  E_A1111_NO_IMAGE: { status: 502, movesJob: false, marksDown: false }, // a JSON answer without any image
  E_BAD_IMAGE: { status: 502, movesJob: false, marksDown: false }, // an image that cannot be decoded
  E_HA_LINK: { status: 502, movesJob: false, marksDown: false }, // Home Assistant's broker unreachable or refusing
  E_INTERNAL: { status: 500, movesJob: false, marksDown: false }, // a bug: logged with its stack
} as const satisfies Record<string, ErrorTraits>

export type ErrorCode = keyof typeof ERROR_TRAITS

export const ERROR_CODES = Object.keys(ERROR_TRAITS) as ErrorCode[]

export function traitsOf(code: ErrorCode): ErrorTraits {
  return ERROR_TRAITS[code]
}

/** An expected failure with a stable code; `cause` keeps the underlying error for the logs. */
export class AppError extends Error {
  readonly code: ErrorCode
  /** Extra facts for logs and bodies (never secrets, never upstream addresses). */
  readonly details: Record<string, unknown> | undefined

  constructor(
    code: ErrorCode,
    message: string,
    options?: { cause?: unknown; details?: Record<string, unknown> },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'AppError'
    this.code = code
    this.details = options?.details
  }

  /** The shape that goes on the wire: `{"code": "E_...", "message": "..."}`. */
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message }
  }
}

/** Turns anything thrown into an AppError; unknown errors become E_INTERNAL with the original as cause. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err
  return new AppError('E_INTERNAL', 'internal error in the bridge; see its log', { cause: err })
}
