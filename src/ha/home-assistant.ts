import type { Logger } from 'pino'
import { AppError, toAppError } from '../errors.ts'
import type { EventBus } from '../events.ts'
import type { PanelProfile } from '../image/panel.ts'
import type { Intake } from '../jobs/intake.ts'
import type { JobQueue } from '../jobs/job.ts'
import type { Part } from '../parts.ts'
import { isDeviceId } from '../protocol/device-id.ts'
import { parsePromptJson } from '../protocol/prompt.ts'
import type { FrameStore } from '../store/frame-store.ts'
import {
  bridgeDiscovery,
  createHaTopics,
  displayDiscovery,
  type HaCommand,
  type Origin,
} from './discovery.ts'
import type { KnownDisplay, KnownDisplays } from './known-displays.ts'
import type { HaLink } from './link.ts'
import { packageOrigin } from './origin.ts'
import { framePng } from './picture.ts'
import { type BridgeSensors, haStatus, lastErrorState, pickTelemetry, promptState } from './states.ts'

/*
 * Home Assistant for every display (README "Home Assistant"): a device per display with a prompt box, its
 * last picture and its status, and one for the bridge, all by device-based discovery over the link to Home
 * Assistant's broker. It listens to the event bus and calls the intake and the queue like any other door;
 * nothing in the job path waits for it.
 */

export interface HomeAssistant extends Part {
  /** A display sent something or subscribed: it gets a device in Home Assistant if it has none. */
  seen(deviceId: string): void
  /** Removes the display's device from Home Assistant (an emptied retained config). */
  forget(deviceId: string): boolean
}

export interface HomeAssistantDeps {
  link: HaLink
  events: EventBus
  intake: Pick<Intake, 'submitPrompt'>
  queue: Pick<JobQueue, 'cancelDevice' | 'waiting'>
  store: Pick<FrameStore, 'meta' | 'read'>
  known: KnownDisplays
  connectedIds(): ReadonlySet<string>
  /** Displays coming and going, from a broker that sees them: availability follows these, not a timer. */
  presence?: ((listener: (deviceId: string, online: boolean) => void) => () => void) | undefined
  panelOf(deviceId: string): PanelProfile
  generators(): { up: number; total: number }
  log: Logger
}

