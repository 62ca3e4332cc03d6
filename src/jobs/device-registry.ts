import type { Clock } from '../clock.ts'
import type { PanelProfile } from '../image/panel.ts'
import type { Telemetry } from '../protocol/info.ts'
import type { FrameStore } from '../store/frame-store.ts'

/*
 * The devices the bridge knows: those that sent it something, subscribed to their own topics, or have a
 * stored picture. Only the set of ids and when each was last heard from is kept; whether a device is online
 * is read from the broker's clients when asked.
 */

/** A device as GET /api/v1/devices lists it. */
export interface DeviceInfo {
  id: string
  connected: boolean
  last_seen: string | null
  last_frame_at: string | null
  frame_id: number | null
  /** The panel its frames are made for (DEVICES, its info, the settings), in the DEVICES field names. */
  panel?: PanelView
  /** What its last info said (rssi in dBm, heap_free in bytes, battery_v in volts); null before any. */
  telemetry?: Telemetry | null
}

export interface PanelView {
  width: number
  height: number
  format: PanelProfile['format']
  band_rows: number
  fit: PanelProfile['fit']
  dither: PanelProfile['dither']
  invert: boolean
  compress: boolean
}

function panelView(p: PanelProfile): PanelView {
  const { bandRows, palette: _palette, saturation: _s, contrast: _c, ...rest } = p
  return { ...rest, band_rows: bandRows }
}

export interface DeviceRegistry {
  seen(deviceId: string): void
  /**
   * Marks a device the registry knows as heard from now; returns false (and remembers nothing) for one it
   * does not know. For subscriptions: a client that only subscribed under an invented id and went away
   * must leave nothing behind (issue 10).
   */
  touch(deviceId: string): boolean
  /** Drops what the registry knows of a device (DELETE /api/v1/devices/:id); false when it knew nothing. */
  forget(deviceId: string): boolean
  list(): DeviceInfo[]
  /** One device as list() shows it, without building the whole list; undefined for one it does not know. */
  get(deviceId: string): DeviceInfo | undefined
}

/** Keeps the registry from growing without bound when clients invent ids. */
const MAX_DEVICES = 10_000

export function createDeviceRegistry(deps: {
  store: FrameStore
  connectedIds(): ReadonlySet<string>
  clock: Clock
  panelOf?(deviceId: string): PanelProfile
  telemetryOf?(deviceId: string): Telemetry | undefined
}): DeviceRegistry {
  const lastSeen = new Map<string, string>()

  function view(id: string, connected: boolean): DeviceInfo {
    const meta = deps.store.meta(id)
    return {
      id,
      connected,
      last_seen: lastSeen.get(id) ?? null,
      last_frame_at: meta?.finishedAt ?? null,
      frame_id: meta?.frameId ?? null,
      ...(deps.panelOf && { panel: panelView(deps.panelOf(id)) }),
      ...(deps.telemetryOf && { telemetry: deps.telemetryOf(id) ?? null }),
    }
  }

  return {
    seen(deviceId) {
      lastSeen.delete(deviceId)
      lastSeen.set(deviceId, deps.clock.now().toISOString())
      if (lastSeen.size > MAX_DEVICES) lastSeen.delete(lastSeen.keys().next().value!)
    },
    touch(deviceId) {
      if (!lastSeen.has(deviceId)) return false
      this.seen(deviceId)
      return true
    },
    forget: (deviceId) => lastSeen.delete(deviceId),
    list() {
      const connected = deps.connectedIds()
      const ids = new Set([...lastSeen.keys(), ...deps.store.all().map((m) => m.deviceId), ...connected])
      return [...ids].sort().map((id) => view(id, connected.has(id)))
    },
    get(deviceId) {
      const connected = deps.connectedIds().has(deviceId)
      if (!connected && !lastSeen.has(deviceId) && !deps.store.meta(deviceId)) return undefined
      return view(deviceId, connected)
    },
  }
}
