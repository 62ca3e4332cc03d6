import Fastify, {
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  LogController,
} from 'fastify'
import type { Logger } from 'pino'
import type { Config } from '../config/schema.ts'
import { AppError } from '../errors.ts'
import type { GeneratorStatus } from '../generator/health.ts'
import { createRateLimit } from '../jobs/rate-limit.ts'
import { createKeyCheck } from './auth.ts'
import { registerDashboard } from './dashboard.ts'
import { type DevicesDeps, registerDeviceRoutes } from './devices.ts'
import { sendError } from './errors.ts'
import type { PresenceNotices } from './live-state.ts'
import { type PassthroughDeps, registerPassthrough } from './passthrough.ts'

/*
 * The HTTP listener (HTTP_HOST:HTTP_PORT): the older proxy's passthrough, an HTTP door to the devices, and
 * /health. Built by an app factory separate from listen(), so tests can inject requests without a socket.
 */

/** The older proxy had no limit; A1111 txt2img bodies are a few KB (1 MB, as the README says). */
const BODY_LIMIT_BYTES = 1024 * 1024

export interface HttpDeps extends PassthroughDeps, DevicesDeps {
  config: Config
  log: Logger
  /** The /health body and whether the bridge can serve (at least one generator answers). */
  health(): { ok: boolean; body: Record<string, unknown> }
  /** Extra routes (metrics) registered by their owners. */
  extraRoutes?: ((app: FastifyInstance) => void)[]
  /** The generators as /health shows them, for the dashboard. */
  generatorStatuses(): GeneratorStatus[]
  /** Displays coming and going, from a broker that sees them (the dashboard's device list follows them). */
  presence?: PresenceNotices | undefined
}

export function buildHttpApp(deps: HttpDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    // One line per request comes from the onResponse hook below, not Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    // X-Forwarded-For is believed only from the proxies TRUST_PROXY names: anyone could set it otherwise,
    // and the address is what logs and the passthrough's rate limit go by.
    trustProxy: deps.config.TRUST_PROXY.length > 0 ? [...deps.config.TRUST_PROXY] : false,
  })

  // Older clients (MicroPython urequests, curl -d) do not always send Content-Type: application/json. The
  // body is read as JSON whatever the type says, as the older proxy did.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => {
    const text = String(body)
    if (text.trim() === '') return done(null, undefined)
    try {
      done(null, JSON.parse(text))
    } catch (err) {
      done(new AppError('E_BAD_REQUEST', `the body is not valid JSON: ${(err as Error).message}`), undefined)
    }
  })

  const key = deps.config.SERVICE_API_KEY

  app.addHook('onResponse', async (request, reply) => {
    request.log.info(
      {
        method: request.method,
        path: request.url.split('?')[0],
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime),
      },
      'http request',
    )
  })

  app.setErrorHandler((err: FastifyError | AppError, request, reply) => {
    if (err instanceof AppError) return sendError(reply, err)
    if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      return sendError(reply, fromFastify(err))
    }
    request.log.error({ err }, 'request failed')
    return sendError(reply, err)
  })
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new AppError('E_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`)),
  )

  app.get('/health', async (_request, reply) => {
    const { ok, body } = deps.health()
    return reply.code(ok ? 200 : 503).send(body)
  })
  // Every route but /health is registered in this scope, and the key is checked by the scope's hook: one
  // place, whatever the URL (Fastify's encapsulation; a route is outside it only by being registered above).
  void app.register(async (scope) => {
    if (key !== undefined) {
      const matches = createKeyCheck(key)
      scope.addHook('onRequest', async (request, reply) => {
        // The dashboard's page and event stream (dashboard.ts): a browser cannot send the header there.
        if ((request.routeOptions.config as { public?: boolean }).public === true) return
        if (!matches(request.headers['x-api-key'])) {
          request.log.warn({ url: request.url.split('?')[0], ip: request.ip }, 'missing or wrong X-API-Key')
          return sendError(reply, new AppError('E_UNAUTHORIZED', 'missing or wrong X-API-Key header'))
        }
      })
    }
    const passthroughLimit = createRateLimit(deps.config.RATE_LIMIT, () => deps.clock.monotonic())
    registerPassthrough(scope, { ...deps, passthroughLimit })
    registerDeviceRoutes(scope, deps)
    registerDashboard(scope, { ...deps, generators: deps.generatorStatuses, apiKey: key })
    for (const add of deps.extraRoutes ?? []) add(scope)
  })
  return app
}

export interface HttpServer {
  start(): Promise<{ port: number }>
  stop(): Promise<void>
}

export function createHttpServer(deps: HttpDeps): HttpServer {
  const app = buildHttpApp(deps)
  let stopping: Promise<void> | null = null
  return {
    async start() {
      await app.listen({ host: deps.config.HTTP_HOST, port: deps.config.HTTP_PORT as number })
      const address = app.server.address()
      return {
        port: typeof address === 'object' && address ? address.port : (deps.config.HTTP_PORT as number),
      }
    },
    stop() {
      stopping ??= app.close()
      return stopping
    },
  }
}

/** Fastify's own client errors, as catalogue codes with the status Fastify meant. */
function fromFastify(err: FastifyError): AppError {
  switch (err.statusCode) {
    case 413:
      return new AppError('E_TOO_LARGE', 'the body is larger than 1 MB')
    case 415:
      return new AppError('E_UNSUPPORTED_MEDIA', err.message)
    case 404:
      return new AppError('E_NOT_FOUND', err.message)
    case 405:
      return new AppError('E_METHOD_NOT_ALLOWED', err.message)
    default:
      return new AppError('E_BAD_REQUEST', err.message)
  }
}
