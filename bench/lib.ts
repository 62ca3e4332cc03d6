import { execFileSync } from 'node:child_process'
import type { EventEmitter } from 'node:events'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { type Daemon, spawnDaemon } from '../test/support/spawn.ts'

/*
 * What the benches share: options, statistics, /proc readings, Markdown tables, and a daemon started the way
 * production runs it (its own process, loopback only, port 0).
 */

export interface BenchOptions {
  quick: boolean
}

export interface BenchResult {
  title: string
  /** One line on how it was measured. */
  method: string
  /** Markdown: tables and notes. */
  body: string
}

export type Bench = (options: BenchOptions) => Promise<BenchResult>

export interface Summary {
  n: number
  p50: number
  p95: number
  min: number
  max: number
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b)
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    min: sorted[0] ?? Number.NaN,
    max: sorted.at(-1) ?? Number.NaN,
  }
}

export function ms(value: number): string {
  return Number.isFinite(value) ? value.toFixed(1) : 'n/a'
}

export function mb(kb: number): string {
  return Number.isFinite(kb) ? (kb / 1024).toFixed(1) : 'n/a'
}

/** A table row: name, n, p50, p95, min, max. */
export function summaryRow(name: string, s: Summary): (string | number)[] {
  return [name, s.n, ms(s.p50), ms(s.p95), ms(s.min), ms(s.max)]
}

export const SUMMARY_HEADERS = ['n', 'p50', 'p95', 'min', 'max'] as const

export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const line = (cells: readonly (string | number)[]) => `| ${cells.join(' | ')} |`
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n')
}

export async function machineInfo(): Promise<string> {
  // os.cpus() reports what /proc/cpuinfo says; read it directly for the full model name.
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '')
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown'
  const memGb = (totalmem() / 1024 ** 3).toFixed(1)
  const flags = daemonNodeOptions().NODE_OPTIONS
  return table(
    ['CPU', 'cores', 'memory', 'Node', 'date', 'load avg at start (1 min)', 'daemon NODE_OPTIONS'],
    [
      [
        cpu,
        cpus().length,
        `${memGb} GiB`,
        process.version,
        new Date().toISOString(),
        loadavg()[0]!.toFixed(2),
        flags ?? '(none)',
      ],
    ],
  )
}

/** Clock ticks per second for /proc/<pid>/stat times (100 on every Linux we run on). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** utime + stime of a process, in milliseconds. */
export async function cpuTimeMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8')
  // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1000) / CLK_TCK
}

/**
 * The main thread of a process (its tid is its pid) from /proc/<pid>/task/<pid>/schedstat: milliseconds on a
 * CPU, and milliseconds runnable but waiting for one (CPU contention, not the process's own work).
 */
export async function mainThreadSchedMs(pid: number): Promise<{ onCpuMs: number; waitingMs: number }> {
  const [onCpu, waiting] = (await readFile(`/proc/${pid}/task/${pid}/schedstat`, 'utf8')).trim().split(' ')
  return { onCpuMs: Number(onCpu) / 1e6, waitingMs: Number(waiting) / 1e6 }
}

/**
 * CPU time of each kind of thread of a process, in milliseconds, from /proc/<pid>/task/<tid>/schedstat (ns),
 * summed by thread name (MainThread, V8Worker for the garbage collector and compiler, libuv-worker,
 * WorkerThread, libvips' threads...). Threads that ended since the last call are missing from the sum.
 */
export async function threadCpuMs(pid: number): Promise<Map<string, number>> {
  const byName = new Map<string, number>()
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[])
  await Promise.all(
    tids.map(async (tid) => {
      try {
        const [comm, sched] = await Promise.all([
          readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8'),
          readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8'),
        ])
        const name = comm.trim().replace(/[-_ ]?\d+$/, '')
        byName.set(name, (byName.get(name) ?? 0) + Number(sched.split(' ')[0]) / 1e6)
      } catch {
        // The thread ended between the listing and the read.
      }
    }),
  )
  return byName
}

/** Adds `after - before` of each thread name into `into`. */
export function addThreadCpu(
  into: Map<string, number>,
  before: Map<string, number>,
  after: Map<string, number>,
) {
  for (const [name, ms] of after) into.set(name, (into.get(name) ?? 0) + ms - (before.get(name) ?? 0))
}

/** VmRSS and VmHWM of a process, in KiB. */
export async function memoryKb(pid: number): Promise<{ rssKb: number; hwmKb: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN)
  return { rssKb: field('VmRSS'), hwmKb: field('VmHWM') }
}

/** The soft limit on open files of this process (the daemon inherits it). */
export async function openFilesLimit(): Promise<number> {
  const limits = await readFile('/proc/self/limits', 'utf8')
  return Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? Number.NaN)
}

export function sleep(msToWait: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, msToWait))
}

