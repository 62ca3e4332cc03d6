import type { EventEmitter } from 'node:events'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { makePng } from './fake-a1111-image.ts'
import {
  infoObject,
  infotext,
  MODEL,
  pyJson,
  resolveSampler,
  type ValidationIssue,
  validateTxt2Img,
} from './fake-a1111-model.ts'
import { createSdState, type SdState, type StateDict } from './fake-a1111-state.ts'

/**
 * A fake AUTOMATIC1111 v1.10.1 started with `--api`, on a real HTTP server, for tests and benchmarks. It
 * follows A1111's API as that version answers it, quirks included: the status codes, the error bodies, the progress formula,
 * the FIFO queue, and interrupts that still answer 200 with a partial picture.
 */

/** A failure to play instead of the normal answer; `null` is normal. Switch at runtime with `setFault`. */
export type Fault =
  | 'no-api' // started without --api: every /sdapi route is 404
  | 'hang' // txt2img never answers until close()
  | 'frozen' // accepts connections, then answers nothing at all (progress and options included)
  | 'error500' // CUDA out of memory
  | 'reject422' // a validation error list
  | 'not-json' // 200 with an HTML page
  | 'no-images' // 200 with `images: []`
  | 'bad-image' // 200 with valid base64 that is not a picture
  | 'bad-base64' // 200 with an image string that is not base64
  | 'bad-gateway' // 502 HTML from a reverse proxy in front of A1111
  | 'drop' // the socket is destroyed mid-request
  | 'no-progress' // /sdapi/v1/progress is 404, as on stable-diffusion.cpp (research §7.4)
  | 'deep-json' // txt2img and options answer 200 with 8 MB of nested arrays: a hostile or broken server
  | 'no-webui' // started with --nowebui: the UI's /internal routes are 404 (research §2, §4)
  | 'no-task-ids' // a version that ignores force_task_id: every job gets an id of its own
  | null

/** Every fault by name, for the command line of `npm run fake-a1111`. */
export const FAULTS = [
  'no-api',
  'hang',
  'frozen',
  'error500',
  'reject422',
  'not-json',
  'no-images',
  'bad-image',
  'bad-base64',
  'bad-gateway',
  'drop',
  'no-progress',
  'deep-json',
  'no-webui',
  'no-task-ids',
] as const satisfies readonly Exclude<Fault, null>[]

/** Nested arrays four million deep: valid JSON whose parse builds a structure of gigabytes. */
const DEEP_JSON = `${'['.repeat(4_000_000)}${']'.repeat(4_000_000)}`

export interface FakeA1111Options {
  /** Time per sampling step; 0 (default) answers at once. */
  stepMs?: number
  /**
   * A fixed wait at the start of every generation, on top of the steps (0, the default, adds nothing): a GPU
   * that takes the same time per picture, for benchmarks. An interrupt or close() ends the wait early.
   */
  latencyMs?: number
  /** The port on 127.0.0.1; 0 (default) picks a free one. */
  port?: number
  /** 512x512 pictures of about 500 KB, like real output, for benchmarks. */
  noise?: boolean
  /**
   * Every txt2img answers with the same body, made once at start: a noisy 512x512 PNG of about 500 KB in
   * 660 KB of JSON, whatever was asked. A benchmark's floor then measures the bridge's side of the answer,
   * not the fake encoding a new PNG (50-80 ms here). The queue, `latencyMs`, `stepMs` and the events still
   * apply; faults are answered as usual.
   */
  cachedAnswer?: boolean
  /** `--api-auth username:password`. */
  auth?: { username: string; password: string }
  fault?: Fault
  /** The option `show_progress_every_n_steps` (10 in A1111). */
  showProgressEveryNSteps?: number
}

export interface RecordedRequest {
  method: string
  /** The path without the query string. */
  path: string
  query: URLSearchParams
  headers: IncomingHttpHeaders
  /** The parsed JSON body, or the raw text when it is not JSON, or undefined when empty. */
  body: unknown
}

