/*
 * The one rule for device ids (docs/protocol.md, "Devices and topics"): 1-64 letters, digits, `_` or `-`,
 * and not `bridge`, which names the bridge's own topics. Every door checks ids here: MQTT intake, the HTTP
 * routes, the simulated device, presence and the files in DATA_DIR.
 */

export const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

/** `<base>/bridge/...` belongs to the bridge itself, so no device may take that name. */
export const RESERVED_DEVICE_ID = 'bridge'

export const DEVICE_ID_RULE = 'use 1-64 letters, digits, _ or - (and not "bridge")'

export type DeviceIdResult = { ok: true; id: string } | { ok: false; message: string }

export function isDeviceId(raw: string): boolean {
  return DEVICE_ID_PATTERN.test(raw) && raw !== RESERVED_DEVICE_ID
}

export function parseDeviceId(raw: string): DeviceIdResult {
  if (isDeviceId(raw)) return { ok: true, id: raw }
  // The id may be hostile (huge, control characters): quote a short, printable excerpt only.
  const shown = JSON.stringify(raw.length > 40 ? `${raw.slice(0, 40)}...` : raw)
  return { ok: false, message: `device id ${shown} is not allowed: ${DEVICE_ID_RULE}` }
}
