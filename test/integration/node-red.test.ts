import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type MqttClient } from 'mqtt'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice, type TestDevice } from '../support/device.ts'

/*
 * docs/node-red-flow.json in a real Node-RED 4 (embedded through its documented API, RED.init/start, with a
 * scratch userDir and no HTTP at all), against a bridge on loopback: a prompt on the flow's own topic makes a
 * frame on the display, and the display's status comes out of the flow as one line per step.
 */

interface NodeRed {
  init(server: unknown, settings: Record<string, unknown>): void
  start(): Promise<void>
  stop(): Promise<void>
}

let bridge: TestBridge
let device: TestDevice
let watcher: MqttClient
let userDir: string
let red: NodeRed
const lines: string[] = []

beforeAll(async () => {
  bridge = await startBridge({ DEMO_STEP_MS: 5 })
  device = await connectDevice(bridge.mqttUrl, 'kitchen')
  // A first picture, so the display has a retained status before the flow starts.
  await device.prompt('a first picture')
  await device.waitForStatus((s) => s.state === 'done')
  watcher = connect(bridge.mqttUrl, { protocolVersion: 4, reconnectPeriod: 0 })
  await new Promise<void>((resolve, reject) => {
    watcher.once('connect', () => resolve())
    watcher.once('error', reject)
  })
  watcher.on('message', (_topic, payload) => lines.push(payload.toString()))
  await watcher.subscribeAsync('home/kitchen-display/status', { qos: 1 })

  // What a user does in the editor: point the flow's broker node at the bridge.
  const flow = JSON.parse(
    await readFile(new URL('../../docs/node-red-flow.json', import.meta.url), 'utf8'),
  ) as Record<string, unknown>[]
  const broker = flow.find((n) => n.type === 'mqtt-broker')!
  broker.broker = '127.0.0.1'
  broker.port = String(bridge.mqttPort)
  userDir = await mkdtemp(join(tmpdir(), 'pab-node-red-'))
  await writeFile(join(userDir, 'flows.json'), JSON.stringify(flow))
  red = createRequire(import.meta.url)('node-red') as NodeRed
  red.init(createServer(), {
    userDir,
    flowFile: 'flows.json',
    httpAdminRoot: false,
    httpNodeRoot: false,
    credentialSecret: false,
    logging: { console: { level: 'error', metrics: false, audit: false } },
  })
  await red.start()
}, 60_000)

afterAll(async () => {
  await red?.stop()
  await watcher?.endAsync()
  await device?.close()
  await bridge?.stop()
  if (userDir) await rm(userDir, { recursive: true, force: true })
})

/** Resolves once `lines` (from index `from`) holds a line that passes `match`. */
function line(match: (l: string) => boolean, from = 0): Promise<void> {
  return new Promise((resolve) => {
    const look = () => {
      if (!lines.slice(from).some(match)) return
      watcher.off('message', look)
      resolve()
    }
    watcher.on('message', look)
    look()
  })
}

it('takes a prompt in and puts the display’s status out', async () => {
  // The flow's two mqtt in nodes share one connection that subscribes to both at once: the retained status
  // of beforeAll's picture coming out of the flow says the prompt topic is subscribed too.
  await line((l) => l === 'done')
  const from = lines.length
  const frames = device.frames.length
  await watcher.publishAsync('home/kitchen-display/prompt', 'a lighthouse at dusk', { qos: 1 })
  await line((l) => l === 'done', from)
  const [frame] = (await device.waitForFrames(frames + 1)).slice(frames)
  expect(frame).toMatchObject({ width: 240, height: 240, preview: false })
  expect(lines.slice(from).some((l) => /^generating( \d+%)?$/.test(l))).toBe(true)
})
