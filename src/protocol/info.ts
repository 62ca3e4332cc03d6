import { z } from 'zod'
import { MAX_PANEL_SIDE, pixelFormat } from '../config/devices.ts'
import { AppError } from '../errors.ts'

/*
 * What a display says about itself on `<base>/<id>/info`, retained (docs/protocol.md, "Display info"): its
 * panel and its telemetry, every field optional. Fields this bridge does not know are ignored, so newer
 * firmware can add some; a known field of the wrong type or out of range refuses the whole message with
 * E_BAD_INFO naming the field, and the display keeps what it had. Pure.
 */

/** An info message is a few hundred bytes; anything much larger is not one. */
export const MAX_INFO_BYTES = 4096

const side = z
  .number({ error: 'must be a number' })
  .int({ error: 'must be a whole number' })
  .min(1, { error: 'must be at least 1' })
  .max(MAX_PANEL_SIDE, { error: `must be at most ${MAX_PANEL_SIDE}` })

export const infoPanelSchema = z.object({
  width: side.optional(),
  height: side.optional(),
  format: pixelFormat.optional(),
  band_rows: side.optional(),
})

const finite = (min: number, max: number) =>
  z
    .number({ error: 'must be a number' })
    .min(min, { error: `must be at least ${min}` })
    .max(max, { error: `must be at most ${max}` })

export const infoSchema = z.object({
  panel: infoPanelSchema.optional(),
  fw: z.string({ error: 'must be a string' }).max(64, { error: 'must be at most 64 characters' }).optional(),
  /** Wi-Fi signal strength in dBm (CYW43 `status('rssi')`). */
  rssi: finite(-200, 50).optional(),
  /** Free heap in bytes (`gc.mem_free()`). */
  heap_free: finite(0, 2 ** 32)
    .int({ error: 'must be a whole number' })
    .optional(),
  /** Battery voltage; 0-100 leaves room for any pack a Pico runs from. */
  battery_v: finite(0, 100).optional(),
})

export type InfoPanel = z.infer<typeof infoPanelSchema>
export type DisplayInfoMessage = z.infer<typeof infoSchema>

/** A display's telemetry as the bridge keeps it: the info's fields (null when not sent) and when they came. */
export interface Telemetry {
  fw: string | null
  rssi: number | null
  heap_free: number | null
  battery_v: number | null
  /** When the info arrived (ISO 8601). */
  at: string
}

/**
 * Reads an info payload (JSON object).
 *
 * @throws AppError E_BAD_INFO whose message names the first field that is wrong.
 */
export function parseInfoPayload(payload: Uint8Array): DisplayInfoMessage {
  if (payload.length > MAX_INFO_BYTES)
    throw badInfo(`payload of ${payload.length} bytes is larger than ${MAX_INFO_BYTES} bytes`)
  let json: unknown
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload))
  } catch {
    throw badInfo('payload is not JSON like {"panel": {"width": 240, "height": 240}}')
  }
  return parseInfoJson(json)
}

/** Validates an info object (already parsed), from MQTT or from the bridge's own file. */
export function parseInfoJson(json: unknown): DisplayInfoMessage {
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw badInfo('info must be a JSON object like {"panel": {"width": 240, "height": 240}}')
  const parsed = infoSchema.safeParse(json)
  if (parsed.success) return parsed.data
  const issue = parsed.error.issues[0]
  const field = issue?.path.map(String).join('.') || 'info'
  throw badInfo(`${field}: ${issue?.message ?? 'is not valid'}`, field)
}

export function telemetryOf(info: DisplayInfoMessage, at: Date): Telemetry {
  return {
    fw: info.fw ?? null,
    rssi: info.rssi ?? null,
    heap_free: info.heap_free ?? null,
    battery_v: info.battery_v ?? null,
    at: at.toISOString(),
  }
}

function badInfo(message: string, field?: string): AppError {
  return new AppError('E_BAD_INFO', `info refused, the display keeps its panel: ${message}`, {
    details: field === undefined ? undefined : { field },
  })
}
