import { mkdir } from 'node:fs/promises'
import type { BrokerAccess } from './broker/access.ts'
import type { BrokerPort } from './broker/port.ts'
import type { Config } from './config/schema.ts'
import type { GeneratorHealth } from './generator/health.ts'
import type { Generator } from './generator/types.ts'
import type { HttpServer } from './http/server.ts'
import type { Intake } from './jobs/intake.ts'
import type { JobQueue } from './jobs/job.ts'
import type { Part } from './parts.ts'
import { type DataLock, lockDataDir } from './store/data-lock.ts'
import type { FrameStore } from './store/frame-store.ts'
import type { JobJournal, JournalJob } from './store/job-journal.ts'

/*
 * The bridge's parts in the order they start; they stop in reverse. The order carries the promises the
 * daemon makes: DATA_DIR is locked before anything in it is read; the journal is open before a prompt can be
 * acknowledged; jobs from before a restart are in line before the listener lets a new prompt in; running
 * jobs finish (or are interrupted) before the bridge says offline and the broker closes.
 */

const SWEEP_INTERVAL_MS = 60 * 60 * 1000

export interface BridgeParts {
  parts: Part[]
  /** The real ports, once the listeners are bound. */
  ports: { mqttPort: number; httpPort: number | null; mqttTlsPort?: number; mqttWsPort?: number }
  /** How many journaled jobs were queued again at the start. */
  replayed(): number
}

export function bridgeParts(
  config: Config,
  b: {
    access: BrokerAccess
    generators: Generator[]
    store: FrameStore
    journal: JobJournal
    broker: BrokerPort
    intake: Intake
    queue: JobQueue
    http: HttpServer | null
    health: GeneratorHealth
    /** The displays' kept info (jobs/panels.ts): loaded before the broker delivers any new one. */
    displayInfo?: Part
    /** The link to Home Assistant's broker (src/ha/), when HA_MQTT_URL or MQTT_URL names one. */
    homeAssistant?: Part | null
    frameSubscribed(deviceId: string, clientId: string): void
    /** Forgets displays whose last frame is older than FRAME_KEEP_DAYS (run at start and every hour). */
    sweepFrames(): void
  },
): BridgeParts {
  let sweeper: NodeJS.Timeout | undefined
  let lock: DataLock | null = null
  let pending: readonly JournalJob[] = []
  let replayed = 0
  const ports: BridgeParts['ports'] = { mqttPort: 0, httpPort: null }

  const parts: Part[] = [
    // First: a password or ACL file that cannot be read stops the start before anything is touched.
    { name: 'access files', start: () => b.access.start(), stop: () => b.access.stop() },
    {
      name: 'data-dir lock',
      async start() {
        await mkdir(config.DATA_DIR, { recursive: true })
        lock = lockDataDir(config.DATA_DIR)
      },
      stop: () => lock?.release(),
    },
    { name: 'generators', start() {}, stop: () => Promise.all(b.generators.map((g) => g.close())) },
    { name: 'frame store', start: () => b.store.load(), stop() {} },
    {
      name: 'display info',
      async start() {
        await b.displayInfo?.start()
      },
      async stop() {
        await b.displayInfo?.stop()
      },
    },
    {
      name: 'frame sweep',
      start() {
        b.sweepFrames()
        sweeper = setInterval(b.sweepFrames, SWEEP_INTERVAL_MS).unref()
      },
      stop: () => clearInterval(sweeper),
    },
    {
      name: 'job journal',
      async start() {
        pending = await b.journal.open()
      },
      stop: () => b.journal.close(),
    },
    {
      name: 'broker',
      start: () => b.broker.open({ inbound: (m) => b.intake.handle(m), frameSubscribed: b.frameSubscribed }),
      stop: () => b.broker.close(),
    },
    {
      name: 'replay',
      start() {
        replayed = b.intake.replay(pending)
        pending = []
      },
      stop() {},
    },
    {
      name: 'mqtt listener',
      async start() {
        const bound = await b.broker.listen()
        ports.mqttPort = bound.port
        if (bound.tlsPort !== undefined) ports.mqttTlsPort = bound.tlsPort
        if (bound.wsPort !== undefined) ports.mqttWsPort = bound.wsPort
      },
      stop() {},
    },
    {
      name: 'bridge state',
      start: () => b.broker.publishBridgeState('online'),
      stop: () => b.broker.publishBridgeState('offline'),
    },
    // Its start only loads a file and begins connecting: a Home Assistant broker that is down delays nothing.
    { name: 'home assistant', start: () => b.homeAssistant?.start(), stop: () => b.homeAssistant?.stop() },
    {
      name: 'http',
      async start() {
        if (b.http) ports.httpPort = (await b.http.start()).port
      },
      stop: () => b.http?.stop(),
    },
    { name: 'health monitor', start: () => b.health.start(), stop: () => b.health.stop() },
    {
      // Running jobs get most of the shutdown time; then they are interrupted and, being on disk, run again.
      name: 'jobs',
      start() {},
      stop: () => b.queue.stop(AbortSignal.timeout(config.SHUTDOWN_TIMEOUT * 1000 * 0.6)),
    },
    // Stops first: other bridges on the same broker take new prompts while this one finishes its jobs.
    { name: 'prompt intake', start() {}, stop: () => b.broker.stopTaking?.() },
  ]
  return { parts, ports, replayed: () => replayed }
}
