import { type FileHandle, mkdir, open } from 'node:fs/promises'
import { join } from 'node:path'
import { connectAsync } from 'mqtt'
import { Pool } from 'undici'
import { configSchema } from '../src/config/schema.ts'
import { panelFromConfig, renderFrame } from '../src/image/panel.ts'
import { writeFileAtomic } from '../src/store/atomic-file.ts'

/*
 * The floor of the frame path as a process of its own (bench/latency.ts starts it): the least a bridge must do
 * for a prompt, and nothing else. It takes a prompt from Mosquitto, fetches the picture from A1111, parses the
 * JSON, decodes the base64, resizes and packs with the project's own renderFrame, and publishes the 12 bands
 * (QoS 1, as the bridge sends them) and a `done` status back through Mosquitto. No queue, no journal, no
 * statuses before the frame, no frame file. Its CPU time from /proc is "the same work done in one process".
 *
 * Given a directory, it also writes to disk what the daemon writes for a frame, the same way, and nothing
 * more: a journal line made durable (fdatasync) before the txt2img goes out, the frame's file (pixels and
 * the source PNG) written with the project's writeFileAtomic once the bands are out, then the journal's end
 * line, and only then `done`. The two floors side by side say how much of the daemon's cost is its disk.
 *
 *   node bench/floor-bridge.ts MQTT_URL A1111_URL DEVICE_ID [DATA_DIR]
 *
 * Prints `ready` once subscribed, then one JSON line per frame with its phases in milliseconds.
 */

const [mqttUrl, a1111Url, deviceId, dataDir] = process.argv.slice(2)
if (!mqttUrl || !a1111Url || !deviceId) {
  process.stderr.write('usage: node bench/floor-bridge.ts MQTT_URL A1111_URL DEVICE_ID [DATA_DIR]\n')
  process.exit(64)
}

/** The settings' default panel, as the bridge in the same run has it: 240x240 RGB565 in 20-row bands. */
const PANEL = panelFromConfig(configSchema.parse({}))

/** The generation defaults (docs/protocol.md, "Prompts"), as the bridge sends them for a plain-text prompt. */
const DEFAULTS = {
  negative_prompt: '',
  seed: -1,
  steps: 20,
  cfg_scale: 7,
  width: 512,
  height: 512,
  batch_size: 1,
  n_iter: 1,
}
const HEADERS = { 'content-type': 'application/json', accept: 'application/json' }

const pool = new Pool(a1111Url, { connections: 1 })
const client = await connectAsync(mqttUrl, {
  clientId: `floor-bridge-${process.pid}`,
  protocolVersion: 4,
  clean: true,
  reconnectPeriod: 0,
})
let lastFrameId = 0
let journal: FileHandle | undefined
if (dataDir) {
  await mkdir(join(dataDir, 'frames'), { recursive: true })
  journal = await open(join(dataDir, 'jobs.jsonl'), 'a')
}

client.on('message', (_topic, payload) => {
  serve(payload).catch((err: unknown) => {
    process.stderr.write(`floor: ${(err as Error).stack ?? err}\n`)
  })
})
// Its own display only: the bench runs two floors on one Mosquitto.
await client.subscribeAsync(`pico/${deviceId}/prompt`, { qos: 1 })
process.stdout.write('ready\n')

async function serve(payload: Buffer): Promise<void> {
  const t0 = performance.now()
  const prompt = payload.toString('utf8')
  const jobId = `floor-${performance.now().toFixed(3)}`
  if (journal) {
    await journal.appendFile(
      `${JSON.stringify({ op: 'add', id: jobId, deviceId, prompt, ts: new Date() })}\n`,
    )
    await journal.datasync()
  }
  const res = await pool.request({
    method: 'POST',
    path: '/sdapi/v1/txt2img',
    headers: HEADERS,
    body: JSON.stringify({ ...DEFAULTS, prompt }),
  })
  const text = await res.body.text()
  if (res.statusCode !== 200) throw new Error(`A1111 answered ${res.statusCode}`)
  const t1 = performance.now()
  const json = JSON.parse(text) as { images: string[] }
  const png = Buffer.from(json.images[0]!, 'base64')
  const t2 = performance.now()
  const frameId = (lastFrameId + 1) & 0xffff
  lastFrameId = frameId
  const { pixels, chunks } = await renderFrame(png, PANEL, { frameId, preview: false })
  const t3 = performance.now()
  for (const chunk of chunks) client.publish(`pico/${deviceId}/frame`, chunk, { qos: 1 })
  if (journal) {
    const header = Buffer.from(JSON.stringify({ deviceId, frameId, jobId, prompt, sourceBytes: png.length }))
    const length = Buffer.alloc(4)
    length.writeUInt32BE(header.length)
    const path = join(dataDir!, 'frames', `${deviceId}.frame`)
    await writeFileAtomic(path, [Buffer.from('PFS1'), length, header, pixels, png])
    await journal.appendFile(`${JSON.stringify({ op: 'end', id: jobId, frameId })}\n`)
  }
  const done = {
    state: 'done',
    job: `floor-${frameId}`,
    frame_id: frameId,
    seed: 42,
    ts: new Date().toISOString(),
  }
  client.publish(`pico/${deviceId}/status`, JSON.stringify(done), { qos: 1 })
  const t4 = performance.now()
  const phases = { fetchMs: t1 - t0, parseMs: t2 - t1, renderMs: t3 - t2, publishMs: t4 - t3 }
  process.stdout.write(`${JSON.stringify(phases)}\n`)
}

process.once('SIGTERM', () => {
  void Promise.allSettled([client.endAsync(), pool.close(), journal?.close()]).then(() => process.exit(0))
})
