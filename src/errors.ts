/**
 * The one catalogue of expected failures. The codes are part of the public interface: they reach devices in
 * `error` status messages and HTTP clients in JSON bodies, so they never change meaning. Messages may be
 * reworded; they are written for the person who has to act on them.
 */
export const ERROR_CODES = [
  'E_BAD_PROMPT', // the prompt payload is not valid
  'E_BAD_REQUEST', // an HTTP request body or parameter is not valid
  'E_QUEUE_FULL', // too many jobs are waiting
  'E_RATE_LIMITED', // this device sent too many prompts
  'E_NOT_FOUND', // no such job, device or frame
  'E_CANCELLED', // the job was cancelled before it finished (DELETE, a newer prompt, shutdown)
  'E_JOB_FINISHED', // the job has already ended, so it cannot be cancelled
  'E_UNAUTHORIZED', // missing or wrong API key
  'E_SHUTTING_DOWN', // the bridge is stopping and takes no new work
  'E_GEN_TIMEOUT', // A1111 did not answer within A1111_TIMEOUT
  'E_A1111_UNREACHABLE', // connection refused, reset or DNS failure
  'E_A1111_NO_API', // 404: A1111 runs without --api
  'E_A1111_AUTH', // 401: --api-auth credentials missing or wrong
  'E_A1111_REJECTED', // 422 (or another 4xx): A1111 refused the request
  'E_A1111_FAILED', // 500: A1111 raised an exception (out of memory, bad checkpoint, ...)
  'E_A1111_BAD_RESPONSE', // an answer that is not the JSON A1111 sends
  'E_A1111_NO_IMAGE', // a JSON answer without any image
  'E_BAD_IMAGE', // an image that cannot be decoded
  'E_NO_GENERATOR', // no generator is available
  'E_INTERNAL', // a bug: logged with its stack
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

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
