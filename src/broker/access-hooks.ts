import type {
  AuthenticateError,
  AuthenticateHandler,
  AuthorizeForwardHandler,
  AuthorizeSubscribeHandler,
  Client,
  PublishPacket,
} from 'aedes'
import type { Logger } from 'pino'
import type { Session } from '../auth/policy.ts'
import type { BrokerAccess } from './access.ts'
import { createLoginGuard } from './login-guard.ts'

/*
 * The access rules as Aedes hooks (README, "Security"): who connects (CONNACK 4 or 5), what a client may
 * publish (a refused publish reaches nobody), subscribe (SUBACK 0x80) and read (every message, retained ones
 * and frames included). The rules themselves are src/auth/policy.ts; this file only asks them and keeps the
 * session each client logged in with.
 */

/**
 * Where a refused publish goes: nobody may read it (authorizeForward drops it), Aedes keeps no retained copy
 * of it, and `#` never matches a `$` topic (MQTT 3.1.1 section 4.7.2).
 */
const REFUSED_TOPIC = '$SYS/pico-a1111-bridge/refused'

/** Refusals logged per window; the rest are counted and reported with the next line that is logged. */
const WARN_LINES_PER_WINDOW = 20
const WARN_WINDOW_MS = 60_000

export interface AccessHooks {
  authenticate: AuthenticateHandler
  /**
   * Whether `client` may publish `packet`. A refused packet is emptied and moved where nobody reads it, and
   * the caller acknowledges it as usual: MQTT 3.1.1 section 3.3.5 lets the server either acknowledge a
   * publish it refuses or close the connection, and Mosquitto acknowledges, so a display that publishes on
   * the wrong topic is not thrown into a reconnect loop.
   */
  checkPublish(client: Client | null, packet: PublishPacket): boolean
  authorizeSubscribe: AuthorizeSubscribeHandler
  authorizeForward: AuthorizeForwardHandler
  /** Whether the client may read a message on `topic` (frames are written to clients directly). */
  mayRead(client: Client, topic: string): boolean
  /** The user and client id `client` logged in with; undefined before it has. */
  sessionOf(client: Client): Session | undefined
}

