import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { toAppError, traitsOf } from '../errors.ts'
import type { EventBus } from '../events.ts'
import type { Generator } from './types.ts'

/*
 * Whether each generator answers, checked in the background so that /health answers at once and never waits
 * on a slow A1111, and so the queue can send jobs to servers that are up. Job outcomes count too: a
 * generation that could not reach its server marks it down at once. A server that is down is checked again
 * with growing pauses (1 s, 2 s, 4 s ... 30 s) until it answers; one that is up every 10 s.
 */

export type GeneratorState = 'up' | 'down' | 'unknown'

export interface GeneratorStatus {
  /** A public name (`a1111-1`, `demo`): /health is open without a key, so no server address goes there. */
  id: string
  state: GeneratorState
  lastCheckMs: number | null
  lastGenerationMs: number | null
  lastError: { code: string; message: string } | null
  checkedAt: string | null
}

export interface GeneratorHealth {
  start(): void
  stop(): void
  statuses(): GeneratorStatus[]
  stateOf(generator: Generator): GeneratorState
  /** The generator's public id (`a1111-1`, `demo`), for /health and metric labels. */
  idOf(generator: Generator): string
  anyUp(): boolean
}

const UP_INTERVAL_MS = 10_000
const DOWN_FIRST_MS = 1_000
const DOWN_MAX_MS = 30_000

interface Entry {
  generator: Generator
  status: GeneratorStatus
  timer: NodeJS.Timeout | null
  backoffMs: number
  checking: boolean
}

export function createGeneratorHealth(
  generators: Generator[],
  deps: { log: Logger; clock: Clock; events: EventBus; upIntervalMs?: number },
): GeneratorHealth {
  let a1111Count = 0
  const entries: Entry[] = generators.map((generator) => ({
    generator,
    status: {
      id: generator.name === 'demo' ? 'demo' : `a1111-${++a1111Count}`,
      state: 'unknown',
      lastCheckMs: null,
      lastGenerationMs: null,
      lastError: null,
      checkedAt: null,
    },
    timer: null,
    backoffMs: DOWN_FIRST_MS,
    checking: false,
  }))
  let running = false

  function setState(entry: Entry, state: 'up' | 'down', err?: unknown): void {
    const { status, generator } = entry
    if (status.state !== state) {
      const change = { generator: generator.name, id: status.id, from: status.state, to: state }
      if (state === 'down') {
        const { code, message } = toAppError(err)
        deps.log.warn({ ...change, code, reason: message }, 'generator down')
      } else deps.log.info(change, 'generator up')
    }
    const changed = status.state !== state
    status.state = state
    status.lastError = state === 'down' ? toAppError(err).toJSON() : null
    if (state === 'up') entry.backoffMs = DOWN_FIRST_MS
    if (changed) deps.events.emit('generator.state', { generatorId: status.id, state })
  }

  function schedule(entry: Entry, delayMs: number): void {
    if (!running) return
    if (entry.timer) clearTimeout(entry.timer)
    entry.timer = setTimeout(() => void check(entry), delayMs)
    entry.timer.unref()
  }

  async function check(entry: Entry): Promise<void> {
    if (entry.checking) return
    entry.checking = true
    const started = deps.clock.monotonic()
    try {
      await entry.generator.check()
      entry.status.lastCheckMs = Math.round(deps.clock.monotonic() - started)
      setState(entry, 'up')
    } catch (err) {
      setState(entry, 'down', err)
    } finally {
      entry.checking = false
    }
    entry.status.checkedAt = deps.clock.now().toISOString()
    if (entry.status.state === 'up') schedule(entry, deps.upIntervalMs ?? UP_INTERVAL_MS)
    else {
      schedule(entry, entry.backoffMs)
      entry.backoffMs = Math.min(entry.backoffMs * 2, DOWN_MAX_MS)
    }
  }

  // A finished generation says as much as a check: one that could not reach its server marks it down at once.
  deps.events.on('generation.measured', ({ generatorId, ms, error }) => {
    const entry = entries.find((e) => e.status.id === generatorId)
    if (!entry) return
    if (error === undefined) {
      entry.status.lastGenerationMs = Math.round(ms)
      setState(entry, 'up')
    } else if (traitsOf(toAppError(error).code).marksDown && entry.status.state !== 'down') {
      setState(entry, 'down', error)
      entry.backoffMs = DOWN_FIRST_MS
      schedule(entry, DOWN_FIRST_MS)
    }
  })

  return {
    start() {
      running = true
      for (const entry of entries) void check(entry)
    },
    stop() {
      running = false
      for (const entry of entries) if (entry.timer) clearTimeout(entry.timer)
    },
    statuses: () => entries.map((e) => ({ ...e.status })),
    stateOf: (generator) => entries.find((e) => e.generator === generator)?.status.state ?? 'unknown',
    idOf: (generator) => entries.find((e) => e.generator === generator)?.status.id ?? generator.name,
    anyUp: () => entries.some((e) => e.status.state === 'up'),
  }
}
