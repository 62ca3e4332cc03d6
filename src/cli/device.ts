import { randomBytes } from 'node:crypto'
import { rename, writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'
import { connect, type IPublishPacket } from 'mqtt'
import { rgb565ToPng } from '../image/convert.ts'
import { parseDeviceId } from '../protocol/device-id.ts'
import { type AssembledFrame, createFrameAssembler, FrameDecodeError } from '../protocol/frame.ts'
import type { StatusMessage } from '../protocol/status.ts'

/*
 * `pico-a1111-bridge device`: a simulated Pico display for people without a board, for home-automation users
 * testing their automations, and for the docs. It connects the way the MicroPython firmware does (MQTT 3.1.1,
 * QoS 1 subscriptions, clean session, a client id of its own), prints the job status with a progress bar,
 * puts the frame bands back together with the project's own decoder and writes each finished frame as PNG.
 */

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 64
const EXIT_INTERRUPTED = 130

const DEFAULT_URL = 'mqtt://127.0.0.1:1883'
const DEFAULT_TIMEOUT_S = 300
/** Finished frames kept while waiting for the status that says which one belongs to our prompt. */
const RECENT_FRAMES = 8

export const DEVICE_HELP = `Usage: pico-a1111-bridge device --id ID [--url URL] [--prompt TEXT] [--out FILE] [--watch]

Acts as a Pico display: connects to the bridge's MQTT broker like the MicroPython firmware does (MQTT 3.1.1,
QoS 1, clean session), prints the job status with a progress bar, and writes each finished frame as a PNG.

Options:
  --id ID          the device id: 1-64 letters, digits, _ or - (required)
  --url URL        the broker (default ${DEFAULT_URL})
  --base TOPIC     the bridge's BASE_TOPIC (default pico)
  --prompt TEXT    send this prompt after connecting: text, or JSON such as {"prompt": "a fox", "steps": 12}
  --out FILE       the PNG to write (default frame.png). With --watch, {n} in the name becomes 1, 2, 3 ...
                   (frame-{n}.png keeps every frame); without {n} each frame overwrites the file
  --watch          keep running and write every finished frame until Ctrl-C
  --timeout S      without --watch: give up after S seconds without the frame (default ${DEFAULT_TIMEOUT_S})
  --help           show this help

Without --watch it exits 0 once the frame of its prompt is written (without --prompt: the first frame that
arrives, such as the last picture, which the bridge sends on subscribe), and 1 on an error status, a
cancelled job, a connection failure or the timeout. Preview frames are reported, not written.`

export interface DeviceIo {
  stdout: { write(text: string): unknown }
  stderr: { write(text: string): unknown }
}

interface DeviceOptions {
  id: string
  url: string
  base: string
  prompt: string | undefined
  out: string
  watch: boolean
  timeoutS: number
}

class UsageError extends Error {}

function parseOptions(argv: string[]): DeviceOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      id: { type: 'string' },
      url: { type: 'string', default: DEFAULT_URL },
      base: { type: 'string', default: 'pico' },
      prompt: { type: 'string' },
      out: { type: 'string', default: 'frame.png' },
      watch: { type: 'boolean', default: false },
      timeout: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  })
  if (values.help) return 'help'
  const id = values.id
  if (id === undefined) throw new UsageError('--id is required')
  const parsedId = parseDeviceId(id)
  if (!parsedId.ok) throw new UsageError(`--id: ${parsedId.message}`)
  let url: URL
  try {
    url = new URL(values.url)
  } catch {
    throw new UsageError(`--url "${values.url}" is not a URL, e.g. ${DEFAULT_URL}`)
  }
  if (!['mqtt:', 'mqtts:', 'tcp:', 'ws:', 'wss:'].includes(url.protocol)) {
    throw new UsageError(`--url must start with mqtt://, mqtts://, ws:// or wss://, got "${values.url}"`)
  }
  if (!/^[^#+/\s]+(\/[^#+/\s]+)*$/.test(values.base)) {
    throw new UsageError(`--base "${values.base}" is not a topic prefix such as pico or home/pico`)
  }
  let timeoutS = DEFAULT_TIMEOUT_S
  if (values.timeout !== undefined) {
    timeoutS = Number(values.timeout)
    if (!Number.isFinite(timeoutS) || timeoutS <= 0) {
      throw new UsageError(`--timeout must be a number of seconds above 0, got "${values.timeout}"`)
    }
  }
  if (values.prompt !== undefined && values.prompt.trim() === '') throw new UsageError('--prompt is empty')
  return {
    id,
    url: values.url,
    base: values.base,
    prompt: values.prompt,
    out: values.out,
    watch: values.watch,
    timeoutS,
  }
}

/**
 * Runs the simulated device; resolves with the process exit code. `io` defaults to the process's streams.
 */
