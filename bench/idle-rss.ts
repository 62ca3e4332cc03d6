import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { startFakeA1111 } from '../test/support/fake-a1111.ts'
import { connectPacket, subscribePacket } from '../test/support/raw-mqtt.ts'
import {
  type Bench,
  type Bridge,
  daemonNote,
  mb,
  memoryKb,
  openFilesLimit,
  sleep,
  startBridge,
  table,
  within,
} from './lib.ts'

/*
 * Resident memory of the daemon with many idle displays. mqtt.js clients cost several MB each in this
 * process, so the displays are raw MQTT 3.1.1 sessions (test/support/raw-mqtt.ts): CONNECT with keepalive 0,
 * SUBSCRIBE to the device's frame and status topics at QoS 1, then idle while still reading their socket.
 */

const BATCH = 50
const SETTLE_MS = 2_000
const TARGET_MB = 150
/** CONNACK (4 bytes) and two SUBACKs (5 bytes each). */
const HANDSHAKE_BYTES = 14

async function idleSession(port: number, i: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port })
  // A reset when the daemon stops is expected; the session is simply gone (it is counted as closed).
  socket.on('error', () => socket.destroy())
  await once(socket, 'connect')
  socket.write(
    Buffer.concat([
      connectPacket(`idle-${i}`),
      subscribePacket(`pico/dev${i}/frame`, 1, 1),
      subscribePacket(`pico/dev${i}/status`, 1, 2),
    ]),
  )
  let seen = Buffer.alloc(0)
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (data: Buffer) => {
      if (seen.length >= HANDSHAKE_BYTES) return
      seen = Buffer.concat([seen, data])
      if (seen.length < HANDSHAKE_BYTES) return
      // CONNACK accepted, then SUBACKs granting QoS 1 (MQTT 3.1.1 sections 3.2 and 3.9).
      const ok = seen[0] === 0x20 && seen[3] === 0 && seen[4] === 0x90 && seen[8] === 1 && seen[9] === 0x90
      if (ok && seen[13] === 1) resolve()
      else reject(new Error(`session ${i}: unexpected handshake ${seen.toString('hex')}`))
    })
    socket.once('close', () => reject(new Error(`session ${i}: closed during the handshake`)))
  })
  return socket
}

export const idleRss: Bench = async () => {
  // Cheap enough (a few seconds) that the quick run checks the target too.
  const count = 1000
  const fdLimit = await openFilesLimit()
  let bridge: Bridge | undefined
  const sockets: Socket[] = []
  const readings: (string | number)[][] = []
  let connectS = 0
  let finalKb = Number.NaN
  let exitCode: number | null = null
  let closedEarly = 0
  // Configured as in production (an A1111 URL), so the idle daemon has the same modules loaded.
  const fake = await startFakeA1111()
  try {
    bridge = await startBridge({ A1111_BASE_URL: fake.url })
    const pid = bridge.pid
    const port = Number(new URL(bridge.url).port)
    readings.push(['right after start', 0, `${mb((await memoryKb(pid)).rssKb)} MB`])
    await sleep(SETTLE_MS)
    const idle = await memoryKb(pid)
    readings.push([`no clients, after ${SETTLE_MS / 1000} s`, 0, `${mb(idle.rssKb)} MB`])
    const started = performance.now()
    for (let i = 0; i < count; i += BATCH) {
      const batch = Array.from({ length: Math.min(BATCH, count - i) }, (_, k) => idleSession(port, i + k))
      sockets.push(...(await within(Promise.all(batch), 15_000, `connecting sessions ${i}..`)))
      if ((i + BATCH) % 250 === 0 && i + BATCH < count) {
        readings.push(['while connecting', sockets.length, `${mb((await memoryKb(pid)).rssKb)} MB`])
      }
    }
    connectS = (performance.now() - started) / 1000
    await sleep(SETTLE_MS)
    closedEarly = sockets.filter((s) => s.closed || s.destroyed).length
    const full = await memoryKb(pid)
    finalKb = full.rssKb
    readings.push([`${count} idle sessions, after ${SETTLE_MS / 1000} s`, count, `${mb(full.rssKb)} MB`])
    readings.push(['peak (VmHWM)', count, `${mb(full.hwmKb)} MB`])
    readings.push(['per session', 1, `${((full.rssKb - idle.rssKb) / count).toFixed(1)} KB`])
  } finally {
    // DISCONNECT (MQTT 3.1.1 section 3.14), then close.
    for (const s of sockets) s.end(Buffer.from([0xe0, 0x00]))
    exitCode = (await bridge?.stop()) ?? null
    for (const s of sockets) s.destroy()
    await fake.close()
  }

  const met = finalKb / 1024 < TARGET_MB
  const verdict = `${mb(finalKb)} MB with ${count} idle devices: target < ${TARGET_MB} MB ${met ? 'met' : 'NOT met'}.`
  return {
    title: `Idle RSS: ${count} subscribed devices`,
    method:
      `daemon spawned (A1111_BASE_URL = an idle fake); ${count} raw MQTT 3.1.1 sessions (keepalive 0, each subscribed to ` +
      `its own frame and status topics at QoS 1) connected in batches of ${BATCH}; VmRSS from /proc/<pid>/status ` +
      `after ${SETTLE_MS / 1000} s of quiet.`,
    body: [
      table(['when', 'sessions', 'daemon VmRSS'], readings),
      '',
      `- **${verdict}**`,
      `- Connecting took ${connectS.toFixed(1)} s; sessions closed by the daemon while idle: ${closedEarly}.`,
      `- Open-file limit (\`ulimit -n\`, inherited by the daemon): ${fdLimit}; each process needs about one ` +
        `descriptor per session, so it ${fdLimit > count + 100 ? 'does not limit' : 'LIMITS'} this run.`,
      `- ${daemonNote(bridge, exitCode)}`,
    ].join('\n'),
  }
}
