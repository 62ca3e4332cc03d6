import type { Client } from 'aedes'
import type { Logger } from 'pino'
import { createEmbeddedBroker } from './broker/broker.ts'
import { subscriptionFilters } from './broker/delivery.ts'
import type { Config } from './config/schema.ts'
import { createA1111Generator } from './generator/a1111.ts'
import { createDemoGenerator } from './generator/demo.ts'
import { createGeneratorHealth } from './generator/health.ts'
import type { Generator } from './generator/types.ts'
import { createHttpServer, type HttpServer } from './http/server.ts'
import type { DeviceJobDeps } from './jobs/device-job.ts'
import { createDeviceRegistry } from './jobs/device-registry.ts'
import { createIntake, newJobId } from './jobs/intake.ts'
import { createJobQueue } from './jobs/queue.ts'
import { encodeFrame, FORMAT_RGB565_BE, FORMAT_RGB565_LE } from './protocol/frame.ts'
import { statusMessage } from './protocol/status.ts'
import { createTopics } from './protocol/topics.ts'
import { createFrameStore, type StoredFrame } from './store/frame-store.ts'

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
  if (config.A1111_BASE_URL === undefined) {
    log.warn(
      'A1111_BASE_URL is not set: using the demo generator, which draws the prompt instead of a picture',
    )
    return [createDemoGenerator({ stepMs: config.DEMO_STEP_MS })]
  }
  return [
    createA1111Generator(
      {
        baseUrl: config.A1111_BASE_URL,
        username: config.A1111_USERNAME,
        password: config.A1111_PASSWORD,
        timeoutMs: config.A1111_TIMEOUT * 1000,
      },
      { log: log.child({ module: 'a1111' }) },
    ),
  ]
}

export function createApp(config: Config, deps: AppDeps): App {
  const log = deps.log
  const now = deps.now ?? (() => new Date())
  const topics = createTopics(config.BASE_TOPIC)
  const store = createFrameStore(config.DATA_DIR, { log: log.child({ module: 'store' }) })
  const startedAt = Date.now()
  const generators = createGenerators(config, log)
  const health = createGeneratorHealth(generators, { log: log.child({ module: 'health' }), now })
  const queue = createJobQueue({
    generators,
    maxWaiting: config.QUEUE_MAX,
    log: log.child({ module: 'queue' }),
    onGeneration: (generator, ms, error) => health.recordGeneration(generator, ms, error),
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
    },
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
    sendFrame(deviceId, chunks) {
      const clients = broker.delivery.send(topics.device(deviceId, 'frame'), chunks)
      log.debug({ deviceId, chunks: chunks.length, clients }, 'frame queued for subscribers')
    },
  }

  const intake = createIntake({
    topics,
    queue,
    jobDeps,
    log: log.child({ module: 'intake' }),
    seen: (deviceId) => devices.seen(deviceId),
    async resend(deviceId) {
      const frame = await store.read(deviceId)
      if (!frame) return false
      broker.delivery.send(topics.device(deviceId, 'frame'), chunksOf(frame))
      return true
    },
  })

  const devices = createDeviceRegistry({ store, now, connectedIds })

  /** Devices with a connected client subscribed under their own id (`pico/kitchen/...`, not `pico/#`). */
  function connectedIds(): Set<string> {
    const ids = new Set<string>()
    const depth = config.BASE_TOPIC.split('/').length
    for (const client of broker.clients()) {
      for (const filter of subscriptionFilters(client)) {
        const levels = filter.split('/')
        const id = levels[depth]
        if (levels.slice(0, depth).join('/') === config.BASE_TOPIC && id && id !== '+' && id !== '#')
          ids.add(id)
      }
    }
    return ids
  }

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
              broker: { clients: broker.connectedClients() },
              queue: { waiting: queue.waiting(), running: queue.running() },
              generators: health.statuses(),
            },
          }),
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
      const levels = filter.split('/')
      const baseLevels = config.BASE_TOPIC.split('/').length
      const deviceLevel = levels[baseLevels]
      if (deviceLevel === undefined || deviceLevel === '+' || deviceLevel === '#') continue
      devices.seen(deviceLevel)
      if (!store.meta(deviceLevel)) continue
      const topic = topics.device(deviceLevel, 'frame')
      if (broker.delivery.grantedQos(client, topic) === null) continue
      store.read(deviceLevel).then(
        (frame) => {
          if (frame) broker.delivery.sendTo(client, topic, chunksOf(frame))
        },
        (err: unknown) => log.error({ err, deviceId: deviceLevel }, 'resend on subscribe failed'),
      )
    }
  }

  let started = false
  let stopping: Promise<void> | null = null

  return {
    async start() {
      await store.load()
      const { port: mqttPort } = await broker.start()
      started = true
      const httpPort = http ? (await http.start()).port : null
      health.start()
      await broker.publishRetained(topics.bridgeState, JSON.stringify({ state: 'online' }))
      const ports: RunningPorts = { mqttPort, httpPort }
      log.info(
        {
          ...ports,
          generators: generators.map((g) => g.name),
          dataDir: config.DATA_DIR,
          baseTopic: config.BASE_TOPIC,
        },
        'listening',
      )
      return ports
    },

    stop(reason) {
      stopping ??= (async () => {
        log.info({ reason }, 'stopping')
        const deadline = new AbortController()
        // Running jobs get most of the shutdown time to finish; then they are interrupted.
        const timer = setTimeout(() => deadline.abort(), config.SHUTDOWN_TIMEOUT * 1000 * 0.6)
        timer.unref()
        await queue.stop(deadline.signal)
        clearTimeout(timer)
        health.stop()
        await http?.stop()
        if (started) {
          await broker
            .publishRetained(topics.bridgeState, JSON.stringify({ state: 'offline' }))
            .catch((err: unknown) => {
              log.warn({ err }, 'offline state not published')
            })
        }
        await broker.stop()
        await Promise.allSettled(generators.map((g) => g.close()))
        log.info('stopped')
      })()
      return stopping
    },
  }
}