export interface FakeA1111 {
  /** `http://127.0.0.1:PORT` */
  readonly url: string
  readonly requests: readonly RecordedRequest[]
  /** How many times `/sdapi/v1/interrupt` was called. */
  readonly interrupts: number
  /** The task id of each txt2img in arrival order: its `force_task_id`, or one of A1111's own. */
  readonly tasks: readonly string[]
  readonly fault: Fault
  /** Emits `request` (RecordedRequest), `begin`, `step`, `end`, `interrupt` (StateDict). */
  readonly events: EventEmitter
  setFault(fault: Fault): void
  /** A copy of A1111's `shared.state`. */
  state(): StateDict
  /** Stops listening and drops every connection, hung requests included; the URL then refuses. */
  close(): Promise<void>
}

const NOT_FOUND = '{"detail":"Not Found"}'
const OOM =
  '{"error":"OutOfMemoryError","detail":"","body":"","errors":"CUDA out of memory. Tried to allocate 2.00 GiB"}'
const REJECTED =
  '{"detail":[{"loc":["body","steps"],"msg":"value is not a valid integer","type":"type_error.integer"},' +
  '{"loc":["body","width"],"msg":"value is not a valid integer","type":"type_error.integer"}]}'
const HTML_PAGE = '<!DOCTYPE html>\n<html><head><title>Stable Diffusion</title></head><body></body></html>\n'
const BAD_GATEWAY =
  '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n' +
  '<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n'

interface Context {
  req: IncomingMessage
  res: ServerResponse
  recorded: RecordedRequest
  raw: string
}

type Handler = (ctx: Context) => Promise<void> | void

