import { spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError, describeConfig, type LoadOptions, loadConfig } from '../../src/config/load.ts'
import { a1111Servers } from '../../src/config/schema.ts'
import { maskSecrets, maskUrlPasswords } from '../../src/config/secrets.ts'

const dir = mkdtempSync(join(tmpdir(), 'pico-bridge-config-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let fileCount = 0
function tempFile(name: string, text: string): string {
  const path = join(dir, `${fileCount++}-${name}`)
  writeFileSync(path, text)
  return path
}
const configFile = (settings: unknown) => tempFile('config.json', JSON.stringify(settings))

/**
 * problemsOf, without the privilege to read every file: root reads any file whatever its mode, so as root
 * (CI) the load runs in a child process that setpriv (util-linux) starts without CAP_DAC_OVERRIDE and
 * CAP_DAC_READ_SEARCH, for which the mode counts as it does for anyone.
 */
function problemsAsUser(options: LoadOptions): readonly string[] {
  if (process.getuid?.() !== 0) return problemsOf(options)
  const load = new URL('../../src/config/load.ts', import.meta.url).href
  const script = `
    const { loadConfig } = await import(${JSON.stringify(load)})
    try { loadConfig(${JSON.stringify(options)}); console.log('null') }
    catch (err) { console.log(JSON.stringify(err.problems ?? String(err))) }`
  const caps = '-dac_override,-dac_read_search'
  const run = spawnSync(
    'setpriv',
    ['--bounding-set', caps, '--inh-caps', caps, '--', process.execPath, '--input-type=module', '-e', script],
    { encoding: 'utf8', timeout: 20_000 },
  )
  if (run.error)
    throw new Error(`setpriv is not installed: apt-get install util-linux (${run.error.message})`)
  expect(run.status, run.stderr).toBe(0)
  const problems = JSON.parse(run.stdout) as readonly string[] | null
  expect(problems).not.toBeNull()
  return problems!
}

/** Runs loadConfig, expects a ConfigError and returns its problems. */
function problemsOf(options: LoadOptions): readonly string[] {
  let caught: unknown
  try {
    loadConfig(options)
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(ConfigError)
  return (caught as ConfigError).problems
}

describe('loadConfig', () => {
  it('gives every default with an empty environment', () => {
    const config = loadConfig({ env: {} })
    // The defaults of the README's settings table; later settings may join them.
    expect(config).toMatchObject({
      A1111_TIMEOUT: 300,
      TARGET_WIDTH: 240,
      TARGET_HEIGHT: 240,
      LUMINANCE_INVERT: false,
      PIXEL_FORMAT: 'rgb565-be',
      RESIZE_FIT: 'cover',
      BAND_ROWS: 20,
      FRAME_COMPRESS: false,
      MQTT_HOST: '0.0.0.0',
      MQTT_PORT: 1883,
      HTTP_HOST: '0.0.0.0',
      HTTP_PORT: 8080,
      BASE_TOPIC: 'pico',
      DATA_DIR: './data',
      LOG_LEVEL: 'info',
      QUEUE_MAX: 100,
      SHUTDOWN_TIMEOUT: 15,
    })
    for (const unset of ['A1111_BASE_URL', 'A1111_USERNAME', 'A1111_PASSWORD', 'SERVICE_API_KEY'] as const) {
      expect(config[unset]).toBeUndefined()
    }
  })

  it('turns environment strings into numbers, booleans and trimmed URLs', () => {
    const config = loadConfig({
      env: {
        MQTT_PORT: '1884',
        TARGET_WIDTH: '320',
        A1111_TIMEOUT: '12.5',
        A1111_BASE_URL: ' http://gpu.local:7860/ ',
        BASE_TOPIC: 'home/pico',
        PATH: '/usr/bin',
      },
    })
    expect(config.MQTT_PORT).toBe(1884)
    expect(config.TARGET_WIDTH).toBe(320)
    expect(config.A1111_TIMEOUT).toBe(12.5)
    expect(config.A1111_BASE_URL).toEqual([{ url: 'http://gpu.local:7860' }])
    expect(config.BASE_TOPIC).toBe('home/pico')
    expect(config).not.toHaveProperty('PATH')
  })

  it('lets the environment override the config file', () => {
    const file = configFile({ MQTT_PORT: 2000, HTTP_PORT: 'off', LOG_LEVEL: 'debug', TARGET_WIDTH: 128 })
    const config = loadConfig({ configFile: file, env: { MQTT_PORT: '3000', LOG_LEVEL: 'warn' } })
    expect(config.MQTT_PORT).toBe(3000)
    expect(config.LOG_LEVEL).toBe('warn')
    expect(config.HTTP_PORT).toBe('off')
    expect(config.TARGET_WIDTH).toBe(128)
  })

  it('reads .env over the config file, and the real environment over .env', () => {
    const file = configFile({ MQTT_PORT: 2000, LOG_LEVEL: 'debug', DATA_DIR: '/from/file' })
    const dotenvFile = tempFile(
      '.env',
      '# the older proxy\'s file\nMQTT_PORT=2500\nLOG_LEVEL="trace"\nA1111_BASE_URL=http://10.0.0.5:7860\n',
    )
    const config = loadConfig({ configFile: file, dotenvFile, env: { LOG_LEVEL: 'error' } })
    expect(config.MQTT_PORT).toBe(2500)
    expect(config.LOG_LEVEL).toBe('error')
    expect(config.A1111_BASE_URL).toEqual([{ url: 'http://10.0.0.5:7860' }])
    expect(config.DATA_DIR).toBe('/from/file')
  })

  it('carries on without a .env file when there is none', () => {
    expect(loadConfig({ env: {}, dotenvFile: join(dir, 'no-such.env') }).MQTT_PORT).toBe(1883)
  })

  it('counts empty values as unset, in .env, the environment and the config file', () => {
    const file = configFile({ MQTT_PORT: 2000, A1111_USERNAME: '', HTTP_HOST: null })
    const dotenvFile = tempFile('.env', 'A1111_PASSWORD=\nLOG_LEVEL=\nTARGET_WIDTH=100\n')
    const config = loadConfig({ configFile: file, dotenvFile, env: { MQTT_PORT: '', TARGET_WIDTH: '' } })
    expect(config.MQTT_PORT).toBe(2000)
    expect(config.TARGET_WIDTH).toBe(100)
    expect(config.LOG_LEVEL).toBe('info')
    expect(config.HTTP_HOST).toBe('0.0.0.0')
    expect(config.A1111_USERNAME).toBeUndefined()
    expect(config.A1111_PASSWORD).toBeUndefined()
  })

  // BUG (src/config/load.ts): a value of spaces is not counted as empty; z.coerce.number turns it into 0,
  // so `MQTT_PORT=" "` silently binds a random port. Fix: in put(), skip strings whose trim() is ''.
  it('counts a value of only spaces as unset', () => {
    expect(loadConfig({ env: { MQTT_PORT: '  ' } }).MQTT_PORT).toBe(1883)
  })

  it.each([
    ['true', true],
    ['1', true],
    ['yes', true],
    ['TRUE', true],
    [' Yes ', true],
    ['false', false],
    ['0', false],
    ['no', false],
  ])('reads LUMINANCE_INVERT=%j as %s', (word, value) => {
    expect(loadConfig({ env: { LUMINANCE_INVERT: word } }).LUMINANCE_INVERT).toBe(value)
    expect(loadConfig({ env: { FRAME_COMPRESS: word } }).FRAME_COMPRESS).toBe(value)
  })

  it('takes JSON booleans and numbers from the config file', () => {
    const config = loadConfig({ configFile: configFile({ LUMINANCE_INVERT: true, BAND_ROWS: 10 }), env: {} })
    expect(config.LUMINANCE_INVERT).toBe(true)
    expect(config.BAND_ROWS).toBe(10)
  })

  it("turns the HTTP listener off with HTTP_PORT 'off' and accepts port 0", () => {
    expect(loadConfig({ env: { HTTP_PORT: 'off' } }).HTTP_PORT).toBe('off')
    expect(loadConfig({ env: { HTTP_PORT: '0', MQTT_PORT: '0' } })).toMatchObject({
      HTTP_PORT: 0,
      MQTT_PORT: 0,
    })
  })

  it('names the setting, the source and the value that is wrong', () => {
    expect(problemsOf({ env: { MQTT_PORT: 'abc' } })).toEqual([
      'MQTT_PORT (environment): must be a whole number, got "abc"',
    ])
    expect(problemsOf({ env: { HTTP_PORT: '99999' } })).toEqual([
      'HTTP_PORT (environment): must be at most 65535, got "99999"',
    ])
    expect(problemsOf({ env: { LUMINANCE_INVERT: 'maybe' } })).toEqual([
      'LUMINANCE_INVERT (environment): must be true or false, got "maybe"',
    ])
    const file = configFile({ TARGET_WIDTH: 0 })
    expect(problemsOf({ configFile: file, env: {} })).toEqual([
      `TARGET_WIDTH (config file ${file}): must be at least 1, got 0`,
    ])
    const dotenvFile = tempFile('.env', 'LOG_LEVEL=loud\n')
    expect(problemsOf({ env: {}, dotenvFile })).toEqual([
      `LOG_LEVEL (.env file ${dotenvFile}): must be one of fatal, error, warn, info, debug, trace, silent, got "loud"`,
    ])
  })

  it('gives one problem per bad setting', () => {
    const problems = problemsOf({
      env: {
        MQTT_PORT: '70000',
        HTTP_PORT: 'none',
        A1111_BASE_URL: 'ftp://gpu.local',
        BASE_TOPIC: 'pico/#',
        A1111_TIMEOUT: '0',
      },
    })
    expect(problems).toHaveLength(5)
    for (const name of ['MQTT_PORT', 'HTTP_PORT', 'A1111_BASE_URL', 'BASE_TOPIC', 'A1111_TIMEOUT']) {
      expect(problems.filter((p) => p.startsWith(`${name} (`) && p.includes('environment)'))).toHaveLength(1)
    }
  })

  it('puts every problem into the error message', () => {
    let caught: unknown
    try {
      loadConfig({ env: { MQTT_PORT: 'x', QUEUE_MAX: '0' } })
    } catch (err) {
      caught = err
    }
    expect((caught as Error).message).toBe(
      'invalid settings:\n' +
        '  - MQTT_PORT (environment): must be a whole number, got "x"\n' +
        '  - QUEUE_MAX (environment): must be at least 1, got "0"',
    )
  })

  // BUG (src/config/load.ts): z.coerce.number() turns JSON true into 1 and [] into 0, so a config file
  // with "MQTT_PORT": true listens on port 1. Fix: coerce only strings, e.g.
  // z.preprocess((v) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v), z.number(...)).
  it('refuses a JSON boolean or array where a number belongs', () => {
    expect(problemsOf({ configFile: configFile({ MQTT_PORT: true, TARGET_WIDTH: [] }), env: {} })).toEqual([
      expect.stringMatching(/^TARGET_WIDTH \(config file \S+\): /),
      expect.stringMatching(/^MQTT_PORT \(config file \S+\): /),
    ])
  })

  it('names an unknown key in the config file, with a suggestion when one is close', () => {
    const file = configFile({ mqtt_port: 1884, 'http-port': 8081, COLOUR: 'red' })
    expect(problemsOf({ configFile: file, env: {} })).toEqual([
      `mqtt_port (config file ${file}): unknown setting; did you mean MQTT_PORT?`,
      `http-port (config file ${file}): unknown setting; did you mean HTTP_PORT?`,
      `COLOUR (config file ${file}): unknown setting`,
    ])
  })

  // BUG (src/config/load.ts): problems found while reading the files (unknown keys) are thrown before the
  // schema runs, so the bad values next to them are only reported on the next try. Fix: run safeParse even
  // when `problems` is not empty and throw problems + describeIssues(...) together.
  it('reports an unknown key and a bad value of the same file together', () => {
    const file = configFile({ MQTT_PROT: 1884, HTTP_PORT: 'none' })
    const problems = problemsOf({ configFile: file, env: {} })
    expect(problems).toHaveLength(2)
    expect(problems.some((p) => p.startsWith(`HTTP_PORT (config file ${file})`))).toBe(true)
  })

  it('says when the config file cannot be read or is not a JSON object', () => {
    const missing = join(dir, 'missing.json')
    expect(problemsOf({ configFile: missing, env: {} })).toEqual([
      `--config ${missing}: cannot read the file (ENOENT)`,
    ])
    expect(problemsOf({ configFile: dir, env: {} })).toEqual([
      `--config ${dir}: cannot read the file (EISDIR)`,
    ])
    const broken = tempFile('broken.json', '{"MQTT_PORT": 1883,')
    expect(problemsOf({ configFile: broken, env: {} })[0]).toMatch(
      new RegExp(`^--config ${broken}: not valid JSON \\(`),
    )
    const list = tempFile('list.json', '[{"MQTT_PORT": 1883}]')
    expect(problemsOf({ configFile: list, env: {} })).toEqual([
      `--config ${list}: must hold a JSON object of settings, e.g. {"MQTT_PORT": 1883}`,
    ])
  })

  it('says when the config file exists but may not be read', () => {
    const locked = tempFile('locked.json', '{}')
    chmodSync(locked, 0o000)
    expect(problemsAsUser({ configFile: locked, env: {} })).toEqual([
      `--config ${locked}: cannot read the file (EACCES)`,
    ])
  })

  it('wants A1111_USERNAME and A1111_PASSWORD together', () => {
    const onlyUser = problemsOf({ env: { A1111_USERNAME: 'sd' } })
    expect(onlyUser).toHaveLength(1)
    expect(onlyUser[0]).toMatch(/^A1111_PASSWORD \(.*\): A1111_USERNAME and A1111_PASSWORD go together/)
    const onlyPassword = problemsOf({ env: { A1111_PASSWORD: 'hunter2' } })
    expect(onlyPassword).toHaveLength(1)
    expect(onlyPassword[0]).toMatch(/^A1111_USERNAME \(.*\): .*set both or neither/)
    const both = loadConfig({ env: { A1111_USERNAME: 'sd', A1111_PASSWORD: 'hunter2' } })
    expect([both.A1111_USERNAME, both.A1111_PASSWORD]).toEqual(['sd', 'hunter2'])
  })

  it('never shows a secret value in a problem', () => {
    const secretProblems = [
      ...problemsOf({ env: { A1111_PASSWORD: 'hunter2' } }),
      ...problemsOf({ configFile: configFile({ A1111_PASSWORD: 7654321, SERVICE_API_KEY: 24680 }), env: {} }),
      ...problemsOf({ configFile: configFile({ A1111_PASSWROD: 'hunter2' }), env: {} }),
    ]
    expect(secretProblems.length).toBeGreaterThanOrEqual(4)
    for (const problem of secretProblems) {
      expect(problem).not.toMatch(/hunter2|7654321|24680/)
    }
    // The same problems do show a value that is not secret.
    expect(problemsOf({ configFile: configFile({ A1111_USERNAME: 13579 }), env: {} })[0]).toMatch(
      /^A1111_USERNAME \(config file \S+\): /,
    )
  })

  it('masks secrets in describeConfig and shows everything else', () => {
    const config = loadConfig({
      env: {
        A1111_USERNAME: 'sd',
        A1111_PASSWORD: 'hunter2',
        SERVICE_API_KEY: 'k3y-s3cret',
        MQTT_PORT: '1884',
      },
    })
    const described = describeConfig(config)
    expect(described.A1111_PASSWORD).toBe('(set)')
    expect(described.SERVICE_API_KEY).toBe('(set)')
    expect(described.A1111_USERNAME).toBe('sd')
    expect(described.MQTT_PORT).toBe(1884)
    expect(described.A1111_BASE_URL).toBeNull()
    expect(JSON.stringify(described)).not.toMatch(/hunter2|k3y-s3cret/)
    const unset = describeConfig(loadConfig({ env: {} }))
    expect([unset.A1111_PASSWORD, unset.SERVICE_API_KEY]).toEqual([null, null])
  })

  it('names the server and the file of an unknown key in a server entry', () => {
    const file = configFile({ A1111_BASE_URL: ['http://a:7860', { url: 'http://b:7860', extra: 1 }] })
    expect(problemsOf({ configFile: file, env: {} })).toEqual([
      `A1111_BASE_URL (server 2 "http://b:7860"; config file ${file}): unknown key "extra"; a server takes url, username, password and timeout`,
    ])
  })

  it('never shows a secret when a server entry has a username and no password', () => {
    // Before: the rule over several settings got the whole config as its input, and the message printed it,
    // SERVICE_API_KEY and A1111_PASSWORD included.
    const file = configFile({
      A1111_BASE_URL: [{ url: 'http://gpu1:7860', username: 'u' }],
      A1111_USERNAME: 'sd',
      A1111_PASSWORD: 'hunter2',
      SERVICE_API_KEY: 'k3y-s3cret',
    })
    const problems = problemsOf({ configFile: file, env: {} })
    expect(problems).toEqual([
      `A1111_BASE_URL (server 1 "http://gpu1:7860"; config file ${file}): username and password go together`,
    ])
    const withEnv = problemsOf({
      configFile: configFile({ A1111_BASE_URL: [{ url: 'http://gpu1:7860', password: 'p4ss' }] }),
      env: { SERVICE_API_KEY: 'k3y-s3cret', A1111_USERNAME: 'sd', A1111_PASSWORD: 'hunter2' },
    })
    expect(withEnv).toHaveLength(1)
    expect(withEnv.join('\n')).not.toMatch(/hunter2|k3y-s3cret|p4ss/)
  })

  it('masks the password of a URL it shows in a problem', () => {
    const problems = problemsOf({ env: { A1111_BASE_URL: 'http://a:7860,http://me:pa55@gpu2:7860' } })
    expect(problems).toHaveLength(1)
    expect(problems[0]).toMatch(/^A1111_BASE_URL \(server 2; environment\): /)
    expect(problems[0]).toContain('got "http://me:(set)@gpu2:7860"')
    expect(problems[0]).not.toContain('pa55')
  })

  it('warns about a .env line it cannot read, with its line number and without its text', () => {
    const dotenvFile = tempFile(
      '.env',
      [
        '# settings',
        'MQTT_PORT=1884',
        'A1111_PASSWORD hunter2',
        '',
        'export LOG_LEVEL=debug',
        'A1111_BASE_URL="http://a:7860,',
        'http://b:7860"',
        '=nothing',
        'HTTP_PORT = 8081',
      ].join('\n'),
    )
    const warnings: string[] = []
    const config = loadConfig({ env: {}, dotenvFile, onWarning: (w) => warnings.push(w) })
    expect(warnings).toEqual([
      `.env file ${dotenvFile} line 3: ignored, not NAME=value (no "=")`,
      `.env file ${dotenvFile} line 8: ignored, not NAME=value`,
    ])
    expect(config).toMatchObject({ MQTT_PORT: 1884, LOG_LEVEL: 'debug', HTTP_PORT: 8081 })
    expect(config.A1111_BASE_URL).toHaveLength(2)
    expect(config.A1111_PASSWORD).toBeUndefined()
  })

  it('masks passwords inside URLs in describeConfig, whichever setting holds the URL', () => {
    expect(maskUrlPasswords('mqtts://ha:s3cr3t@broker.lan:8883')).toBe('mqtts://ha:(set)@broker.lan:8883')
    expect(maskUrlPasswords('http://a:7860,http://u:p@ss@b:7860')).toBe('http://a:7860,http://u:(set)@b:7860')
    expect(maskUrlPasswords('mqtt://user-only@broker:1883')).toBe('mqtt://user-only@broker:1883')
    // The coming MQTT_URL and HA_MQTT_URL settings, and any secret by name, whatever it is nested in.
    expect(
      maskSecrets({ MQTT_URL: 'mqtt://u:pw@h', HA_MQTT_URL: 'mqtts://ha:pw2@h', MQTT_PASSWORD: 'x' }),
    ).toEqual({ MQTT_URL: 'mqtt://u:(set)@h', HA_MQTT_URL: 'mqtts://ha:(set)@h', MQTT_PASSWORD: '(set)' })
    const config = loadConfig({
      configFile: configFile({ A1111_BASE_URL: [{ url: 'http://b:7860', username: 'x', password: 'y' }] }),
      env: { SERVICE_API_KEY: 'k3y-s3cret' },
    })
    expect(describeConfig(config)).toMatchObject({
      A1111_BASE_URL: [{ url: 'http://b:7860', username: 'x', password: '(set)' }],
      SERVICE_API_KEY: '(set)',
    })
  })

  it('returns a frozen config', () => {
    const config = loadConfig({ env: { MQTT_PORT: '1884' } })
    expect(Object.isFrozen(config)).toBe(true)
    expect(() => {
      ;(config as { MQTT_PORT: number }).MQTT_PORT = 1
    }).toThrow(TypeError)
    expect(config.MQTT_PORT).toBe(1884)
  })
})

describe('several A1111 servers', () => {
  it('takes a comma-separated list from the environment, shared credentials filling in', () => {
    const config = loadConfig({
      env: { A1111_BASE_URL: 'http://a:7860, http://b:7861/', A1111_USERNAME: 'u', A1111_PASSWORD: 'p' },
    })
    expect(a1111Servers(config)).toEqual([
      { url: 'http://a:7860', username: 'u', password: 'p', timeoutS: 300 },
      { url: 'http://b:7861', username: 'u', password: 'p', timeoutS: 300 },
    ])
  })

  it('takes an array with per-server auth and timeout from the config file, and masks passwords', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pab-servers-'))
    const file = join(dir, 'config.json')
    writeFileSync(
      file,
      JSON.stringify({
        A1111_TIMEOUT: 120,
        A1111_BASE_URL: [
          'http://a:7860',
          { url: 'http://b:7860', username: 'x', password: 'y', timeout: 30 },
        ],
      }),
    )
    const config = loadConfig({ configFile: file, env: {} })
    expect(a1111Servers(config)).toEqual([
      { url: 'http://a:7860', username: undefined, password: undefined, timeoutS: 120 },
      { url: 'http://b:7860', username: 'x', password: 'y', timeoutS: 30 },
    ])
    expect(JSON.stringify(describeConfig(config))).not.toContain('"y"')
  })

  it('names a bad server in the list', () => {
    expect(() => loadConfig({ env: { A1111_BASE_URL: 'http://a:7860,ftp://b' } })).toThrow(
      /A1111_BASE_URL \(server 2; environment\)/,
    )
    expect(() => loadConfig({ env: {}, configFile: undefined, dotenvFile: undefined })).not.toThrow()
  })
})