export function createAccessHooks(
  access: BrokerAccess,
  deps: {
    log: Logger
    monotonic: () => number
    /** MQTT_LOGIN_FAILURES and MQTT_LOGIN_LOCKOUT (login-guard.ts); unset, no lockout. */
    login?: { failures: number; lockoutMs: number }
    /**
     * Runs once a login was accepted, before Aedes answers it: the client-id takeover slowdown
     * (client-limits.ts) sits here, so a client that cannot log in cannot slow or kick a display.
     */
    afterLogin?(client: Client, proceed: () => void): void
  },
): AccessHooks {
  const sessions = new WeakMap<Client, Session>()
  const warn = limitedWarn(deps.log, deps.monotonic)
  const guard = createLoginGuard(deps.login ?? { failures: 0, lockoutMs: 0 }, deps.monotonic)

  function refuseLogin(
    client: Client,
    username: string | undefined,
    returnCode: 4 | 5,
    reason: string,
    done: Parameters<AuthenticateHandler>[3],
  ): void {
    // The user name, never the password (pino's redact in main.ts would catch a `password` key anyway).
    warn(
      { remote: remoteOf(client), clientId: client.id, username, returnCode, reason },
      'MQTT login refused',
    )
    const err = Object.assign(new Error(reason), {
      returnCode: returnCode as AuthenticateError['returnCode'],
    })
    done(err, false)
  }

  return {
    authenticate(client, username, password, done) {
      const remote = remoteOf(client)
      const lockedMs = guard.lockedFor(remote)
      if (lockedMs > 0) {
        const reason = 'too many failed logins from this address'
        return refuseLogin(
          client,
          username,
          5,
          `${reason}; refused for ${Math.ceil(lockedMs / 1000)} s`,
          done,
        )
      }
      const rules = access.current()
      rules.authenticate(username, password, client.id).then(
        (result) => {
          if (!result.ok) {
            const reason = result.returnCode === 4 ? 'bad user name or password' : 'no user name'
            const lockoutMs = result.returnCode === 4 ? guard.failed(remote) : 0
            if (lockoutMs > 0)
              warn(
                { remote, failures: deps.login?.failures, lockoutMs },
                'MQTT logins from this address refused for a while: too many wrong passwords',
              )
            return refuseLogin(client, username, result.returnCode, reason, done)
          }
          const session: Session = { user: result.user, clientId: client.id }
          // Mosquitto refuses a CONNECT whose will it would not let the client publish, with code 5: a will
          // could otherwise set `<base>/bridge/state` or prompt as another display when the client drops.
          const will = (client as Client & { _will?: { topic?: unknown } | null })._will
          if (will && typeof will.topic === 'string' && !rules.canPublish(session, will.topic)) {
            return refuseLogin(client, username, 5, 'will topic not allowed', done)
          }
          sessions.set(client, session)
          if (deps.afterLogin) deps.afterLogin(client, () => done(null, true))
          else done(null, true)
        },
        (err: unknown) => {
          deps.log.error({ err, clientId: client.id }, 'checking an MQTT login failed')
          done(
            Object.assign(new Error('not authorized'), { returnCode: 5 as AuthenticateError['returnCode'] }),
            false,
          )
        },
      )
    },

    checkPublish(client, packet) {
      // A will Aedes publishes for a client of an earlier broker run has no client; it is nobody's.
      const session = client ? sessions.get(client) : { user: undefined, clientId: '' }
      if (session && access.current().canPublish(session, packet.topic)) return true
      warn(
        { remote: client ? remoteOf(client) : undefined, clientId: client?.id, topic: packet.topic },
        'MQTT publish refused',
      )
      packet.topic = REFUSED_TOPIC
      packet.payload = Buffer.alloc(0)
      packet.retain = false
      return false
    },

    authorizeSubscribe(client, subscription, callback) {
      const session = sessions.get(client)
      if (session && access.current().canSubscribe(session, subscription.topic)) {
        callback(null, subscription)
        return
      }
      warn(
        { remote: remoteOf(client), clientId: client.id, filter: subscription.topic },
        'MQTT subscription refused',
      )
      // Granted nothing: SUBACK return code 0x80 (MQTT 3.1.1 section 3.9.3).
      callback(null, null)
    },

    authorizeForward(client, packet) {
      if (packet.topic === REFUSED_TOPIC) return null
      const session = sessions.get(client)
      return session && access.current().canRead(session, packet.topic) ? packet : null
    },

    mayRead(client, topic) {
      const session = sessions.get(client)
      return session !== undefined && access.current().canRead(session, topic)
    },

    sessionOf: (client) => sessions.get(client),
  }
}

/** The client's address: its socket's, or for a WebSocket the HTTP request's. */
export function remoteOf(client: Client): string | undefined {
  const conn = client.conn as { remoteAddress?: string }
  return conn.remoteAddress ?? client.req?.socket.remoteAddress
}

/**
 * A warn line per refusal, at most WARN_LINES_PER_WINDOW a minute: a client that retries a wrong password in
 * a loop must not fill the journal. The first line after a quiet spell says how many were not logged.
 */
export function limitedWarn(log: Logger, monotonic: () => number) {
  let windowStart = Number.NEGATIVE_INFINITY
  let logged = 0
  let suppressed = 0
  return (fields: Record<string, unknown>, msg: string) => {
    const now = monotonic()
    if (now - windowStart >= WARN_WINDOW_MS) {
      windowStart = now
      logged = 0
    }
    if (logged >= WARN_LINES_PER_WINDOW) {
      suppressed++
      return
    }
    logged++
    log.warn(suppressed > 0 ? { ...fields, notLogged: suppressed } : fields, msg)
    suppressed = 0
  }
}
