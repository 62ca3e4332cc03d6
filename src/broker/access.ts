import type { Logger } from 'pino'
import type { AclFile } from '../auth/acl.ts'
import { AuthFileError } from '../auth/auth-file-error.ts'
import {
  type FileWatch,
  type Reloaded,
  readAclFile,
  readPasswordFile,
  watchAclFile,
  watchPasswordFile,
} from '../auth/files.ts'
import type { PasswordFile } from '../auth/password-file.ts'
import { type Authorizer, createAuthorizer, type Session } from '../auth/policy.ts'

/*
 * The access rules the embedded broker applies now (README, "Security"): MQTT_PASSWORD_FILE and MQTT_ACL_FILE
 * read at start, where a bad line stops the daemon (exit 78, the file and line named), and read again when
 * a file changes or on SIGHUP. A changed file that cannot be read leaves the rules in force as they were and
 * says why in an error line; a good one replaces the authorizer as a whole, so one check never mixes old
 * and new rules.
 */

export interface AccessOptions {
  baseTopic: string
  passwordFile: string | undefined
  aclFile: string | undefined
  allowAnonymous: boolean
  adminUsers: readonly string[]
  /** Re-read the files when they change (default true); SIGHUP re-reads them either way. */
  watch?: boolean
  /** Changes to a file closer together than this make one reload (default 100 ms). */
  debounceMs?: number
}

/** Who may connect, for the listening line and /health. */
export type AccessMode =
  /** No password file and no ACL file: anyone connects and acts for every display. */
  | 'open'
  /** An ACL file and no password file: anyone connects, the ACL file decides by user name and client id. */
  | 'acl'
  /** A password file: only its users connect (and anonymous clients with MQTT_ALLOW_ANONYMOUS). */
  | 'password'

export interface BrokerAccess {
  /** Reads the files. Throws an AuthFileError (file and line) when one cannot be used. */
  start(): Promise<void>
  /** Reads both files again now (SIGHUP), even when unchanged. */
  reload(): void
  stop(): void
  /** The rules in force. */
  current(): Authorizer
  readonly mode: AccessMode
  readonly allowAnonymous: boolean
  /**
   * Called after the password file was replaced: `admitted(session)` says whether a connected client
   * would still be let in (its user is still there with the same password, or it is anonymous and those are
   * still allowed), so the broker can disconnect the others.
   */
  onUsersChanged(listener: (admitted: (session: Session) => boolean) => void): void
}

export function createBrokerAccess(options: AccessOptions, deps: { log: Logger }): BrokerAccess {
  const { log } = deps
  let users: PasswordFile | null = null
  let acl: AclFile | null = null
  let authorizer = build()
  const watches: FileWatch[] = []
  const usersListeners: ((admitted: (session: Session) => boolean) => void)[] = []
  let stopped = false

  function build(): Authorizer {
    return createAuthorizer({
      baseTopic: options.baseTopic,
      users,
      acl,
      allowAnonymous: options.allowAnonymous,
      adminUsers: options.adminUsers,
    })
  }

  function refused(setting: string, error: unknown): void {
    if (error instanceof AuthFileError) {
      log.error(
        { setting, file: error.file, line: error.line, reason: error.reason },
        `${setting} changed but cannot be used (${error.message}); the rules in force stay`,
      )
    } else {
      log.error({ setting, err: error }, `${setting} changed but cannot be used; the rules in force stay`)
    }
  }

  function usersChanged(result: Reloaded<PasswordFile>): void {
    if (stopped) return
    if (!result.ok) {
      refused('MQTT_PASSWORD_FILE', result.error)
      return
    }
    const before = users
    users = result.value
    authorizer = build()
    log.info({ file: options.passwordFile, users: users.users.size }, 'password file read again')
    const after = users
    const admitted = (session: Session) => stillAdmitted(session, before, after, options.allowAnonymous)
    for (const listener of usersListeners) listener(admitted)
  }

  function aclChanged(result: Reloaded<AclFile>): void {
    if (stopped) return
    if (!result.ok) {
      refused('MQTT_ACL_FILE', result.error)
      return
    }
    acl = result.value
    authorizer = build()
    log.info({ file: options.aclFile }, 'ACL file read again')
  }

  const mode: AccessMode =
    options.passwordFile !== undefined ? 'password' : options.aclFile !== undefined ? 'acl' : 'open'

  return {
    mode,
    allowAnonymous: options.passwordFile === undefined || options.allowAnonymous,

    async start() {
      const passwordFile = options.passwordFile
      const aclFile = options.aclFile
      if (passwordFile !== undefined) users = await readPasswordFile(passwordFile)
      if (aclFile !== undefined) {
        acl = await readAclFile(aclFile)
        for (const warning of acl.warnings)
          log.warn(
            { file: aclFile, line: warning.line, reason: warning.message },
            'ACL file line may not mean what it says',
          )
      }
      authorizer = build()
      if (options.watch === false) return
      const watchOptions = { debounceMs: options.debounceMs ?? 100 }
      if (passwordFile !== undefined)
        watches.push(watchPasswordFile(passwordFile, usersChanged, watchOptions))
      if (aclFile !== undefined) watches.push(watchAclFile(aclFile, aclChanged, watchOptions))
    },

    reload() {
      if (stopped) return
      if (watches.length > 0) {
        for (const watch of watches) watch.reload()
        return
      }
      // Not watching: read both files here, with the same outcome as a change.
      if (options.passwordFile !== undefined)
        readPasswordFile(options.passwordFile).then(
          (value) => usersChanged({ ok: true, value }),
          (error: unknown) => usersChanged({ ok: false, error }),
        )
      if (options.aclFile !== undefined)
        readAclFile(options.aclFile).then(
          (value) => aclChanged({ ok: true, value }),
          (error: unknown) => aclChanged({ ok: false, error }),
        )
    },

    stop() {
      stopped = true
      for (const watch of watches.splice(0)) watch.close()
    },

    current: () => authorizer,

    onUsersChanged(listener) {
      usersListeners.push(listener)
    },
  }
}

/**
 * Whether a client that logged in under `before` would be let in under `after`. A client that logged in
 * with a password keeps its connection while its user's line is the same; a removed user or a changed
 * password ends it (the broker never keeps a password to check again).
 */
export function stillAdmitted(
  session: Session,
  before: PasswordFile | null,
  after: PasswordFile | null,
  allowAnonymous: boolean,
): boolean {
  if (after === null) return true
  if (session.user === undefined) return allowAnonymous
  if (before === null) return false
  const was = before.users.get(session.user)
  const now = after.users.get(session.user)
  if (was === undefined || now === undefined) return false
  return was.salt.equals(now.salt) && was.hash.equals(now.hash)
}
