import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { createLogLines } from './log-lines.ts'

/** What `npm start` runs: the built daemon (test/support/global-setup.ts builds it before the tests). */
const BIN = fileURLToPath(new URL('../../dist/bin/pico-a1111-bridge.js', import.meta.url))
/** The V8 flags of `npm start` and the systemd unit, so tests and benchmarks run the daemon as users do. */
const START_FLAGS = ['--max-semi-space-size=1', '--no-concurrent-marking']

export interface Daemon {
  child: ChildProcess
  /** JSON log lines seen on stdout so far. */
  lines: Record<string, unknown>[]
  stderr(): string
  stdout(): string
  /** The `listening` line, once it came. */
  listening: Promise<{ mqttPort: number; httpPort: number | null }>
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Resolves with the first log line (seen already or still to come) that matches. */
  line(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>
}

/** Starts the daemon the way `npm start` does (node running dist/bin/pico-a1111-bridge.js) with only `env` set. */
export function spawnDaemon(env: Record<string, string>, args: string[] = [], cwd?: string): Daemon {
  const child = spawn(process.execPath, [...START_FLAGS, BIN, ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const log = createLogLines()
  const lines = log.lines
  let err = ''
  let out = ''
  let pending = ''
  let resolveListening: (v: { mqttPort: number; httpPort: number | null }) => void = () => {}
  let rejectListening: (e: Error) => void = () => {}
  const listening = new Promise<{ mqttPort: number; httpPort: number | null }>((resolve, reject) => {
    resolveListening = resolve
    rejectListening = reject
  })
  child.stdout!.setEncoding('utf8')
  child.stdout!.on('data', (data: string) => {
    out += data
    pending += data
    let nl = pending.indexOf('\n')
    while (nl >= 0) {
      const text = pending.slice(0, nl)
      pending = pending.slice(nl + 1)
      nl = pending.indexOf('\n')
      let line: Record<string, unknown>
      try {
        line = JSON.parse(text) as Record<string, unknown>
      } catch {
        continue // --check-config and --help print text, not log lines
      }
      log.push(line)
      if (line.msg === 'listening') {
        resolveListening({ mqttPort: line.mqttPort as number, httpPort: line.httpPort as number | null })
      }
    }
  })
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (data: string) => {
    err += data
  })
  const exit = once(child, 'exit').then(([code, signal]) => {
    rejectListening(new Error(`daemon exited (${code ?? signal}) before listening: ${err}`))
    return { code: code as number | null, signal: signal as NodeJS.Signals | null }
  })
  listening.catch(() => {})
  const line = log.line
  return { child, lines, stderr: () => err, stdout: () => out, listening, exit, line }
}
