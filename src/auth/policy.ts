import { isDeviceId } from '../protocol/device-id.ts'
import { topicMatches } from '../protocol/topics.ts'
import type { AclFile } from './acl.ts'
import * as aclRules from './acl.ts'
import { type PasswordFile, verify } from './password-file.ts'

/*
 * Who may connect and what they may do on the embedded broker (README, "Security"), as plain functions the
 * broker adapter calls from Aedes' authenticate, authorizePublish, authorizeSubscribe and authorizeForward
 * hooks:
 *
 * - no password file and no ACL file: the broker is open, as before;
 * - an ACL file: its lines decide, with Mosquitto's meaning (acl.ts);
 * - a password file and no ACL file: user U acts as display U only; admins act for every display;
 * - and, whatever the files say, no client writes a topic only the bridge writes (frames, statuses, the
 *   bridge's own state): nobody may paint a picture or a status onto another display.
 */

export interface AuthorizerOptions {
  readonly baseTopic: string
  /** The parsed MQTT_PASSWORD_FILE, or null for none. */
  readonly users: PasswordFile | null
  /** The parsed MQTT_ACL_FILE, or null for none. */
  readonly acl: AclFile | null
  /** MQTT_ALLOW_ANONYMOUS: clients without a user name may connect although there is a password file. */
  readonly allowAnonymous: boolean
  /** MQTT_ADMIN_USERS. */
  readonly adminUsers: readonly string[]
}

/** What the adapter keeps per connection after authenticate said yes. */
export interface Session {
  /** The user name the client authenticated with; undefined for an anonymous client. */
  readonly user: string | undefined
  readonly clientId: string
}

/**
 * MQTT 3.1.1 section 3.2.2.3: 4 "bad user name or password", 5 "not authorized" (used for a client without a
 * user name when anonymous clients are refused). Mosquitto 2.0 answers 5 in both cases.
 */
export type AuthResult = { ok: true; user: string | undefined } | { ok: false; returnCode: 4 | 5 }

export interface Authorizer {
  authenticate(
    username: string | undefined,
    password: Buffer | undefined,
    clientId: string,
  ): Promise<AuthResult>
  /** authorizePublish, client publishes and wills alike. False: the message reaches nobody. */
  canPublish(session: Session, topic: string): boolean
  /** authorizeSubscribe. False: grant nothing (SUBACK 0x80). */
  canSubscribe(session: Session, filter: string): boolean
  /**
   * authorizeForward: may this message go to this client? Needed besides canSubscribe because an ACL file can
   * allow part of what a wildcard subscription matches (Mosquitto checks "read" per message).
   */
  canRead(session: Session, topic: string): boolean
  /** Whether the broker is open (no password file, no ACL file): for the listening line and /health. */
  readonly open: boolean
}

/** What a device sends to the bridge (docs/protocol.md); `info` is its self-description. */
const DEVICE_INBOUND = ['prompt', 'get', 'cancel', 'info'] as const

export function createAuthorizer(options: AuthorizerOptions): Authorizer {
  const { baseTopic: base, users, acl, allowAnonymous } = options
  const admins: ReadonlySet<string> = new Set(options.adminUsers)
  const bridgeOwned = [`${base}/+/frame`, `${base}/+/status`, `${base}/bridge/#`]
  const open = users === null && acl === null

  const isBridgeOwned = (topic: string) => bridgeOwned.some((f) => topicMatches(f, topic))
  const who = (s: Session): aclRules.AclClient => ({ username: s.user, clientId: s.clientId })

  /** Without an ACL file: the filters a session may read. */
  const readable = (s: Session): string[] => {
    if (s.user !== undefined && admins.has(s.user)) return [`${base}/#`]
    if (s.user !== undefined && isDeviceId(s.user)) return [`${base}/${s.user}/#`, `${base}/bridge/#`]
    return [`${base}/bridge/#`]
  }

  /** Without an ACL file: a device topic the session may write. */
  const writable = (s: Session, topic: string): boolean => {
    if (s.user === undefined) return false
    const prefix = `${base}/`
    if (!topic.startsWith(prefix)) return false
    const levels = topic.slice(prefix.length).split('/')
    if (levels.length !== 2) return false
    const [id, kind] = levels as [string, string]
    if (!isDeviceId(id) || !(DEVICE_INBOUND as readonly string[]).includes(kind)) return false
    return admins.has(s.user) || id === s.user
  }

  return {
    open,

    async authenticate(username, password, _clientId) {
      if (users === null) return { ok: true, user: username }
      if (username === undefined)
        return allowAnonymous ? { ok: true, user: undefined } : { ok: false, returnCode: 5 }
      // A missing password is checked as an empty one, so it costs the time a wrong one does.
      const good = await verify(users, username, password ?? Buffer.alloc(0))
      return good && password !== undefined ? { ok: true, user: username } : { ok: false, returnCode: 4 }
    },

    canPublish(session, topic) {
      if (!aclRules.isValidTopic(topic) || isBridgeOwned(topic)) return false
      if (acl !== null) return aclRules.canPublish(acl, who(session), topic)
      if (users === null) return true
      return writable(session, topic)
    },

    canSubscribe(session, filter) {
      if (!aclRules.isValidFilter(filter)) return false
      if (acl !== null) return aclRules.canSubscribe(acl, who(session), filter)
      if (users === null) return true
      return readable(session).some((allowed) => aclRules.filterCovers(allowed, filter))
    },

    canRead(session, topic) {
      if (acl !== null) return aclRules.canRead(acl, who(session), topic)
      if (users === null) return true
      return readable(session).some((allowed) => topicMatches(allowed, topic))
    },
  }
}
