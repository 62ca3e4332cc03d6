import { mkdtemp, rm } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { systemClock } from '../../src/clock.ts'
import { configSchema } from '../../src/config/schema.ts'
import { createEventBus, type EventBus } from '../../src/events.ts'
import { registerDashboard } from '../../src/http/dashboard.ts'
import { panelFromConfig } from '../../src/image/panel.ts'
import { createJobQueue } from '../../src/jobs/queue.ts'
import { createFrameStore } from '../../src/store/frame-store.ts'
import { createLogLines, type LogLines } from '../support/log-lines.ts'

/*
 * The dashboard's event stream (README, "Dashboard") over real sockets: a page that stops reading is dropped
 * once what waits for it passes the bound, while a page that reads keeps getting every event; a quiet stream
 * carries keep-alive comments. The routes run on their own Fastify with a real bus, queue and frame store,
 * so the test can push events of its own making and choose the heartbeat.
 */

interface Dashboard {
  app: FastifyInstance
  events: EventBus
  logs: LogLines
  port: number
}

const cleanups: (() => Promise<void>)[] = []

afterEach(async () => {
  for (const clean of cleanups.splice(0).reverse()) await clean()
})

async function startDashboard(heartbeatMs?: number): Promise<Dashboard> {
  const dir = await mkdtemp(join(tmpdir(), 'pab-stream-'))
  const logs = createLogLines()
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const text of String(chunk).split('\n')) if (text) logs.push(JSON.parse(text))
      cb()
    },
  })
  const log = pino({ level: 'debug' }, sink)
  const events = createEventBus(log)
  const queue = createJobQueue({
    ...{ generators: [], maxWaiting: 10, retries: 0, supersedeRunning: false },
    ...{ log, clock: systemClock, events, stateOf: () => 'up' as const, idOf: () => 'none' },
  })
  const store = createFrameStore(dir, { log })
  const app = Fastify({ loggerInstance: log as FastifyBaseLogger })
  registerDashboard(app, {
    ...{ events, queue, store, panel: panelFromConfig(configSchema.parse({})) },
    ...{
      devices: () => [],
      device: () => undefined,
      generators: () => [],
      apiKey: undefined,
      clock: systemClock,
      log,
      heartbeatMs,
    },
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  cleanups.push(async () => {
    await app.close()
    await rm(dir, { recursive: true, force: true })
  })
  const address = app.server.address()
  if (typeof address !== 'object' || address === null) throw new Error('no port')
  return { app, events, logs, port: address.port }
}

/** An event-stream client on a raw socket: it reads only while told to, as a stalled phone would. */
interface RawStream {
  socket: Socket
  /** Everything read so far (chunk sizes included: each message is one chunk, so none is split by them). */
  text(): string
  /** Resolves once what was read contains `needle`. */
  seen(needle: string): Promise<void>
  closed: Promise<void>
}

function openStream(port: number): RawStream {
  const socket = connect(port, '127.0.0.1')
  socket.setEncoding('utf8')
  let text = ''
  const waiters = new Set<() => void>()
  socket.on('data', (data: string) => {
    text += data
    for (const w of [...waiters]) w()
  })
  const closed = new Promise<void>((resolve) => {
    socket.on('close', () => resolve())
    // A reset from the server's side is how a dropped stream may end here.
    socket.on('error', () => {})
  })
  socket.write('GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n')
  cleanups.push(async () => {
    socket.destroy()
  })
  return {
    socket,
    text: () => text,
    seen: (needle) =>
      new Promise((resolve) => {
        const look = () => {
          if (!text.includes(needle)) return false
          waiters.delete(look)
          resolve()
          return true
        }
        if (!look()) waiters.add(look)
      }),
    closed,
  }
}

/** A status event whose SSE message is about 2 × 64 KiB (the status and the card's last error). */
function bigStatus(events: EventBus, seq: number): void {
  events.emit('status.published', {
    deviceId: 'kitchen',
    body: {
      state: 'error',
      job: `seq-${seq}-end`,
      error: { code: 'E_GENERATOR', message: 'x'.repeat(65536) },
    },
  })
}

describe('the dashboard event stream', () => {
  it('drops a page that stops reading once its backlog passes the bound, and keeps serving one that reads', async () => {
    const d = await startDashboard()
    const slow = openStream(d.port)
    const fast = openStream(d.port)
    await slow.seen('event: snapshot')
    await fast.seen('event: snapshot')
    // The stalled page: its socket is no longer read, so the kernel's buffers fill and then the bridge's.
    slow.socket.pause()
    const dropped = () => d.logs.lines.some((l) => l.msg === 'dashboard client too slow; stream dropped')
    let sent = 0
    // Bounded: at about 128 KiB an event, 600 events (75 MiB) is far past loopback's socket buffers.
    while (!dropped() && sent < 600) {
      bigStatus(d.events, sent)
      await fast.seen(`"seq-${sent}-end"`)
      sent++
    }
    expect(dropped()).toBe(true)
    const line = d.logs.lines.find((l) => l.msg === 'dashboard client too slow; stream dropped')!
    expect(line.queuedBytes).toBeGreaterThan(1024 * 1024)
    expect(line.queuedBytes).toBeLessThan(1024 * 1024 + 300_000)

    // The page that reads is still served, events after the drop included.
    bigStatus(d.events, sent)
    await fast.seen(`"seq-${sent}-end"`)
    // The stalled one, reading again, finds its stream ended before the last events.
    slow.socket.resume()
    await slow.closed
    expect(slow.text()).not.toContain(`"seq-${sent - 1}-end"`)
    expect(fast.socket.destroyed).toBe(false)
  })

  it('sends a keep-alive comment on a quiet stream, again and again', async () => {
    const d = await startDashboard(50)
    const page = openStream(d.port)
    await page.seen('event: snapshot')
    await page.seen(': heartbeat\n\n')
    // Nothing else was sent: the comments alone keep it open, and they keep coming.
    const first = page.text().indexOf(': heartbeat')
    await new Promise<void>((resolve) => {
      const look = () => {
        if (page.text().lastIndexOf(': heartbeat') > first) resolve()
      }
      page.socket.on('data', look)
      look()
    })
    expect(page.text()).not.toContain('event: status')
  })
})
