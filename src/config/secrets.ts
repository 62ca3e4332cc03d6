import { PATH_SETTINGS, SECRET_SETTINGS } from './schema.ts'

/*
 * What never leaves the process in clear: in a settings error, in --check-config. A setting is secret by
 * name (SECRET_SETTINGS, or a name that says password, secret, token or key), and a URL's password is
 * secret whatever setting holds the URL (A1111_BASE_URL today; the MQTT_URL and HA_MQTT_URL of the
 * external-broker links carry one too). A setting that holds a file's path (MQTT_PASSWORD_FILE) is shown:
 * the secret is in the file, which is never logged. Pure.
 */

/** The mask put in place of a secret. */
export const MASK = '(set)'

const SECRET_NAME = /PASSWORD|SECRET|TOKEN|API_KEY/i

/** True for a setting (or a field of one, such as a server's `password`) whose value is a secret. */
export function isSecretName(name: string): boolean {
  if (PATH_SETTINGS.has(name)) return false
  return SECRET_SETTINGS.has(name) || SECRET_NAME.test(name)
}

/**
 * `scheme://user:password@` anywhere in a string (a list of URLs too); the password runs to the last `@`.
 * The user name and password may hold spaces: a URL malformed that way is one a settings error prints
 * (test/unit/fuzz-config.test.ts found both). A list of URLs is comma-separated.
 */
const URL_PASSWORD = /(\b[a-z][a-z0-9+.-]*:\/\/[^/?#@:,]*:)[^/?#,]*@/gi

/** The string with the password of every URL in it replaced by the mask; the user name stays. */
export function maskUrlPasswords(text: string): string {
  return text.replace(URL_PASSWORD, `$1${MASK}@`)
}

/** A copy of `value` with secret fields masked and URL passwords masked in every string, at any depth. */
export function maskSecrets(value: unknown, name = ''): unknown {
  if (value === undefined || value === null) return value
  if (name !== '' && isSecretName(name)) return MASK
  if (typeof value === 'string') return maskUrlPasswords(value)
  if (Array.isArray(value)) return value.map((item) => maskSecrets(item))
  if (typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, maskSecrets(v, k)]))
  }
  return value
}
