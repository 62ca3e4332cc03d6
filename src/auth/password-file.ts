import { createHash, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'
import { AuthFileError } from './auth-file-error.ts'

export { AuthFileError } from './auth-file-error.ts'

/*
 * Mosquitto password files (MQTT_PASSWORD_FILE, README "Security"), read the way Mosquitto reads them so that a file
 * made with `mosquitto_passwd` works here and a line made here works in Mosquitto. The formats, as written by
 * mosquitto_passwd (upstream apps/mosquitto_passwd/mosquitto_passwd.c, output_new_password) and read by the
 * broker (src/security_default.c, unpwd__decode_passwords in 2.0; libcommon/password_common.c in 2.1):
 *
 *   user:$7$<iterations>$<base64 salt>$<base64 hash>   PBKDF2-HMAC-SHA512, 64-byte hash
 *   user:$6$<base64 salt>$<base64 hash>                SHA-512 of the password followed by the salt
 *
 * Mosquitto skips a line it cannot read with a warning and carries on; here a bad line is an error naming the
 * file and the line, so a typo cannot silently lock a display out (issue 10: bad files exit 78 at start-up).
 */

const pbkdf2Async = promisify(pbkdf2)

/** Both hash kinds are SHA-512 sized. */
const HASH_BYTES = 64
/**
 * Mosquitto 2.0 refuses any salt that is not 12 bytes (unpwd__decode_passwords); 2.1 writes 64-byte salts and
 * reads 12 or 64 (pw__decode_sha512_pbkdf2). We read both and write 12, the one length both versions accept.
 */
const SALT_BYTES_READ: ReadonlySet<number> = new Set([12, 64])
export const SALT_BYTES = 12
/**
 * mosquitto_passwd 2.0 writes 101 iterations (PW_DEFAULT_ITERATIONS in src/password_mosq.h); 2.1 raised it to
 * 210,000 (libcommon/password_common.c), the OWASP figure for PBKDF2-HMAC-SHA512. Every version reads the count
 * from the line, so we write the current upstream figure. Verifying runs in libuv's thread pool, off the loop.
 */
export const DEFAULT_ITERATIONS = 210_000
/** atoi() into an int in Mosquitto. */
const MAX_ITERATIONS = 2 ** 31 - 1
/** mosquitto_passwd and the broker both stop at 65535 characters for names and passwords. */
const MAX_FIELD = 65_535

export type PasswordHash =
  | { readonly kind: 'sha512'; readonly salt: Buffer; readonly hash: Buffer }
  | {
      readonly kind: 'pbkdf2-sha512'
      readonly iterations: number
      readonly salt: Buffer
      readonly hash: Buffer
    }

export interface PasswordFile {
  readonly file: string
  readonly users: ReadonlyMap<string, PasswordHash>
  /** What an unknown user is checked against, so a wrong name costs what a wrong password costs. */
  readonly decoy: PasswordHash
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/

function decodeBase64(text: string): Buffer | null {
  if (!BASE64.test(text) || text.length % 4 !== 0) return null
  const bytes = Buffer.from(text, 'base64')
  // Buffer.from skips what it cannot read; a round trip makes sure nothing was skipped.
  return bytes.toString('base64') === text ? bytes : null
}

function decodeHash(encoded: string, fail: (reason: string) => never): PasswordHash {
  if (!encoded.startsWith('$'))
    fail('the password is not hashed: make the line with mosquitto_passwd or passwd')
  const parts = encoded.slice(1).split('$')
  const type = parts[0]
  if (type !== '6' && type !== '7') fail(`unknown hash type $${type}$ (expected $6$ or $7$)`)
  let iterations = 0
  let rest = parts.slice(1)
  if (type === '7') {
    const count = rest[0] ?? ''
    if (!/^[1-9][0-9]{0,9}$/.test(count) || Number(count) > MAX_ITERATIONS) {
      fail('the iteration count of a $7$ hash must be a whole number from 1 to 2147483647')
    }
    iterations = Number(count)
    rest = rest.slice(1)
  }
  if (rest.length !== 2) fail(`a $${type}$ hash has ${type === '7' ? 'four' : 'three'} fields separated by $`)
  const salt = decodeBase64(rest[0] ?? '')
  if (!salt || !SALT_BYTES_READ.has(salt.length)) fail('the salt is not 12 or 64 bytes of base64')
  const hash = decodeBase64(rest[1] ?? '')
  if (!hash || hash.length !== HASH_BYTES) fail('the hash is not 64 bytes of base64')
  return type === '7' ? { kind: 'pbkdf2-sha512', iterations, salt, hash } : { kind: 'sha512', salt, hash }
}

/**
 * Reads the text of a password file. Blank lines and lines starting with `#` are skipped (as Mosquitto does);
 * names and hashes are trimmed of blanks (misc__trimblanks upstream). Throws {@link AuthFileError} naming the
 * file and line for anything else that is not a `user:hash` line; the message never quotes the hash.
 */
export function parsePasswordFile(text: string, file: string): PasswordFile {
  const users = new Map<string, PasswordHash>()
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1
    const fail = (reason: string): never => {
      throw new AuthFileError(file, line, reason)
    }
    const raw = (lines[i] ?? '').replace(/\r$/, '')
    if (raw.trim() === '' || raw.startsWith('#')) continue
    if (raw.includes('\0')) fail('the line holds a NUL byte')
    const colon = raw.indexOf(':')
    if (colon < 0) fail('expected user:hash')
    const user = raw.slice(0, colon).trim()
    const encoded = raw.slice(colon + 1).trim()
    if (user === '') fail('the user name is empty')
    if (user.length > MAX_FIELD) fail('the user name is longer than 65535 characters')
    if (encoded === '') fail('the line has no password hash')
    // Mosquitto reads the hash up to the next ':' and drops the rest; a second ':' is a damaged line.
    if (encoded.includes(':')) fail('more than one ":" on the line')
    if (encoded.length > MAX_FIELD) fail('the password hash is longer than 65535 characters')
    if (users.has(user)) fail(`user ${JSON.stringify(user)} is listed twice`)
    users.set(user, decodeHash(encoded, fail))
  }
  return { file, users, decoy: makeDecoy(users) }
}

function makeDecoy(users: ReadonlyMap<string, PasswordHash>): PasswordHash {
  // The iteration count most users have, so an unknown name takes as long as a typical known one.
  const counts = new Map<number, number>()
  for (const h of users.values()) {
    if (h.kind === 'pbkdf2-sha512') counts.set(h.iterations, (counts.get(h.iterations) ?? 0) + 1)
  }
  let iterations = DEFAULT_ITERATIONS
  let best = 0
  for (const [n, c] of counts) {
    if (c > best) [iterations, best] = [n, c]
  }
  return {
    kind: 'pbkdf2-sha512',
    iterations,
    salt: randomBytes(SALT_BYTES),
    hash: randomBytes(HASH_BYTES),
  }
}

async function digest(h: PasswordHash, password: Buffer): Promise<Buffer> {
  if (h.kind === 'sha512') return createHash('sha512').update(password).update(h.salt).digest()
  return pbkdf2Async(password, h.salt, h.iterations, HASH_BYTES, 'sha512')
}

/**
 * Checks a password against the file. Unknown users are checked against a decoy hash so they cost the same
 * time; the comparison is constant-time. The password is the raw bytes of the CONNECT packet.
 */
export async function verify(
  passwords: PasswordFile,
  username: string,
  password: Buffer | string,
): Promise<boolean> {
  const known = passwords.users.get(username)
  const h = known ?? passwords.decoy
  const bytes = typeof password === 'string' ? Buffer.from(password, 'utf8') : password
  const got = await digest(h, bytes)
  return timingSafeEqual(got, h.hash) && known !== undefined
}

/**
 * Why a user name cannot go into a password file, or null. The rules of mosquitto_passwd (no ':', no control
 * characters, under 65536 characters), plus what the broker's reader would change: blanks at either end are
 * trimmed and a leading `#` makes the line a comment.
 */
export function userNameProblem(user: string): string | null {
  if (user === '') return 'the user name is empty'
  if (user.length > MAX_FIELD) return 'the user name is longer than 65535 characters'
  if (user.includes(':')) return 'the user name must not contain ":"'
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this refuses
  if (/[\u0000-\u001f\u007f]/.test(user)) return 'the user name must not contain control characters'
  if (user.trim() !== user) return 'the user name must not start or end with a blank'
  if (user.startsWith('#')) return 'the user name must not start with "#" (the line would be a comment)'
  return null
}

/** Why a password cannot be stored, or null. Mosquitto handles passwords as C strings. */
export function passwordProblem(password: string): string | null {
  if (password === '') return 'the password is empty'
  if (password.includes('\0')) return 'the password must not contain a NUL character'
  if (password.length > MAX_FIELD) return 'the password is longer than 65535 characters'
  return null
}

export interface FormatOptions {
  iterations?: number
  /** For tests only: a fixed salt of 12 bytes. */
  salt?: Buffer
}

/**
 * One `user:$7$...` line (without a newline) that mosquitto_passwd and Mosquitto 2.0 and 2.1 accept.
 * Throws a plain Error when the name or password cannot be stored; the message never quotes the password.
 */
export async function formatLine(
  user: string,
  password: string,
  options: FormatOptions = {},
): Promise<string> {
  const problem = userNameProblem(user) ?? passwordProblem(password)
  if (problem) throw new Error(problem)
  const iterations = options.iterations ?? DEFAULT_ITERATIONS
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new Error('iterations must be a whole number from 1 to 2147483647')
  }
  const salt = options.salt ?? randomBytes(SALT_BYTES)
  if (salt.length !== SALT_BYTES) throw new Error(`the salt must be ${SALT_BYTES} bytes`)
  const hash = await pbkdf2Async(Buffer.from(password, 'utf8'), salt, iterations, HASH_BYTES, 'sha512')
  return `${user}:$7$${iterations}$${salt.toString('base64')}$${hash.toString('base64')}`
}
