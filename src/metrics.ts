import type { FastifyInstance } from 'fastify'
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { EventBus } from './events.ts'
import type { Telemetry } from './protocol/info.ts'

/*
 * Prometheus metrics at GET /metrics (on the HTTP listener, behind the API key like every route but /health).
 * prom-client does the text format, label escaping and process metrics (CPU, memory, event-loop lag) that
 * would otherwise be written by hand.
 */

export interface Metrics {
  route(app: FastifyInstance): void
}

/** The gauges are read when /metrics is scraped; the counters and histograms follow the event bus. */
export function createMetrics(
  sources: {
    waiting(): number
    running(): number
    mqttClients(): number
    queuedChunks(): number
    /** Each display's last telemetry, the one heard from longest ago first (jobs/panels.ts). */
    telemetry?(): readonly { deviceId: string; telemetry: Telemetry }[]
  },
  events: EventBus,
): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'pab_' })
  new Gauge({
    name: 'pab_queue_waiting',
    help: 'Jobs waiting for a generator',
    registers: [registry],
    collect() {
      this.set(sources.waiting())
    },
  })
  new Gauge({
    name: 'pab_jobs_running',
    help: 'Generations running now',
    registers: [registry],
    collect() {
      this.set(sources.running())
    },
  })
  new Gauge({
    name: 'pab_mqtt_clients',
    help: 'Connected MQTT clients (devices, automations, watchers)',
    registers: [registry],
    collect() {
      this.set(sources.mqttClients())
    },
  })
  new Gauge({
    name: 'pab_frame_chunks_queued',
    help: 'Frame chunks waiting for, or being written to, slow MQTT clients',
    registers: [registry],
    collect() {
      this.set(sources.queuedChunks())
    },
  })
  displayGauges(registry, () => sources.telemetry?.() ?? [])
  const jobs = new Counter({
    name: 'pab_jobs_total',
    help: 'Jobs that ended, by outcome',
    labelNames: ['outcome'],
    registers: [registry],
  })
  const generation = new Histogram({
    name: 'pab_generation_seconds',
    help: 'Time A1111 (or the demo generator) took per generation',
    labelNames: ['generator', 'result'],
    buckets: [0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300],
    registers: [registry],
  })
  const conversion = new Histogram({
    name: 'pab_conversion_seconds',
    help: 'Time to turn a picture into a panel frame (via mqtt: device jobs; via http: the passthrough)',
    labelNames: ['via'],
    buckets: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25],
    registers: [registry],
  })
  const frames = new Counter({
    name: 'pab_frames_sent_total',
    help: 'Frames handed to subscribers',
    labelNames: ['kind'],
    registers: [registry],
  })
  const bytes = new Counter({
    name: 'pab_frame_bytes_sent_total',
    help: 'Frame chunk bytes written to MQTT clients',
    registers: [registry],
  })
  const journal = new Histogram({
    name: 'pab_journal_write_seconds',
    help: 'Time to record an accepted prompt durably (write + fsync)',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
    registers: [registry],
  })
  const up = new Gauge({
    name: 'pab_generator_up',
    help: '1 when the generator answers, 0 when it is down',
    labelNames: ['generator'],
    registers: [registry],
  })

  events.on('job.settled', (e) => jobs.inc({ outcome: e.state }))
  events.on('generation.measured', (e) =>
    generation.observe(
      { generator: e.generatorId, result: e.error === undefined ? 'ok' : 'error' },
      e.ms / 1000,
    ),
  )
  events.on('frame.converted', (e) => conversion.observe({ via: e.via }, e.ms / 1000))
  events.on('frame.sent', (e) => frames.inc({ kind: e.preview ? 'preview' : 'final' }))
  events.on('chunk.sent', (e) => bytes.inc(e.bytes))
  events.on('journal.write', (e) => journal.observe(e.ms / 1000))
  events.on('generator.state', (e) => up.set({ generator: e.generatorId }, e.state === 'up' ? 1 : 0))

  return {
    route(app) {
      app.get('/metrics', async (_request, reply) =>
        reply.type(registry.contentType).send(await registry.metrics()),
      )
    },
  }
}

/** Per-display gauges carry at most this many displays (the ones heard from last), so the label set is bounded. */
export const MAX_DISPLAY_SERIES = 200

/** Gauges from the displays' info messages (docs/protocol.md, "Display info"), set afresh on every scrape. */
function displayGauges(
  registry: Registry,
  telemetry: () => readonly { deviceId: string; telemetry: Telemetry }[],
): void {
  const fields = [
    ['pab_display_rssi_dbm', 'Wi-Fi signal strength the display last reported', 'rssi'],
    ['pab_display_heap_free_bytes', 'Free heap the display last reported', 'heap_free'],
    ['pab_display_battery_volts', 'Battery voltage the display last reported', 'battery_v'],
  ] as const
  for (const [name, help, field] of fields) {
    new Gauge({
      name,
      help,
      labelNames: ['device'],
      registers: [registry],
      collect() {
        // Reset first: a display forgotten (or past the bound) leaves no stale series behind.
        this.reset()
        for (const { deviceId, telemetry: t } of telemetry().slice(-MAX_DISPLAY_SERIES)) {
          const value = t[field]
          if (value !== null) this.set({ device: deviceId }, value)
        }
      },
    })
  }
}
