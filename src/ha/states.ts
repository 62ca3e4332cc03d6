import { HA_TEXT_MAX, TELEMETRY_KEYS, type TelemetryKey } from './discovery.ts'

/*
 * What the link publishes as entity state: a display's status as the Status and Progress sensors read it,
 * its telemetry for the diagnostic sensors, and the bridge's own sensors. Pure.
 */

/**
 * A status message (docs/protocol.md, "Status messages") as the Status sensor and its attributes: the state,
 * progress in percent, and the error's code and message when there is one.
 */
export function haStatus(body: Record<string, unknown>): Record<string, unknown> {
  const state = typeof body.state === 'string' ? body.state : 'unknown'
  const out: Record<string, unknown> = { state, progress: progressPercent(state, body.progress) }
  for (const key of ['job', 'position', 'eta_s', 'frame_id', 'seed', 'reason', 'request_id'] as const) {
    if (body[key] !== undefined) out[key] = body[key]
  }
  const error = body.error as { code?: unknown; message?: unknown } | undefined
  if (error && typeof error === 'object') {
    out.error_code = error.code
    out.error = error.message
  }
  return out
}

function progressPercent(state: string, progress: unknown): number {
  if (state === 'sending' || state === 'done') return 100
  if (state === 'generating' && typeof progress === 'number') return Math.round(progress * 100)
  return 0
}

/** The telemetry a display reported, keeping only the keys the diagnostic sensors show. */
export function pickTelemetry(telemetry: unknown): Partial<Record<TelemetryKey, number | string>> {
  const out: Partial<Record<TelemetryKey, number | string>> = {}
  if (typeof telemetry !== 'object' || telemetry === null) return out
  const raw = telemetry as Record<string, unknown>
  for (const key of TELEMETRY_KEYS) {
    const value = raw[key]
    if (typeof value === 'number' && Number.isFinite(value)) out[key] = value
    else if (typeof value === 'string' && value.length <= 64) out[key] = value
  }
  return out
}

/** A prompt as the text entity's state: Home Assistant refuses a state longer than the entity's max. */
export function promptState(prompt: string): string {
  return prompt.length > HA_TEXT_MAX ? `${prompt.slice(0, HA_TEXT_MAX - 1)}…` : prompt
}

export interface BridgeSensors {
  generators_up: number
  generators: number
  queue: number
  last_error: string
}

/** A sensor's state is a string of at most 255 characters in Home Assistant. */
export function lastErrorState(code: string, message: string): string {
  return promptState(`${code}: ${message}`)
}
