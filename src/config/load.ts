import { readFileSync } from 'node:fs'
import { parseEnv } from 'node:util'
import type { z } from 'zod'
import { type Config, configSchema, SECRET_SETTINGS, SETTING_NAMES } from './schema.ts'

/** Where a setting's value came from, so an error can say which file or variable to fix. */
type Source = 'default' | 'config file' | '.env' | 'environment'

export interface LoadOptions {
  /** Path of a JSON config file (`--config`), if any. */
  configFile?: string | undefined
  /** The process environment. */
  env: Readonly<Record<string, string | undefined>>
  /** Path of a `.env` file; read only if it exists. */
  dotenvFile?: string | undefined
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
    const file = readConfigFile(options.configFile, problems)
    for (const [name, value] of Object.entries(file)) {
      if (!SETTING_NAMES.includes(name)) {
        problems.push(`${name} (config file ${options.configFile}): unknown setting${suggest(name)}`)
        continue
      }
      put(name, value, 'config file')
    }
  }
  if (options.dotenvFile !== undefined) {
    const dotenv = readDotenv(options.dotenvFile, problems)
    for (const name of SETTING_NAMES) put(name, dotenv[name], '.env')
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

function readDotenv(path: string, problems: string[]): Record<string, string | undefined> {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    problems.push(`${path}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    return {}
  }
  return parseEnv(text)
}

function describeIssues(
  issues: readonly z.core.$ZodIssue[],
  raw: Record<string, unknown>,
  sources: Map<string, Source>,
): string[] {
  return issues.map((issue) => {
    const top = String(issue.path[0] ?? '')
    if (issue.code === 'unrecognized_keys') return `${issue.keys.join(', ')}: unknown setting`
    // A pairing rule names the missing half; the value to fix came from where the other half was set.
    const source = sources.get(top) ?? sources.get(pairOf(top)) ?? 'default'
    return `${settingLabel(issue.path, source)}: ${issue.message}${shownValue(issue, raw)}`
  })
}

/** `MQTT_PORT (environment)`, or for one server of a list `A1111_BASE_URL (server 2, url; config file)`. */
function settingLabel(path: readonly PropertyKey[], source: Source): string {
  const [first, index, ...rest] = path.map(String)
  if (first === undefined) return `(settings) (${source})`
  if (first === 'A1111_BASE_URL' && index !== undefined) {
    const field = rest.length > 0 && rest.join('.') !== 'url' ? `, ${rest.join('.')}` : ''
    return `A1111_BASE_URL (server ${Number(index) + 1}${field}; ${source})`
  }
  return `${[first, index, ...rest].filter((p) => p !== undefined).join('.')} (${source})`
}

/** The offending value, so the user sees what was read; never for secrets. */
function shownValue(issue: z.core.$ZodIssue, raw: Record<string, unknown>): string {
  const top = String(issue.path[0] ?? '')
  if (SECRET_SETTINGS.has(top) || issue.path.includes('password')) return ''
  const value = top === 'A1111_BASE_URL' && issue.path.length > 1 ? issue.input : raw[top]
  return value === undefined ? '' : `, got ${JSON.stringify(value)}`
}

function pairOf(name: string): string {
  if (name === 'A1111_USERNAME') return 'A1111_PASSWORD'
  if (name === 'A1111_PASSWORD') return 'A1111_USERNAME'
  return name
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

/** The settings as --check-config prints them: every value, secrets masked. */
export function describeConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const name of SETTING_NAMES) {
    const value = (config as Record<string, unknown>)[name]
    if (name === 'A1111_BASE_URL' && Array.isArray(value)) {
      out[name] = value.map((s: { password?: string }) =>
        s.password === undefined ? s : { ...s, password: '(set)' },
      )
      continue
    }
    out[name] = SECRET_SETTINGS.has(name) && value !== undefined ? '(set)' : (value ?? null)
  }
  return out
}
