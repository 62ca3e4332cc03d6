import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import type { IncomingMessage } from 'node:http'
import { createRequire } from 'node:module'
import { createServer as createNetServer, type Server } from 'node:net'
import type { Duplex } from 'node:stream'
import { createServer as createTlsServer } from 'node:tls'
import { createWebSocketStream, WebSocketServer } from 'ws'
import type { ListeningPorts } from './port.ts'

/**
 * node:http through require(): an ES import of it reads every export, the lazy WebSocket among them, and
 * so loads Node's own copy of undici with web streams and web crypto (3 MB of heap, 745 KB of source) that
 * the daemon never uses, and that every full collection then marks (issue 14).
 */
const { createServer: createHttpServer } = createRequire(import.meta.url)(
  'node:http',
) as typeof import('node:http')

/*
 * The broker's listeners: plain MQTT (MQTT_PORT), MQTT over TLS (MQTT_TLS_PORT with MQTT_TLS_CERT and
 * MQTT_TLS_KEY) and MQTT over WebSocket (MQTT_WS_PORT, path /mqtt). Each hands its connections, as byte
 * streams, to the same `accept` (Aedes' handle); which listener a client came through changes nothing else.
 */

/** The WebSocket listener's path, the one mqtt.js and Home Assistant's panels use by default. */
export const WS_PATH = '/mqtt'

/** A TLS client that has not finished its handshake by then is dropped (Node's default is 120 s). */
const TLS_HANDSHAKE_TIMEOUT_MS = 10_000

/** MQTT's fixed header: a type byte and up to four Remaining Length bytes (MQTT 3.1.1 section 2.2). */
const FIXED_HEADER_MAX_BYTES = 5

export interface ListenerOptions {
  host: string
  port: number
  tls?: { port: number; certFile: string; keyFile: string } | undefined
  wsPort?: number | undefined
  maxPacketBytes: number
}

/** A cert or key file of the TLS listener that cannot be used; main.ts exits 78 on it, naming the setting. */
export class TlsFileError extends Error {
  override readonly name = 'TlsFileError'
  readonly setting: 'MQTT_TLS_CERT' | 'MQTT_TLS_KEY' | 'MQTT_TLS_CERT and MQTT_TLS_KEY'
  constructor(setting: TlsFileError['setting'], reason: string, options?: ErrorOptions) {
    super(`${setting}: ${reason}`, options)
    this.setting = setting
  }
}

export interface Listeners {
  /** Binds every listener that is set; the ports are the real ones when the settings said 0. */
  listen(): Promise<ListeningPorts>
  /** Stops taking connections (those already made stay until the broker ends them). */
  close(): void
}

/**
 * @param accept gets every new connection, with the HTTP request for a WebSocket (Aedes reads the
 *   client's address from it)
 */
export function createListeners(
  options: ListenerOptions,
  accept: (stream: Duplex, req?: IncomingMessage) => void,
): Listeners {
  const servers: { close(): unknown }[] = []

  async function bind(server: Server, port: number): Promise<number> {
    servers.push(server)
    server.listen({ host: options.host, port })
    await Promise.race([
      once(server, 'listening'),
      once(server, 'error').then(([err]) => {
        throw err
      }),
    ])
    const address = server.address()
    return typeof address === 'object' && address ? address.port : port
  }

  async function tlsServer(tls: NonNullable<ListenerOptions['tls']>): Promise<Server> {
    const [cert, key] = await Promise.all([
      readPem(tls.certFile, 'MQTT_TLS_CERT'),
      readPem(tls.keyFile, 'MQTT_TLS_KEY'),
    ])
    try {
      const server = createTlsServer({ cert, key, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS }, (socket) =>
        accept(socket),
      )
      // A failed handshake (a plain MQTT client on the TLS port, a port scanner) is the client's problem.
      server.on('tlsClientError', (_err, socket) => socket.destroy())
      return server
    } catch (err) {
      throw new TlsFileError(
        'MQTT_TLS_CERT and MQTT_TLS_KEY',
        `not a certificate and its private key (${(err as Error).message})`,
        { cause: err },
      )
    }
  }

  function wsServer(): Server {
    const http = createHttpServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' })
      res.end(`MQTT over WebSocket: connect to ${WS_PATH}\n`)
    })
    const wss = new WebSocketServer({
      server: http,
      path: WS_PATH,
      // One WebSocket message carries one MQTT packet for mqtt.js and browsers: bounding it bounds what ws
      // buffers before packet-guard.ts sees a byte.
      maxPayload: options.maxPacketBytes + FIXED_HEADER_MAX_BYTES,
    })
    wss.on('connection', (socket, req) => {
      const stream = createWebSocketStream(socket)
      // A WebSocket closed abruptly errors its stream; Aedes learns of it through 'close'.
      stream.on('error', destroyStream)
      accept(stream, req)
    })
    servers.push(wss)
    return http
  }

  return {
    async listen() {
      const net = createNetServer((socket) => accept(socket))
      const ports: ListeningPorts = { port: await bind(net, options.port) }
      if (options.tls) ports.tlsPort = await bind(await tlsServer(options.tls), options.tls.port)
      if (options.wsPort !== undefined) ports.wsPort = await bind(wsServer(), options.wsPort)
      return ports
    },
    close() {
      for (const server of servers.splice(0)) server.close()
    },
  }
}

/** One listener for every stream rather than a closure per connection. */
function destroyStream(this: Duplex): void {
  this.destroy()
}

async function readPem(path: string, setting: 'MQTT_TLS_CERT' | 'MQTT_TLS_KEY'): Promise<Buffer> {
  let pem: Buffer
  try {
    pem = await readFile(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw new TlsFileError(setting, `${path} cannot be read (${code})`, { cause: err })
  }
  if (!pem.includes('-----BEGIN ')) throw new TlsFileError(setting, `${path} is not a PEM file`)
  return pem
}
