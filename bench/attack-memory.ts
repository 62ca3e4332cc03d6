import { once } from 'node:events'
import { connect, createConnection, type Socket } from 'node:net'
import { pathToFileURL } from 'node:url'
import { connectAsync, MqttClient } from 'mqtt'
import { connectPacket, remainingLength, subscribePacket } from '../test/support/raw-mqtt.ts'
import {
  type Bench,
  type Bridge,
  daemonNote,
  machineInfo,
  mb,
  memoryKb,
  sleep,
  startBridge,
  table,
  within,
} from './lib.ts'

/*
 * The daemon's resident memory under the attacks of issue 10 ("Found by attacking it"), each against a
 * fresh daemon started as `npm start` runs it, with the shipped limits: VmRSS before, the highest VmRSS
 * seen while the attack runs (read every 50 ms), and VmRSS once the attacker has gone and the daemon has
 * had a moment; then whether a display that behaves still gets a frame for its prompt. Run alone (after
 * `npm run build`): node bench/attack-memory.ts [--quick]
 */

const SETTLE_MS = 1_500
const HEALTHY_WAIT_MS = 60_000
/** A little under MQTT_MAX_PACKET's default (262,144), as the attack that held 264 MB sent. */
const PARTIAL_PAYLOAD = 262_000

function publishPacket(
  topic: string,
  payload: Buffer,
  qos: 0 | 1 | 2,
  options: { id?: number; retain?: boolean } = {},
) {
  const t = Buffer.from(topic)
  const head = Buffer.alloc(2)
  head.writeUInt16BE(t.length)
  const id = Buffer.alloc(2)
  id.writeUInt16BE(options.id ?? 1)
  const body = Buffer.concat([head, t, qos > 0 ? id : Buffer.alloc(0), payload])
  const first = 0x30 | (qos << 1) | (options.retain ? 1 : 0)
  return Buffer.concat([Buffer.from([first]), remainingLength(body.length), body])
}

/** CONNECT with clean session 0 (a persistent session), keepalive 0. */
function persistentConnect(clientId: string): Buffer {
  const packet = connectPacket(clientId)
  // connectPacket writes flags 0x02 (clean session) right after the protocol name and level.
  const flags = packet.indexOf(Buffer.from([4, 0x02, 0, 0]))
  packet[flags + 1] = 0x00
  return packet
}

interface Attacker {
  sockets: Socket[]
  /** Sockets the daemon closed (the limits at work). */
  closedByDaemon: number
  /** Bytes the daemon sent the attacker (a get flood's frames). */
  bytesIn: number
}

async function rawClient(port: number, attacker: Attacker, hello?: Buffer): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port })
  socket.on('error', () => undefined)
  let ours = false
  socket.once('close', () => {
    if (!ours) attacker.closedByDaemon++
  })
  ;(socket as Socket & { endByUs?: () => void }).endByUs = () => {
    ours = true
    socket.destroy()
  }
  await once(socket, 'connect')
  attacker.sockets.push(socket)
  if (hello) socket.write(hello)
  // Reads (and counts, and drops) what the daemon sends, so its answers do not pile up in its buffers.
  socket.on('data', (data: Buffer) => {
    attacker.bytesIn += data.length
  })
  return socket
}

/**
 * PINGREQ, then waits for PINGRESP (or the close): the daemon has handled everything the socket sent before.
 * Not for a socket whose frames may hold the bytes D0 00 by chance.
 */
function processed(socket: Socket): Promise<void> {
  if (socket.destroyed) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      socket.off('data', onData)
      socket.off('close', done)
      resolve()
    }
    const onData = (data: Buffer) => data.includes(PINGRESP) && done()
    socket.on('data', onData)
    socket.once('close', done)
    socket.write(Buffer.from([0xc0, 0x00]))
  })
}
const PINGRESP = Buffer.from([0xd0, 0x00])

function endAll(attacker: Attacker): void {
  for (const s of attacker.sockets) (s as Socket & { endByUs?: () => void }).endByUs?.()
}

/** Writes, and waits for the socket to take more (or to be closed by the daemon). */
function drained(socket: Socket, data: Buffer): Promise<void> {
  if (socket.destroyed || socket.write(data)) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done)
      socket.off('close', done)
      resolve()
    }
    socket.once('drain', done)
    socket.once('close', done)
  })
}

type Attack = (bridge: Bridge, port: number, attacker: Attacker, quick: boolean) => Promise<string>

