import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Clock } from '../clock.ts'
import { AppError } from '../errors.ts'
import type { EventBus } from '../events.ts'
import { type GenerateResult, KEEP_UPSTREAM_IMAGES, type Txt2ImgPayload } from '../generator/types.ts'
import { asPng } from '../image/convert.ts'
import { type PanelProfile, renderPixels } from '../image/panel.ts'
import { createAwaitedJob } from '../jobs/awaited-job.ts'
import type { JobQueue } from '../jobs/job.ts'
import type { RateLimit } from '../jobs/rate-limit.ts'
import { MAX_PROMPT_CHARS } from '../protocol/prompt.ts'
import { badRequest, sendError } from './errors.ts'
import { FRAME_SIZE_QUERY_SCHEMA, TXT2IMG_BODY_SCHEMA } from './txt2img-schema.ts'

/*
 * The drop-in for the older Python proxy: Picos in the field POST an A1111 txt2img body and read the frame as
 * raw RGB565, so they keep working when only the server address changes (README, "HTTP"). Requests go
 * through the same queue and generators as MQTT prompts.
 */

export interface PassthroughDeps {
  /** The panel the answers are rendered for (the settings' default panel). */
  panel: PanelProfile
  events: EventBus
  clock: Clock
  queue: JobQueue
  newJobId(): string
  /** Requests per client address (RATE_LIMIT a minute): the passthrough is a door straight to A1111. */
  passthroughLimit?: RateLimit | undefined
}

interface Converted {
  pixels: Buffer
  width: number
  height: number
  generated: GenerateResult
}

const TEXT_QUERY_SCHEMA = {
  type: 'object',
  properties: { input: { type: 'string', maxLength: MAX_PROMPT_CHARS + 2 } },
} as const

export function registerPassthrough(app: FastifyInstance, deps: PassthroughDeps): void {
  const { panel } = deps

  function limited(request: FastifyRequest): AppError | undefined {
    if (deps.passthroughLimit?.take(request.ip) !== false) return undefined
    request.log.warn({ ip: request.ip, code: 'E_RATE_LIMITED' }, 'passthrough request refused')
    return new AppError(
      'E_RATE_LIMITED',
      'too many pictures asked from this address in the last minute (RATE_LIMIT)',
    )
  }

  const txt2img = { schema: { body: TXT2IMG_BODY_SCHEMA, querystring: FRAME_SIZE_QUERY_SCHEMA } }
  app.post('/sdapi/v1/txt2img', txt2img, async (request, reply) => {
    const body = request.body
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      return sendError(reply, badRequest('the body must be a JSON object: an A1111 txt2img request'))
    }
    const refused = limited(request)
    if (refused) return sendError(reply, refused)
    const { return_base64: returnBase64, ...payload } = body as Txt2ImgPayload & { return_base64?: unknown }
    const size = frameSize(request, panel)
    const wantsJson = returnBase64 === true || prefersJson(request.headers.accept)
    // The JSON answer gives A1111's pictures back; the binary one has no use for them.
    if (wantsJson) payload[KEEP_UPSTREAM_IMAGES] = true
    const owner = `http:${request.ip}`
    const { job, result } = createAwaitedJob<Converted>(
      deps.newJobId(),
      owner,
      payload,
      async (generated) => {
        const started = deps.clock.monotonic()
        const pixels = await renderPixels(generated.image, { ...panel, ...size })
        deps.events.emit('frame.converted', { ms: deps.clock.monotonic() - started, via: 'http' })
        return { pixels, ...size, generated }
      },
    )
    const frame = await runFor(request, reply, deps.queue, job, result)
    if (!frame) return reply
    if (wantsJson) {
      return reply.type('application/json').send({
        image_base64: frame.pixels.toString('base64'),
        width: frame.width,
        height: frame.height,
        format: panel.format,
        images: frame.generated.upstream.images,
        parameters: frame.generated.upstream.parameters,
        info: frame.generated.upstream.info,
      })
    }
    return reply
      .type('application/octet-stream')
      .header('x-image-width', String(frame.width))
      .header('x-image-height', String(frame.height))
      .header('x-image-format', panel.format)
      .send(frame.pixels)
  })

  // The query API of the older "sd-b64-api" clients: GET /text?input="a monkey with a hat" answers with the
  // generated PNG in base64 under the key "image-base64".
  app.get('/text', { schema: { querystring: TEXT_QUERY_SCHEMA } }, async (request, reply) => {
    const input = (request.query as { input?: string }).input
    // The older clients wrap the prompt in quotes, so `?input=""` is as empty as `?input=`.
    const prompt =
      typeof input === 'string'
        ? input
            .trim()
            .replace(/^"(.*)"$/s, '$1')
            .trim()
        : ''
    if (prompt === '') {
      return sendError(reply, badRequest('give the prompt as ?input=..., e.g. /text?input=a%20red%20fox'))
    }
    const refused = limited(request)
    if (refused) return sendError(reply, refused)
    const payload: Txt2ImgPayload = { prompt, steps: 20, width: 512, height: 512, cfg_scale: 7, seed: -1 }
    const { job, result } = createAwaitedJob(deps.newJobId(), `http:${request.ip}`, payload, (generated) =>
      asPng(generated.image),
    )
    const png = await runFor(request, reply, deps.queue, job, result)
    if (!png) return reply
    return reply.type('application/json').send({ 'image-base64': png.toString('base64') })
  })
}

/**
 * Queues the job, cancels it if the client hangs up before the answer (A1111 is interrupted rather than left
 * generating for nobody), and waits for it. Returns undefined when an error answer was already sent.
 */
async function runFor<T>(
  request: FastifyRequest,
  reply: FastifyReply,
  queue: JobQueue,
  job: { id: string },
  result: Promise<T>,
): Promise<T | undefined> {
  try {
    queue.submit(job as Parameters<JobQueue['submit']>[0])
  } catch (err) {
    sendError(reply, err)
    return undefined
  }
  const onClose = () => {
    if (!reply.raw.writableFinished && queue.cancel(job.id, 'client_gone')) {
      request.log.info({ jobId: job.id }, 'client went away; job cancelled')
    }
  }
  reply.raw.once('close', onClose)
  try {
    return await result
  } catch (err) {
    sendError(reply, err)
    return undefined
  }
}

function prefersJson(accept: string | undefined): boolean {
  if (!accept) return false
  return accept.includes('application/json') && !accept.includes('application/octet-stream')
}

/** The frame size: the settings, or `?width=&height=` for one request (FRAME_SIZE_QUERY_SCHEMA checked them). */
function frameSize(request: FastifyRequest, panel: PanelProfile): { width: number; height: number } {
  const query = request.query as { width?: number; height?: number }
  return { width: query.width ?? panel.width, height: query.height ?? panel.height }
}