export async function startFakeA1111(options: FakeA1111Options = {}): Promise<FakeA1111> {
  const closing = new AbortController()
  const settings = { showProgressEveryNSteps: options.showProgressEveryNSteps ?? 10 }
  const sd: SdState = createSdState({
    stepMs: options.stepMs ?? 0,
    latencyMs: options.latencyMs ?? 0,
    noise: options.noise ?? false,
    showProgressEveryNSteps: settings.showProgressEveryNSteps,
    closed: closing.signal,
  })
  const cached = options.cachedAnswer ? await cachedTxt2ImgBody() : undefined
  const requests: RecordedRequest[] = []
  let fault: Fault = options.fault ?? null
  let interrupts = 0
  // modules/progress.py: tasks waiting for the queue lock, the one running, and the last ones finished.
  const tasks: string[] = []
  const pendingTasks = new Set<string>()
  let currentTask: string | undefined
  const finishedTasks: string[] = []
  let nextTask = 1

  const routes: Record<string, Partial<Record<string, Handler>>> = {
    '/sdapi/v1/txt2img': { POST: txt2img },
    '/sdapi/v1/progress': { GET: progress },
    '/sdapi/v1/interrupt': { POST: interrupt },
    // skip answers `null`, interrupt `{}` (research §3).
    '/sdapi/v1/skip': { POST: ({ res }) => sendJson(res, 200, 'null') },
    '/sdapi/v1/options': {
      GET: ({ res }) =>
        sendJson(res, 200, fault === 'deep-json' ? DEEP_JSON : pyJson(optionsBody(), { compact: true })),
    },
    '/sdapi/v1/sd-models': { GET: ({ res }) => sendJson(res, 200, pyJson([modelItem()], { compact: true })) },
    // UI mode only, and not behind --api-auth (research §4).
    '/internal/ping': { GET: ({ res }) => sendJson(res, 200, '{}') },
    '/internal/progress': { POST: taskProgress },
  }

  /** The API's add_task_to_queue, start_task and finish_task around one generation. */
  async function asTask<T>(
    parameters: Record<string, unknown>,
    run: (onBegin: () => void) => Promise<T>,
  ): Promise<T> {
    const forced = fault === 'no-task-ids' ? null : parameters.force_task_id
    const id = typeof forced === 'string' && forced !== '' ? forced : `task(fake-${nextTask++})`
    tasks.push(id)
    pendingTasks.add(id)
    try {
      return await run(() => {
        pendingTasks.delete(id)
        currentTask = id
      })
    } finally {
      pendingTasks.delete(id)
      if (currentTask === id) currentTask = undefined
      finishedTasks.push(id)
      if (finishedTasks.length > 16) finishedTasks.shift()
    }
  }

  /** `progressapi` of modules/progress.py: one task's state, by its id. */
  async function taskProgress(ctx: Context): Promise<void> {
    const body = parseBody(ctx.req.headers['content-type'], ctx.raw)
    if (!body.ok) return sendJson(ctx.res, 422, JSON.stringify({ detail: body.issues }))
    const id = body.value.id_task
    const active = id === currentTask
    const queued = typeof id === 'string' && pendingTasks.has(id)
    const completed = typeof id === 'string' && finishedTasks.includes(id)
    if (!active) {
      const waiting = [...pendingTasks]
      const textinfo = queued
        ? `In queue: ${waiting.indexOf(id as string) + 1}/${waiting.length}`
        : 'Waiting...'
      const answer = { active, queued, completed, progress: null, eta: null, live_preview: null }
      return sendJson(ctx.res, 200, pyJson({ ...answer, id_live_preview: -1, textinfo }, { compact: true }))
    }
    const now = await sd.progress(true)
    const answer = { active, queued, completed, progress: now.progress, eta: now.eta_relative }
    const rest = { live_preview: null, id_live_preview: -1, textinfo: null }
    sendJson(ctx.res, 200, pyJson({ ...answer, ...rest }, { compact: true }))
  }

  async function txt2img(ctx: Context): Promise<void> {
    const body = parseBody(ctx.req.headers['content-type'], ctx.raw)
    if (!body.ok) return sendJson(ctx.res, 422, JSON.stringify({ detail: body.issues }))
    const checked = validateTxt2Img(body.value)
    if (!checked.ok) return sendJson(ctx.res, 422, JSON.stringify({ detail: checked.issues }))
    switch (fault) {
      case 'hang':
        // The job takes the queue lock and never finishes (a driver call that does not return).
        return asTask(checked.parameters, (onBegin) => {
          onBegin()
          return waitForClose()
        })
      case 'drop':
        ctx.req.socket.destroy()
        return
      case 'error500':
        // Internal errors lack X-Process-Time (research §5.1).
        return sendJson(ctx.res, 500, OOM)
      case 'reject422':
        return sendJson(ctx.res, 422, REJECTED)
      case 'not-json':
        return send(ctx.res, 200, 'text/html; charset=utf-8', HTML_PAGE)
      case 'bad-gateway':
        return send(ctx.res, 502, 'text/html', BAD_GATEWAY)
      case 'deep-json':
        return sendJson(ctx.res, 200, DEEP_JSON)
    }
    const started = performance.now()
    if (cached !== undefined && fault === null) {
      // The generation runs as usual (queue, waits, events), without pictures; the answer is the cached one.
      await asTask(checked.parameters, (onBegin) =>
        sd.enqueue({ ...checked.parameters, send_images: false }, onBegin),
      )
      const processTime = String((performance.now() - started) / 1000)
      return send(ctx.res, 200, 'application/json', cached, { 'x-process-time': processTime })
    }
    const answer = await asTask(checked.parameters, (onBegin) => sd.enqueue(checked.parameters, onBegin))
    if (fault === 'no-images') answer.images = []
    if (fault === 'bad-image') answer.images = [Buffer.from('this is not a picture').toString('base64')]
    if (fault === 'bad-base64') answer.images = ['%%% not base64 %%%']
    const processTime = String((performance.now() - started) / 1000)
    sendJson(ctx.res, 200, pyJson(answer, { compact: true }), { 'x-process-time': processTime })
  }

  async function progress(ctx: Context): Promise<void> {
    const skip = parseQueryBool(ctx.recorded.query.get('skip_current_image'))
    if (skip === undefined) {
      const issue = { loc: ['query', 'skip_current_image'], ...BOOL_ISSUE }
      return sendJson(ctx.res, 422, JSON.stringify({ detail: [issue] }))
    }
    sendJson(ctx.res, 200, pyJson(await sd.progress(skip), { compact: true }))
  }

  function interrupt({ res }: Context): void {
    interrupts++
    sd.interrupt()
    sendJson(res, 200, '{}')
  }

  function optionsBody(): Record<string, unknown> {
    return {
      samples_save: true,
      samples_format: 'png',
      save_images_add_number: true,
      grid_save: true,
      enable_pnginfo: true,
      sd_model_checkpoint: MODEL.title,
      sd_checkpoint_hash: MODEL.sha256,
      sd_vae: 'Automatic',
      CLIP_stop_at_last_layers: 1,
      live_previews_enable: true,
      show_progress_every_n_steps: settings.showProgressEveryNSteps,
      show_progress_type: 'Approx NN',
      live_preview_fast_interrupt: false,
      interrupt_after_current: true,
      jpeg_quality: 80,
      webp_lossless: false,
    }
  }

  function modelItem(): Record<string, unknown> {
    return {
      title: MODEL.title,
      model_name: MODEL.name,
      hash: MODEL.hash,
      sha256: MODEL.sha256,
      filename: `/home/sd/stable-diffusion-webui/models/Stable-diffusion/${MODEL.name}.safetensors`,
      config: null,
    }
  }

  function waitForClose(): Promise<void> {
    return new Promise((resolve) => closing.signal.addEventListener('abort', () => resolve(), { once: true }))
  }

  /** HTTPBasic runs before body validation, so a bad body without credentials is 401, not 422 (§5.1). */
  function authProblem(req: IncomingMessage): string | undefined {
    if (options.auth === undefined) return undefined
    const header = req.headers.authorization ?? ''
    const [scheme, token] = header.split(' ', 2)
    if (scheme?.toLowerCase() !== 'basic' || token === undefined) return 'Not authenticated'
    const decoded = Buffer.from(token, 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon < 0) return 'Invalid authentication credentials'
    const ok =
      decoded.slice(0, colon) === options.auth.username && decoded.slice(colon + 1) === options.auth.password
    return ok ? undefined : 'Incorrect username or password'
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req)
    const url = new URL(req.url ?? '/', 'http://fake')
    const recorded: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
      body: parseRecorded(raw),
    }
    requests.push(recorded)
    sd.events.emit('request', recorded)
    // A process stuck in a driver call: the socket stays open, nothing ever comes back.
    if (fault === 'frozen') return waitForClose()
    const isApi = url.pathname.startsWith('/sdapi/')
    const missing =
      (fault === 'no-api' && isApi) ||
      (fault === 'no-progress' && url.pathname === '/sdapi/v1/progress') ||
      (fault === 'no-webui' && url.pathname.startsWith('/internal/'))
    const route = missing ? undefined : routes[url.pathname]
    if (route === undefined) return sendJson(res, 404, NOT_FOUND)
    const handler = route[recorded.method]
    if (handler === undefined) {
      return sendJson(res, 405, '{"detail":"Method Not Allowed"}', { allow: Object.keys(route).join(', ') })
    }
    const problem = isApi ? authProblem(req) : undefined
    // A1111's wrapper rebuilds the 401, so WWW-Authenticate is dropped (research §5.1).
    if (problem !== undefined) return sendJson(res, 401, wrapped(problem))
    await handler({ req, res, recorded, raw })
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const name = err instanceof Error ? err.name : 'Exception'
      if (!res.headersSent)
        sendJson(res, 500, JSON.stringify({ error: name, detail: '', body: '', errors: String(err) }))
    })
  })
  await new Promise<void>((resolve) => server.listen(options.port ?? 0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port

  let closed: Promise<void> | undefined
  function close(): Promise<void> {
    closed ??= new Promise<void>((resolve) => {
      closing.abort()
      server.close(() => resolve())
      // Keep-alive sockets and hung requests would hold server.close() open forever.
      server.closeAllConnections()
    })
    return closed
  }

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    get interrupts() {
      return interrupts
    },
    tasks,
    get fault() {
      return fault
    },
    events: sd.events,
    setFault(next: Fault) {
      fault = next
    },
    state: sd.state,
    close,
  }
}

