import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError, describeConfig, loadConfig } from '../../src/config/load.ts'
import { SETTING_NAMES } from '../../src/config/schema.ts'
import { isSecretName } from '../../src/config/secrets.ts'

/*
 * The settings loader against random environments (issue 10, "Fuzzing", and "No secrets in logs or
 * errors"): whatever the values, it returns a config or throws its ConfigError, and no problem line,
 * warning or --check-config output (describeConfig) ever holds the value of a secret setting, the password of
 * a URL or a server entry's password.
 */

const SEED = 20_241_013
/** Put in every secret value; no message may contain it. */
const MARK = 'Zq9SeCrEtVaLuE'

const secretNames = SETTING_NAMES.filter((n) => isSecretName(n))
const plainNames = SETTING_NAMES.filter((n) => !isSecretName(n))

const plainValue = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.constantFrom(
    '0',
    '1',
    '-1',
    'true',
    'off',
    'on',
    '65536',
    '1e9',
    'NaN',
    ' ',
    '127.0.0.1',
    '10.0.0.0/33',
  ),
  fc.integer({ min: -5, max: 70_000 }).map(String),
  fc.constantFrom('rgb565-be', 'mono', 'http://a1111:7860', 'mqtt://broker:1883', 'a,b,,c', '{"x":1}'),
)
const secretValue = fc.oneof(
  fc.constant(MARK),
  fc.string({ maxLength: 6 }).map((s) => `${s}${MARK}${s}`),
  fc.constant(`pass:${MARK}@x`),
)
/**
 * A URL setting's value with a password in it, as a user may well write it, spaces and all. `/?#@,` in a
 * password must be percent-encoded in a URL (RFC 3986 section 3.2.1; `,` separates a list here), so the
 * junk has none of them.
 */
const junk = fc.string({ maxLength: 5 }).map((s) => s.replace(/[/?#@,]/g, ''))
const urlWithPassword = fc
  .tuple(
    fc.constantFrom('http', 'https', 'mqtt', 'mqtts', 'ftp', 'h t'),
    fc.constantFrom('', 'user', 'a b'),
    junk,
  )
  .map(([scheme, user, junk]) => `${scheme}://${user}:${MARK}${junk}@host:1${junk}`)

const env = fc
  .tuple(
    fc.dictionary(fc.constantFrom(...plainNames), plainValue, { maxKeys: 8 }),
    fc.dictionary(fc.constantFrom(...secretNames), secretValue, { maxKeys: 4 }),
    fc.dictionary(fc.constantFrom('A1111_BASE_URL', 'MQTT_URL', 'HA_MQTT_URL'), urlWithPassword, {
      maxKeys: 3,
    }),
    fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 10 }), { maxKeys: 3 }),
  )
  .map(([plain, secret, urls, other]) => ({ ...other, ...plain, ...secret, ...urls }))

describe('the settings loader, fuzzed', () => {
  it('returns a config or throws ConfigError, and never repeats a secret', () => {
    fc.assert(
      fc.property(env, (vars) => {
        const warnings: string[] = []
        try {
          const config = loadConfig({ env: vars, onWarning: (m) => warnings.push(m) })
          expect(JSON.stringify(describeConfig(config))).not.toContain(MARK)
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError)
          const e = err as ConfigError
          expect(e.message).not.toContain(MARK)
          for (const p of e.problems) expect(p).not.toContain(MARK)
        }
        for (const w of warnings) expect(w).not.toContain(MARK)
      }),
      { seed: SEED, numRuns: 3000 },
    )
  })
})

/** A server entry of the config file, as a user may write one: credentials of its own, whole or half. */
const serverEntry = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      url: fc.constant('http://gpu:7860'),
      username: fc.constant('sd'),
      password: secretValue,
    }),
  },
  { weight: 2, arbitrary: fc.constantFrom('http://gpu:7860', 'https://gpu.lan') },
  { weight: 1, arbitrary: urlWithPassword },
  {
    weight: 1,
    arbitrary: fc.record(
      {
        url: fc.oneof(fc.constantFrom('http://gpu:7860', 'ftp://x', ''), urlWithPassword),
        username: fc.oneof(fc.constantFrom('sd', '', 'a b'), fc.integer()),
        password: fc.oneof(
          secretValue,
          fc.integer({ min: 1_000_000 }).map((n) => `${MARK}${n}`),
        ),
        timeout: fc.oneof(fc.integer({ min: -1, max: 10_000 }), fc.constant('x')),
        extra: fc.constant(1),
      },
      { requiredKeys: ['url'] },
    ),
  },
)

/** Mostly good values, so that most files load and their --check-config output is checked too. */
const sometimesBad = <T>(good: fc.Arbitrary<T>, ...bad: unknown[]) =>
  fc.oneof(
    { weight: 6, arbitrary: good as fc.Arbitrary<unknown> },
    { weight: 1, arbitrary: fc.constantFrom(...bad) },
  )

const configFileBody = fc
  .record(
    {
      A1111_BASE_URL: sometimesBad(
        fc.array(serverEntry, { minLength: 1, maxLength: 3 }),
        7,
        `http://u:${MARK}@h`,
      ),
      A1111_LOGIN: sometimesBad(fc.constant(true), 'half'),
      A1111_PASSWORD: sometimesBad(secretValue, [MARK], { x: MARK }),
      SERVICE_API_KEY: sometimesBad(secretValue, 12_345),
      MQTT_PASSWORD: secretValue,
      MQTT_URL: sometimesBad(fc.constant(`mqtt://bridge:${MARK}@broker:1883`), `mqtt://b:${MARK} x@h`),
      HA_MQTT_URL: sometimesBad(fc.constant(`mqtts://ha:${MARK}@broker:8883`), `mqtt://:${MARK}@`),
    },
    { requiredKeys: [] },
  )
  .map(({ A1111_LOGIN, ...body }) => {
    // A1111_USERNAME and A1111_PASSWORD go together; 'half' leaves the user name out.
    const out: Record<string, unknown> = { ...body }
    if (A1111_LOGIN === true && out.A1111_PASSWORD !== undefined) out.A1111_USERNAME = 'sd'
    if (A1111_LOGIN === undefined) delete out.A1111_PASSWORD
    return out
  })

/** Secrets from the environment as well, over the file's. */
const secretEnv = fc.dictionary(
  fc.constantFrom(...secretNames.filter((n) => n !== 'A1111_PASSWORD')),
  secretValue,
  { maxKeys: 3 },
)

describe('the settings loader with a config file, fuzzed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'pab-fuzz-config-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('never repeats a secret, whatever the server entries and secret settings hold', () => {
    const file = join(dir, 'config.json')
    let loaded = 0
    fc.assert(
      fc.property(configFileBody, secretEnv, (body, vars) => {
        writeFileSync(file, JSON.stringify(body))
        try {
          const config = loadConfig({ configFile: file, env: vars })
          expect(JSON.stringify(describeConfig(config))).not.toContain(MARK)
          loaded++
        } catch (err) {
          expect(err).toBeInstanceOf(ConfigError)
          expect((err as ConfigError).message).not.toContain(MARK)
        }
      }),
      { seed: SEED, numRuns: 1500 },
    )
    // The --check-config side was tried too, not only the errors.
    expect(loaded).toBeGreaterThan(300)
  })
})
