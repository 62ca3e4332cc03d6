import { randomBytes } from 'node:crypto'
import { rename, writeFile } from 'node:fs/promises'
import { connect, type IPublishPacket, type MqttClient } from 'mqtt'
import { maskUrlPasswords } from '../config/secrets.ts'
import { panelPixelsToPng } from '../image/convert.ts'
import type { PixelFormat } from '../image/pixel-format.ts'
import { type AssembledFrame, createFrameAssembler, FrameDecodeError } from '../protocol/frame.ts'
import type { StatusMessage } from '../protocol/status.ts'
import { describeStatus, promptPayload } from './device-status.ts'

/*
 * The simulated display's run: one connection, the status and frame topics, and what it has seen so far
 * kept as one explicit state. Without --watch it ends once the frame of its prompt is written.
 */

export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_INTERRUPTED = 130

/** Finished frames kept while waiting for the status that says which one belongs to our prompt. */
const RECENT_FRAMES = 8

export interface DeviceIo {
  stdout: { write(text: string): unknown }
  stderr: { write(text: string): unknown }
}

export interface SimulateOptions {
  id: string
  url: string
  base: string
  prompt: string | undefined
  out: string
  watch: boolean
  timeoutS: number
  /** Published as the display's retained info before anything else (issue 15). */
  panel?: { width: number; height: number; format: PixelFormat } | undefined
}

/** Everything the run has learnt; each handler reads and changes this and nothing else. */
interface SimulationState {
  connected: boolean
  promptSent: boolean
  /** The frame id our prompt's status named (sending or done). */
  target: number | undefined
  written: number
  lastLine: string
  /** PNG writes, one after another. */
  writing: Promise<void>
  finished: boolean
  recent: Map<number, AssembledFrame>
}

