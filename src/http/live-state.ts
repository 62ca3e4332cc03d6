import type { Clock } from '../clock.ts'
import type { EventBus } from '../events.ts'
import type { GeneratorStatus } from '../generator/health.ts'
import type { PanelProfile } from '../image/panel.ts'
import type { DeviceInfo } from '../jobs/device-registry.ts'
import type { JobQueue } from '../jobs/job.ts'
import { type AssembledFrame, createFrameAssembler } from '../protocol/frame.ts'
import type { FrameStore } from '../store/frame-store.ts'

/*
 * What the dashboard shows, kept up to date from the event bus: each display's latest status and error,
 * the queue in order, the generators with their recent times, and the preview a running job last sent.
 * The page gets it whole once (the snapshot) and then as changes (README, "Dashboard").
 */

export interface LiveDeps {
  events: EventBus
  queue: JobQueue
  store: FrameStore
  panel: PanelProfile
  devices(): DeviceInfo[]
  /** One device as devices() lists it (a status must not build the whole list: 10,000 ids made it slow). */
  device(deviceId: string): DeviceInfo | undefined
  generators(): GeneratorStatus[]
  /**
   * The broker's notices that a display came or went, where its port gives them (the embedded broker sees
   * each connection). Without them the device list is looked at on a slow timer instead (dashboard.ts).
   */
  presence?: PresenceNotices | undefined
  clock: Pick<Clock, 'monotonic'>
}

/** Subscribes to presence notices; returns the function that stops them. */
export type PresenceNotices = (listener: (deviceId: string, online: boolean) => void) => () => void

/** One change for the page: an SSE event name and its JSON body. */
export interface LiveEvent {
  event: 'status' | 'frame' | 'queue' | 'generators' | 'devices'
  data: unknown
}

export interface LiveState {
  snapshot(): Record<string, unknown>
  /** Returns the function that stops the listener. */
  subscribe(listener: (event: LiveEvent) => void): () => void
  /** The preview frame a running job last sent to the display, if any. */
  preview(deviceId: string): AssembledFrame | undefined
  /** Looks whether displays came or went; on each presence notice, or on a slow timer where none come. */
  refreshDevices(): void
  stop(): void
}

/**
 * Presence notices come one per display; when thousands reconnect at once (the bridge or the network came
 * back), the device list is looked at once for the first and then at most this often, not once per display.
 */
const PRESENCE_REFRESH_MS = 250

/** Generation times kept per generator for the page. */
const RECENT_TIMES = 10
/** Displays whose statuses are kept; the registry has the same bound. */
const MAX_DEVICES = 10_000