export async function runDevice(
  argv: string[],
  io: DeviceIo = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  let options: DeviceOptions | 'help'
  try {
    options = parseOptions(argv)
  } catch (err) {
    io.stderr.write(`pico-a1111-bridge device: ${(err as Error).message}\n\n${DEVICE_HELP}\n`)
    return EXIT_USAGE
  }
  if (options === 'help') {
    io.stdout.write(`${DEVICE_HELP}\n`)
    return EXIT_OK
  }
  return simulate(options, io)
}

/** `[#####.....] 50%`: ten steps of progress. */
export function progressBar(progress: number): string {
  const p = Math.min(Math.max(progress, 0), 1)
  const filled = Math.round(p * 10)
  return `[${'#'.repeat(filled)}${'.'.repeat(10 - filled)}] ${Math.round(p * 100)}%`
}

/** One status message as a line for people. */
export function describeStatus(s: StatusMessage): string {
  switch (s.state) {
    case 'queued':
      return typeof s.position === 'number' ? `queued, position ${s.position}` : 'queued'
    case 'generating': {
      const progress = typeof s.progress === 'number' ? s.progress : 0
      const eta = typeof s.eta_s === 'number' ? `, ${s.eta_s.toFixed(1)} s left` : ''
      return `${progressBar(progress)} generating${eta}`
    }
    case 'sending':
      return `sending ${s.preview === true ? 'preview' : 'frame'} ${String(s.frame_id)} (${String(s.chunks)} bands)`
    case 'done':
      return `done: frame ${String(s.frame_id)}, seed ${String(s.seed)}`
    case 'cancelled':
      return `cancelled (${String(s.reason)})`
    case 'error': {
      const error = s.error as { code?: string; message?: string } | undefined
      return `error ${error?.code ?? 'E_?'}: ${error?.message ?? ''}`
    }
    default:
      return String(s.state)
  }
}

/** The prompt as JSON with a request_id, so the statuses and the frame of this prompt can be told apart. */
function promptPayload(text: string): { payload: string; requestId: string | number } {
  const requestId = `device-${randomBytes(4).toString('hex')}`
  const trimmed = text.trim()
  if (trimmed.startsWith('{')) {
    let json: unknown
    try {
      json = JSON.parse(trimmed)
    } catch {
      // Sent as it is: the bridge answers with an E_BAD_PROMPT status that says what is wrong.
      return { payload: text, requestId }
    }
    if (typeof json === 'object' && json !== null && !Array.isArray(json)) {
      const body = { request_id: requestId, ...(json as Record<string, unknown>) }
      const own = body.request_id
      return {
        payload: JSON.stringify(body),
        requestId: typeof own === 'string' || typeof own === 'number' ? own : requestId,
      }
    }
    return { payload: text, requestId }
  }
  return { payload: JSON.stringify({ prompt: trimmed, request_id: requestId }), requestId }
}

function outPath(pattern: string, n: number): string {
  return pattern.includes('{n}') ? pattern.replaceAll('{n}', String(n)) : pattern
}

async function writePng(frame: AssembledFrame, path: string): Promise<void> {
  const png = await rgb565ToPng(frame.pixels, frame.width, frame.height, frame.format === 'rgb565-le')
  // Written beside the target and renamed over it, so a reader never sees half a PNG.
  const tmp = `${path}.${randomBytes(3).toString('hex')}.tmp`
  await writeFile(tmp, png)
  await rename(tmp, path)
}

