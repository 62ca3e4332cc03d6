import { randomBytes } from 'node:crypto'
import type { StatusMessage } from '../protocol/status.ts'

/* What the simulated device prints, and the prompt it sends: pure, so the wording is tested on its own. */

/** `[#####.....] 50%`: ten steps of progress. */
export function progressBar(progress: number): string {
  const p = Math.min(Math.max(progress, 0), 1)
  const filled = Math.round(p * 10)
  return `[${'#'.repeat(filled)}${'.'.repeat(10 - filled)}] ${Math.round(p * 100)}%`
}

/** One status message as a line for people. */
export function describeStatus(s: StatusMessage): string {
  switch (s.state) {
    case 'queued':
      return typeof s.position === 'number' ? `queued, position ${s.position}` : 'queued'
    case 'generating': {
      const progress = typeof s.progress === 'number' ? s.progress : 0
      const eta = typeof s.eta_s === 'number' ? `, ${s.eta_s.toFixed(1)} s left` : ''
      return `${progressBar(progress)} generating${eta}`
    }
    case 'sending':
      return `sending ${s.preview === true ? 'preview' : 'frame'} ${String(s.frame_id)} (${String(s.chunks)} bands)`
    case 'done':
      return `done: frame ${String(s.frame_id)}, seed ${String(s.seed)}`
    case 'cancelled':
      return `cancelled (${String(s.reason)})`
    case 'error': {
      const error = s.error as { code?: string; message?: string } | undefined
      return `error ${error?.code ?? 'E_?'}: ${error?.message ?? ''}`
    }
    default:
      return String(s.state)
  }
}

/** The prompt as JSON with a request_id, so the statuses and the frame of this prompt can be told apart. */
export function promptPayload(text: string): { payload: string; requestId: string | number } {
  const requestId = `device-${randomBytes(4).toString('hex')}`
  const trimmed = text.trim()
  if (trimmed.startsWith('{')) {
    let json: unknown
    try {
      json = JSON.parse(trimmed)
    } catch {
      // Sent as it is: the bridge answers with an E_BAD_PROMPT status that says what is wrong.
      return { payload: text, requestId }
    }
    if (typeof json === 'object' && json !== null && !Array.isArray(json)) {
      const body = { request_id: requestId, ...(json as Record<string, unknown>) }
      const own = body.request_id
      return {
        payload: JSON.stringify(body),
        requestId: typeof own === 'string' || typeof own === 'number' ? own : requestId,
      }
    }
    return { payload: text, requestId }
  }
  return { payload: JSON.stringify({ prompt: trimmed, request_id: requestId }), requestId }
}