const ATTACKS: { name: string; run: Attack }[] = [
  {
    name: 'partial PUBLISH, never finished',
    async run(_bridge, port, attacker, quick) {
      const n = quick ? 200 : 1000
      const packet = publishPacket('free/part', Buffer.alloc(PARTIAL_PAYLOAD, 7), 0)
      const part = packet.subarray(0, packet.length - 1)
      for (let i = 0; i < n; i += 50) {
        await Promise.all(
          Array.from({ length: Math.min(50, n - i) }, async (_, k) => {
            const s = await rawClient(port, attacker, connectPacket(`part-${i + k}`))
            await drained(s, part)
          }),
        )
      }
      return `${n} connections, each all but the last byte of a ${(packet.length / 1024).toFixed(0)} KB PUBLISH (keepalive 0)`
    },
  },
  {
    name: 'QoS 2 PUBLISH without PUBREL',
    async run(_bridge, port, attacker, quick) {
      const n = quick ? 5 : 20
      const each = 100
      const payload = Buffer.alloc(200_000, 2)
      await Promise.all(
        Array.from({ length: n }, async (_, c) => {
          const s = await rawClient(port, attacker, persistentConnect(`qos2-${c}`))
          for (let id = 1; id <= each && !s.destroyed; id++)
            await drained(s, publishPacket('free/qos2', payload, 2, { id }))
          await processed(s)
        }),
      )
      return `${n} persistent sessions, each up to ${each} x 200 KB QoS 2 PUBLISH with fresh ids, no PUBREL`
    },
  },
  {
    name: 'retained flood',
    async run(_bridge, port, attacker, quick) {
      const n = quick ? 10_000 : 50_000
      const s = await rawClient(port, attacker, connectPacket('retainer'))
      const payload = Buffer.alloc(2048, 3)
      for (let i = 0; i < n; i++)
        await drained(s, publishPacket(`free/kept/${i}`, payload, 0, { retain: true }))
      // Also long topics with a short payload: a topic is stored with its message.
      const long = 'x'.repeat(60_000)
      for (let i = 0; i < (quick ? 300 : 1000); i++)
        await drained(s, publishPacket(`free/${long}/${i}`, Buffer.from('1'), 0, { retain: true }))
      await processed(s)
      return `${n} x 2 KB retained on distinct topics, then ${quick ? 300 : 1000} retains with 60 KB topics`
    },
  },
  {
    name: 'prompts on invented ids',
    async run(_bridge, port, attacker, quick) {
      const n = quick ? 10_000 : 50_000
      const s = await rawClient(port, attacker, connectPacket('inventor'))
      for (let i = 0; i < n; i++) {
        const malformed = i % 2 === 1
        await drained(s, publishPacket(`pico/inv-${i}/prompt`, Buffer.from(malformed ? '{' : 'a cat'), 0))
      }
      await processed(s)
      return `${n} prompts, each on an id of its own, half of them malformed, from one connection`
    },
  },
  {
    name: 'subscriptions under 60 KB ids',
    async run(_bridge, port, attacker, quick) {
      // Four to a SUBSCRIBE would fit MQTT_MAX_PACKET; one each, 64 per client.
      const clients = quick ? 10 : 60
      const id = 'y'.repeat(60_000)
      await Promise.all(
        Array.from({ length: clients }, async (_, c) => {
          const sub = await rawClient(port, attacker, connectPacket(`subber-${c}`))
          for (let f = 0; f < 64 && !sub.destroyed; f++)
            await drained(sub, subscribePacket(`pico/${id}${c}-${f}/frame`, 0, f + 1))
          await processed(sub)
        }),
      )
      return `${clients} clients x 64 filters under 60 KB device ids (${((clients * 64 * 60) / 1024).toFixed(0)} MB of filters)`
    },
  },
  {
    name: 'get flood',
    async run(bridge, port, attacker, quick) {
      // A display with a frame, watched by the flooder, which asks for it again and again.
      const display = await connectAsync(bridge.url, {
        protocolVersion: 4,
        reconnectPeriod: 0,
        clientId: 'shown',
      })
      await display.subscribeAsync('pico/shown/status', { qos: 0 })
      // Done: the frame is stored, so a get has something to send again.
      const done = new Promise((resolve) =>
        display.on('message', (_t, p) => JSON.parse(String(p)).state === 'done' && resolve(p)),
      )
      await display.publishAsync('pico/shown/prompt', 'a lake', { qos: 1 })
      await done
      await display.endAsync()
      const s = await rawClient(
        port,
        attacker,
        Buffer.concat([connectPacket('getter'), subscribePacket('pico/shown/frame', 0)]),
      )
      // Its subscription brings it the frame once (115 KB); the flood starts after that.
      await within(
        new Promise<void>((resolve) => {
          const check = () => (attacker.bytesIn >= 115_200 ? resolve() : setTimeout(check, 20))
          check()
        }),
        10_000,
        'the frame on subscribing',
      )
      const from = attacker.bytesIn
      // A few at a time with a pause between, as the attack that found it sent them: gets that all come at
      // once are answered with one copy anyway (one on its way is not queued again).
      const n = quick ? 2_000 : 10_000
      const get = publishPacket('pico/shown/get', Buffer.alloc(0), 0)
      for (let i = 0; i < n; i += 5) {
        await drained(s, Buffer.concat(Array(5).fill(get)))
        await sleep(2)
      }
      await sleep(SETTLE_MS)
      const back = (attacker.bytesIn - from) / 1024 / 1024
      const sent = (n * get.length) / 1024 / 1024
      return (
        `${n} QoS 0 gets (${(sent * 1024).toFixed(0)} KB), 5 every 2 ms, from a client that watches the frame; ` +
        `it got ${back.toFixed(1)} MB of frames for them (x${(back / sent).toFixed(0)})`
      )
    },
  },
]

