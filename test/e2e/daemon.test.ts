import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { connectDevice } from '../support/device.ts'
import { spawnDaemon } from '../support/spawn.ts'

describe('the daemon as a user runs it', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pab-e2e-'))
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

  it('starts with the demo generator, draws a prompt, and stops on SIGTERM with exit code 0', async () => {
    const daemon = spawnDaemon(env(), [], dir)
    const { mqttPort } = await daemon.listening
    expect(mqttPort).toBeGreaterThan(0)
    expect(daemon.lines.some((l) => l.level === 40 && String(l.msg).includes('demo generator'))).toBe(true)

    const device = await connectDevice(`mqtt://127.0.0.1:${mqttPort}`, 'kitchen')
    await device.prompt('a red fox')
    await device.waitForStatus((s) => s.state === 'done')
    expect(device.chunks).toHaveLength(12)
    await device.close()

    daemon.child.kill('SIGTERM')
    const { code } = await daemon.exit
    expect(code).toBe(0)
    expect(daemon.lines.some((l) => l.msg === 'stopped')).toBe(true)
  })

  it('reads a config file and a .env, and the environment wins', async () => {
    await writeFile(join(dir, 'config.json'), JSON.stringify({ BASE_TOPIC: 'fromfile', TARGET_WIDTH: 120 }))
    await writeFile(join(dir, '.env'), 'BASE_TOPIC=fromdotenv\nTARGET_HEIGHT=60\n')
    const daemon = spawnDaemon({ ...env(), TARGET_HEIGHT: '80' }, ['--config', join(dir, 'config.json')], dir)
    const { mqttPort } = await daemon.listening
    const device = await connectDevice(`mqtt://127.0.0.1:${mqttPort}`, 'cfg', { base: 'fromdotenv' })
    await device.prompt('settings')
    const [frame] = await device.waitForFrames(1)
    expect([frame!.width, frame!.height]).toEqual([120, 80])
    await device.close()
    daemon.child.kill('SIGINT')
    expect((await daemon.exit).code).toBe(0)
  })

  it('exits 78 naming each bad setting, before anything listens', async () => {
    const daemon = spawnDaemon(
      { ...env(), MQTT_PORT: 'abc', TARGET_WIDTH: '-5', LUMINANCE_INVERT: 'maybe' },
      [],
      dir,
    )
    const { code } = await daemon.exit
    expect(code).toBe(78)
    const err = daemon.stderr()
    expect(err).toMatch(/MQTT_PORT \(environment\): must be a whole number, got "abc"/)
    expect(err).toMatch(/TARGET_WIDTH/)
    expect(err).toMatch(/LUMINANCE_INVERT/)
    expect(daemon.lines.some((l) => l.msg === 'listening')).toBe(false)
  })

  it('checks the config without starting, masking secrets', async () => {
    const daemon = spawnDaemon({ ...env(), SERVICE_API_KEY: 'hunter2' }, ['--check-config'], dir)
    const { code } = await daemon.exit
    expect(code).toBe(0)
    expect(daemon.stdout()).toContain('"SERVICE_API_KEY": "(set)"')
    expect(daemon.stdout()).toContain('"TARGET_WIDTH": 240')
    expect(daemon.stdout()).not.toContain('hunter2')
  })

  it('tells people what to try next, with the real port', async () => {
    const daemon = spawnDaemon(env(), [], dir)
    const { mqttPort } = await daemon.listening
    const line = String((await daemon.line((l) => String(l.msg).startsWith('try it:'))).msg)
    expect(line).toContain(`npx pico-a1111-bridge device --id demo --url mqtt://127.0.0.1:${mqttPort}`)
    expect(line).toContain(`mosquitto_sub -h 127.0.0.1 -p ${mqttPort} -t 'pico/+/status' -v`)
    daemon.child.kill('SIGTERM')
    expect((await daemon.exit).code).toBe(0)
  })

  it('logs the listening line with the real ports even at LOG_LEVEL=warn', async () => {
    const daemon = spawnDaemon({ ...env(), LOG_LEVEL: 'warn' }, [], dir)
    const { mqttPort, httpPort } = await daemon.listening
    expect(mqttPort).toBeGreaterThan(0)
    expect(httpPort).toBeGreaterThan(0)
    expect(daemon.lines.some((l) => l.level === 30 && l.msg !== 'listening' && l.msg !== 'stopping')).toBe(
      false,
    )
    daemon.child.kill('SIGTERM')
    expect((await daemon.exit).code).toBe(0)
  })

  it('refuses a second daemon on the same DATA_DIR without touching its journal', async () => {
    const first = spawnDaemon(env(), [], dir)
    await first.listening
    const journal = await readFile(join(dir, 'data', 'jobs.journal'))
    const second = spawnDaemon(env(), [], dir)
    expect((await second.exit).code).toBe(1)
    const fatal = second.lines.find((l) => l.level === 60)
    expect(fatal?.msg).toMatch(/DATA_DIR .* is in use by another pico-a1111-bridge \(pid \d+\)/)
    expect((await readFile(join(dir, 'data', 'jobs.journal'))).equals(journal)).toBe(true)
    first.child.kill('SIGTERM')
    expect((await first.exit).code).toBe(0)
    // The lock goes with the daemon: the next start takes the folder.
    const third = spawnDaemon(env(), [], dir)
    await third.listening
    third.child.kill('SIGTERM')
    expect((await third.exit).code).toBe(0)
  })

  it('takes over the lock of a daemon that died', async () => {
    await mkdir(join(dir, 'data'), { recursive: true })
    await writeFile(join(dir, 'data', 'daemon.pid'), '999999\n')
    const daemon = spawnDaemon(env(), [], dir)
    await daemon.listening
    daemon.child.kill('SIGTERM')
    expect((await daemon.exit).code).toBe(0)
  })

  it('refuses an unknown option with exit code 64', async () => {
    const daemon = spawnDaemon(env(), ['--frobnicate'], dir)
    expect((await daemon.exit).code).toBe(64)
    expect(daemon.stderr()).toMatch(/frobnicate/)
  })
})