export function simulate(opts: SimulateOptions, io: DeviceIo): Promise<number> {
  const topic = {
    frame: `${opts.base}/${opts.id}/frame`,
    status: `${opts.base}/${opts.id}/status`,
    prompt: `${opts.base}/${opts.id}/prompt`,
    info: `${opts.base}/${opts.id}/info`,
  }
  const prompt = opts.prompt === undefined ? undefined : promptPayload(opts.prompt)
  // The URL may carry the display's password (mqtt://kitchen:PASSWORD@host); it is never printed.
  const shownUrl = maskUrlPasswords(opts.url)
  const client = connect(opts.url, {
    clientId: `pab-device-${opts.id}-${randomBytes(4).toString('hex')}`,
    protocolVersion: 4,
    clean: true,
    // A Pico reconnects on its own; so does --watch. A single run fails fast instead.
    reconnectPeriod: opts.watch ? 2000 : 0,
    connectTimeout: 10_000,
  })
  const assembler = createFrameAssembler()
  const state: SimulationState = {
    connected: false,
    promptSent: false,
    target: undefined,
    written: 0,
    lastLine: '',
    writing: Promise.resolve(),
    finished: false,
    recent: new Map(),
  }

  const say = (line: string) => {
    if (line === state.lastLine) return
    state.lastLine = line
    io.stdout.write(`${line}\n`)
  }
  const warn = (line: string) => void io.stderr.write(`pico-a1111-bridge device: ${line}\n`)

  return new Promise<number>((resolve) => {
    const finish = (code: number, message?: string) => {
      if (state.finished) return
      state.finished = true
      clearTimeout(timer)
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
      if (message !== undefined) (code === EXIT_OK ? say : warn)(message)
      const done = () => resolve(code)
      state.writing.then(() => client.endAsync(true)).then(done, done)
    }
    const onSignal = () => {
      if (opts.watch) finish(EXIT_OK, `stopped after ${state.written} frame${state.written === 1 ? '' : 's'}`)
      else finish(EXIT_INTERRUPTED, 'interrupted before the frame arrived')
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    const timer = opts.watch
      ? undefined
      : setTimeout(() => finish(EXIT_FAILED, `no frame within ${opts.timeoutS} s`), opts.timeoutS * 1000)

    const save = (frame: AssembledFrame): Promise<void> => {
      state.written += 1
      const path = outPath(opts.out, state.written)
      state.writing = state.writing.then(() =>
        writePng(frame, path).then(
          () => say(`wrote ${path} (frame ${frame.frameId}, ${frame.width}x${frame.height})`),
          (err: unknown) => {
            warn(`cannot write ${path}: ${(err as Error).message}`)
            if (!opts.watch) finish(EXIT_FAILED)
          },
        ),
      )
      return state.writing
    }

    const consider = (frame: AssembledFrame) => {
      if (opts.watch) void save(frame)
      else if (prompt === undefined || frame.frameId === state.target)
        void save(frame).then(() => finish(EXIT_OK))
    }

    /** A status of this device's prompt: ours by request_id; a rejected prompt cannot carry one. */
    const isOurs = (s: StatusMessage, packet: IPublishPacket) =>
      prompt !== undefined &&
      state.promptSent &&
      !packet.retain &&
      (s.request_id === prompt.requestId || (s.state === 'error' && s.request_id === undefined))

    const onStatus = (payload: Buffer, packet: IPublishPacket) => {
      const s = parseStatus(payload)
      if (!s) return
      say(packet.retain ? `last status: ${describeStatus(s)}` : describeStatus(s))
      if (!isOurs(s, packet) || opts.watch) return
      if (s.state === 'error') finish(EXIT_FAILED, `the bridge refused the job: ${describeStatus(s)}`)
      else if (s.state === 'cancelled') finish(EXIT_FAILED, `the job was cancelled (${String(s.reason)})`)
      else if ((s.state === 'sending' || s.state === 'done') && typeof s.frame_id === 'number') {
        // Frames go out directly and may overtake the status that names them, so look at what came already.
        state.target = s.frame_id
        const frame = state.recent.get(state.target)
        if (frame && state.written === 0) consider(frame)
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
      if (frame.preview) return say(`preview ${frame.frameId} received`)
      state.recent.set(frame.frameId, frame)
      if (state.recent.size > RECENT_FRAMES) state.recent.delete(state.recent.keys().next().value!)
      consider(frame)
    }

    const onConnect = () => {
      const first = !state.connected
      state.connected = true
      say(first ? `connected to ${shownUrl} as ${opts.id}` : 'connected again')
      subscribeAndPrompt(client, [topic.frame, topic.status], first).catch((err: unknown) =>
        finish(EXIT_FAILED, `subscribing failed: ${(err as Error).message}`),
      )
    }

    async function subscribeAndPrompt(c: MqttClient, filters: string[], first: boolean): Promise<void> {
      // The panel first, as the firmware does on connect: the last picture sent on subscribe is then made for it.
      if (opts.panel) {
        const info = { panel: opts.panel, fw: 'pico-a1111-bridge device' }
        await c.publishAsync(topic.info, JSON.stringify(info), { qos: 1, retain: true })
        if (first) say(`panel ${opts.panel.width}x${opts.panel.height} ${opts.panel.format} published`)
      }
      await c.subscribeAsync(filters, { qos: 1 })
      if (!first) return
      if (opts.watch) say('waiting for frames; Ctrl-C stops')
      else if (prompt === undefined)
        say('waiting for a frame (send one with --prompt if the bridge has none yet)')
      if (prompt === undefined || state.promptSent) return
      state.promptSent = true
      await c.publishAsync(topic.prompt, prompt.payload, { qos: 1 })
      say(`prompt sent (request_id ${prompt.requestId})`)
    }

    client.on('message', (t, payload, packet) => {
      if (state.finished) return
      if (t === topic.status && payload.length > 0) onStatus(payload, packet)
      else if (t === topic.frame) onFrame(payload)
    })
    client.on('connect', onConnect)
    client.on('error', (err) => {
      if (!state.connected) finish(EXIT_FAILED, `cannot connect to ${shownUrl}: ${describeError(err)}`)
      else if (!opts.watch) finish(EXIT_FAILED, `connection error: ${describeError(err)}`)
      else warn(`connection error: ${describeError(err)}`)
    })
    client.on('close', () => {
      if (!state.connected) finish(EXIT_FAILED, `cannot connect to ${shownUrl}: the connection closed`)
      else if (!opts.watch) finish(EXIT_FAILED, 'the connection to the bridge was lost')
    })
    client.on('offline', () => {
      if (opts.watch && state.connected) say('connection lost; reconnecting')
    })
  })
}

function parseStatus(payload: Buffer): StatusMessage | undefined {
  try {
    const s = JSON.parse(payload.toString('utf8')) as StatusMessage
    return typeof s === 'object' && s !== null ? s : undefined
  } catch {
    return undefined
  }
}

function outPath(pattern: string, n: number): string {
  return pattern.includes('{n}') ? pattern.replaceAll('{n}', String(n)) : pattern
}

async function writePng(frame: AssembledFrame, path: string): Promise<void> {
  // As the panel shows it: RGB565 expanded to 8 bits, indexed formats in their default inks.
  const png = await panelPixelsToPng(frame.pixels, frame)
  // Written beside the target and renamed over it, so a reader never sees half a PNG.
  const tmp = `${path}.${randomBytes(3).toString('hex')}.tmp`
  await writeFile(tmp, png)
  await rename(tmp, path)
}

function describeError(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code
  if (code === 'ECONNREFUSED') return 'connection refused (is the bridge running? check --url)'
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host name not found'
  return code !== undefined ? `${code} ${err.message}` : err.message
}
