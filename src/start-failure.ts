import type { Config } from './config/schema.ts'
import { DataDirInUse } from './store/data-lock.ts'

/*
 * The one line main.ts logs when the daemon cannot start: what failed, and the setting to change.
 */

/** The settings that give a listener its port, in the order the listeners start. */
const PORT_SETTINGS = ['MQTT_PORT', 'HTTP_PORT'] as const

/** Names the setting (or settings) whose port `port` is, e.g. `MQTT_PORT`. */
function portOwners(port: number | undefined, config: Config): string[] {
  return PORT_SETTINGS.filter((name) => port !== undefined && config[name] === port)
}

/** A start failure in plain words: the port and the setting that owns it, DATA_DIR, or a generic line. */
export function describeStartFailure(err: unknown, config: Config): string {
  const e = err as NodeJS.ErrnoException & { port?: number }
  if (e.syscall === 'listen') {
    const owners = portOwners(e.port, config)
    const port = e.port ?? '?'
    if (owners.length === 2)
      return `cannot listen: MQTT_PORT and HTTP_PORT are both ${port}; give each its own port`
    const owner = owners[0]
    if (e.code === 'EADDRINUSE') {
      return owner === undefined
        ? `cannot listen: port ${port} is in use (MQTT_PORT or HTTP_PORT)`
        : `cannot listen: port ${port} (${owner}) is in use by another program; stop it or set ${owner} to a free port`
    }
    if (e.code === 'EACCES') {
      return `cannot listen: port ${port}${owner ? ` (${owner})` : ''} needs privileges (use a port above 1023)`
    }
    return `cannot listen (${e.code ?? 'error'}): check MQTT_HOST and HTTP_HOST`
  }
  if (err instanceof DataDirInUse) return err.message
  if (e.path !== undefined)
    return `cannot use DATA_DIR ${config.DATA_DIR} (${e.code ?? 'error'} on ${e.path})`
  return 'start failed'
}
