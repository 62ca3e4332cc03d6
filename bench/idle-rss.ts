import { once } from 'node:events'
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { startFakeA1111 } from '../test/support/fake-a1111.ts'
import { startMosquitto } from '../test/support/mosquitto.ts'
import { connectPacket, subscribePacket } from '../test/support/raw-mqtt.ts'
import { type HeapSummary, heapGrowth, summarizeHeap } from './heap-snapshot.ts'
import { LAYERS, type LayerResult, layersTable, startLayer } from './idle-layers.ts'
import {
  type Bench,
  type Bridge,
  daemonNodeOptions,
  daemonNote,
  machineInfo,
  mb,
  memoryKb,
  openFilesLimit,
  sleep,
  startBridge,
  table,
  within,
} from './lib.ts'

/*
 * Resident memory of the daemon with many idle displays, and what each one more costs (issue 14, goal 3):
 * VmRSS at 1,000 and at 5,000 sessions, the same for Mosquitto, and (in a full run) a heap snapshot of a
 * second daemon at 0, 1,000 and 5,000 sessions, summed by constructor, for where the bytes go. mqtt.js
 * clients cost several MB each in this process, so the displays are raw MQTT 3.1.1 sessions
 * (test/support/raw-mqtt.ts): CONNECT with keepalive 0, SUBSCRIBE to the device's frame and status topics
 * at QoS 1, then idle while still reading their socket. Run alone: node bench/idle-rss.ts [--quick]
 */

const BATCH = 50
const SETTLE_MS = 2_000
const TARGET_MB = 150
const FIRST = 1_000
const MANY = 5_000
const TARGET_MARGINAL_KB = 10
/** Room for MANY sessions past MQTT_MAX_CONNECTIONS' default of 2,000. */
const ROOM = { MQTT_MAX_CONNECTIONS: String(MANY + 100) }
/** The daemon's line when it gave memory back after a surge of connections (src/broker/memory-release.ts). */
const RELEASED = 'memory released after a surge of connections'

/** CONNACK (4 bytes) and two SUBACKs (5 bytes each). */
const HANDSHAKE_BYTES = 14

export async function idleSession(port: number, i: number): Promise<Socket> {
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

/** Opens sessions `from` up to `to` in batches, adding them to `sockets`. */
async function connectSessions(port: number, from: number, to: number, sockets: Socket[]): Promise<void> {
  for (let i = from; i < to; i += BATCH) {
    const batch = Array.from({ length: Math.min(BATCH, to - i) }, (_, k) => idleSession(port, i + k))
    sockets.push(...(await within(Promise.all(batch), 15_000, `connecting sessions ${i}..`)))
  }
}

function closeSessions(sockets: Socket[]): void {
  // DISCONNECT (MQTT 3.1.1 section 3.14), then close.
  for (const s of sockets) s.end(Buffer.from([0xe0, 0x00]))
}

/** Mosquitto's pid, found by its scratch directory on its command line. */
export async function mosquittoPid(dir: string): Promise<number> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')
    if (cmdline.includes('mosquitto') && cmdline.includes(dir)) return Number(entry)
  }
  throw new Error('mosquitto process not found')
}

const kbPer = (fromKb: number, toKb: number, sessions: number) => ((toKb - fromKb) / sessions).toFixed(1)

