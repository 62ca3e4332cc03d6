import { readFileSync } from 'node:fs'
import { parseEnv } from 'node:util'
import type { z } from 'zod'
import { type Config, configSchema, SETTING_NAMES, TLS_SETTINGS } from './schema.ts'
import { isSecretName, maskSecrets, maskUrlPasswords } from './secrets.ts'

/**
 * Where a setting's value came from, so an error can say which file or variable to fix: `default`,
 * `environment`, `config file PATH` or the .env file.
 */
type Source = string

export interface LoadOptions {
  /** Path of a JSON config file (`--config`), if any. */
  configFile?: string | undefined
  /** The process environment. */
  env: Readonly<Record<string, string | undefined>>
  /** Path of a `.env` file; read only if it exists. */
  dotenvFile?: string | undefined
  /**
   * Told about what is read but not used, such as a `.env` line that is not `NAME=value`; the settings are
   * still valid. main.ts prints these (or logs them once the logger exists).
   */
  onWarning?: ((message: string) => void) | undefined
}

/** A config that cannot be used; `problems` has one line per bad setting. */
export class ConfigError extends Error {
  readonly problems: readonly string[]
  constructor(problems: readonly string[]) {
    super(`invalid settings:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/**
 * Reads the config file, `.env` and the environment (in rising order of precedence), validates everything
 * once and returns a frozen Config. An empty value (`A1111_USERNAME=`) counts as unset, as in the older
 * proxy's `.env` files.
 */
export function loadConfig(options: LoadOptions): Config {
  const raw: Record<string, unknown> = {}
  const sources = new Map<string, Source>()
  const problems: string[] = []

  const put = (name: string, value: unknown, source: Source) => {
    if (value === null || value === undefined || (typeof value === 'string' && value.trim() === '')) return
    raw[name] = value
    sources.set(name, source)
  }

  if (options.configFile !== undefined) {
    const source = `config file ${options.configFile}`
    const file = readConfigFile(options.configFile, problems)
    for (const [name, value] of Object.entries(file)) {
      if (!SETTING_NAMES.includes(name)) {
        problems.push(`${name} (${source}): unknown setting${suggest(name)}`)
        continue
      }
      put(name, value, source)
    }
  }
  if (options.dotenvFile !== undefined) {
    const source = options.dotenvFile === '.env' ? '.env' : `.env file ${options.dotenvFile}`
    const dotenv = readDotenv(options.dotenvFile, problems, (line, text) =>
      options.onWarning?.(
        `${source} line ${line}: ignored, not NAME=value${text.includes('=') ? '' : ' (no "=")'}`,
      ),
    )
    for (const name of SETTING_NAMES) put(name, dotenv[name], source)
  }
  for (const name of SETTING_NAMES) put(name, options.env[name], 'environment')

  // Every problem at once: file problems and bad values together, so one edit can fix them all.
  const parsed = configSchema.safeParse(raw, { reportInput: true })
  if (!parsed.success) problems.push(...describeIssues(parsed.error.issues, raw, sources))
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems)
  return deepFreeze(parsed.data)
}

function readConfigFile(path: string, problems: string[]): Record<string, unknown> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    problems.push(
      `--config ${path}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    )
    return {}
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    problems.push(`--config ${path}: not valid JSON (${(err as Error).message})`)
    return {}
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    problems.push(`--config ${path}: must hold a JSON object of settings, e.g. {"MQTT_PORT": 1883}`)
    return {}
  }
  return value as Record<string, unknown>
}

