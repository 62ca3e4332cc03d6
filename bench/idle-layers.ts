import { fork } from 'node:child_process'
import { createServer, type Socket } from 'node:net'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8'
import { Aedes } from 'aedes'
import { pino } from 'pino'
import { createBrokerAccess } from '../src/broker/access.ts'
import { createEmbeddedBroker } from '../src/broker/embedded.ts'
import { createTopics } from '../src/protocol/topics.ts'
import { mb, memoryKb, table } from './lib.ts'

/*
 * Where an idle display's memory goes, layer by layer (issue 14, goal 3). The same raw sessions (idle-rss.ts)
 * are held by three servers, each alone in a child process started with --expose-gc:
 *   net    a plain TCP server that answers the handshake with canned CONNACK and SUBACK bytes: Node's socket;
 *   aedes  Aedes 1.x with its defaults: what the MQTT broker library adds;
 *   bridge the embedded broker as the daemon builds it (limits, packet guard, access hooks, subscription
 *          index, presence): what the bridge adds on top.
 * Each reports V8's used and committed heap after two full GCs and VmRSS at FIRST and MANY sessions; VmRSS
 * follows the committed heap, which V8 grows during a surge of connections and keeps.
 */

type Kind = 'net' | 'aedes' | 'bridge'
export const LAYERS: Kind[] = ['net', 'aedes', 'bridge']

interface Reading {
  heapBytes: number
  /** V8's heap as committed (used or not), after the same GCs. */
  committedBytes: number
  /** Memory outside V8's heap that V8 knows of: Buffers' bytes above all. */
  externalBytes: number
  rssKb: number
}

/** CONNACK accepted, then two SUBACKs granting QoS 1 (packet ids 1 and 2), as idle-rss.ts's sessions expect. */
const HANDSHAKE = Buffer.from([0x20, 2, 0, 0, 0x90, 3, 0, 1, 1, 0x90, 3, 0, 2, 1])

async function serve(kind: Kind): Promise<number> {
  if (kind === 'net') {
    const held = new Set<Socket>()
    const server = createServer((socket) => {
      held.add(socket)
      socket.once('data', () => socket.write(HANDSHAKE))
      socket.on('data', () => {})
      socket.once('close', () => held.delete(socket))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return (server.address() as { port: number }).port
  }
  if (kind === 'aedes') {
    const broker = new Aedes()
    await broker.listen()
    const server = createServer((socket) => broker.handle(socket))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return (server.address() as { port: number }).port
  }
  const log = pino({ level: 'silent' })
  const access = createBrokerAccess(
    { baseTopic: 'pico', passwordFile: undefined, aclFile: undefined, allowAnonymous: true, adminUsers: [] },
    { log },
  )
  const { defaultBrokerLimits } = await import('../src/broker/limits.ts')
  const limits = { ...defaultBrokerLimits(), maxConnections: 1_000_000 }
  const broker = createEmbeddedBroker(
    { host: '127.0.0.1', port: 0, maxPacketBytes: 262_144, limits } as never,
    {
      ...{ log, topics: createTopics('pico'), access },
    },
  )
  await broker.open({ inbound: async () => {}, frameSubscribed() {} })
  return (await broker.listen()).port
}

async function reading(): Promise<Reading> {
  const gc = (globalThis as { gc?: () => void }).gc!
  gc()
  gc()
  const heap = getHeapStatistics()
  return {
    heapBytes: heap.used_heap_size,
    committedBytes: heap.total_heap_size,
    externalBytes: process.memoryUsage().external,
    rssKb: (await memoryKb(process.pid)).rssKb,
  }
}

/** The daemon's own V8 flags (package.json's start script), so the heap grows as it does there. */
export const DAEMON_FLAGS = ['--max-semi-space-size=1', '--no-concurrent-marking']

/** A layer's server in a child process: `measure()` after each step of sessions. */
export async function startLayer(kind: Kind, flags = DAEMON_FLAGS) {
  const execArgv = ['--expose-gc', ...flags]
  const child = fork(fileURLToPath(import.meta.url), ['--serve', kind], { execArgv })
  const next = () =>
    new Promise<unknown>((resolve, reject) => {
      child.once('message', resolve)
      child.once('exit', (code) => reject(new Error(`${kind} server exited with ${code}`)))
    })
  const port = (await next()) as number
  return {
    port,
    async measure(): Promise<Reading> {
      const answer = next()
      child.send('measure')
      return (await answer) as Reading
    },
    /** Writes a heap snapshot into `dir`; resolves with its path. */
    async snapshot(dir: string): Promise<string> {
      const answer = next()
      child.send({ snapshot: dir })
      return (await answer) as string
    },
    async stop(): Promise<void> {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    },
  }
}

export interface LayerResult {
  kind: Kind
  none: Reading
  first: Reading
  many: Reading
}

/** The per-session table: heap and RSS, from none to `first` and from `first` to `many`. */
export function layersTable(results: LayerResult[], first: number, many: number): string {
  const kb = (bytes: number, n: number) => (bytes / 1024 / n).toFixed(1)
  const names: Record<Kind, string> = {
    net: 'Node socket only (canned handshake)',
    aedes: 'Aedes 1.x, defaults',
    bridge: 'embedded broker (the bridge)',
  }
  return table(
    [
      'server',
      `heap KB/session, first ${first}`,
      `heap KB/session, ${first} -> ${many}`,
      `committed heap KB/session, ${first} -> ${many}`,
      `external KB/session, ${first} -> ${many}`,
      `VmRSS KB/session, ${first} -> ${many}`,
      `heap MB at ${many}`,
    ],
    results.map((r) => [
      names[r.kind],
      kb(r.first.heapBytes - r.none.heapBytes, first),
      kb(r.many.heapBytes - r.first.heapBytes, many - first),
      kb(r.many.committedBytes - r.first.committedBytes, many - first),
      kb(r.many.externalBytes - r.first.externalBytes, many - first),
      ((r.many.rssKb - r.first.rssKb) / (many - first)).toFixed(1),
      mb(r.many.heapBytes / 1024),
    ]),
  )
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const at = process.argv.indexOf('--serve')
  if (at >= 0) {
    const port = await serve(process.argv[at + 1] as Kind)
    process.on('message', (m: 'measure' | { snapshot: string }) => {
      if (m === 'measure') void reading().then((r) => process.send!(r))
      else process.send!(writeHeapSnapshot(`${m.snapshot}/${process.argv[at + 1]}.heapsnapshot`))
    })
    process.send!(port)
  }
}