function simulate(opts: DeviceOptions, io: DeviceIo): Promise<number> {
  const topic = {
    frame: `${opts.base}/${opts.id}/frame`,
    status: `${opts.base}/${opts.id}/status`,
    prompt: `${opts.base}/${opts.id}/prompt`,
  }
  const prompt = opts.prompt === undefined ? undefined : promptPayload(opts.prompt)
  const client = connect(opts.url, {
    clientId: `pab-device-${opts.id}-${randomBytes(4).toString('hex')}`,
    protocolVersion: 4,
    clean: true,
    // A Pico reconnects on its own; so does --watch. A single run fails fast instead.
    reconnectPeriod: opts.watch ? 2000 : 0,
    connectTimeout: 10_000,
  })
  const assembler = createFrameAssembler()
  const recent = new Map<number, AssembledFrame>()
  let connected = false
  let promptSent = false
  let target: number | undefined
  let written = 0
  let lastLine = ''
  let writing: Promise<void> = Promise.resolve()
  let finished = false

  const say = (line: string) => {
    if (line === lastLine) return
    lastLine = line
    io.stdout.write(`${line}\n`)
  }
  const warn = (line: string) => {
    io.stderr.write(`pico-a1111-bridge device: ${line}\n`)
  }

  return new Promise<number>((resolve) => {
    const finish = (code: number, message?: string) => {
      if (finished) return
      finished = true
      clearTimeout(timer)
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      if (message !== undefined) {
        if (code === EXIT_OK) say(message)
        else warn(message)
      }
      writing
        .then(() => client.endAsync(true))
        .then(
          () => resolve(code),
          () => resolve(code),
        )
    }
    const onSignal = () => {
      if (opts.watch) finish(EXIT_OK, `stopped after ${written} frame${written === 1 ? '' : 's'}`)
      else finish(EXIT_INTERRUPTED, 'interrupted before the frame arrived')
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    const timer = opts.watch
      ? undefined
      : setTimeout(() => finish(EXIT_FAILED, `no frame within ${opts.timeoutS} s`), opts.timeoutS * 1000)

    const save = (frame: AssembledFrame) => {
      written += 1
      const path = outPath(opts.out, written)
      writing = writing.then(() =>
        writePng(frame, path).then(
          () => say(`wrote ${path} (frame ${frame.frameId}, ${frame.width}x${frame.height})`),
          (err: unknown) => {
            warn(`cannot write ${path}: ${(err as Error).message}`)
            if (!opts.watch) finish(EXIT_FAILED)
          },
        ),
      )
      return writing
    }

    const consider = (frame: AssembledFrame) => {
      if (opts.watch) {
        void save(frame)
      } else if (prompt === undefined || frame.frameId === target) {
        void save(frame).then(() => finish(EXIT_OK))
      }
    }

    /** A status of this device's prompt: ours by request_id; a rejected prompt cannot carry one. */
    const isOurs = (s: StatusMessage, packet: IPublishPacket) =>
      prompt !== undefined &&
      promptSent &&
      !packet.retain &&
      (s.request_id === prompt.requestId || (s.state === 'error' && s.request_id === undefined))

    const onStatus = (payload: Buffer, packet: IPublishPacket) => {
      let s: StatusMessage
      try {
        s = JSON.parse(payload.toString('utf8')) as StatusMessage
      } catch {
        return
      }
      if (typeof s !== 'object' || s === null) return
      say(packet.retain ? `last status: ${describeStatus(s)}` : describeStatus(s))
      if (!isOurs(s, packet) || opts.watch) return
      if (s.state === 'error') finish(EXIT_FAILED, `the bridge refused the job: ${describeStatus(s)}`)
      else if (s.state === 'cancelled') finish(EXIT_FAILED, `the job was cancelled (${String(s.reason)})`)
      else if ((s.state === 'sending' || s.state === 'done') && typeof s.frame_id === 'number') {
        // Frames go out directly and may overtake the status that names them, so look at what came already.
        target = s.frame_id
        const frame = recent.get(target)
        if (frame && written === 0) consider(frame)
      }
    }

    const onFrame = (payload: Buffer) => {
      let frame: AssembledFrame | null
      try {
        frame = assembler.push(payload)
      } catch (err) {
        if (!(err instanceof FrameDecodeError)) throw err
        warn(`band dropped: ${err.message}`)
        return
      }
      if (frame === null) return
      if (frame.preview) {
        say(`preview ${frame.frameId} received`)
        return
      }
      recent.set(frame.frameId, frame)
      if (recent.size > RECENT_FRAMES) recent.delete(recent.keys().next().value!)
      consider(frame)
    }

    client.on('message', (t, payload, packet) => {
      if (finished) return
      if (t === topic.status && payload.length > 0) onStatus(payload, packet)
      else if (t === topic.frame) onFrame(payload)
    })
    client.on('connect', () => {
      const first = !connected
      connected = true
      if (first) say(`connected to ${opts.url} as ${opts.id}`)
      else say('connected again')
      client.subscribeAsync([topic.frame, topic.status], { qos: 1 }).then(
        async () => {
          if (!first) return
          if (opts.watch) say('waiting for frames; Ctrl-C stops')
          else if (prompt === undefined)
            say('waiting for a frame (send one with --prompt if the bridge has none yet)')
          if (prompt === undefined || promptSent) return
          promptSent = true
          await client.publishAsync(topic.prompt, prompt.payload, { qos: 1 })
          say(`prompt sent (request_id ${prompt.requestId})`)
        },
        (err: unknown) => finish(EXIT_FAILED, `subscribing failed: ${(err as Error).message}`),
      )
    })
    client.on('error', (err) => {
      if (!connected) finish(EXIT_FAILED, `cannot connect to ${opts.url}: ${describeError(err)}`)
      else if (!opts.watch) finish(EXIT_FAILED, `connection error: ${describeError(err)}`)
      else warn(`connection error: ${describeError(err)}`)
    })
    client.on('close', () => {
      if (!connected) finish(EXIT_FAILED, `cannot connect to ${opts.url}: the connection closed`)
      else if (!opts.watch) finish(EXIT_FAILED, 'the connection to the bridge was lost')
    })
    client.on('offline', () => {
      if (opts.watch && connected) say('connection lost; reconnecting')
    })
  })
}

function describeError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ECONNREFUSED') return 'connection refused (is the bridge running? check --url)'
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host name not found'
  return code !== undefined ? `${code} ${err.message}` : err.message
}
