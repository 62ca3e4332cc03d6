import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type MqttClient } from 'mqtt'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { formatLine } from '../../src/auth/password-file.ts'
import { spawnDaemon } from '../support/spawn.ts'

/*
 * The access files as a user meets them (README, "Security"): a malformed file stops the start with exit 78
 * and the file and line, and SIGHUP reads the files again in a running daemon.
 */

describe('the access files, with the daemon as a user runs it', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pab-e2e-access-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  const env = (more: Record<string, string>) => ({
    MQTT_HOST: '127.0.0.1',
    MQTT_PORT: '0',
    HTTP_PORT: 'off',
    DATA_DIR: join(dir, 'data'),
    DEMO_STEP_MS: '0',
    ...more,
  })

  it('exits 78 naming the file and the line of a malformed ACL file, before anything listens', async () => {
    const acl = join(dir, 'acl')
    await writeFile(acl, 'user kitchen\ntopic read pico/kitchen/#\ntopic raed pico/bridge/#\n')
    const daemon = spawnDaemon(env({ MQTT_ACL_FILE: acl }), [], dir)
    const { code } = await daemon.exit
    expect(code).toBe(78)
    const fatal = daemon.lines.find((l) => l.level === 60)
    expect(fatal?.msg).toBe(
      `cannot start: MQTT_ACL_FILE ${acl}:3: unknown access "raed" (expected read, write, readwrite or deny); fix it (or unset the setting) and start again`,
    )
    expect(daemon.lines.some((l) => l.msg === 'listening')).toBe(false)
  })

  it('exits 78 on a password file that is missing', async () => {
    const daemon = spawnDaemon(env({ MQTT_PASSWORD_FILE: join(dir, 'nope') }), [], dir)
    expect((await daemon.exit).code).toBe(78)
    expect(daemon.lines.find((l) => l.level === 60)?.msg).toMatch(
      /MQTT_PASSWORD_FILE .*nope: cannot be read \(ENOENT\)/,
    )
  })

  it('reads the password file again when it changes and on SIGHUP, and keeps running', async () => {
    const passwd = join(dir, 'passwd')
    await writeFile(passwd, `${await formatLine('kitchen', 'old-pw', { iterations: 1000 })}\n`)
    const daemon = spawnDaemon(env({ MQTT_PASSWORD_FILE: passwd }), [], dir)
    const { mqttPort } = await daemon.listening
    const url = `mqtt://127.0.0.1:${mqttPort}`
    expect(daemon.lines.find((l) => l.msg === 'listening')?.access).toBe('password')
    expect(await connack(url, 'kitchen', 'old-pw')).toBe(0)

    const reloads = () => daemon.lines.filter((l) => l.msg === 'password file read again').length
    const until = async (check: () => boolean) => {
      while (!check()) await new Promise((r) => setTimeout(r, 10))
    }
    await writeFile(passwd, `${await formatLine('kitchen', 'new-pw', { iterations: 1000 })}\n`)
    await until(() => reloads() === 1)
    expect(await connack(url, 'kitchen', 'new-pw')).toBe(0)
    expect(await connack(url, 'kitchen', 'old-pw')).toBe(4)

    // SIGHUP reads the file even though it did not change (and does not end the process, as it would
    // without a handler).
    daemon.child.kill('SIGHUP')
    await until(() => reloads() === 2)
    expect(daemon.lines.some((l) => l.msg === 'reading the access files again')).toBe(true)
    expect(await connack(url, 'kitchen', 'new-pw')).toBe(0)

    daemon.child.kill('SIGTERM')
    expect((await daemon.exit).code).toBe(0)
  })
})

async function connack(url: string, username: string, password: string): Promise<number> {
  const client: MqttClient = connect(url, { username, password, reconnectPeriod: 0, protocolVersion: 4 })
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve())
      client.once('error', reject)
    })
    return 0
  } catch (err) {
    return (err as { code?: number }).code ?? -1
  } finally {
    await client.endAsync(true)
  }
}
