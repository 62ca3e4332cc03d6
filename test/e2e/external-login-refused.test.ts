import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { mosquittoPasswd, type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'
import { spawnDaemon } from '../support/spawn.ts'

describe('MQTT_URL with a login the broker refuses', () => {
  const cleanup: (() => Promise<unknown>)[] = []
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn()
  })

  it('exits 78 (a settings problem) at start, naming no password', async () => {
    const broker: RunningMosquitto = await startMosquitto((dir) => {
      const file = join(dir, 'passwd')
      mosquittoPasswd(file, 'bridge', 'right-password')
      return `allow_anonymous false\npassword_file ${file}\n`
    })
    cleanup.push(() => broker.stop())
    const dir = await mkdtemp(join(tmpdir(), 'pab-login-'))
    cleanup.push(() => rm(dir, { recursive: true, force: true }))
    const daemon = spawnDaemon(
      {
        MQTT_URL: `mqtt://bridge:wrong-password@127.0.0.1:${broker.port}`,
        HTTP_PORT: 'off',
        DATA_DIR: join(dir, 'data'),
      },
      [],
      dir,
    )
    const { code } = await daemon.exit
    expect(code).toBe(78)
    expect(daemon.lines.some((l) => l.level === 60 && String(l.msg).startsWith('cannot start:'))).toBe(true)
    expect(daemon.stdout() + daemon.stderr()).not.toContain('wrong-password')
  })
})
