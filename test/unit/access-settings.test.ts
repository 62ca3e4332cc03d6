import { describe, expect, it } from 'vitest'
import { formatLine, parsePasswordFile } from '../../src/auth/password-file.ts'
import { stillAdmitted } from '../../src/broker/access.ts'
import { ConfigError, describeConfig, loadConfig } from '../../src/config/load.ts'
import { tryItLine } from '../../src/try-it.ts'

/* The settings of issue 10's access control and listeners, and who stays connected when the users change. */

function problemsOf(env: Record<string, string>): readonly string[] {
  try {
    loadConfig({ env })
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
  return []
}

describe('access and listener settings', () => {
  it('are off by default: an open broker, no TLS, no WebSocket', () => {
    const c = loadConfig({ env: {} })
    expect([c.MQTT_PASSWORD_FILE, c.MQTT_ACL_FILE, c.MQTT_TLS_PORT, c.MQTT_WS_PORT]).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ])
    expect(c.MQTT_ALLOW_ANONYMOUS).toBe(false)
    expect(c.MQTT_ADMIN_USERS).toEqual([])
  })

  it('read MQTT_ADMIN_USERS as a comma list, and refuse a name a password file cannot hold', () => {
    expect(loadConfig({ env: { MQTT_ADMIN_USERS: ' ha, node-red ,' } }).MQTT_ADMIN_USERS).toEqual([
      'ha',
      'node-red',
    ])
    expect(problemsOf({ MQTT_ADMIN_USERS: 'ha,a:b' })[0]).toMatch(
      /^MQTT_ADMIN_USERS\.1 \(environment\): user names/,
    )
  })

  it('take `off` and 0 for the optional listeners', () => {
    const c = loadConfig({ env: { MQTT_WS_PORT: 'off', MQTT_TLS_PORT: 'OFF' } })
    expect([c.MQTT_WS_PORT, c.MQTT_TLS_PORT]).toEqual([undefined, undefined])
    expect(loadConfig({ env: { MQTT_WS_PORT: '0' } }).MQTT_WS_PORT).toBe(0)
    expect(problemsOf({ MQTT_WS_PORT: 'ws' })[0]).toMatch(
      /^MQTT_WS_PORT \(environment\): must be a whole number/,
    )
  })

  it('want the three TLS settings together, naming each one missing and where the others came from', () => {
    expect(problemsOf({ MQTT_TLS_PORT: '8883' })).toEqual([
      'MQTT_TLS_CERT (environment): MQTT_TLS_PORT, MQTT_TLS_CERT and MQTT_TLS_KEY go together: MQTT_TLS_PORT is set, MQTT_TLS_CERT is not',
      'MQTT_TLS_KEY (environment): MQTT_TLS_PORT, MQTT_TLS_CERT and MQTT_TLS_KEY go together: MQTT_TLS_PORT is set, MQTT_TLS_KEY is not',
    ])
    expect(problemsOf({ MQTT_TLS_CERT: 'c.pem', MQTT_TLS_KEY: 'k.pem' })).toHaveLength(1)
    const c = loadConfig({ env: { MQTT_TLS_PORT: '0', MQTT_TLS_CERT: 'c.pem', MQTT_TLS_KEY: 'k.pem' } })
    expect(c.MQTT_TLS_PORT).toBe(0)
  })

  it('show the files’ paths in --check-config: the path is no secret, although a name says PASSWORD', () => {
    const env = {
      MQTT_PASSWORD_FILE: '/etc/p/passwd',
      MQTT_TLS_PORT: '8883',
      MQTT_TLS_CERT: '/etc/p/cert.pem',
    }
    const c = loadConfig({ env: { ...env, MQTT_TLS_KEY: '/etc/p/key.pem' } })
    const shown = describeConfig(c)
    expect(shown.MQTT_PASSWORD_FILE).toBe('/etc/p/passwd')
    expect(shown.MQTT_TLS_KEY).toBe('/etc/p/key.pem')
  })

  it('give the try-it line a login to fill in when there is a password file', () => {
    const c = loadConfig({ env: { MQTT_HOST: '127.0.0.1', MQTT_PASSWORD_FILE: '/etc/p/passwd' } })
    const line = tryItLine(c, { mqttPort: 1883 })
    expect(line).toContain('--url mqtt://USER:PASSWORD@127.0.0.1:1883')
    expect(line).toContain('mosquitto_sub -h 127.0.0.1 -p 1883 -u USER -P PASSWORD -t')
  })
})

describe('stillAdmitted: who stays connected after the password file changed', async () => {
  const iterations = 1
  const kitchen = await formatLine('kitchen', 'pw', { iterations })
  const hall = await formatLine('hall', 'pw', { iterations })
  const kitchenAgain = await formatLine('kitchen', 'new', { iterations })
  const file = (...lines: string[]) => parsePasswordFile(`${lines.join('\n')}\n`, 'passwd')
  const before = file(kitchen, hall)
  const as = (user: string | undefined) => ({ user, clientId: 'c' })

  it('keeps a user whose line is the same, and lets go of one removed or given a new password', () => {
    expect(stillAdmitted(as('kitchen'), before, file(hall, kitchen), false)).toBe(true)
    expect(stillAdmitted(as('kitchen'), before, file(hall), false)).toBe(false)
    expect(stillAdmitted(as('kitchen'), before, file(kitchenAgain, hall), false)).toBe(false)
    expect(stillAdmitted(as('hall'), before, file(kitchenAgain, hall), false)).toBe(true)
  })

  it('keeps anonymous clients only while they are allowed', () => {
    expect(stillAdmitted(as(undefined), before, before, true)).toBe(true)
    expect(stillAdmitted(as(undefined), before, before, false)).toBe(false)
  })
})
