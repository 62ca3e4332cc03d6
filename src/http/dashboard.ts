import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fastifySSE } from '@fastify/sse'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { AppError } from '../errors.ts'
import { rgb565ToPng } from '../image/convert.ts'
import { parseDeviceId } from '../protocol/device-id.ts'
import { createKeyCheck } from './auth.ts'
import { sendError } from './errors.ts'
import { createEventTokens } from './event-tokens.ts'
import { createLiveState, type LiveDeps, type LiveEvent } from './live-state.ts'

/*
 * The dashboard (README, "Dashboard"): the page at `/` with its script and style, served from memory as
 * they are committed (no build step), and its live feed, Server-Sent Events at GET /api/v1/events.
 *
 * The page and the stream are open routes (`config.public`): a browser cannot put X-API-Key on a page load
 * or an EventSource. The page asks for the key and sends it on every fetch; the stream takes a one-time
 * ticket from POST /api/v1/events/token, which needs the key (event-tokens.ts).
 */

export interface DashboardDeps extends LiveDeps {
  apiKey: string | undefined
  clock: Clock
  log: Logger
  /** The stream's keep-alive comment interval; HEARTBEAT_MS unless a test wants it sooner. */
  heartbeatMs?: number
}

/** The browser waits this long before it opens a stream again (the SSE `retry:` field). */
const RETRY_MS = 3_000
/**
 * A comment line this often keeps proxies from closing a quiet stream; where the broker gives no presence
 * notices, the device list is looked at as often.
 */
const HEARTBEAT_MS = 15_000
/** What may wait for one slow page beyond its socket's buffer; past it the page is dropped, not buffered. */
const MAX_QUEUED_BYTES = 1024 * 1024

const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
}

/** Only this page's own files; pictures arrive as blob: URLs made from fetches that carry the key. */
const CSP =
  "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

export function registerDashboard(app: FastifyInstance, deps: DashboardDeps): void {
  app.register(async (scope) => {
    await scope.register(fastifySSE, { heartbeatInterval: deps.heartbeatMs ?? HEARTBEAT_MS })
    const live = createLiveState(deps)
    const tokens = createEventTokens(() => deps.clock.monotonic())
    const keyMatches = deps.apiKey === undefined ? () => true : createKeyCheck(deps.apiKey)
    const streams = new Set<FastifyReply>()
    // Only where the broker gives no presence notices (the external broker counts a display as connected
    // for a while after it last spoke, which no event marks the end of): a slow look at the list.
    const devicesTimer = deps.presence
      ? undefined
      : setInterval(() => live.refreshDevices(), HEARTBEAT_MS).unref()

    // Open streams would hold app.close() forever: end them first.
    scope.addHook('preClose', async () => {
      clearInterval(devicesTimer)
      for (const reply of streams) reply.sse.close()
    })
    scope.addHook('onClose', async () => live.stop())

    for (const [path, asset] of Object.entries(ASSETS)) {
      const body = readFileSync(new URL(`./dashboard/${asset.file}`, import.meta.url))
      const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 16)}"`
      scope.get(path, { config: { public: true } }, async (request, reply) => {
        void reply.header('etag', etag).header('cache-control', 'no-cache')
        if (path === '/') void reply.header('content-security-policy', CSP)
        if (request.headers['if-none-match'] === etag) return reply.code(304).send()
        return reply.type(asset.type).send(body)
      })
    }

    scope.post('/api/v1/events/token', async (request, reply) => {
      // The listener's key check guards this route too; checked here as well so the ticket can never
      // be had without the key, wherever that check is registered.
      if (!keyMatches(request.headers['x-api-key']))
        return sendError(reply, new AppError('E_UNAUTHORIZED', 'missing or wrong X-API-Key header'))
      const { token, expiresInS } = tokens.issue()
      return reply.header('cache-control', 'no-store').send({ token, expires_in: expiresInS })
    })

    scope.get(
      '/api/v1/events',
      { sse: { kind: 'only', serializer: String }, config: { public: true } },
      async (request, reply) => {
        if (deps.apiKey !== undefined && !tokens.redeem((request.query as { token?: unknown }).token)) {
          request.log.warn({ ip: request.ip }, 'event stream without a valid ticket')
          return sendError(reply, new AppError('E_UNAUTHORIZED', 'the event stream needs a fresh ticket'))
        }
        openStream(request, reply, live.snapshot())
        streams.add(reply)
        const off = live.subscribe((e) => send(reply, e))
        reply.sse.onClose(() => {
          off()
          streams.delete(reply)
        })
      },
    )

    scope.get('/api/v1/devices/:id/preview.png', async (request, reply) => {
      const parsed = parseDeviceId((request.params as { id: string }).id)
      if (!parsed.ok) return sendError(reply, new AppError('E_BAD_REQUEST', parsed.message))
      const frame = live.preview(parsed.id)
      if (!frame || (frame.format !== 'rgb565-be' && frame.format !== 'rgb565-le'))
        return sendError(reply, new AppError('E_NOT_FOUND', `device ${parsed.id} has no preview now`))
      const png = await rgb565ToPng(frame.pixels, frame.width, frame.height, frame.format === 'rgb565-le')
      return reply
        .type('image/png')
        .header('cache-control', 'no-store')
        .header('x-frame-id', String(frame.frameId))
        .send(png)
    })
  })
}

interface Message {
  event: string
  data: string
  retry?: number
}

/** Each stream's messages wait their turn here, one write at a time, so the bound below holds. */
const pending = new WeakMap<FastifyReply, { messages: Message[]; bytes: number; busy: boolean }>()

function openStream(request: FastifyRequest, reply: FastifyReply, snapshot: unknown): void {
  reply.sse.keepAlive()
  pending.set(reply, { messages: [], bytes: 0, busy: false })
  request.log.debug('event stream opened')
  enqueue(reply, { event: 'snapshot', data: JSON.stringify(snapshot), retry: RETRY_MS })
}

function send(reply: FastifyReply, { event, data }: LiveEvent): void {
  enqueue(reply, { event, data: JSON.stringify(data) })
}

function enqueue(reply: FastifyReply, message: Message): void {
  const queue = pending.get(reply)
  if (!queue || !reply.sse.isConnected) return
  queue.messages.push(message)
  queue.bytes += message.data.length
  // The snapshot alone may be large (thousands of displays); only what piles up behind it counts.
  if (queue.messages.length > 1 && queue.bytes > MAX_QUEUED_BYTES) {
    reply.log.warn({ queuedBytes: queue.bytes }, 'dashboard client too slow; stream dropped')
    pending.delete(reply)
    reply.raw.destroy()
    return
  }
  if (!queue.busy) void pump(reply, queue)
}

async function pump(reply: FastifyReply, queue: { messages: Message[]; bytes: number; busy: boolean }) {
  queue.busy = true
  while (queue.messages.length > 0 && reply.sse.isConnected) {
    const message = queue.messages.shift()!
    queue.bytes -= message.data.length
    // Resolves once the socket has room again (@fastify/sse waits for 'drain').
    await reply.sse.send(message)
  }
  queue.busy = false
}
