import { mkdir } from 'node:fs/promises'
import type { Client } from 'aedes'
import type { Logger } from 'pino'
import { createEmbeddedBroker } from './broker/broker.ts'
import { deviceOfFilter, subscribedDeviceIds } from './broker/presence.ts'
import { a1111Servers, type Config } from './config/schema.ts'
import { createA1111Generator } from './generator/a1111.ts'
import { createDemoGenerator } from './generator/demo.ts'
import { createGeneratorHealth } from './generator/health.ts'
import type { Generator } from './generator/types.ts'
import { createHttpServer, type HttpServer } from './http/server.ts'
import type { DeviceJobDeps } from './jobs/device-job.ts'
import { createDeviceRegistry } from './jobs/device-registry.ts'
import { createIntake, newJobId } from './jobs/intake.ts'
import { createJobQueue } from './jobs/queue.ts'
import { createRateLimit } from './jobs/rate-limit.ts'
import { createMetrics } from './metrics.ts'
import { encodeFrame, FORMAT_RGB565_BE, FORMAT_RGB565_LE } from './protocol/frame.ts'
import { statusMessage } from './protocol/status.ts'
import { createTopics } from './protocol/topics.ts'
import { type DataLock, lockDataDir } from './store/data-lock.ts'
import { createFrameStore, type StoredFrame } from './store/frame-store.ts'
import { createJobJournal, type JobJournal } from './store/job-journal.ts'

/*
 * The composition root below main.ts: builds every part from the frozen config, starts them in order and
 * stops them in reverse. Nothing here reads process.* so tests can run several apps in one process.
 */

export interface AppDeps {
  log: Logger
  now?: () => Date
}

export interface RunningPorts {
  mqttPort: number
  httpPort: number | null
}

export interface App {
  start(): Promise<RunningPorts>
  /** Stops taking work, lets running jobs finish within the shutdown time, says offline and closes. */
  stop(reason: string): Promise<void>
}

export function createGenerators(config: Config, log: Logger): Generator[] {
  const servers = a1111Servers(config)
  if (servers.length === 0) {
    log.warn(
      'A1111_BASE_URL is not set: using the demo generator, which draws the prompt instead of a picture',
    )
    return [createDemoGenerator({ stepMs: config.DEMO_STEP_MS })]
  }
  return servers.map((server) =>
    createA1111Generator(
      {
        baseUrl: server.url,
        username: server.username,
        password: server.password,
        timeoutMs: server.timeoutS * 1000,
        progressIntervalMs: config.A1111_PROGRESS_INTERVAL * 1000,
      },
      { log: log.child({ module: 'a1111' }) },
    ),
  )
}

