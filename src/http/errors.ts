import type { FastifyReply } from 'fastify'
import { AppError, type ErrorCode, toAppError } from '../errors.ts'

/*
 * Error answers of the HTTP listener: JSON `{"error": {"code", "message"}}` (README, "HTTP"), with a
 * status that tells a client what kind of failure it was. Messages are the AppError's own, which never hold
 * the A1111 address or a stack trace.
 */

const STATUS: Record<ErrorCode, number> = {
  E_BAD_PROMPT: 422,
  E_BAD_REQUEST: 400,
  E_QUEUE_FULL: 503,
  E_RATE_LIMITED: 429,
  E_NOT_FOUND: 404,
  E_CANCELLED: 409,
  E_JOB_FINISHED: 409,
  E_UNAUTHORIZED: 401,
  E_SHUTTING_DOWN: 503,
  E_GEN_TIMEOUT: 504,
  E_A1111_UNREACHABLE: 502,
  E_A1111_NO_API: 502,
  E_A1111_AUTH: 502,
  E_A1111_REJECTED: 422,
  E_A1111_FAILED: 502,
  E_A1111_BAD_RESPONSE: 502,
  E_A1111_NO_IMAGE: 502,
  E_BAD_IMAGE: 502,
  E_NO_GENERATOR: 503,
  E_INTERNAL: 500,
}

/** Seconds a client should wait before trying again, for the busy answers. */
const RETRY_AFTER_S: Partial<Record<ErrorCode, number>> = {
  E_QUEUE_FULL: 10,
  E_SHUTTING_DOWN: 30,
  E_RATE_LIMITED: 60,
  E_NO_GENERATOR: 30,
}

export function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  const appErr = toAppError(err)
  const retry = RETRY_AFTER_S[appErr.code]
  if (retry !== undefined) void reply.header('retry-after', String(retry))
  return reply.code(STATUS[appErr.code]).type('application/json').send({ error: appErr.toJSON() })
}

export function badRequest(message: string): AppError {
  return new AppError('E_BAD_REQUEST', message)
}
