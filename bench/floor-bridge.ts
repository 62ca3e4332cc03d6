import { connectAsync } from 'mqtt'
import { Pool } from 'undici'
import { configSchema } from '../src/config/schema.ts'
import { panelFromConfig, renderFrame } from '../src/image/panel.ts'

/*
 * The floor of the frame path as a process of its own (bench/latency.ts starts it): the least a bridge must do
 * for a prompt, and nothing else. It takes a prompt from Mosquitto, fetches the picture from A1111, parses the
 * JSON, decodes the base64, resizes and packs with the project's own renderFrame, and publishes the 12 bands
 * (QoS 1, as the bridge sends them) and a `done` status back through Mosquitto. No queue, no journal, no
 * statuses before the frame, no frame file. Its CPU time from /proc is "the same work done in one process".
 *
 *   node bench/floor-bridge.ts MQTT_URL A1111_URL
 *
 * Prints `ready` once subscribed, then one JSON line per frame with its phases in milliseconds.
 */

const [mqttUrl, a1111Url] = process.argv.slice(2)
if (!mqttUrl || !a1111Url) {
  process.stderr.write('usage: node bench/floor-bridge.ts MQTT_URL A1111_URL\n')
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
const frameIds = new Map<string, number>()

client.on('message', (topic, payload) => {
  serve(topic, payload).catch((err: unknown) => {
    process.stderr.write(`floor: ${(err as Error).stack ?? err}\n`)
  })
})
await client.subscribeAsync('pico/+/prompt', { qos: 1 })
process.stdout.write('ready\n')

async function serve(topic: string, payload: Buffer): Promise<void> {
  const t0 = performance.now()
  const deviceId = topic.split('/')[1]!
  const res = await pool.request({
    method: 'POST',
    path: '/sdapi/v1/txt2img',
    headers: HEADERS,
    body: JSON.stringify({ ...DEFAULTS, prompt: payload.toString('utf8') }),
  })
  const text = await res.body.text()
  if (res.statusCode !== 200) throw new Error(`A1111 answered ${res.statusCode}`)
  const t1 = performance.now()
  const json = JSON.parse(text) as { images: string[] }
  const png = Buffer.from(json.images[0]!, 'base64')
  const t2 = performance.now()
  const frameId = ((frameIds.get(deviceId) ?? 0) + 1) & 0xffff
  frameIds.set(deviceId, frameId)
  const { chunks } = await renderFrame(png, PANEL, { frameId, preview: false })
  const t3 = performance.now()
  for (const chunk of chunks) client.publish(`pico/${deviceId}/frame`, chunk, { qos: 1 })
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
  void Promise.allSettled([client.endAsync(), pool.close()]).then(() => process.exit(0))
})
