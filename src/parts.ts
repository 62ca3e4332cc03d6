import type { Logger } from 'pino'

/*
 * The daemon is a list of named parts started in order and stopped in reverse. A stop that fails is logged
 * and the parts before it still stop: a failing HTTP listener must not keep the journal open or the
 * DATA_DIR lock held.
 */

export interface Part {
  readonly name: string
  start(): Promise<void> | void
  stop(): Promise<void> | void
}

export interface RunningParts {
  /** Stops the parts that started, last first, each on its own. */
  stop(): Promise<void>
}

/**
 * Starts `parts` one after another. If one fails to start, the ones already started are stopped again
 * (last first) and the start error is thrown.
 */
export async function startParts(parts: readonly Part[], log: Logger): Promise<RunningParts> {
  const started: Part[] = []
  const stop = async () => {
    while (started.length > 0) {
      const part = started.pop()!
      try {
        await part.stop()
      } catch (err) {
        log.error({ err, part: part.name }, 'a part failed to stop; stopping the others')
      }
    }
  }
  for (const part of parts) {
    try {
      await part.start()
    } catch (err) {
      await stop()
      throw err
    }
    started.push(part)
    log.debug({ part: part.name }, 'part started')
  }
  return { stop }
}

/** A part with nothing to stop. */
export function startOnly(name: string, start: () => Promise<void> | void): Part {
  return { name, start, stop: () => {} }
}

/** A part with nothing to start. */
export function stopOnly(name: string, stop: () => Promise<void> | void): Part {
  return { name, start: () => {}, stop }
}
