import { readFile } from 'node:fs/promises'
import { connect, type MqttClient } from 'mqtt'
import sharp from 'sharp'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectDevice, type TestDevice } from '../support/device.ts'
import { type StartedBridge, startBridgeFor } from '../support/ha.ts'
import { discoveryProblems, discoveryTopics } from '../support/ha-discovery-rules.ts'
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * Home Assistant's side of issue 12: a real Mosquitto as Home Assistant's broker, an mqtt.js MQTT 5 client
 * standing in for Home Assistant, and displays on the bridge's embedded broker.
 */

interface Seen {
  topic: string
  payload: Buffer
}

/** Home Assistant as the bridge meets it: an MQTT 5 client that reads everything under the two prefixes. */
interface FakeHa {
  client: MqttClient
  messages: Seen[]
  /** The first message on `topic` after index `from` that passes `match`. */
  next(topic: string, match?: (payload: Buffer) => boolean, from?: number): Promise<Buffer>
  json(
    topic: string,
    match?: (body: Record<string, unknown>) => boolean,
    from?: number,
  ): Promise<Record<string, unknown>>
  publish(topic: string, payload: string): Promise<void>
}

async function connectHa(url: string): Promise<FakeHa> {
  const client = connect(url, { protocolVersion: 5, clientId: 'fake-home-assistant', reconnectPeriod: 0 })
  const messages: Seen[] = []
  const waiters = new Set<() => void>()
  client.on('message', (topic, payload) => {
    messages.push({ topic, payload })
    for (const w of [...waiters]) w()
  })
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
  })
  await client.subscribeAsync(['homeassistant/#', 'pico/#'], { qos: 1 })
  const next = (topic: string, match: (p: Buffer) => boolean = () => true, from = 0) =>
    new Promise<Buffer>((resolve) => {
      const look = () => {
        const hit = messages.slice(from).find((m) => m.topic === topic && match(m.payload))
        if (!hit) return false
        waiters.delete(look)
        resolve(hit.payload)
        return true
      }
      if (!look()) waiters.add(look)
    })
  const parse = (p: Buffer) => (p.length > 0 ? (JSON.parse(p.toString()) as Record<string, unknown>) : null)
  return {
    client,
    messages,
    next,
    async json(topic, match = () => true, from = 0) {
      return parse(await next(topic, (p) => parse(p) !== null && match(parse(p)!), from))!
    },
    async publish(topic, payload) {
      await client.publishAsync(topic, payload, { qos: 1 })
    },
  }
}

type Component = Record<string, unknown> & { platform: string; unique_id: string }

