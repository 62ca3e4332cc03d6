import type { Logger } from 'pino'
import { bridgeParts } from './bridge-parts.ts'
import { createBrokerAccess } from './broker/access.ts'
import { createEmbeddedBroker } from './broker/embedded.ts'
import { brokerLine, createExternalBroker, externalBrokerOptions } from './broker/external.ts'
import { brokerLimits } from './broker/limits.ts'
import { type Clock, systemClock } from './clock.ts'
import type { Config } from './config/schema.ts'
import { createEventBus } from './events.ts'
import { createGenerators } from './generator/create.ts'
import { createGeneratorHealth } from './generator/health.ts'
import { homeAssistantFromConfig } from './ha/setup.ts'
import { createHealthReport } from './health-report.ts'
import { createHttpServer } from './http/server.ts'
import { panelFromConfig } from './image/panel.ts'
import { createDeviceRegistry } from './jobs/device-registry.ts'
import { createIntake, newJobId } from './jobs/intake.ts'
import { createLastFrame } from './jobs/last-frame.ts'
import { createDeviceOutput } from './jobs/output.ts'
import { createDisplayPanels } from './jobs/panels.ts'
import { createJobQueue } from './jobs/queue.ts'
import { createRateLimit } from './jobs/rate-limit.ts'
import { createMetrics } from './metrics.ts'
import { type RunningParts, startParts } from './parts.ts'
import { createTopics } from './protocol/topics.ts'
import { createFrameStore } from './store/frame-store.ts'
import { createJobJournal, type JobJournal } from './store/job-journal.ts'
import { tryItLine } from './try-it.ts'

/*
 * The composition root below main.ts: builds every part from the frozen config, wires them through the event
 * bus and the broker port, starts them in order and stops them in reverse. Nothing here reads process.*, so
 * tests can run several apps in one process.
 */

export interface AppDeps {
  log: Logger
  clock?: Clock
}

export interface RunningPorts {
  mqttPort: number
  httpPort: number | null
  /** Only when MQTT_TLS_PORT is set. */
  mqttTlsPort?: number
  /** Only when MQTT_WS_PORT is set. */
  mqttWsPort?: number
}

export interface App {
  start(): Promise<RunningPorts>
  /** Stops taking work, lets running jobs finish within the shutdown time, says offline and closes. */
  stop(reason: string): Promise<void>
  /** Reads MQTT_PASSWORD_FILE and MQTT_ACL_FILE again (SIGHUP); a file that cannot be used changes nothing. */
  reload(): void
}