export function createApp(config: Config, deps: AppDeps): App {
  const log = deps.log
  // Start and stop lines are logged at info even when LOG_LEVEL is warn or error: scripts and the tests read
  // the real ports from the listening line (README, "Quick start"). Only LOG_LEVEL=silent silences them.
  const lifecycle = log.levelVal > 30 && log.level !== 'silent' ? log.child({}, { level: 'info' }) : log
  const now = deps.now ?? (() => new Date())
  const startedAt = Date.now()
  const topics = createTopics(config.BASE_TOPIC)
  const store = createFrameStore(config.DATA_DIR, { log: log.child({ module: 'store' }) })
  const generators = createGenerators(config, log)
  const health = createGeneratorHealth(generators, { log: log.child({ module: 'health' }), now })

  const queue = createJobQueue({
    generators,
    maxWaiting: config.QUEUE_MAX,
    retries: config.A1111_RETRIES,
    supersedeRunning: config.SUPERSEDE_RUNNING,
    log: log.child({ module: 'queue' }),
    stateOf: (g) => health.stateOf(g),
    onGeneration(generator, ms, error) {
      health.recordGeneration(generator, ms, error)
      metrics.generation(health.idOf(generator), ms / 1000, error === undefined)
    },
    onSettled(job, state) {
      metrics.jobFinished(state)
      if (job.durable) journal.end(job.id)
    },
  })
  health.onChange((generator, state) => {
    metrics.generatorUp(health.idOf(generator), state === 'up')
    // A server that is back can take the jobs that were waiting for one.
    if (state === 'up') queue.resume()
  })

  const broker = createEmbeddedBroker(
    { host: config.MQTT_HOST, port: config.MQTT_PORT, maxPacketBytes: config.MQTT_MAX_PACKET },
    {
      onInbound: (msg) => intake.handle(msg.topic, msg.payload, msg.clientId),
      onSubscribe: (client, filters) => resendOnSubscribe(client, filters),
    },
    {
      log: log.child({ module: 'broker' }),
      isInbound: (topic) => topics.parseInbound(topic) !== null,
      onChunkSent: (bytes) => metrics.chunkBytes(bytes),
    },
  )
  const metrics = createMetrics({
    waiting: () => queue.waiting(),
    running: () => queue.running(),
    mqttClients: () => broker.connectedClients(),
    queuedChunks: () => broker.delivery.queuedChunks(),
  })
  const journal = timedJournal(
    createJobJournal(config.DATA_DIR, { log: log.child({ module: 'journal' }) }),
    (s) => metrics.journalWrite(s),
  )

  const jobDeps: DeviceJobDeps = {
    config,
    store,
    now,
    log: log.child({ module: 'jobs' }),
    publishStatus(deviceId, job, event) {
      const body = JSON.stringify(statusMessage(event, job, now()))
      broker.publishRetained(topics.device(deviceId, 'status'), body).catch((err: unknown) => {
        log.warn({ err, deviceId }, 'status not published')
      })
    },
    sendFrame(deviceId, chunks, preview) {
      const clients = broker.delivery.send(topics.device(deviceId, 'frame'), chunks)
      metrics.frameSent(preview ? 'preview' : 'final')
      log.debug({ deviceId, chunks: chunks.length, clients, preview }, 'frame queued for subscribers')
    },
    onConverted: (ms) => metrics.conversion(ms / 1000),
  }

  const devices = createDeviceRegistry({
    store,
    now,
    connectedIds: () => subscribedDeviceIds(broker.clients(), config.BASE_TOPIC),
  })

  const intake = createIntake({
    topics,
    queue,
    jobDeps,
    journal,
    rateLimit: createRateLimit(config.RATE_LIMIT, () => Date.now()),
    rateLimitPerMinute: config.RATE_LIMIT,
    now,
    log: log.child({ module: 'intake' }),
    seen: (deviceId) => devices.seen(deviceId),
    async resend(deviceId) {
      const frame = await store.read(deviceId)
      if (!frame) return false
      broker.delivery.send(topics.device(deviceId, 'frame'), chunksOf(frame))
      return true
    },
  })

  const http: HttpServer | null =
    config.HTTP_PORT === 'off'
      ? null
      : createHttpServer({
          config,
          log: log.child({ module: 'http' }),
          queue,
          intake,
          store,
          newJobId,
          devices: () => devices.list(),
          health: () => ({
            ok: health.anyUp(),
            body: {
              status: health.anyUp() ? 'ok' : 'unavailable',
              uptime_s: Math.round((Date.now() - startedAt) / 1000),
              broker: { clients: broker.connectedClients(), queued_chunks: broker.delivery.queuedChunks() },
              queue: { waiting: queue.waiting(), running: queue.running() },
              generators: health.statuses(),
            },
          }),
          extraRoutes: [(app) => metrics.route(app)],
        })

  function chunksOf(frame: StoredFrame): Buffer[] {
    return encodeFrame({
      frameId: frame.frameId,
      width: frame.width,
      height: frame.height,
      pixels: frame.pixels,
      format: frame.format === 'rgb565-le' ? FORMAT_RGB565_LE : FORMAT_RGB565_BE,
      bandRows: config.BAND_ROWS,
      compress: config.FRAME_COMPRESS,
      preview: false,
    })
  }

  /**
   * A device that subscribes to its frame topic gets its last frame at once, as a retained message would
   * arrive. Only filters that name the device (`pico/kitchen/frame`, `pico/kitchen/#`) count: a `pico/#`
   * watcher would otherwise be sent every device's frame.
   */
  function resendOnSubscribe(client: Client, filters: string[]): void {
    for (const filter of filters) {
      const deviceId = deviceOfFilter(filter, config.BASE_TOPIC)
      if (deviceId === undefined) continue
      devices.seen(deviceId)
      const topic = topics.device(deviceId, 'frame')
      if (!store.meta(deviceId) || broker.delivery.grantedQos(client, topic) === null) continue
      store.read(deviceId).then(
        (frame) => {
          if (frame) broker.delivery.sendTo(client, topic, chunksOf(frame))
        },
        (err: unknown) => log.error({ err, deviceId }, 'resend on subscribe failed'),
      )
    }
  }

  let started = false
  let stopping: Promise<void> | null = null
  let lock: DataLock | null = null

  return {
    async start() {
      // Before anything in DATA_DIR is read or rewritten: a second daemon on it would corrupt the journal.
      await mkdir(config.DATA_DIR, { recursive: true })
      lock = lockDataDir(config.DATA_DIR)
      await store.load()
      // Open the journal before the broker listens: a prompt acknowledged from then on must be recorded.
      const pending = await journal.open()
      const { port: mqttPort } = await broker.start()
      started = true
      const httpPort = http ? (await http.start()).port : null
      health.start()
      await broker.publishRetained(topics.bridgeState, JSON.stringify({ state: 'online' }))
      // Jobs acknowledged before a crash or a restart run now, in their order, before new prompts.
      const replayed = intake.replay(pending)
      const ports: RunningPorts = { mqttPort, httpPort }
      lifecycle.info(
        {
          ...ports,
          generators: generators.map((g) => g.name),
          replayed,
          dataDir: config.DATA_DIR,
          baseTopic: config.BASE_TOPIC,
        },
        'listening',
      )
      return ports
    },

    stop(reason) {
      stopping ??= (async () => {
        lifecycle.info({ reason }, 'stopping')
        const deadline = new AbortController()
        // Running jobs get most of the shutdown time to finish; then they are interrupted (and, being on
        // disk, run again at the next start).
        const timer = setTimeout(() => deadline.abort(), config.SHUTDOWN_TIMEOUT * 1000 * 0.6)
        timer.unref()
        await queue.stop(deadline.signal)
        clearTimeout(timer)
        health.stop()
        await http?.stop()
        if (started) {
          await broker
            .publishRetained(topics.bridgeState, JSON.stringify({ state: 'offline' }))
            .catch((err: unknown) => log.warn({ err }, 'offline state not published'))
        }
        await broker.stop()
        await journal.close().catch((err: unknown) => log.error({ err }, 'closing the job journal failed'))
        lock?.release()
        await Promise.allSettled(generators.map((g) => g.close()))
        lifecycle.info('stopped')
      })()
      return stopping
    },
  }
}

/** The journal, with the time of each durable write measured for /metrics. */
function timedJournal(journal: JobJournal, observe: (seconds: number) => void): JobJournal {
  return {
    ...journal,
    async add(job) {
      const started = performance.now()
      await journal.add(job)
      observe((performance.now() - started) / 1000)
    },
  }
}
