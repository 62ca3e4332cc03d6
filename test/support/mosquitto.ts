import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { accessSync, constants, existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, connect as netConnect } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { delimiter, join } from 'node:path'

/*
 * A real Mosquitto for side-by-side tests: started with a config of the test's own on a free loopback port,
 * ready once it says it is running and a TCP connect succeeds, stopped and cleaned up by stop(). Debian puts
 * the broker in /usr/sbin, which is not on every PATH, and mosquitto_passwd in /usr/bin.
 */

export const MOSQUITTO_MISSING = 'mosquitto is not installed: apt-get install mosquitto mosquitto-clients'

function findProgram(name: string, extraDirs: readonly string[]): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...extraDirs].filter(Boolean)
  for (const dir of dirs) {
    const path = join(dir, name)
    try {
      accessSync(path, constants.X_OK)
      return path
    } catch {
      // not in this directory; try the next
    }
  }
  return null
}

/** The mosquitto binary; throws the one-line install hint when it is missing. */
export function mosquittoBinary(): string {
  const path = findProgram('mosquitto', ['/usr/sbin', '/usr/local/sbin'])
  if (!path) throw new Error(MOSQUITTO_MISSING)
  return path
}

/** mosquitto_passwd; throws the one-line install hint when it is missing. */
export function mosquittoPasswdBinary(): string {
  const path = findProgram('mosquitto_passwd', ['/usr/bin', '/usr/sbin'])
  if (!path) throw new Error(MOSQUITTO_MISSING)
  return path
}

/** `mosquitto_passwd [-c] [-H hash] -b FILE USER PASSWORD`: -c (make the file) when FILE is missing. */
export function mosquittoPasswd(file: string, user: string, password: string, hash?: 'sha512'): void {
  const create = existsSync(file) ? [] : ['-c']
  const args = [...create, ...(hash ? ['-H', hash] : []), '-b', file, user, password]
  const result = spawnSync(mosquittoPasswdBinary(), args, { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`mosquitto_passwd failed: ${result.stderr || result.stdout}`)
}

export interface RunningMosquitto {
  readonly port: number
  readonly url: string
  /** A scratch directory for the test's files, removed by stop(). */
  readonly dir: string
  /** Everything the broker logged so far. */
  output(): string
  stop(): Promise<void>
}

async function freePort(): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  server.close()
  await once(server, 'close')
  return port
}

/** Resolves once a TCP connection to the port succeeds; each refusal makes the next try. */
async function acceptsConnections(port: number, child: ChildProcess): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const socket = netConnect(port, '127.0.0.1')
    try {
      await once(socket, 'connect')
      socket.destroy()
      return
    } catch (err) {
      socket.destroy()
      if (attempt >= 50 || child.exitCode !== null) throw err
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
}

type Started = { ok: true; child: ChildProcess; log: () => string } | { ok: false; log: string }

async function launch(binary: string, confPath: string): Promise<Started> {
  const child = spawn(binary, ['-c', confPath], { stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  let seen = false
  const running = new Promise<boolean>((resolve) => {
    // The whole log is searched only until the line comes: after it, a busy broker's log grows by megabytes.
    const onData = (chunk: Buffer) => {
      log += chunk.toString('utf8')
      if (!seen && / running\s*$/m.test(log)) {
        seen = true
        resolve(true)
      }
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', () => resolve(false))
    child.once('error', (err) => {
      log += String(err)
      resolve(false)
    })
  })
  if (await running) return { ok: true, child, log: () => log }
  return { ok: false, log }
}

function logTypes(list = 'all'): string[] {
  const types = new Set(list.split(/\s+/).filter(Boolean))
  if (!types.has('all')) types.add('information')
  return [...types]
}

/**
 * Starts `mosquitto -c` with `config` (password_file, acl_file, allow_anonymous and so on) after a listener on
 * a free 127.0.0.1 port, no persistence and logging to stderr. `prepare` may write files into the scratch
 * directory first; the config may name them by their full path.
 */
export async function startMosquitto(
  config: string | ((dir: string) => Promise<string> | string),
  /**
   * `logTypes`: Mosquitto's log_type names, space-separated; `all` (the default) logs every packet, too much
   * for a benchmark. `information` is always among them: the start is known by its "running" line.
   */
  options: { port?: number; logTypes?: string } = {},
): Promise<RunningMosquitto> {
  const binary = mosquittoBinary()
  const dir = await mkdtemp(join(tmpdir(), 'mosquitto-test-'))
  let text: string
  try {
    text = typeof config === 'string' ? config : await config(dir)
  } catch (err) {
    await rm(dir, { recursive: true, force: true })
    throw err
  }
  // Another process can take the port between freePort() and mosquitto's bind: then try a new one.
  for (let attempt = 0; attempt < 3; attempt++) {
    // A given port: the same broker address again, as after a restart of the broker.
    const port = options.port ?? (await freePort())
    const confPath = join(dir, 'mosquitto.conf')
    await writeFile(
      confPath,
      [
        `listener ${port} 127.0.0.1`,
        'persistence false',
        'log_dest stderr',
        ...logTypes(options.logTypes).map((type) => `log_type ${type}`),
        // Started as root, Mosquitto drops to this user; the test's files belong to it.
        `user ${userInfo().username}`,
        text,
        '',
      ].join('\n'),
    )
    const started = await launch(binary, confPath)
    if (!started.ok) {
      if (/Address already in use/.test(started.log) && options.port === undefined) continue
      await rm(dir, { recursive: true, force: true })
      throw new Error(`mosquitto did not start:\n${started.log}`)
    }
    const { child } = started
    await acceptsConnections(port, child)
    let stopped: Promise<void> | undefined
    return {
      port,
      url: `mqtt://127.0.0.1:${port}`,
      dir,
      output: started.log,
      stop() {
        stopped ??= (async () => {
          if (child.exitCode === null && child.signalCode === null) {
            const exited = once(child, 'exit')
            child.kill('SIGTERM')
            await exited
          }
          await rm(dir, { recursive: true, force: true })
        })()
        return stopped
      },
    }
  }
  await rm(dir, { recursive: true, force: true })
  throw new Error('mosquitto found no free port in 3 tries')
}
