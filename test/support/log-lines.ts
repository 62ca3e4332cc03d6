/** JSON log lines as they come, and a way to wait for one of them as an event rather than by polling. */
export type LogLine = Record<string, unknown>

export interface LogLines {
  readonly lines: LogLine[]
  push(line: LogLine): void
  /** Resolves with the first line (seen already or still to come) that matches. */
  line(match: (line: LogLine) => boolean): Promise<LogLine>
}

export function createLogLines(): LogLines {
  const lines: LogLine[] = []
  const waiters = new Set<(line: LogLine) => void>()
  return {
    lines,
    push(line) {
      lines.push(line)
      for (const waiter of [...waiters]) waiter(line)
    },
    line: (match) =>
      new Promise((resolve) => {
        const seen = lines.find(match)
        if (seen) return resolve(seen)
        const waiter = (l: LogLine) => {
          if (!match(l)) return
          waiters.delete(waiter)
          resolve(l)
        }
        waiters.add(waiter)
      }),
  }
}