/** The daemon: VmRSS with no sessions, FIRST, then MANY. */
async function daemonRss() {
  let bridge: Bridge | undefined
  const sockets: Socket[] = []
  const readings: (string | number)[][] = []
  const kb = { idle: Number.NaN, first: Number.NaN, many: Number.NaN, hwm: Number.NaN }
  let connectS = 0
  let exitCode: number | null = null
  let closedEarly = 0
  const releases: string[] = []
  // Configured as in production (an A1111 URL), so the idle daemon has the same modules loaded.
  const fake = await startFakeA1111()
  try {
    bridge = await startBridge({ A1111_BASE_URL: fake.url, ...ROOM })
    const pid = bridge.pid
    const port = Number(new URL(bridge.url).port)
    readings.push(['right after start', 0, `${mb((await memoryKb(pid)).rssKb)} MB`])
    await sleep(SETTLE_MS)
    kb.idle = (await memoryKb(pid)).rssKb
    readings.push([`no clients, after ${SETTLE_MS / 1000} s`, 0, `${mb(kb.idle)} MB`])
    const started = performance.now()
    await connectSessions(port, 0, FIRST, sockets)
    connectS = (performance.now() - started) / 1000
    await sleep(SETTLE_MS)
    readings.push([
      `${FIRST} idle sessions, after ${SETTLE_MS / 1000} s`,
      FIRST,
      `${mb((await memoryKb(pid)).rssKb)} MB`,
    ])
    // The daemon gives back what V8 grew once the connections have been quiet a while (memory-release.ts).
    releases.push(await released(bridge, FIRST))
    kb.first = (await memoryKb(pid)).rssKb
    readings.push([`${FIRST} idle sessions, memory released`, FIRST, `${mb(kb.first)} MB`])
    await connectSessions(port, FIRST, MANY, sockets)
    await sleep(SETTLE_MS)
    readings.push([
      `${MANY} idle sessions, after ${SETTLE_MS / 1000} s`,
      MANY,
      `${mb((await memoryKb(pid)).rssKb)} MB`,
    ])
    releases.push(await released(bridge, MANY - FIRST))
    const full = await memoryKb(pid)
    kb.many = full.rssKb
    kb.hwm = full.hwmKb
    closedEarly = sockets.filter((s) => s.closed || s.destroyed).length
    readings.push([`${MANY} idle sessions, memory released`, MANY, `${mb(kb.many)} MB`])
    readings.push(['peak (VmHWM)', MANY, `${mb(kb.hwm)} MB`])
  } finally {
    closeSessions(sockets)
    exitCode = (await bridge?.stop()) ?? null
    for (const s of sockets) s.destroy()
    await fake.close()
  }
  return { readings, kb, connectS, closedEarly, releases, note: daemonNote(bridge, exitCode) }
}

/** Waits for the daemon's release after `connections` new ones; says how long its pause was. */
async function released(bridge: Bridge, connections: number): Promise<string> {
  const line = await within(
    bridge.daemon.line((l) => l.msg === RELEASED && Number(l.connections) >= connections),
    60_000,
    `the release after ${connections} connections`,
  )
  await sleep(SETTLE_MS)
  return `${line.ms} ms after ${line.connections} connections`
}

/** Mosquitto with the same sessions: VmRSS with none, FIRST and MANY. */
async function mosquittoRss() {
  const mosquitto = await startMosquitto('allow_anonymous true', { logTypes: 'error warning' })
  const sockets: Socket[] = []
  const kb = { idle: Number.NaN, first: Number.NaN, many: Number.NaN }
  try {
    const pid = await mosquittoPid(mosquitto.dir)
    kb.idle = (await memoryKb(pid)).rssKb
    await connectSessions(mosquitto.port, 0, FIRST, sockets)
    await sleep(SETTLE_MS)
    kb.first = (await memoryKb(pid)).rssKb
    await connectSessions(mosquitto.port, FIRST, MANY, sockets)
    await sleep(SETTLE_MS)
    kb.many = (await memoryKb(pid)).rssKb
  } finally {
    closeSessions(sockets)
    for (const s of sockets) s.destroy()
    await mosquitto.stop()
  }
  return kb
}

