import type { ErrorCode } from '../errors.ts'

/*
 * Status messages on `<base>/<id>/status` (docs/protocol.md, "Status messages"): retained JSON, so a display or a dashboard that
 * connects later still sees where its last job stands.
 */

export type StatusEvent =
  | { state: 'queued'; position: number }
  | { state: 'generating'; progress?: number; eta_s?: number }
  | { state: 'sending'; frame_id: number; chunks: number; preview?: boolean }
  | { state: 'done'; frame_id: number; seed: number }
  | { state: 'cancelled'; reason: CancelReason }
  | { state: 'error'; error: { code: ErrorCode; message: string } }

/** Why a job ended without a frame. */
export type CancelReason = 'superseded' | 'requested' | 'client_gone' | 'shutdown'

export type StatusState = StatusEvent['state']

export interface StatusMessage {
  state: StatusState
  job: string
  request_id?: string | number
  ts: string
  [field: string]: unknown
}

/** A status as devices read it: progress to 0.001, the ETA to a tenth of a second. */
export function rounded(event: StatusEvent): StatusEvent {
  if (event.state !== 'generating') return event
  const out: StatusEvent = { state: 'generating' }
  if (event.progress !== undefined) out.progress = Math.round(event.progress * 1000) / 1000
  if (event.eta_s !== undefined) out.eta_s = Math.round(event.eta_s * 10) / 10
  return out
}

/** Builds the JSON body of one status message. */
export function statusMessage(
  event: StatusEvent,
  job: { id: string; requestId: string | number | undefined },
  now: Date,
): StatusMessage {
  const { state, ...fields } = rounded(event)
  const msg: StatusMessage = { state, job: job.id, ...fields, ts: now.toISOString() }
  if (job.requestId !== undefined) msg.request_id = job.requestId
  return msg
}
