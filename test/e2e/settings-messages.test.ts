import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { spawnDaemon } from '../support/spawn.ts'

/*
 * Issue 13, "First hour": what the daemon says about its settings and its ports, as a user sees it.
 */

describe('the daemon’s messages about settings and ports', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pab-e2e-settings-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  const env = () => ({
    MQTT_HOST: '127.0.0.1',
    MQTT_PORT: '0',
    HTTP_HOST: '127.0.0.1',
    HTTP_PORT: '0',
    DATA_DIR: join(dir, 'data'),
    DEMO_STEP_MS: '0',
  })

  it('names the setting whose port another program holds', async () => {
    const holder = createServer()
    holder.listen(0, '127.0.0.1')
    await once(holder, 'listening')
    const port = (holder.address() as { port: number }).port
    try {
      const daemon = spawnDaemon({ ...env(), HTTP_PORT: String(port) }, [], dir)
      expect((await daemon.exit).code).toBe(1)
      const fatal = daemon.lines.find((l) => l.level === 60)
      expect(fatal?.msg).toBe(
        `cannot listen: port ${port} (HTTP_PORT) is in use by another program; stop it or set HTTP_PORT to a free port`,
      )
    } finally {
      holder.close()
    }
  })

  it('warns about a .env line it ignores, by line number, with --check-config', async () => {
    await writeFile(join(dir, '.env'), 'LOG_LEVEL=debug\nA1111_PASSWORD hunter2\n')
    const daemon = spawnDaemon(env(), ['--check-config'], dir)
    expect((await daemon.exit).code).toBe(0)
    expect(daemon.stderr()).toBe(
      'pico-a1111-bridge: warning: .env line 2: ignored, not NAME=value (no "=")\n',
    )
    expect(daemon.stdout()).toContain('"LOG_LEVEL": "debug"')
  })

  it('refuses a server without its password and prints no secret', async () => {
    const config = join(dir, 'config.json')
    await writeFile(config, JSON.stringify({ A1111_BASE_URL: [{ url: 'http://gpu1:7860', username: 'u' }] }))
    const daemon = spawnDaemon(
      { ...env(), A1111_USERNAME: 'sd', A1111_PASSWORD: 'hunter2', SERVICE_API_KEY: 'k3y-s3cret' },
      ['--config', config],
      dir,
    )
    expect((await daemon.exit).code).toBe(78)
    expect(daemon.stderr()).toBe(
      'pico-a1111-bridge: invalid settings:\n' +
        `  - A1111_BASE_URL (server 1 "http://gpu1:7860"; config file ${config}): username and password go together\n`,
    )
  })
})
