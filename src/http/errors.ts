import type { FastifyReply } from 'fastify'
import { AppError, toAppError, traitsOf } from '../errors.ts'

/*
 * Error answers of the HTTP listener: JSON `{"error": {"code", "message"}}` (README, "HTTP"), with a
 * status that tells a client what kind of failure it was. Messages are the AppError's own, which never hold
 * the A1111 address or a stack trace.
 */

export function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  const appErr = toAppError(err)
  const traits = traitsOf(appErr.code)
  if (traits.retryAfterS !== undefined) void reply.header('retry-after', String(traits.retryAfterS))
  return reply.code(traits.status).type('application/json').send({ error: appErr.toJSON() })
}

export function badRequest(message: string): AppError {
  return new AppError('E_BAD_REQUEST', message)
}