export function createApp(config: Config, deps: AppDeps): App {
  const { log } = deps
  const clock = deps.clock ?? systemClock
  // Start and stop lines are logged at info even when LOG_LEVEL is warn or error: scripts and the tests read
  // the real ports from the listening line (README, "Quick start"). Only LOG_LEVEL=silent silences them.
  const lifecycle = log.levelVal > 30 && log.level !== 'silent' ? log.child({}, { level: 'info' }) : log
  const child = (module: string) => log.child({ module })
  const events = createEventBus(log)
  const topics = createTopics(config.BASE_TOPIC)
  const panel = panelFromConfig(config)
  const now = () => clock.now()
  const limits = { keepDays: config.FRAME_KEEP_DAYS, maxBytes: config.FRAME_STORE_MAX_BYTES }
  const store = createFrameStore(config.DATA_DIR, { log: child('store'), now }, limits)
  const journal = timedJournal(
    createJobJournal(config.DATA_DIR, { log: child('journal'), now }),
    clock,
    events,
  )
  const generators = createGenerators(config, log, clock)
  const health = createGeneratorHealth(generators, { log: child('health'), clock, events })
  const queue = createJobQueue({
    generators,
    maxWaiting: config.QUEUE_MAX,
    retries: config.A1111_RETRIES,
    supersedeRunning: config.SUPERSEDE_RUNNING,
    log: child('queue'),
    clock,
    events,
    stateOf: (g) => health.stateOf(g),
    idOf: (g) => health.idOf(g),
  })
  events.on('job.settled', ({ jobId }) => journal.end(jobId))
  // A server that is back can take the jobs that were waiting for one.
  events.on('generator.state', ({ state }) => state === 'up' && queue.resume())
  const onChunkSent = (bytes: number) => events.emit('chunk.sent', { bytes })
  const access = createBrokerAccess(
    {
      baseTopic: config.BASE_TOPIC,
      passwordFile: config.MQTT_PASSWORD_FILE,
      aclFile: config.MQTT_ACL_FILE,
      allowAnonymous: config.MQTT_ALLOW_ANONYMOUS,
      adminUsers: config.MQTT_ADMIN_USERS,
    },
    { log: child('access') },
  )
  const broker = config.MQTT_URL
    ? createExternalBroker(externalBrokerOptions(config, config.MQTT_URL), {
        ...{ log: child('broker'), topics, clock, onChunkSent },
        frameIdSeen: (deviceId, frameId) => store.seenFrameId(deviceId, frameId),
      })
    : createEmbeddedBroker(mqttListeners(config), {
        ...{ log: child('broker'), topics, access, onChunkSent },
        monotonic: () => clock.monotonic(),
      })
  // Displays coming and going, where the broker sees them (the embedded one); undefined for an external one.
  const presence = broker.onPresence?.bind(broker)
  const output = createDeviceOutput({ broker, clock, events, log: child('jobs') })
  const panels = createDisplayPanels({
    ...{ defaults: panel, devices: config.DEVICES, dataDir: config.DATA_DIR, output, events, clock },
    log: child('panels'),
    panelChanged: (id) =>
      void lastFrame
        .panelChanged(id)
        .catch((err: unknown) => log.error({ err, deviceId: id }, 'rendering for the new panel failed')),
  })
  const panelOf = (id: string) => panels.panelOf(id)
  const lastFrame = createLastFrame({ store, output, panelOf, clock, log: child('jobs') })
  const devices = createDeviceRegistry({
    ...{ store, clock, panelOf, telemetryOf: (id: string) => panels.telemetryOf(id) },
    connectedIds: () => broker.connectedDeviceIds(),
  })
  const jobDeps = { panelOf, previewDefault: config.PREVIEW_DEFAULT, store, output, events, clock }
  const intake = createIntake({
    queue,
    jobDeps: { ...jobDeps, log: child('jobs'), remember: lastFrame.remember },
    output,
    lastFrame,
    journal,
    rateLimit: createRateLimit(config.RATE_LIMIT, () => clock.monotonic()),
    rateLimitPerMinute: config.RATE_LIMIT,
    // RATE_LIMIT=0 turns every prompt limit off, this one too.
    senderLimitPerMinute: config.RATE_LIMIT === 0 ? 0 : config.RATE_LIMIT_SENDER,
    getLimit: { burst: config.GET_BURST, intervalMs: config.GET_INTERVAL * 1000 },
    seen(id) {
      devices.seen(id)
      homeAssistant?.seen(id)
    },
    onInfo: (id, payload) => panels.handleInfo(id, payload),
    clock,
    log: child('intake'),
  })
  const homeAssistant = homeAssistantFromConfig(config, {
    ...{ events, intake, queue, store, log: child('ha') },
    ...{ panelOf, connectedIds: () => broker.connectedDeviceIds(), presence },
    generators: () => ({
      up: generators.filter((g) => health.stateOf(g) === 'up').length,
      total: generators.length,
    }),
  })
  async function forgetDevice(id: string): Promise<boolean> {
    const hadFrame = await store.forget(id)
    const inList = devices.forget(id)
    return (homeAssistant?.forget(id) ?? false) || hadFrame || inList
  }
  const metrics = createMetrics(
    {
      waiting: () => queue.waiting(),
      running: () => queue.running(),
      mqttClients: () => broker.connectedClients(),
      queuedChunks: () => broker.queuedChunks(),
      telemetry: () => panels.telemetry(),
    },
    events,
  )
  const http =
    config.HTTP_PORT === 'off'
      ? null
      : createHttpServer({
          ...{ config, log: child('http'), queue, intake, store, newJobId, panel, events, clock },
          devices: () => devices.list(),
          device: (id) => devices.get(id),
          generatorStatuses: () => health.statuses(),
          presence,
          forgetDevice,
          panelOf,
          health: createHealthReport({
            health,
            broker,
            queue,
            clock,
            storageProblem: () => journal.problem(),
          }),
          extraRoutes: [(app) => metrics.route(app)],
        })

  const { parts, ports, replayed } = bridgeParts(config, {
    ...{ access, generators, store, journal, broker, intake, queue, http, health, homeAssistant },
    displayInfo: { name: 'display info', start: () => panels.load(), stop: () => panels.flush() },
    frameSubscribed(deviceId, clientId) {
      // A subscription alone does not make a device known (an invented id would stay listed for good);
      // one the bridge knows already, from a message or a picture, is marked as heard from.
      if (devices.touch(deviceId) || store.meta(deviceId)) homeAssistant?.seen(deviceId)
      log.debug({ module: 'broker', deviceId, clientId }, 'frame topic subscribed; sending the last frame')
      lastFrame
        .resend(deviceId, clientId)
        .catch((err: unknown) => log.error({ err, deviceId }, 'resend on subscribe failed'))
    },
    sweepFrames() {
      store.sweep(clock.now()).then(
        ({ forgotten }) =>
          forgotten.length > 0 && log.info({ forgotten: forgotten.length }, 'old frames forgotten'),
        (err: unknown) => log.error({ err }, 'sweeping old frames failed'),
      )
    },
  })

  let running: Promise<RunningParts> | null = null
  let stopping: Promise<void> | null = null
  return {
    async start() {
      running = startParts(parts, log)
      await running
      const listening = {
        ...ports,
        access: access.mode,
        ...brokerLine(broker.report()),
        generators: generators.map((g) => g.name),
        replayed: replayed(),
      }
      lifecycle.info({ ...listening, dataDir: config.DATA_DIR, baseTopic: config.BASE_TOPIC }, 'listening')
      // For people at the default level; LOG_LEVEL=warn asked for quiet, so this one is not forced.
      log.info({ ...ports }, tryItLine(config, ports))
      return { ...ports }
    },
    stop(reason) {
      stopping ??= (async () => {
        lifecycle.info({ reason }, 'stopping')
        const started = await running?.catch(() => null)
        await started?.stop()
        lifecycle.info('stopped')
      })()
      return stopping
    },
    reload() {
      lifecycle.info('reading the access files again')
      access.reload()
    },
  }
}

/** The broker's listeners from the settings: plain MQTT always, TLS and WebSocket when set. */
function mqttListeners(config: Config) {
  const { MQTT_TLS_PORT: tlsPort, MQTT_TLS_CERT: certFile, MQTT_TLS_KEY: keyFile } = config
  return {
    host: config.MQTT_HOST,
    port: config.MQTT_PORT,
    maxPacketBytes: config.MQTT_MAX_PACKET,
    limits: brokerLimits(config),
    // The schema wants the three together; this only tells the compiler.
    tls: tlsPort !== undefined && certFile && keyFile ? { port: tlsPort, certFile, keyFile } : undefined,
    wsPort: config.MQTT_WS_PORT,
  }
}

/** The journal, with the time of each durable write on the event bus for /metrics. */
function timedJournal(
  journal: JobJournal,
  clock: Clock,
  events: ReturnType<typeof createEventBus>,
): JobJournal {
  return {
    ...journal,
    async add(job) {
      const started = clock.monotonic()
      await journal.add(job)
      events.emit('journal.write', { ms: clock.monotonic() - started })
    },
  }
}