/** A second daemon, heap snapshots (after V8's full GC) at 0, FIRST and MANY sessions: where the bytes go. */
async function daemonHeap(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pab-heap-'))
  const flags = [daemonNodeOptions().NODE_OPTIONS, '--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${dir}`]
  let bridge: Bridge | undefined
  const sockets: Socket[] = []
  const snapshot = async (pid: number) => {
    const before = new Set(await readdir(dir))
    process.kill(pid, 'SIGUSR2')
    // The file appears when writing begins; it is whole once its size stops growing.
    let last = -1
    for (const deadline = performance.now() + 120_000; performance.now() < deadline; ) {
      await sleep(500)
      const file = (await readdir(dir)).find((f) => f.endsWith('.heapsnapshot') && !before.has(f))
      if (!file) continue
      const { size } = await stat(join(dir, file))
      if (size === last && size > 0) return join(dir, file)
      last = size
    }
    throw new Error('no heap snapshot within 120 s')
  }
  try {
    bridge = await startBridge({
      A1111_BASE_URL: 'http://127.0.0.1:9',
      ...ROOM,
      NODE_OPTIONS: flags.join(' ').trim(),
    })
    const port = Number(new URL(bridge.url).port)
    await sleep(SETTLE_MS)
    const at0 = await summarizeHeap(await snapshot(bridge.pid))
    await connectSessions(port, 0, FIRST, sockets)
    await sleep(SETTLE_MS)
    const atFirst = await summarizeHeap(await snapshot(bridge.pid))
    await connectSessions(port, FIRST, MANY, sockets)
    await sleep(SETTLE_MS)
    const atMany = await summarizeHeap(await snapshot(bridge.pid))
    const per = (bytes: number, n: number) => (bytes / n).toFixed(0)
    const marginal = heapGrowth(atFirst, atMany, 14)
    const firstGrowth = heapGrowth(at0, atFirst, 8)
    return [
      table(
        ['heap (after full GC)', 'sessions', 'MB', 'bytes per session from the row above'],
        [
          ['no sessions', 0, mb(at0.totalBytes / 1024), ''],
          [
            `${FIRST} sessions`,
            FIRST,
            mb(atFirst.totalBytes / 1024),
            per(atFirst.totalBytes - at0.totalBytes, FIRST),
          ],
          [
            `${MANY} sessions`,
            MANY,
            mb(atMany.totalBytes / 1024),
            per(atMany.totalBytes - atFirst.totalBytes, MANY - FIRST),
          ],
        ],
      ),
      '',
      `What each session past the first ${FIRST} adds to the heap, by constructor (from ${FIRST} to ${MANY}):`,
      '',
      table(
        ['type and name', 'bytes per session', 'objects per session'],
        marginal.map((r) => [
          `\`${r.key}\``,
          per(r.bytes, MANY - FIRST),
          (r.count / (MANY - FIRST)).toFixed(2),
        ]),
      ),
      '',
      `What the first ${FIRST} sessions add (one-time costs show as bytes not proportional to sessions):`,
      '',
      table(
        ['type and name', `bytes for ${FIRST}`, 'objects'],
        firstGrowth.map((r) => [`\`${r.key}\``, r.bytes, r.count]),
      ),
    ].join('\n')
  } finally {
    closeSessions(sockets)
    await bridge?.stop()
    for (const s of sockets) s.destroy()
    await rm(dir, { recursive: true, force: true })
  }
}

/**
 * The same sessions held by a plain socket server, bare Aedes and the embedded broker (idle-layers.ts); in a
 * full run also what the embedded broker holds beyond bare Aedes at MANY sessions, by constructor.
 */
export async function layers(snapshots: boolean): Promise<string> {
  const results: LayerResult[] = []
  const dir = await mkdtemp(join(tmpdir(), 'pab-layers-'))
  const heaps: Partial<Record<string, HeapSummary>> = {}
  try {
    for (const kind of LAYERS) {
      const layer = await startLayer(kind)
      const sockets: Socket[] = []
      try {
        const none = await layer.measure()
        await connectSessions(layer.port, 0, FIRST, sockets)
        await sleep(SETTLE_MS)
        const first = await layer.measure()
        await connectSessions(layer.port, FIRST, MANY, sockets)
        await sleep(SETTLE_MS)
        results.push({ kind, none, first, many: await layer.measure() })
        if (snapshots && kind !== 'net') heaps[kind] = await summarizeHeap(await layer.snapshot(dir))
      } finally {
        closeSessions(sockets)
        for (const s of sockets) s.destroy()
        await layer.stop()
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  const out = [layersTable(results, FIRST, MANY)]
  if (heaps.aedes && heaps.bridge) {
    const added = heapGrowth(heaps.aedes, heaps.bridge, 12)
    out.push(
      '',
      `What the embedded broker holds beyond bare Aedes with ${MANY} sessions, by constructor (per session):`,
      '',
      table(
        ['type and name', 'bytes per session', 'objects per session'],
        added.map((r) => [`\`${r.key}\``, (r.bytes / MANY).toFixed(0), (r.count / MANY).toFixed(2)]),
      ),
    )
  }
  return out.join('\n')
}

export const idleRss: Bench = async ({ quick }) => {
  const fdLimit = await openFilesLimit()
  const d = await daemonRss()
  const m = await mosquittoRss()
  const layered = await layers(!quick)
  const heap = quick ? undefined : await daemonHeap()
  const marginal = (d.kb.many - d.kb.first) / (MANY - FIRST)
  const mMarginal = (m.many - m.first) / (MANY - FIRST)
  const met = d.kb.first / 1024 < TARGET_MB
  const verdict = `${mb(d.kb.first)} MB with ${FIRST} idle devices: target < ${TARGET_MB} MB ${met ? 'met' : 'NOT met'}.`
  return {
    title: `Idle RSS: ${FIRST} and ${MANY} subscribed devices, next to Mosquitto`,
    method:
      `daemon spawned (A1111_BASE_URL = an idle fake); raw MQTT 3.1.1 sessions (keepalive 0, each subscribed to ` +
      `its own frame and status topics at QoS 1) connected in batches of ${BATCH}, to ${FIRST} and then ${MANY}; ` +
      `VmRSS from /proc/<pid>/status after ${SETTLE_MS / 1000} s of quiet; the same sessions against Mosquitto` +
      `${quick ? '' : '; a second daemon heap-snapshotted (--heapsnapshot-signal) at 0, 1,000 and 5,000 sessions'}.`,
    body: [
      table(['when', 'sessions', 'daemon VmRSS'], d.readings),
      '',
      table(
        ['VmRSS per session (KB)', `first ${FIRST} (from none)`, `marginal, ${FIRST} -> ${MANY}`],
        [
          ['bridge (embedded broker)', kbPer(d.kb.idle, d.kb.first, FIRST), marginal.toFixed(1)],
          ['Mosquitto', kbPer(m.idle, m.first, FIRST), mMarginal.toFixed(1)],
        ],
      ),
      '',
      `- **Marginal memory per idle display: ${marginal.toFixed(1)} KB** (goal <= ${TARGET_MARGINAL_KB} KB: ` +
        `${marginal <= TARGET_MARGINAL_KB ? 'met' : 'NOT met'}); Mosquitto ${mMarginal.toFixed(1)} KB, ` +
        `${(marginal / mMarginal).toFixed(1)}x.`,
      `- **${verdict}**`,
      `- VmRSS is read after the daemon's release of memory once the connections are quiet ` +
        `(src/broker/memory-release.ts; its pause: ${d.releases.join(', ')}); before it, V8 keeps the pages ` +
        `it grew during the surge (the rows 'after ${SETTLE_MS / 1000} s').`,
      `- Connecting ${FIRST} took ${d.connectS.toFixed(1)} s; sessions closed by the daemon while idle: ${d.closedEarly}.`,
      `- Open-file limit (\`ulimit -n\`, inherited by the daemon): ${fdLimit}; each process needs about one ` +
        `descriptor per session, so it ${fdLimit > MANY + 100 ? 'does not limit' : 'LIMITS'} this run.`,
      `- ${d.note}`,
      '',
      'Layer by layer, each server alone in a child process (--expose-gc; heap = V8 used heap after two full GCs, committed = V8 heap as committed then):',
      '',
      layered,
      ...(heap ? ['', heap] : []),
    ].join('\n'),
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await idleRss({ quick: process.argv.includes('--quick') })
  process.stdout.write(
    `${await machineInfo()}\n\n## ${result.title}\n\nmethod: ${result.method}\n\n${result.body}\n`,
  )
}