function readDotenv(
  path: string,
  problems: string[],
  onBadLine: (line: number, text: string) => void,
): Record<string, string | undefined> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    problems.push(`${path}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    return {}
  }
  for (const line of badDotenvLines(text)) onBadLine(line.number, line.text)
  return parseEnv(text)
}

/** `NAME=value` or `export NAME=value`; the names parseEnv (node:util) reads. */
const DOTENV_ASSIGNMENT = /^\s*(?:export\s+)?[A-Za-z_][A-Za-z0-9_.-]*\s*=(.*)$/

/**
 * The lines of a .env text that parseEnv skips without a word: neither blank, a `#` comment, an assignment,
 * nor inside a quoted value that spans lines. The line's text is for the caller only: never print it, a
 * mistyped line may hold a password.
 */
export function badDotenvLines(text: string): { number: number; text: string }[] {
  const bad: { number: number; text: string }[] = []
  let openQuote: string | undefined
  text.split(/\r?\n/).forEach((line, i) => {
    if (openQuote !== undefined) {
      if (line.includes(openQuote)) openQuote = undefined
      return
    }
    const trimmed = line.trim()
    if (trimmed === '' || trimmed.startsWith('#')) return
    const m = DOTENV_ASSIGNMENT.exec(line)
    if (!m) {
      bad.push({ number: i + 1, text: line })
      return
    }
    const value = m[1]!.trim()
    const quote = value[0]
    if ((quote === '"' || quote === "'" || quote === '`') && !value.slice(1).includes(quote))
      openQuote = quote
  })
  return bad
}

function describeIssues(
  issues: readonly z.core.$ZodIssue[],
  raw: Record<string, unknown>,
  sources: Map<string, Source>,
): string[] {
  return issues.map((issue) => {
    const top = String(issue.path[0] ?? '')
    // A pairing rule names the missing half; the value to fix came from where the other half was set.
    const source =
      sources.get(top) ??
      partnersOf(top)
        .map((n) => sources.get(n))
        .find(Boolean) ??
      'default'
    const label = settingLabel(issue.path, source, raw)
    if (issue.code === 'unrecognized_keys') {
      const keys = issue.keys.map((k) => JSON.stringify(k)).join(', ')
      if (top === 'A1111_BASE_URL')
        return `${label}: unknown key ${keys}; a server takes url, username, password and timeout`
      return `${label}: unknown key ${keys}`
    }
    return `${label}: ${issue.message}${shownValue(issue, raw)}`
  })
}

/**
 * `MQTT_PORT (environment)`, or for one server of a list
 * `A1111_BASE_URL (server 2 http://gpu2:7860, timeout; config file /etc/x.json)`.
 */
function settingLabel(path: readonly PropertyKey[], source: Source, raw: Record<string, unknown>): string {
  const [first, index, ...rest] = path.map(String)
  if (first === undefined) return `(settings) (${source})`
  if (first === 'A1111_BASE_URL' && index !== undefined) {
    const aboutUrl = rest.join('.') === 'url'
    const field = rest.length > 0 && !aboutUrl ? `, ${rest.join('.')}` : ''
    // A problem with the URL itself shows it as the value; any other names the server by its URL.
    const url = aboutUrl ? undefined : serverUrl(raw.A1111_BASE_URL, Number(index))
    return `A1111_BASE_URL (server ${Number(index) + 1}${url ? ` ${url}` : ''}${field}; ${source})`
  }
  return `${[first, index, ...rest].filter((p) => p !== undefined).join('.')} (${source})`
}

/** The URL of server `index` as it was written, its password masked, to tell the servers apart. */
function serverUrl(list: unknown, index: number): string | undefined {
  const items = typeof list === 'string' ? list.split(',').map((u) => u.trim()) : list
  if (!Array.isArray(items)) return undefined
  const item: unknown = items[index]
  const url = typeof item === 'string' ? item : (item as { url?: unknown } | undefined)?.url
  return typeof url === 'string' && url !== '' ? JSON.stringify(maskUrlPasswords(url)) : undefined
}

/**
 * The offending value, so the user sees what was read. Never a secret setting or field, never a password
 * inside a URL, and never an object or a list: a rule over several settings gets the whole config as its
 * input, keys and passwords included.
 */
function shownValue(issue: z.core.$ZodIssue, raw: Record<string, unknown>): string {
  if (issue.path.some((p) => typeof p === 'string' && isSecretName(p))) return ''
  const top = String(issue.path[0] ?? '')
  const value = issue.path.length > 1 ? issue.input : raw[top]
  if (typeof value === 'string') return `, got ${JSON.stringify(maskUrlPasswords(value))}`
  if (typeof value === 'number' || typeof value === 'boolean') return `, got ${JSON.stringify(value)}`
  return ''
}

/** Settings that go together: a problem with the one left out came from where the others were set. */
const TOGETHER: readonly (readonly string[])[] = [['A1111_USERNAME', 'A1111_PASSWORD'], TLS_SETTINGS]

function partnersOf(name: string): readonly string[] {
  return TOGETHER.find((group) => group.includes(name))?.filter((n) => n !== name) ?? []
}

function suggest(name: string): string {
  const upper = name.toUpperCase()
  const hit = SETTING_NAMES.find(
    (n) => n === upper || n.replaceAll('_', '') === upper.replaceAll(/[_-]/g, ''),
  )
  return hit ? `; did you mean ${hit}?` : ''
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/**
 * The settings as --check-config prints them: every value, with secret settings and fields, and the
 * passwords inside URLs, shown as "(set)".
 */
export function describeConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const name of SETTING_NAMES) {
    out[name] = maskSecrets((config as Record<string, unknown>)[name], name) ?? null
  }
  return out
}