/** The body of `cachedAnswer`: what A1111 answers a default request with seed 42, as bytes. */
async function cachedTxt2ImgBody(): Promise<Buffer> {
  const checked = validateTxt2Img({
    prompt: 'a lighthouse at dusk',
    seed: 42,
    steps: 20,
    width: 512,
    height: 512,
  })
  if (!checked.ok) throw new Error('the cached request does not validate')
  const { parameters } = checked
  const facts = {
    parameters,
    seed: 42,
    subseed: 7,
    sampler: resolveSampler(parameters),
    images: 1,
    timestamp: '0',
  }
  const png = await makePng({
    seed: 42,
    width: 512,
    height: 512,
    noise: true,
    done: 1,
    infotext: infotext(facts, 0),
  })
  const body = {
    images: [png.toString('base64')],
    parameters,
    info: pyJson(infoObject(facts), { compact: false }),
  }
  return Buffer.from(pyJson(body, { compact: true }))
}

const BOOL_ISSUE = { msg: 'value could not be parsed to a boolean', type: 'type_error.bool' }

function parseQueryBool(value: string | null): boolean | undefined {
  if (value === null) return false
  const word = value.toLowerCase()
  if (['1', 'on', 't', 'true', 'y', 'yes'].includes(word)) return true
  if (['0', 'off', 'f', 'false', 'n', 'no'].includes(word)) return false
  return undefined
}