describe('Home Assistant', () => {
  let mosquitto: RunningMosquitto
  let bridge: StartedBridge
  let ha: FakeHa
  let kitchen: TestDevice
  const config = 'homeassistant/device/pico_kitchen/config'
  const cmps = async () =>
    (await ha.json(config, (b) => 'rssi' in (b.cmps as object))).cmps as Record<string, Component>

  beforeAll(async () => {
    mosquitto = await startMosquitto('allow_anonymous true')
    ha = await connectHa(mosquitto.url)
    bridge = await startBridgeFor({ HA_MQTT_URL: mosquitto.url, HTTP_PORT: 0, DEMO_STEP_MS: 20 })
    kitchen = await connectDevice(bridge.mqttUrl, 'kitchen')
    await kitchen.client.publishAsync(
      'pico/kitchen/info',
      JSON.stringify({ fw: '1.4.0', rssi: -61, heap_free: 81234, battery_v: 3.9 }),
      { qos: 1, retain: true },
    )
  })

  afterAll(async () => {
    await kitchen?.close()
    await bridge?.stop()
    await ha?.client.endAsync()
    await mosquitto?.stop()
  })

  it('describes each display and the bridge in one retained device message each, as Home Assistant requires', async () => {
    const display = await ha.json(config, (b) => 'rssi' in (b.cmps as object))
    const bridgeConfig = await ha.json('homeassistant/device/pico_bridge/config')
    const ids = new Set<string>()
    const pkg = JSON.parse(await readFile('package.json', 'utf8')) as { version: string; homepage?: string }
    for (const body of [display, bridgeConfig]) {
      expect(discoveryProblems(body, ids)).toEqual([])
      expect((body.dev as Record<string, unknown>).name).toEqual(expect.any(String))
      // The origin is this software at its released version; a support URL only once package.json has one.
      expect(body.o).toEqual(
        pkg.homepage
          ? { name: 'pico-a1111-bridge', sw: pkg.version, url: pkg.homepage }
          : { name: 'pico-a1111-bridge', sw: pkg.version },
      )
      for (const c of Object.values(body.cmps as Record<string, Component>))
        expect(['text', 'image', 'sensor', 'button']).toContain(c.platform)
    }
    expect(bridgeConfig.dev).toMatchObject({ identifiers: ['pico_bridge'], sw_version: pkg.version })
    expect(display.dev).toMatchObject({
      via_device: 'pico_bridge',
      sw_version: '1.4.0',
      model: expect.stringContaining('240x240'),
    })
    expect(display.availability).toEqual([
      { topic: 'pico/bridge/ha/availability' },
      { topic: 'pico/kitchen/ha/availability' },
    ])
    expect(display.availability_mode).toBe('all')
    const c = display.cmps as Record<string, Component>
    expect(c.prompt).toMatchObject({
      platform: 'text',
      max: 255,
      command_topic: 'pico/kitchen/ha/set/prompt',
    })
    expect(c.picture).toMatchObject({
      platform: 'image',
      content_type: 'image/png',
      image_topic: 'pico/kitchen/ha/picture',
    })
    expect(c.status).toMatchObject({ platform: 'sensor', json_attributes_topic: 'pico/kitchen/ha/status' })
    expect(c.progress).toMatchObject({ platform: 'sensor', unit_of_measurement: '%' })
    expect(c.again).toMatchObject({ platform: 'button', command_topic: 'pico/kitchen/ha/set/again' })
    expect(c.cancel).toMatchObject({ platform: 'button', command_topic: 'pico/kitchen/ha/set/cancel' })
    for (const key of ['rssi', 'heap_free', 'battery_v', 'fw'])
      expect(c[key]).toMatchObject({
        platform: 'sensor',
        entity_category: 'diagnostic',
        state_topic: 'pico/kitchen/ha/info',
      })
    expect(JSON.parse((await ha.next('pico/kitchen/ha/info')).toString())).toMatchObject({
      rssi: -61,
      fw: '1.4.0',
    })
    expect((await ha.next('pico/bridge/ha/availability')).toString()).toBe('online')
    expect((await ha.next('pico/kitchen/ha/availability')).toString()).toBe('online')
    expect(await ha.json('pico/bridge/ha/state')).toMatchObject({
      generators_up: expect.any(Number),
      queue: 0,
    })
  })

  it('turns the text entity into a job whose status, progress and picture reach Home Assistant', async () => {
    const c = await cmps()
    const from = ha.messages.length
    const frames = kitchen.frames.length
    await ha.publish(c.prompt!.command_topic as string, 'a lighthouse at dusk')
    const [frame] = (await kitchen.waitForFrames(frames + 1)).slice(frames)
    const status = c.status!.state_topic as string
    // The Progress sensor moves in percent while it generates.
    await ha.json(
      status,
      (b) => b.state === 'generating' && (b.progress as number) > 0 && (b.progress as number) < 100,
      from,
    )
    const done = await ha.json(status, (b) => b.state === 'done', from)
    expect(done).toMatchObject({ progress: 100, frame_id: frame!.frameId, seed: expect.any(Number) })
    expect((await ha.next(c.prompt!.state_topic as string, () => true, from)).toString()).toBe(
      'a lighthouse at dusk',
    )

    // A picture of one colour would match too easily: the demo draws the prompt's words on a gradient.
    const colours = new Set<number>()
    for (let i = 0; i < frame!.pixels.length; i += 2) colours.add(frame!.pixels.readUInt16BE(i))
    expect(colours.size).toBeGreaterThan(100)
    const png = await ha.next(c.picture!.image_topic as string, () => true, from)
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true })
    expect([info.width, info.height]).toEqual([frame!.width, frame!.height])
    let mismatches = 0
    for (let i = 0; i < frame!.width * frame!.height; i++) {
      const v = frame!.pixels.readUInt16BE(i * 2)
      const [r, g, b] = [data[i * info.channels]!, data[i * info.channels + 1]!, data[i * info.channels + 2]!]
      if (r >> 3 !== v >> 11 || g >> 2 !== ((v >> 5) & 0x3f) || b >> 3 !== (v & 0x1f)) mismatches++
    }
    expect(mismatches).toBe(0)
  })

  it('shows a one-bit e-paper display’s picture at its own size, in black and white as it shows it', async () => {
    const attic = await connectDevice(bridge.mqttUrl, 'attic')
    try {
      let from = ha.messages.length
      await attic.client.publishAsync(
        'pico/attic/info',
        JSON.stringify({ panel: { width: 200, height: 96, format: 'mono' } }),
        { qos: 1, retain: true },
      )
      const model = (b: Record<string, unknown>) => (b.dev as Record<string, unknown>).model
      const body = await ha.json(
        'homeassistant/device/pico_attic/config',
        (b) => model(b) !== 'Pico display',
        from,
      )
      expect(model(body)).toBe('Pico display 200x96 mono')
      from = ha.messages.length
      await ha.publish('pico/attic/ha/set/prompt', 'an owl on a beam')
      const [frame] = await attic.waitForFrames(1)
      expect(frame).toMatchObject({ format: 'mono', width: 200, height: 96 })
      const png = await ha.next('pico/attic/ha/picture', () => true, from)
      const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true })
      expect([info.width, info.height]).toEqual([200, 96])
      const rowBytes = Math.ceil(frame!.width / 8)
      let white = 0
      let mismatches = 0
      for (let y = 0; y < frame!.height; y++)
        for (let x = 0; x < frame!.width; x++) {
          const bit = (frame!.pixels[y * rowBytes + (x >> 3)]! >> (7 - (x & 7))) & 1
          white += bit
          const i = (y * info.width + x) * info.channels
          const shown = [data[i]!, data[i + 1]!, data[i + 2]!]
          if (shown.some((v) => v !== (bit ? 255 : 0))) mismatches++
        }
      expect(mismatches).toBe(0)
      // Dithered words on a gradient: both inks, plenty of each.
      expect(white).toBeGreaterThan(1000)
      expect(white).toBeLessThan(200 * 96 - 1000)
    } finally {
      await attic.close()
    }
  })

  it('makes the picture again with a new seed, and cancels a running job, from the buttons', async () => {
    const c = await cmps()
    const status = c.status!.state_topic as string
    const first = await ha.json(status, (b) => b.state === 'done')
    let from = ha.messages.length
    await ha.publish(c.again!.command_topic as string, 'PRESS')
    const again = await ha.json(status, (b) => b.state === 'done', from)
    expect(again.job).not.toBe(first.job)
    // A new seed (the first was A1111's pick too: two equal ones are a 1 in 2^32 chance), the same prompt.
    expect(again.seed).toEqual(expect.any(Number))
    expect(again.seed).not.toBe(first.seed)
    expect((await ha.next(c.prompt!.state_topic as string, () => true, from)).toString()).toBe(
      'a lighthouse at dusk',
    )

    from = ha.messages.length
    await kitchen.prompt({ prompt: 'a long one', steps: 150 })
    await ha.json(status, (b) => b.state === 'generating', from)
    // Another display's prompt waits behind it: the bridge's Queue length says so, and 0 again once it ran.
    const porch = await connectDevice(bridge.mqttUrl, 'porch')
    await porch.prompt('a porch in the rain')
    await ha.json('pico/porch/ha/status', (b) => b.state === 'queued' && b.position === 1, from)
    expect(await ha.json('pico/bridge/ha/state', (b) => b.queue === 1, from)).toMatchObject({
      generators_up: 1,
      generators: 1,
    })
    await ha.publish(c.cancel!.command_topic as string, 'PRESS')
    expect(await ha.json(status, (b) => b.state === 'cancelled', from)).toMatchObject({ reason: 'requested' })
    await porch.waitForStatus((s) => s.state === 'done')
    await ha.json('pico/bridge/ha/state', (b) => b.queue === 0, from)
    await porch.close()
  })

  it('gives a display a diagnostic sensor only for what its info has said, and keeps it', async () => {
    const base = ['again', 'cancel', 'picture', 'progress', 'prompt', 'status']
    const porchConfig = 'homeassistant/device/pico_porch/config'
    const keys = (body: Record<string, unknown>) => Object.keys(body.cmps as object).sort()
    // Porch (the test above) sent a prompt and never an info: no diagnostic sensor.
    expect(keys(await ha.json(porchConfig))).toEqual(base)
    const porch = await connectDevice(bridge.mqttUrl, 'porch')
    let from = ha.messages.length
    await porch.client.publishAsync('pico/porch/info', JSON.stringify({ rssi: -70 }), { qos: 1 })
    const withRssi = await ha.json(porchConfig, () => true, from)
    expect(keys(withRssi)).toEqual([...base, 'rssi'].sort())
    expect(JSON.parse((await ha.next('pico/porch/ha/info', () => true, from)).toString())).toEqual({
      rssi: -70,
    })
    from = ha.messages.length
    await porch.client.publishAsync('pico/porch/info', JSON.stringify({ battery_v: 3.7 }), { qos: 1 })
    // A sensor once reported stays (Home Assistant shows it unknown rather than dropping it).
    expect(keys(await ha.json(porchConfig, () => true, from))).toEqual([...base, 'battery_v', 'rssi'].sort())
    await porch.close()
  })

  it('shows the last error on the bridge device', async () => {
    const from = ha.messages.length
    await kitchen.client.publishAsync('pico/kitchen/prompt', JSON.stringify({ prompt: 'x', steps: 'many' }), {
      qos: 1,
    })
    const state = await ha.json('pico/bridge/ha/state', (b) => b.last_error !== 'none', from)
    expect(state.last_error).toMatch(/^E_BAD_PROMPT: /)
  })

  it('names only topics that exist: a Home Assistant starting now finds each one retained, and the bridge reads each command topic', async () => {
    const display = await ha.json(config, (b) => 'rssi' in (b.cmps as object))
    const bridgeConfig = await ha.json('homeassistant/device/pico_bridge/config')
    const read = new Set([...discoveryTopics(display).read, ...discoveryTopics(bridgeConfig).read])
    expect(read.size).toBe(7)
    const late = connect(mosquitto.url, {
      protocolVersion: 5,
      clientId: 'late-home-assistant',
      reconnectPeriod: 0,
    })
    const retained = new Map<string, Buffer>()
    const all = new Promise<void>((resolve) =>
      late.on('message', (topic, payload, packet) => {
        if (packet.retain && payload.length > 0) retained.set(topic, payload)
        if ([...read].every((t) => retained.has(t))) resolve()
      }),
    )
    await late.subscribeAsync([...read], { qos: 1 })
    await all
    await late.endAsync()
    expect(retained.get('pico/kitchen/ha/availability')!.toString()).toBe('online')
    expect(retained.get('pico/kitchen/ha/picture')!.subarray(1, 4).toString()).toBe('PNG')
    // Every command topic discovery names is one the bridge acts on (the tests above and below press them).
    expect(discoveryTopics(display).command).toEqual(
      new Set(['prompt', 'again', 'cancel'].map((c) => `pico/kitchen/ha/set/${c}`)),
    )
    expect(discoveryTopics(bridgeConfig).command.size).toBe(0)
  })

  it('shows a refused prompt as an error on the Status sensor', async () => {
    const from = ha.messages.length
    await ha.publish('pico/kitchen/ha/set/prompt', '   ')
    const status = await ha.json('pico/kitchen/ha/status', (b) => b.state === 'error', from)
    expect(status).toMatchObject({ error_code: 'E_BAD_PROMPT', error: expect.any(String) })
  })

  it('sends discovery again when Home Assistant says online', async () => {
    const from = ha.messages.length
    await ha.publish('homeassistant/status', 'online')
    await ha.next(config, (p) => p.length > 0, from)
    await ha.next('homeassistant/device/pico_bridge/config', (p) => p.length > 0, from)
  })

  it('remembers displays across a restart and empties the discovery of a forgotten one', async () => {
    const hall = await connectDevice(bridge.mqttUrl, 'hall')
    // The firmware's first message after it subscribes (docs/protocol.md, "Display info").
    await hall.client.publishAsync('pico/hall/info', JSON.stringify({ fw: '1.4.0' }), {
      qos: 1,
      retain: true,
    })
    const hallConfig = await ha.json(
      'homeassistant/device/pico_hall/config',
      (b) => 'fw' in (b.cmps as object),
    )
    // It said its firmware only: that one diagnostic sensor, none for what it did not say.
    expect(Object.keys(hallConfig.cmps as object)).toContain('fw')
    expect(Object.keys(hallConfig.cmps as object)).not.toContain('rssi')
    await hall.close()
    // Taken before the restart: the new bridge may speak to Home Assistant before restart() returns.
    const from = ha.messages.length
    await bridge.restart()
    await ha.next('homeassistant/device/pico_hall/config', (p) => p.length > 0, from)
    const res = await fetch(`http://127.0.0.1:${bridge.httpPort}/api/v1/devices/hall`, { method: 'DELETE' })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ device: 'hall', forgotten: true })
    await ha.next('homeassistant/device/pico_hall/config', (p) => p.length === 0, from)
    // Its entities' retained state goes too, so nothing of it is left on the broker.
    for (const what of ['picture', 'status', 'prompt', 'info', 'availability'])
      await ha.next(`pico/hall/ha/${what}`, (p) => p.length === 0, from)
    const again = await fetch(`http://127.0.0.1:${bridge.httpPort}/api/v1/devices/hall`, { method: 'DELETE' })
    expect(again.status).toBe(404)
  })

  it('keeps the displays working while Home Assistant’s broker is down', async () => {
    // The restart above gave the display a new bridge; it connects to the new one.
    await kitchen.close()
    kitchen = await connectDevice(bridge.mqttUrl, 'kitchen')
    await mosquitto.stop()
    const frames = kitchen.frames.length
    await kitchen.prompt('a frame without Home Assistant')
    await kitchen.waitForFrames(frames + 1)
    await kitchen.waitForStatus((s) => s.state === 'done')
  })

  it('reconnects by itself when Home Assistant’s broker is back, and tells it everything again', async () => {
    // The same address, an empty broker: nothing retained survived (the test broker keeps no files).
    mosquitto = await startMosquitto('allow_anonymous true', { port: mosquitto.port })
    await ha.client.endAsync(true)
    ha = await connectHa(mosquitto.url)
    // Within the link's reconnect period (5 s), then discovery, availability and the last picture.
    const body = await ha.json(config)
    expect(discoveryProblems(body)).toEqual([])
    expect((await ha.next('pico/bridge/ha/availability')).toString()).toBe('online')
    expect((await ha.next('pico/kitchen/ha/availability')).toString()).toBe('online')
    expect((await ha.next('pico/kitchen/ha/picture')).subarray(1, 4).toString()).toBe('PNG')
    const from = ha.messages.length
    await ha.publish('pico/kitchen/ha/set/prompt', 'back again')
    await ha.json('pico/kitchen/ha/status', (b) => b.state === 'done', from)
  })
})
