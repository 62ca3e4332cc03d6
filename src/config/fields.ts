import { z } from 'zod'

/* The value types settings are made of, with the messages a person reads when one is wrong. */

const TRUE_WORDS = new Set(['true', '1', 'yes', 'on'])
const FALSE_WORDS = new Set(['false', '0', 'no', 'off'])

export const bool = z.preprocess(
  (v) => {
    if (typeof v !== 'string') return v
    const word = v.trim().toLowerCase()
    if (TRUE_WORDS.has(word)) return true
    if (FALSE_WORDS.has(word)) return false
    return v
  },
  z.boolean({ error: 'must be true or false' }),
)

/**
 * Numbers come as strings from the environment and as numbers from the config file. Only those two are
 * accepted: a blind coercion would turn `true` into 1 and `[]` into 0 (port 0 means "any free port").
 */
const fromString = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v)

export const int = (min: number, max: number) =>
  z.preprocess(
    fromString,
    z
      .number({ error: 'must be a whole number' })
      .int({ error: 'must be a whole number' })
      .min(min, { error: `must be at least ${min}` })
      .max(max, { error: `must be at most ${max}` }),
  )

export const port = int(0, 65535)

export const seconds = z.preprocess(
  fromString,
  z
    .number({ error: 'must be a number of seconds' })
    .positive({ error: 'must be more than 0 seconds' })
    .max(86_400, { error: 'must be at most 86400 seconds' }),
)

export const httpUrl = z
  .string()
  .trim()
  .refine(
    (s) => {
      try {
        const u = new URL(s)
        return (u.protocol === 'http:' || u.protocol === 'https:') && u.username === '' && u.password === ''
      } catch {
        return false
      }
    },
    {
      error:
        'must be an http:// or https:// URL without user:password (set A1111_USERNAME and A1111_PASSWORD), e.g. http://127.0.0.1:7860',
    },
  )
  .transform((s) => s.replace(/\/+$/, ''))

export const host = z.string().trim().min(1, { error: 'must not be empty' })

export const mqttUrl = z
  .string()
  .trim()
  .refine(
    (s) => {
      try {
        const u = new URL(s)
        return (u.protocol === 'mqtt:' || u.protocol === 'mqtts:') && u.hostname !== ''
      } catch {
        return false
      }
    },
    { error: 'must be an mqtt:// or mqtts:// URL, e.g. mqtt://bridge:secret@broker.lan:1883' },
  )

/** One topic level that names something (a client id, a share group): no `/`, `+`, `#` or spaces. */
export const topicWord = z
  .string()
  .trim()
  .regex(/^[^#+/\s]{1,128}$/, { error: 'must be 1 to 128 characters without /, +, # or spaces' })

export const filePath = z.string().trim().min(1, { error: 'must not be empty' })

/** A listener that is off unless a port is given; `off` says so explicitly. */
export const optionalPort = z.preprocess(
  (v) => (typeof v === 'string' && v.trim().toLowerCase() === 'off' ? undefined : v),
  port.optional(),
)

/** `a, b` from the environment as `['a', 'b']`; anything else (an array from the config file) as it is. */
export function splitCommas(v: unknown): unknown {
  return typeof v === 'string'
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '')
    : v
}

/** `a,b` in the environment, a string or an array of strings in the config file; always an array once parsed. */
export const nameList = z.preprocess(
  splitCommas,
  z.array(
    z
      .string()
      .trim()
      .regex(/^[^:\s]+$/, { error: 'user names have no spaces or colons' }),
    { error: 'must be a comma-separated list of user names' },
  ),
)

/** One A1111 server of the config file's array form, with its own credentials and timeout if it needs them. */
export const a1111Server = z
  .object({
    url: httpUrl,
    username: z.string().optional(),
    password: z.string().optional(),
    timeout: seconds.optional(),
  })
  .strict()

/**
 * One server or several: `http://a:7860,http://b:7860` in the environment, a string or an array (of URLs or
 * of `{url, username, password, timeout}`) in the config file. Always an array once parsed.
 */
export const a1111ServerList = z.preprocess(
  (v) => {
    const list =
      typeof v === 'string'
        ? v
            .split(',')
            .map((u) => u.trim())
            .filter((u) => u !== '')
        : v
    return Array.isArray(list) ? list.map((item) => (typeof item === 'string' ? { url: item } : item)) : list
  },
  z
    .array(a1111Server, { error: 'must be a URL, a comma-separated list of URLs, or an array of servers' })
    .min(1, { error: 'must name at least one server' }),
)

/** The settings of the TLS listener, which go together. */
