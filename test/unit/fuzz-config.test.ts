import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../../src/config/load.ts'
import { SETTING_NAMES } from '../../src/config/schema.ts'
import { isSecretName } from '../../src/config/secrets.ts'

/*
 * The settings loader against random environments (issue 10, "Fuzzing", and "No secrets in logs or
 * errors"): whatever the values, it returns a config or throws its ConfigError, and no problem line or
 * warning ever holds the value of a secret setting or the password of a URL.
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
          loadConfig({ env: vars, onWarning: (m) => warnings.push(m) })
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