export function createHomeAssistant(
  options: { baseTopic: string; prefix: string; shareGroup?: string | undefined },
  deps: HomeAssistantDeps,
): HomeAssistant {
  const { link, known, log } = deps
  const topics = createHaTopics(options.baseTopic, options.prefix)
  const origin: Origin = { name: 'pico-a1111-bridge', sw: '0.0.0' }
  const statuses = new Map<string, Record<string, unknown>>()
  const telemetry = new Map<string, Record<string, unknown>>()
  const online = new Map<string, boolean>()
  /** Displays forgotten while the link was down: their retained topics are emptied on the next connect. */
  const toEmpty = new Set<string>()
  const unsubscribe: (() => void)[] = []
  let bridge: BridgeSensors = { generators_up: 0, generators: 0, queue: 0, last_error: 'none' }

  const json = (value: unknown) => JSON.stringify(value)

  function publishDisplay(display: KnownDisplay, withPicture: boolean): void {
    const id = display.id
    link.publish(
      topics.discovery(topics.nodeId(id)),
      json(
        displayDiscovery(topics, origin, {
          deviceId: id,
          panel: display.panel,
          fw: display.fw,
          telemetry: new Set(display.telemetry),
        }),
      ),
      { retain: true },
    )
    publishAvailability(id, true)
    link.publish(topics.display(id, 'status'), json(statuses.get(id) ?? { state: 'idle', progress: 0 }), {
      retain: true,
    })
    const meta = deps.store.meta(id)
    if (meta) link.publish(topics.display(id, 'prompt'), promptState(meta.prompt), { retain: true })
    const info = telemetry.get(id)
    if (info) link.publish(topics.display(id, 'info'), json(info), { retain: true })
    if (withPicture) publishPicture(id)
  }

  /*
   * Only a broker that gives presence notices (the embedded one) knows whether a display is connected. An
   * external broker shows the bridge no connections: "heard from lately" would turn a connected display that
   * is quiet (the firmware speaks only when it connects) unavailable, and Home Assistant sends an unavailable
   * entity no commands. There a display is available whenever its bridge is.
   */
  const isOnline = (id: string) => (deps.presence ? deps.connectedIds().has(id) : true)

  function publishAvailability(id: string, always: boolean, now = isOnline(id)): void {
    if (!always && online.get(id) === now) return
    online.set(id, now)
    link.publish(topics.display(id, 'availability'), now ? 'online' : 'offline', { retain: true })
  }

  function publishPicture(id: string): void {
    if (!link.isConnected()) return
    deps.store
      .read(id)
      .then(async (frame) => {
        if (frame)
          link.publish(topics.display(id, 'picture'), await framePng(frame, deps.panelOf(id)), {
            retain: true,
          })
      })
      .catch((err: unknown) => log.error({ err, deviceId: id }, 'picture for Home Assistant failed'))
  }

  function publishBridge(discovery: boolean): void {
    if (discovery)
      link.publish(topics.discovery(topics.bridgeNodeId), json(bridgeDiscovery(topics, origin)), {
        retain: true,
      })
    link.publish(topics.bridgeState, json(bridge), { retain: true })
  }

  function updateBridge(change: Partial<BridgeSensors>): void {
    const { up, total } = deps.generators()
    const next = { ...bridge, generators_up: up, generators: total, queue: deps.queue.waiting(), ...change }
    if (json(next) === json(bridge)) return
    bridge = next
    publishBridge(false)
  }

  function publishAll(withPictures: boolean): void {
    publishBridge(true)
    for (const id of toEmpty) emptyDisplay(id)
    toEmpty.clear()
    for (const display of known.all()) publishDisplay(display, withPictures)
  }

  function emptyDisplay(id: string): void {
    if (!link.isConnected()) {
      toEmpty.add(id)
      return
    }
    // An empty retained payload removes the device (Home Assistant's MQTT docs, "Discovery messages").
    link.publish(topics.discovery(topics.nodeId(id)), '', { retain: true })
    for (const what of ['picture', 'status', 'prompt', 'info', 'availability'] as const)
      link.publish(topics.display(id, what), '', { retain: true })
  }

  function remember(display: KnownDisplay): void {
    const { changed, dropped } = known.put(display)
    if (dropped !== undefined) forgetLocal(dropped)
    if (changed) publishDisplay(display, false)
  }

  function forgetLocal(id: string): void {
    statuses.delete(id)
    telemetry.delete(id)
    online.delete(id)
    emptyDisplay(id)
  }

  function seen(id: string): void {
    if (known.get(id)) {
      known.touch(id)
      publishAvailability(id, false)
    } else remember({ id, telemetry: [] })
  }

  /** A display's panel and telemetry (docs/protocol.md, "Display info"), for the diagnostic sensors. */
  function info(deviceId: string, panel: string, reported: unknown): void {
    const picked = pickTelemetry(reported)
    const old = known.get(deviceId)
    const keys = new Set([...(old?.telemetry ?? []), ...(Object.keys(picked) as (keyof typeof picked)[])])
    const fw = typeof picked.fw === 'string' ? picked.fw : old?.fw
    remember({ id: deviceId, panel, fw, telemetry: [...keys].sort() })
    telemetry.set(deviceId, picked)
    link.publish(topics.display(deviceId, 'info'), json(picked), { retain: true })
  }

  function submit(deviceId: string, prompt: string, seed?: number): void {
    let request: ReturnType<typeof parsePromptJson>
    try {
      request = parsePromptJson(seed === undefined ? { prompt } : { prompt, seed })
    } catch (err) {
      refused(deviceId, err)
      return
    }
    deps.intake.submitPrompt(deviceId, request).then(
      () => link.publish(topics.display(deviceId, 'prompt'), promptState(request.prompt), { retain: true }),
      (err: unknown) => refused(deviceId, err),
    )
  }

  /** A command Home Assistant sent that the bridge refused: the Status sensor says why. */
  function refused(deviceId: string, err: unknown): void {
    const appErr = toAppError(err)
    if (appErr.code === 'E_INTERNAL') log.error({ err, deviceId }, 'Home Assistant command failed')
    else log.warn({ deviceId, code: appErr.code, reason: appErr.message }, 'Home Assistant command refused')
    const status = haStatus({ state: 'error', error: appErr.toJSON() })
    statuses.set(deviceId, status)
    link.publish(topics.display(deviceId, 'status'), json(status), { retain: true })
  }

  function command(deviceId: string, name: HaCommand, payload: Buffer): void {
    if (name === 'prompt') {
      submit(deviceId, payload.toString('utf8'))
    } else if (name === 'again') {
      // The same prompt with a new seed (-1: A1111 picks one).
      const prompt = deps.store.meta(deviceId)?.prompt
      if (prompt === undefined)
        refused(deviceId, new AppError('E_NOT_FOUND', `${deviceId} has no picture yet to make again`))
      else submit(deviceId, prompt, -1)
    } else {
      const cancelled = deps.queue.cancelDevice(deviceId, 'requested')
      log.info({ deviceId, cancelled }, 'cancel from Home Assistant')
    }
  }

  function message(topic: string, payload: Buffer): void {
    if (topic === topics.bridgeAvailability) {
      // Bridges on one broker share this topic (README "Home Assistant"): one that stops or dies says
      // offline for all of them, so each that still runs says online again (a stopping one cannot publish).
      if (payload.toString('utf8') === 'offline') link.publish(topic, 'online', { retain: true })
      return
    }
    if (topic === topics.haStatus) {
      // Home Assistant's birth message: it (re)started and reads discovery again.
      if (payload.toString('utf8').trim() === 'online') publishAll(false)
      return
    }
    const parsed = topics.parseCommand(topic)
    if (!parsed) return
    if (!isDeviceId(parsed.deviceId)) {
      log.warn({ code: 'E_BAD_REQUEST', reason: 'not a device id', topic }, 'Home Assistant command ignored')
      return
    }
    command(parsed.deviceId, parsed.command, payload)
  }

  return {
    name: 'home assistant',
    async start() {
      await known.load()
      Object.assign(origin, await packageOrigin())
      unsubscribe.push(
        deps.events.on('status.published', ({ deviceId, body }) => {
          seen(deviceId)
          const status = haStatus(body)
          statuses.set(deviceId, status)
          link.publish(topics.display(deviceId, 'status'), json(status), { retain: true })
          if (status.state === 'done') {
            const meta = deps.store.meta(deviceId)
            if (meta)
              link.publish(topics.display(deviceId, 'prompt'), promptState(meta.prompt), { retain: true })
            publishPicture(deviceId)
          }
          const error = body.error as { code: string; message: string } | undefined
          updateBridge(error ? { last_error: lastErrorState(error.code, error.message) } : {})
        }),
        deps.events.on('generator.state', () => updateBridge({})),
        deps.events.on('device.info', ({ deviceId, panel, telemetry: reported }) =>
          info(deviceId, `${panel.width}x${panel.height} ${panel.format}`, reported),
        ),
      )
      await link.start({
        connected() {
          const commands = options.shareGroup
            ? `$share/${options.shareGroup}/${topics.commandFilter}`
            : topics.commandFilter
          link.subscribe([topics.haStatus, topics.bridgeAvailability, commands])
          publishAll(true)
        },
        message,
      })
      // Only displays Home Assistant has a device for; an unknown one gets it once it sends something.
      if (deps.presence)
        unsubscribe.push(deps.presence((id, up) => known.get(id) && publishAvailability(id, false, up)))
    },
    async stop() {
      for (const off of unsubscribe.splice(0)) off()
      await link.stop()
      await known.flush()
    },
    seen,
    forget(deviceId) {
      const had = known.forget(deviceId)
      forgetLocal(deviceId)
      return had
    },
  }
}