/** Rejects after `timeoutMs` with `what` in the message. */
export function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${timeoutMs} ms`)), timeoutMs)
  })
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

/** BENCH_DAEMON_NODE_OPTIONS (e.g. `--max-semi-space-size=2`) becomes the daemon's NODE_OPTIONS, to try V8 flags. */
export function daemonNodeOptions(): Record<string, string> {
  const options = process.env.BENCH_DAEMON_NODE_OPTIONS
  return options ? { NODE_OPTIONS: options } : {}
}

/** The per-device prompt limit (RATE_LIMIT, prompts per minute) is off: benches prompt far faster on purpose. */
export const NO_RATE_LIMIT = { RATE_LIMIT: '0' }

export interface Bridge {
  pid: number
  url: string
  daemon: Daemon
  /** Log lines at warn or above. */
  warnings(): string[]
  /** SIGTERM, then SIGKILL if it has not exited in 20 s; removes DATA_DIR. Returns the exit code. */
  stop(): Promise<number | null>
}

/** Daemons still running; a bench process that dies on an uncaught error must not leave them behind. */
const running = new Set<Daemon>()
process.on('exit', () => {
  for (const daemon of running) daemon.child.kill('SIGTERM')
})

/** Spawns the daemon like `npm start` with its own DATA_DIR, working directory and loopback listeners. */
export async function startBridge(env: Record<string, string>): Promise<Bridge> {
  const dir = await mkdtemp(join(tmpdir(), 'pab-bench-'))
  const daemon = spawnDaemon(
    {
      MQTT_HOST: '127.0.0.1',
      MQTT_PORT: '0',
      HTTP_HOST: '127.0.0.1',
      HTTP_PORT: 'off',
      DATA_DIR: join(dir, 'data'),
      // Not warn: the `listening` line (with the real port) is logged at info, so warn hides it.
      LOG_LEVEL: 'info',
      ...daemonNodeOptions(),
      ...env,
    },
    [],
    dir,
  )
  running.add(daemon)
  let stopped: Promise<number | null> | undefined
  async function stop(): Promise<number | null> {
    stopped ??= (async () => {
      if (daemon.child.exitCode === null && daemon.child.signalCode === null) daemon.child.kill('SIGTERM')
      const killer = setTimeout(() => daemon.child.kill('SIGKILL'), 20_000)
      const { code } = await daemon.exit
      if (process.env.BENCH_DUMP)
        (await import('node:fs')).writeFileSync(process.env.BENCH_DUMP, daemon.stdout())
      clearTimeout(killer)
      running.delete(daemon)
      await rm(dir, { recursive: true, force: true })
      return code
    })()
    return stopped
  }
  try {
    const { mqttPort } = await within(daemon.listening, 15_000, 'daemon start')
    return {
      pid: daemon.child.pid!,
      url: `mqtt://127.0.0.1:${mqttPort}`,
      daemon,
      warnings: () => daemon.lines.filter((l) => Number(l.level) >= 40).map(describeLine),
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/** A warn/error log line in short: level, message, error code and error text. */
function describeLine(line: Record<string, unknown>): string {
  const err = line.err as string | { message?: string } | undefined
  const text = typeof err === 'string' ? err : err?.message
  const code = typeof line.code === 'string' ? ` ${line.code}` : ''
  return `${line.level} ${String(line.msg)}${code}${text ? `: ${text}` : ''}`
}

/** The line every bench ends with: what the daemon complained about, and how it stopped. */
export function daemonNote(bridge: Bridge | undefined, exitCode: number | null): string {
  const warnings = bridge?.warnings() ?? []
  const stderr = bridge?.daemon.stderr().trim() ?? ''
  return (
    `Daemon warnings/errors: ${warnings.length}${warnings.length ? ` (${tally(warnings)})` : ''}` +
    `${stderr ? `; stderr: \`${stderr.slice(0, 200)}\`` : ''}; exit code after SIGTERM: ${exitCode}.`
  )
}

/** "n x message" for each distinct message, most frequent first, at most `max` of them. */
export function tally(messages: readonly string[], max = 5): string {
  const counts = new Map<string, number>()
  for (const m of messages) counts.set(m, (counts.get(m) ?? 0) + 1)
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, max)
    .map(([m, n]) => `${n} x \`${m}\``)
    .join(', ')
}

/** The HTTP listener of a daemon started with HTTP_PORT=0, from the port in its `listening` line. */
export async function httpUrlOf(bridge: Bridge): Promise<string> {
  const { httpPort } = await bridge.daemon.listening
  if (httpPort === null) throw new Error('the daemon has no HTTP listener (HTTP_PORT=off)')
  return `http://127.0.0.1:${httpPort}`
}

/** When a fake A1111 was generating (from its `begin` and `end` events), to tell its time from the bridge's. */
export interface BusyLog {
  spans: { begin: number; end: number }[]
  /** Milliseconds of generating that fall inside [from, to]. */
  busyMs(from: number, to: number): number
  /** Generations that ended inside [from, to]. */
  endedIn(from: number, to: number): number
}

export function trackBusy(fake: { events: EventEmitter }): BusyLog {
  const spans: { begin: number; end: number }[] = []
  let begunAt = 0
  fake.events.on('begin', () => {
    begunAt = performance.now()
  })
  fake.events.on('end', () => spans.push({ begin: begunAt, end: performance.now() }))
  return {
    spans,
    busyMs: (from, to) =>
      spans
        .map(({ begin, end }) => Math.min(end, to) - Math.max(begin, from))
        .reduce((sum, d) => sum + Math.max(0, d), 0),
    endedIn: (from, to) => spans.filter(({ end }) => end >= from && end <= to).length,
  }
}

/** Polls GET /health until every generator says `up` (the daemon checks them in the background at start). */
export async function waitGeneratorsUp(httpUrl: string, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  let last = ''
  while (performance.now() < deadline) {
    try {
      const res = await fetch(`${httpUrl}/health`, { signal: AbortSignal.timeout(2_000) })
      const body = (await res.json()) as { generators?: { state: string }[] }
      const states = (body.generators ?? []).map((g) => g.state)
      last = states.join(',')
      if (states.length > 0 && states.every((s) => s === 'up')) return
    } catch (err) {
      last = (err as Error).message
    }
    await sleep(50)
  }
  throw new Error(`generators not all up within ${timeoutMs} ms (last: ${last})`)
}
