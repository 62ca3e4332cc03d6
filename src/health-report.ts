import type { BrokerPort } from './broker/port.ts'
import type { Clock } from './clock.ts'
import type { GeneratorHealth } from './generator/health.ts'
import type { JobQueue } from './jobs/job.ts'

/*
 * The body of GET /health (README, "HTTP"): open without a key, so it names no server address and no
 * secret. 200 when at least one generator answers and DATA_DIR can be written; 503 otherwise, with why.
 */

export interface HealthReport {
  ok: boolean
  body: Record<string, unknown>
}

export function createHealthReport(deps: {
  health: GeneratorHealth
  broker: BrokerPort
  queue: JobQueue
  /** Why DATA_DIR cannot be written now, or null when it can. */
  storageProblem(): { code: string; reason: string } | null
  clock: Clock
}): () => HealthReport {
  const startedAt = deps.clock.monotonic()
  return () => {
    const storage = deps.storageProblem()
    const generatorsUp = deps.health.anyUp()
    const ok = generatorsUp && storage === null
    return {
      ok,
      body: {
        status: ok ? 'ok' : 'unavailable',
        uptime_s: Math.round((deps.clock.monotonic() - startedAt) / 1000),
        broker: deps.broker.report(),
        queue: { waiting: deps.queue.waiting(), running: deps.queue.running() },
        storage: storage === null ? { state: 'ok' } : { state: 'failing', ...storage },
        generators: deps.health.statuses(),
      },
    }
  }
}
