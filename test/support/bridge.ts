import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { type App, createApp } from '../../src/app.ts'
import { type Config, configSchema } from '../../src/config/schema.ts'
import { createLogLines } from './log-lines.ts'

/** A bridge running in this process on loopback, port 0, with its own DATA_DIR and captured log lines. */
export interface TestBridge {
  app: App
  config: Config
  mqttUrl: string
  mqttPort: number
  httpPort: number | null
  dataDir: string
  logs: Record<string, unknown>[]
  /** Resolves with the first log line (logged already or still to come) that matches. */
  line(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
  stop(): Promise<void>
}

export async function startBridge(
  settings: Record<string, unknown> = {},
  dataDir?: string,
): Promise<TestBridge> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), 'pab-test-')))
  const config = Object.freeze(
    configSchema.parse({
      MQTT_HOST: '127.0.0.1',
      MQTT_PORT: 0,
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: 'off',
      DATA_DIR: dir,
      LOG_LEVEL: 'debug',
      DEMO_STEP_MS: 0,
      SHUTDOWN_TIMEOUT: 5,
      RATE_LIMIT: 0,
      ...settings,
    }),
  )
  const log = createLogLines()
  const logs = log.lines
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const text of String(chunk).split('\n'))
        if (text) log.push(JSON.parse(text) as Record<string, unknown>)
      cb()
    },
  })
  const line = log.line
  const app = createApp(config, { log: pino({ level: config.LOG_LEVEL }, sink) })
  const ports = await app.start()
  return {
    app,
    config,
    mqttUrl: `mqtt://127.0.0.1:${ports.mqttPort}`,
    mqttPort: ports.mqttPort,
    httpPort: ports.httpPort,
    dataDir: dir,
    logs,
    line,
    async stop() {
      await app.stop('test done')
      if (dataDir === undefined) await rm(dir, { recursive: true, force: true })
    },
  }
}