/**
 * Prompt to frame for a display that behaves, under an id of its own (a display with a stored frame would get
 * that one again on subscribing); undefined when no frame came within HEALTHY_WAIT_MS.
 */
async function healthyFrameMs(port: number, id: string): Promise<number | undefined> {
  // From another loopback address: the attacker's address may have spent its RATE_LIMIT_SENDER, as it should.
  const client = new MqttClient(
    () => createConnection({ host: '127.0.0.1', port, localAddress: '127.0.0.2' }),
    {
      protocolVersion: 4,
      reconnectPeriod: 0,
      clientId: id,
    },
  )
  try {
    await new Promise((resolve, reject) => {
      client.once('connect', resolve)
      client.once('error', reject)
    })
    await client.subscribeAsync(`pico/${id}/frame`, { qos: 1 })
    const started = performance.now()
    const got = new Promise((resolve) => client.once('message', resolve))
    await client.publishAsync(`pico/${id}/prompt`, 'a heron', { qos: 1 })
    await within(got, HEALTHY_WAIT_MS, 'healthy frame')
    return performance.now() - started
  } catch {
    return undefined
  } finally {
    client.end(true)
  }
}

const shownMs = (t: number | undefined) =>
  t === undefined ? `none in ${HEALTHY_WAIT_MS / 1000} s` : `${t.toFixed(0)} ms`

export const attackMemory: Bench = async ({ quick }) => {
  const rows: (string | number)[][] = []
  const notes: string[] = []
  for (const attack of ATTACKS) {
    const bridge = await startBridge({ DEMO_STEP_MS: '0', RATE_LIMIT: '30' })
    const attacker: Attacker = { sockets: [], closedByDaemon: 0, bytesIn: 0 }
    let code: number | null = null
    try {
      const { mqttPort } = await bridge.daemon.listening
      await sleep(SETTLE_MS)
      const healthyBefore = await healthyFrameMs(mqttPort, 'healthy-before')
      await sleep(SETTLE_MS)
      const before = (await memoryKb(bridge.pid)).rssKb
      let peak = before
      const sampler = setInterval(() => {
        memoryKb(bridge.pid).then(
          (m) => {
            peak = Math.max(peak, m.rssKb)
          },
          () => undefined,
        )
      }, 50)
      const started = performance.now()
      const what = await within(attack.run(bridge, mqttPort, attacker, quick), 180_000, attack.name)
      const seconds = (performance.now() - started) / 1000
      await sleep(SETTLE_MS)
      const during = Math.max(peak, (await memoryKb(bridge.pid)).rssKb)
      const open = attacker.sockets.filter((s) => !s.destroyed).length
      endAll(attacker)
      await sleep(SETTLE_MS)
      clearInterval(sampler)
      const after = (await memoryKb(bridge.pid)).rssKb
      const healthy = await healthyFrameMs(mqttPort, 'healthy-after')
      rows.push([
        attack.name,
        mb(before),
        mb(during),
        mb(after),
        `${attacker.closedByDaemon} of ${attacker.sockets.length}`,
        open,
        `${shownMs(healthyBefore)} / ${shownMs(healthy)}`,
      ])
      const got = (attacker.bytesIn / 1024 / 1024).toFixed(1)
      notes.push(
        `- ${attack.name}: ${what}; sent in ${seconds.toFixed(1)} s; the daemon sent back ${got} MB.`,
      )
    } finally {
      endAll(attacker)
      code = await bridge.stop()
    }
    notes.push(`  ${daemonNote(bridge, code)}`)
  }
  return {
    title: 'Daemon memory under attack (issue 10)',
    method:
      'each attack against a fresh daemon (dist/bin, --max-semi-space-size=1 --no-concurrent-marking, shipped limits, loopback); VmRSS ' +
      'from /proc before, the highest seen while attacking (every 50 ms) and 1.5 s after the attacker left',
    body: [
      table(
        [
          'attack',
          'VmRSS before (MB)',
          'peak while attacking (MB)',
          'after it left (MB)',
          'attacker sockets the daemon closed',
          'still open at the end',
          'healthy display, prompt to frame: before / after',
        ],
        rows,
      ),
      '',
      ...notes,
    ].join('\n'),
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await attackMemory({ quick: process.argv.includes('--quick') })
  process.stdout.write(
    `${await machineInfo()}\n\n## ${result.title}\n\nmethod: ${result.method}\n\n${result.body}\n`,
  )
  process.exit(0)
}