export function createLiveState(deps: LiveDeps): LiveState {
  const statuses = new Map<string, Record<string, unknown>>()
  const errors = new Map<string, Record<string, unknown>>()
  const previews = new Map<
    string,
    { assembler: ReturnType<typeof createFrameAssembler>; frame?: AssembledFrame }
  >()
  const recent = new Map<string, number[]>()
  const listeners = new Set<(event: LiveEvent) => void>()
  let lastQueue = ''
  let lastDevices = ''

  function broadcast(event: LiveEvent): void {
    for (const listener of listeners) listener(event)
  }

  function remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key)
    map.set(key, value)
    if (map.size > MAX_DEVICES) map.delete(map.keys().next().value!)
  }

  /** Running jobs (from their displays' statuses) first, then the waiting ones in the order they start. */
  function queueView(): Record<string, unknown>[] {
    const running = [...statuses]
      .filter(([, s]) => s.state === 'generating' || s.state === 'sending')
      .map(([device, s]) => ({ job: s.job, device, state: s.state, position: 0 }))
    const waiting = deps.queue.waitingJobs().map((j) => ({
      job: j.id,
      device: j.deviceId ?? null,
      state: 'queued',
      position: j.position ?? null,
    }))
    return [...running, ...waiting]
  }

  function generatorsView(): Record<string, unknown>[] {
    return deps.generators().map((g) => ({ ...g, recentMs: recent.get(g.id) ?? [] }))
  }

  function deviceView(info: DeviceInfo): Record<string, unknown> {
    const meta = deps.store.meta(info.id)
    return {
      ...info,
      status: statuses.get(info.id) ?? null,
      last_error: errors.get(info.id) ?? null,
      prompt: meta?.prompt ?? null,
      seed: meta?.seed ?? null,
    }
  }

  function devicesView(): Record<string, unknown>[] {
    return deps.devices().map(deviceView)
  }

  function queueChanged(): void {
    const view = queueView()
    const text = JSON.stringify(view)
    if (text === lastQueue) return
    lastQueue = text
    broadcast({ event: 'queue', data: view })
  }

  const offs = [
    deps.events.on('status.published', ({ deviceId, body }) => {
      remember(statuses, deviceId, body)
      if (body.state === 'error') remember(errors, deviceId, body)
      if (body.state === 'queued' || body.state === 'generating') previews.delete(deviceId)
      if (listeners.size === 0) return
      const info = deps.device(deviceId)
      const device = info
        ? deviceView(info)
        : { id: deviceId, status: body, last_error: errors.get(deviceId) }
      broadcast({ event: 'status', data: device })
      queueChanged()
    }),
    deps.events.on('frame.sent', ({ deviceId, preview, chunks }) => {
      if (preview && chunks) {
        // Only the newest preview is kept, and only until the job settles.
        let entry = previews.get(deviceId)
        if (!entry) {
          entry = { assembler: createFrameAssembler() }
          remember(previews, deviceId, entry)
        }
        let frame: AssembledFrame | null = null
        for (const chunk of chunks) frame = entry.assembler.push(chunk) ?? frame
        if (!frame) return
        entry.frame = frame
        broadcast({ event: 'frame', data: { device: deviceId, preview: true, frame_id: frame.frameId } })
      }
    }),
    deps.events.on('job.settled', ({ deviceId }) => {
      if (deviceId !== undefined) previews.delete(deviceId)
      queueChanged()
    }),
    // A display's info changes its panel and telemetry on the card; the list it is in may not change at all.
    deps.events.on('device.info', ({ deviceId }) => {
      const info = listeners.size > 0 ? deps.device(deviceId) : undefined
      if (info) broadcast({ event: 'devices', data: [deviceView(info)] })
    }),
    deps.events.on('generator.state', () => broadcast({ event: 'generators', data: generatorsView() })),
    deps.events.on('generation.measured', ({ generatorId, ms, error }) => {
      if (error === undefined) {
        const times = recent.get(generatorId) ?? []
        times.unshift(Math.round(ms))
        recent.set(generatorId, times.slice(0, RECENT_TIMES))
      }
      broadcast({ event: 'generators', data: generatorsView() })
    }),
  ]

  let refreshTimer: NodeJS.Timeout | undefined
  let refreshedAt = Number.NEGATIVE_INFINITY
  /** A display came or went: the list now, or once the last look is PRESENCE_REFRESH_MS old. */
  function presenceChanged(): void {
    if (refreshTimer !== undefined) return
    const wait = refreshedAt + PRESENCE_REFRESH_MS - deps.clock.monotonic()
    if (wait <= 0) {
      refreshedAt = deps.clock.monotonic()
      refreshDevices()
      return
    }
    refreshTimer = setTimeout(() => {
      refreshTimer = undefined
      refreshedAt = deps.clock.monotonic()
      refreshDevices()
    }, wait).unref()
  }
  if (deps.presence) offs.push(deps.presence(presenceChanged))

  function refreshDevices(): void {
    if (listeners.size === 0) return
    const devices = devicesView()
    const text = JSON.stringify(devices.map(({ id, connected }) => [id, connected]))
    if (text === lastDevices) return
    lastDevices = text
    broadcast({ event: 'devices', data: devices })
  }

  return {
    snapshot() {
      const devices = devicesView()
      lastDevices = JSON.stringify(devices.map(({ id, connected }) => [id, connected]))
      const { width, height, format, fit } = deps.panel
      return {
        panel: { width, height, format, fit },
        devices,
        queue: queueView(),
        generators: generatorsView(),
      }
    },
    subscribe(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    preview: (deviceId) => previews.get(deviceId)?.frame,
    refreshDevices,
    stop() {
      clearTimeout(refreshTimer)
      for (const off of offs) off()
      listeners.clear()
    },
  }
}