/** The 4-key body of A1111's `api_middleware` for HTTPExceptions (research §5.1). */
function wrapped(detail: string): string {
  return JSON.stringify({ error: 'HTTPException', detail, body: '', errors: '' })
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function parseRecorded(raw: string): unknown {
  if (raw === '') return undefined
  try {
    return JSON.parse(raw)
  } catch {
    return raw
  }
}

/**
 * FastAPI 0.94's body handling: JSON is parsed when Content-Type is absent or application/json (or +json);
 * any other type (text/plain from a bare `fetch`) leaves bytes that fail "value is not a valid dict" (§5.1).
 */
function parseBody(
  contentType: string | undefined,
  raw: string,
): { ok: true; value: Record<string, unknown> } | { ok: false; issues: unknown[] } {
  const missing = {
    ok: false as const,
    issues: [{ loc: ['body'], msg: 'field required', type: 'value_error.missing' }],
  }
  const notDict = { ok: false as const, issues: [{ loc: ['body'], ...DICT_ISSUE }] }
  if (raw === '') return missing
  const mime = (contentType ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
  const json =
    mime === '' || mime === 'application/json' || (mime.startsWith('application/') && mime.endsWith('+json'))
  if (!json) return notDict
  let value: unknown
  try {
    value = JSON.parse(raw)
  } catch (err) {
    return { ok: false, issues: [jsonDecodeIssue(raw, err as Error)] }
  }
  if (value === null) return missing
  if (typeof value !== 'object' || Array.isArray(value)) return notDict
  return { ok: true, value: value as Record<string, unknown> }
}

const DICT_ISSUE = { msg: 'value is not a valid dict', type: 'type_error.dict' }

/** Python's json.JSONDecodeError as FastAPI reports it, position and all (research §5.1). */
function jsonDecodeIssue(doc: string, err: Error): ValidationIssue & { ctx: Record<string, unknown> } {
  const at = /position (\d+)/.exec(err.message)
  // V8 names the position only for some errors; "Unexpected end" is at the end, the rest at the start.
  const pos = at ? Number(at[1]) : /end of JSON/.test(err.message) ? doc.length : 0
  const what = /property name/.test(err.message)
    ? 'Expecting property name enclosed in double quotes'
    : 'Expecting value'
  const before = doc.slice(0, pos)
  const lineno = before.split('\n').length
  const colno = pos - before.lastIndexOf('\n')
  return {
    loc: ['body', pos],
    msg: `${what}: line ${lineno} column ${colno} (char ${pos})`,
    type: 'value_error.jsondecode',
    ctx: { msg: what, doc, pos, lineno, colno },
  }
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, headers = {}): void {
  if (res.destroyed) return
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...headers })
  res.end(body)
}

function sendJson(res: ServerResponse, status: number, body: string, headers = {}): void {
  send(res, status, 'application/json', body, headers)
}
