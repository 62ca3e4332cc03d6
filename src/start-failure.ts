import { AuthFileError } from './auth/auth-file-error.ts'
import { BrokerLoginRefused } from './broker/external-link.ts'
import { TlsFileError } from './broker/listeners.ts'
import { type Config, LISTENER_PORTS } from './config/schema.ts'
import { DataDirInUse } from './store/data-lock.ts'

/*
 * The one line main.ts logs when the daemon cannot start: what failed, and the setting to change.
 */

/** Names the setting (or settings) whose port `port` is, e.g. `MQTT_PORT`. */
function portOwners(port: number | undefined, config: Config): string[] {
  return LISTENER_PORTS.filter((name) => port !== undefined && config[name] === port)
}

/** A failure that settings or the files they name caused: main.ts exits 78 (EX_CONFIG) on it. */
export function isSettingsFailure(err: unknown): boolean {
  return err instanceof AuthFileError || err instanceof TlsFileError || err instanceof BrokerLoginRefused
}

/** Which setting names the file. */
function fileSetting(file: string, config: Config): string {
  if (file === config.MQTT_PASSWORD_FILE) return 'MQTT_PASSWORD_FILE'
  if (file === config.MQTT_ACL_FILE) return 'MQTT_ACL_FILE'
  return 'an access file'
}

/** A start failure in plain words: the port and the setting that owns it, DATA_DIR, or a generic line. */
export function describeStartFailure(err: unknown, config: Config): string {
  const e = err as NodeJS.ErrnoException & { port?: number }
  // The error names the file and the line (`FILE:LINE: reason`), never a hash or a password.
  if (err instanceof AuthFileError)
    return `cannot start: ${fileSetting(err.file, config)} ${err.message}; fix it (or unset the setting) and start again`
  if (err instanceof TlsFileError) return `cannot start the TLS listener: ${err.message}`
  if (err instanceof BrokerLoginRefused) return `cannot start: ${err.message}`
  if (e.syscall === 'listen') {
    const owners = portOwners(e.port, config)
    const port = e.port ?? '?'
    if (owners.length >= 2)
      return `cannot listen: ${owners.join(' and ')} are both ${port}; give each its own port`
    const owner = owners[0]
    if (e.code === 'EADDRINUSE') {
      return owner === undefined
        ? `cannot listen: port ${port} is in use (${LISTENER_PORTS.join(', ')})`
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
