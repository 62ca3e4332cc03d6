import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import type { DevicePanel } from '../config/devices.ts'
import { toAppError } from '../errors.ts'
import type { EventBus } from '../events.ts'
import { type PanelProfile, resolvePanel } from '../image/panel.ts'
import { parseInfoPayload, type Telemetry, telemetryOf } from '../protocol/info.ts'
import { createDisplayInfoFile, type KeptInfo } from '../store/display-info-file.ts'
import { newJobId } from './intake.ts'
import type { DeviceOutput } from './output.ts'

/*
 * Every display its own panel (issue 15; docs/protocol.md, "Display info"): its DEVICES entry, over what its
 * retained `info` says, over the settings' panel. The last info of each display is kept (in memory and in
 * DATA_DIR/displays.json) with its telemetry. A bad info is answered with an E_BAD_INFO status and changes
 * nothing. When a display's panel changes, `panelChanged` is told, so its last picture can be rendered anew.
 */

/** Displays whose info is kept; past it the one heard from longest ago is forgotten (its panel: the default). */
export const MAX_DISPLAYS = 1000

export interface DisplayTelemetry {
  deviceId: string
  telemetry: Telemetry
}

export interface DisplayPanels {
  /** Reads the kept info (a part's start, before the broker delivers any new info). */
  load(): Promise<void>
  /** Waits for the file writes asked for. */
  flush(): Promise<void>
  panelOf(deviceId: string): PanelProfile
  telemetryOf(deviceId: string): Telemetry | undefined
  /** Every display's telemetry, the one heard from longest ago first. */
  telemetry(): DisplayTelemetry[]
  /** A payload on `<base>/<id>/info`; empty (a retained message cleared) forgets the display's info. */
  handleInfo(deviceId: string, payload: Buffer): void
}

export function createDisplayPanels(deps: {
  defaults: PanelProfile
  devices: Readonly<Record<string, DevicePanel>>
  dataDir: string
  output: Pick<DeviceOutput, 'status'>
  events: EventBus
  clock: Clock
  log: Logger
  /** The display's panel is now `panel` (it was another): render its last picture for it. */
  panelChanged(deviceId: string, panel: PanelProfile): void
}): DisplayPanels {
  const { log } = deps
  /** In arrival order: the most recent info last. */
  const kept = new Map<string, KeptInfo>()
  const file = createDisplayInfoFile(deps.dataDir, () => kept.entries(), log)
  const deviceEntry = (id: string) => (Object.hasOwn(deps.devices, id) ? deps.devices[id] : undefined)

  function panelOf(deviceId: string): PanelProfile {
    return resolvePanel(deps.defaults, kept.get(deviceId)?.info.panel, deviceEntry(deviceId))
  }

  function put(deviceId: string, entry: KeptInfo | undefined): void {
    kept.delete(deviceId)
    if (entry) kept.set(deviceId, entry)
    while (kept.size > MAX_DISPLAYS) kept.delete(kept.keys().next().value!)
  }

  function refuse(deviceId: string, err: unknown): void {
    const appErr = toAppError(err)
    if (appErr.code === 'E_INTERNAL') log.error({ err, deviceId }, 'info failed inside the bridge')
    else log.warn({ deviceId, code: appErr.code, reason: appErr.message }, 'info refused')
    deps.output.status(
      deviceId,
      { id: newJobId(), requestId: undefined },
      { state: 'error', error: appErr.toJSON() },
    )
  }

  return {
    async load() {
      for (const [deviceId, entry] of await file.load()) put(deviceId, entry)
      if (kept.size > 0) log.info({ displays: kept.size }, 'displays’ info loaded')
    },
    flush: () => file.flush(),
    panelOf,
    telemetryOf: (deviceId) => {
      const entry = kept.get(deviceId)
      return entry && telemetryOf(entry.info, new Date(entry.at))
    },
    telemetry: () =>
      [...kept].map(([deviceId, entry]) => ({
        deviceId,
        telemetry: telemetryOf(entry.info, new Date(entry.at)),
      })),
    handleInfo(deviceId, payload) {
      const before = JSON.stringify(panelOf(deviceId))
      let entry: KeptInfo | undefined
      try {
        entry =
          payload.length === 0
            ? undefined
            : { info: parseInfoPayload(payload), at: deps.clock.now().toISOString() }
      } catch (err) {
        refuse(deviceId, err)
        return
      }
      put(deviceId, entry)
      file.save()
      const panel = panelOf(deviceId)
      const telemetry = entry ? telemetryOf(entry.info, new Date(entry.at)) : null
      log.debug(
        { deviceId, panel: `${panel.width}x${panel.height}:${panel.format}`, telemetry },
        'display info',
      )
      deps.events.emit('device.info', { deviceId, panel, telemetry })
      if (JSON.stringify(panel) !== before) {
        log.info(
          { deviceId, width: panel.width, height: panel.height, format: panel.format },
          'display panel changed',
        )
        deps.panelChanged(deviceId, panel)
      }
    },
  }
}
