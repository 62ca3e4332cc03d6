import { parseArgs } from 'node:util'
import { PIXEL_FORMAT_NAMES, type PixelFormat } from '../image/pixel-format.ts'
import { parseDeviceId } from '../protocol/device-id.ts'
import { type DeviceIo, EXIT_OK, type SimulateOptions, simulate } from './simulate.ts'

export { describeStatus, progressBar } from './device-status.ts'
export type { DeviceIo } from './simulate.ts'

/*
 * `pico-a1111-bridge device`: a simulated Pico display for people without a board, for home-automation users
 * testing their automations, and for the docs. It connects the way the MicroPython firmware does (MQTT 3.1.1,
 * QoS 1 subscriptions, clean session, a client id of its own), prints the job status with a progress bar,
 * puts the frame bands back together with the project's own decoder and writes each finished frame as PNG.
 */

const EXIT_USAGE = 64
const DEFAULT_TIMEOUT_S = 300

/**
 * The broker when --url is not given: MQTT_URL, else the embedded broker on this machine at MQTT_PORT (the
 * settings the bridge itself reads), else port 1883.
 */
export function defaultUrl(env: Record<string, string | undefined>): string {
  if (env.MQTT_URL !== undefined && env.MQTT_URL.trim() !== '') return env.MQTT_URL.trim()
  const port = env.MQTT_PORT?.trim()
  return `mqtt://127.0.0.1:${port !== undefined && /^\d{1,5}$/.test(port) && port !== '0' ? port : '1883'}`
}

export const DEVICE_HELP = `Usage: pico-a1111-bridge device --id ID [--url URL] [--prompt TEXT] [--out FILE] [--watch]

Acts as a Pico display: connects to the bridge's MQTT broker like the MicroPython firmware does (MQTT 3.1.1,
QoS 1, clean session), prints the job status with a progress bar, and writes each finished frame as a PNG.

Options:
  --id ID          the device id: 1-64 letters, digits, _ or - (required)
  --url URL        the broker (default: MQTT_URL, else mqtt://127.0.0.1:MQTT_PORT, else port 1883)
  --base TOPIC     the bridge's BASE_TOPIC (default pico)
  --prompt TEXT    send this prompt after connecting: text, or JSON such as {"prompt": "a fox", "steps": 12}
  --out FILE       the PNG to write (default frame.png). With --watch, {n} in the name becomes 1, 2, 3 ...
                   (frame-{n}.png keeps every frame); without {n} each frame overwrites the file
  --watch          keep running and write every finished frame until Ctrl-C
  --panel WxH:FMT  act as a display of that panel, e.g. 320x240:rgb565-be or 800x480:palette7: publishes it
                   as the display's retained info first, and writes the PNG as that panel shows it
                   (formats: ${PIXEL_FORMAT_NAMES.join(', ')})
  --timeout S      without --watch: give up after S seconds without the frame (default ${DEFAULT_TIMEOUT_S})
  --help           show this help

Without --watch it exits 0 once the frame of its prompt is written (without --prompt: the first frame that
arrives, such as the last picture, which the bridge sends on subscribe), and 1 on an error status, a
cancelled job, a connection failure or the timeout. Preview frames are reported, not written.`

type DeviceOptions = SimulateOptions

class UsageError extends Error {}

function parseOptions(argv: string[], env: Record<string, string | undefined>): DeviceOptions | 'help' {
  const fallback = defaultUrl(env)
  const { values } = parseArgs({
    args: argv,
    options: {
      id: { type: 'string' },
      url: { type: 'string', default: fallback },
      base: { type: 'string', default: 'pico' },
      prompt: { type: 'string' },
      out: { type: 'string', default: 'frame.png' },
      watch: { type: 'boolean', default: false },
      timeout: { type: 'string' },
      panel: { type: 'string' },
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
    throw new UsageError(`--url "${values.url}" is not a URL, e.g. mqtt://127.0.0.1:1883`)
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
  const panel = values.panel === undefined ? undefined : parsePanel(values.panel)
  return {
    id,
    url: values.url,
    base: values.base,
    prompt: values.prompt,
    out: values.out,
    watch: values.watch,
    timeoutS,
    panel,
  }
}

/** `320x240:rgb565-be`: the size and format a display's info names (docs/protocol.md, "Display info"). */
function parsePanel(text: string): { width: number; height: number; format: PixelFormat } {
  const m = /^(\d{1,4})x(\d{1,4}):([a-z0-9-]+)$/.exec(text.trim())
  const format = PIXEL_FORMAT_NAMES.find((name) => name === m?.[3])
  const width = Number(m?.[1])
  const height = Number(m?.[2])
  if (!m || format === undefined || !(width >= 1 && width <= 2048 && height >= 1 && height <= 2048)) {
    throw new UsageError(
      `--panel "${text}" is not WIDTHxHEIGHT:FORMAT with sides 1-2048 and a format of ${PIXEL_FORMAT_NAMES.join(', ')}, e.g. 800x480:palette7`,
    )
  }
  return { width, height, format }
}

/**
 * Runs the simulated device; resolves with the process exit code. `io` defaults to the process's streams.
 */
export async function runDevice(
  argv: string[],
  io: DeviceIo = { stdout: process.stdout, stderr: process.stderr },
  env: Record<string, string | undefined> = process.env,
): Promise<number> {
  let options: DeviceOptions | 'help'
  try {
    options = parseOptions(argv, env)
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
