import type { Logger } from 'pino'
import { toAppError } from '../errors.ts'
import type { Generator } from './types.ts'

/*
 * Whether each generator answers, checked in the background so that /health answers at once and never waits
 * on a slow A1111. Job outcomes count too: a generation that could not reach its server marks it down
 * before the next check would.
 */

export interface GeneratorStatus {
  /** A public name (`a1111-1`, `demo`): /health is open without a key, so no server address goes there. */
  id: string
  state: 'up' | 'down' | 'unknown'
  lastCheckMs: number | null
  lastGenerationMs: number | null
  lastError: { code: string; message: string } | null
  checkedAt: string | null
}

export interface GeneratorHealth {
  start(): void
  stop(): void
  statuses(): GeneratorStatus[]
  anyUp(): boolean
  /** Records a finished generation (or its failure) on `generator`. */
  recordGeneration(generator: Generator, ms: number, error: unknown): void
}

const CHECK_INTERVAL_MS = 10_000
/** Failures that say the server itself is gone, as opposed to a prompt it did not like. */
const DOWN_CODES = new Set(['E_A1111_UNREACHABLE', 'E_A1111_NO_API', 'E_A1111_AUTH', 'E_GEN_TIMEOUT'])

export function createGeneratorHealth(
  generators: Generator[],
  deps: { log: Logger; now: () => Date; intervalMs?: number },
): GeneratorHealth {
  let a1111Count = 0
  const entries = generators.map((generator) => ({
    generator,
    status: {
      id: generator.name === 'demo' ? 'demo' : `a1111-${++a1111Count}`,
      state: 'unknown',
      lastCheckMs: null,
      lastGenerationMs: null,
      lastError: null,
      checkedAt: null,
    } as GeneratorStatus,
  }))
  let timer: NodeJS.Timeout | null = null
  let running = false

  function setState(
    status: GeneratorStatus,
    state: 'up' | 'down',
    generator: Generator,
    err?: unknown,
  ): void {
    if (status.state !== state) {
      const change = { generator: generator.name, from: status.state, to: state }
      if (state === 'down') deps.log.warn({ ...change, err: toAppError(err).message }, 'generator down')
      else deps.log.info(change, 'generator up')
    }
    status.state = state
    status.lastError = state === 'down' ? toAppError(err).toJSON() : null
  }

  async function checkAll(): Promise<void> {
    await Promise.all(
      entries.map(async ({ generator, status }) => {
        const started = performance.now()
        try {
          await generator.check()
          status.lastCheckMs = Math.round(performance.now() - started)
          setState(status, 'up', generator)
        } catch (err) {
          setState(status, 'down', generator, err)
        }
        status.checkedAt = deps.now().toISOString()
      }),
    )
  }

  function loop(): void {
    if (!running) return
    checkAll().finally(() => {
      if (running) timer = setTimeout(loop, deps.intervalMs ?? CHECK_INTERVAL_MS)
    })
  }

  return {
    start() {
      running = true
      loop()
    },
    stop() {
      running = false
      if (timer) clearTimeout(timer)
    },
    statuses: () => entries.map((e) => ({ ...e.status })),
    anyUp: () => entries.some((e) => e.status.state === 'up'),
    recordGeneration(generator, ms, error) {
      const entry = entries.find((e) => e.generator === generator)
      if (!entry) return
      if (error === undefined) {
        entry.status.lastGenerationMs = Math.round(ms)
        setState(entry.status, 'up', generator)
      } else if (DOWN_CODES.has(toAppError(error).code)) {
        setState(entry.status, 'down', generator, error)
      }
    },
  }
}
