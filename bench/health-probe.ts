import { monitorEventLoopDelay } from 'node:perf_hooks'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { Pool } from 'undici'

/*
 * GET /health every few milliseconds from a worker thread of the bench process, timed there. The main thread
 * also runs the fake A1111 (which makes its noisy pixels in JavaScript) and the load clients; a probe timed on
 * it would count their work as the daemon's. Each probe starts `intervalMs` after the previous one started,
 * or at once if that one took longer; one keep-alive connection.
 */

export interface ProbeResult {
  /** Milliseconds from sending the request to the last byte of the answer, one per probe. */
  latenciesMs: number[]
  /** Answers that were not 200. */
  non200: number
  /** Probes that failed or took longer than the timeout, with their messages. */
  failures: string[]
  /** How long the bench's main thread was blocked meanwhile (event-loop delay p99, ms). */
  mainLoopDelayP99Ms: number
}

export interface HealthProbe {
  stop(): Promise<ProbeResult>
}

interface ProbeData {
  healthProbe: true
  url: string
  intervalMs: number
  timeoutMs: number
}

const MAX_PROBES = 1_000_000

export function startHealthProbe(url: string, intervalMs = 20, timeoutMs = 5_000): HealthProbe {
  const data: ProbeData = { healthProbe: true, url, intervalMs, timeoutMs }
  const worker = new Worker(new URL(import.meta.url), { workerData: data })
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  const result = new Promise<Omit<ProbeResult, 'mainLoopDelayP99Ms'>>((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
    worker.once('exit', (code) => reject(new Error(`health probe worker exited (${code}) without a result`)))
  })
  result.catch(() => {})
  return {
    async stop() {
      worker.postMessage('stop')
      const r = await result
      loopDelay.disable()
      await worker.terminate()
      return { ...r, mainLoopDelayP99Ms: loopDelay.percentile(99) / 1e6 }
    },
  }
}

async function runProbe({ url, intervalMs, timeoutMs }: ProbeData): Promise<void> {
  const pool = new Pool(url, { connections: 1 })
  const latenciesMs: number[] = []
  const failures: string[] = []
  let non200 = 0
  let stopping = false
  parentPort!.on('message', (m) => {
    if (m === 'stop') stopping = true
  })
  for (let n = 0; !stopping && n < MAX_PROBES; n++) {
    const started = performance.now()
    try {
      const res = await pool.request({
        method: 'GET',
        path: '/health',
        signal: AbortSignal.timeout(timeoutMs),
      })
      await res.body.arrayBuffer()
      latenciesMs.push(performance.now() - started)
      if (res.statusCode !== 200) non200++
    } catch (err) {
      failures.push((err as Error).message)
    }
    const wait = started + intervalMs - performance.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
  }
  await pool.close()
  parentPort!.postMessage({ latenciesMs, non200, failures })
}

if (!isMainThread && (workerData as Partial<ProbeData> | null)?.healthProbe) {
  await runProbe(workerData as ProbeData)
}
