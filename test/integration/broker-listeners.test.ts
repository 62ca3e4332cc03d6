import { execFileSync } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatLine } from '../../src/auth/password-file.ts'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'

/*
 * The TLS and WebSocket listeners (MQTT_TLS_*, MQTT_WS_PORT) with a certificate the test makes with openssl,
 * a real mqtt.js client over each, and a whole frame through them. Both listeners sit on the same broker
 * and the same access rules as the plain one.
 */

let dir: string
let cert: string
let key: string
let passwd: string
let bridge: TestBridge
let ports: { mqttTlsPort: number; mqttWsPort: number }

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pab-tls-'))
  cert = join(dir, 'cert.pem')
  key = join(dir, 'key.pem')
  execFileSync(
    'openssl',
    [
      ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
      ...['-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost'],
      ...['-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
    ],
    { stdio: 'ignore' },
  )
  passwd = join(dir, 'passwd')
  await writeFile(passwd, `${await formatLine('kitchen', 'kitchen-pw')}\n`, { mode: 0o600 })
  bridge = await startBridge({
    MQTT_TLS_PORT: 0,
    MQTT_TLS_CERT: cert,
    MQTT_TLS_KEY: key,
    MQTT_WS_PORT: 0,
    MQTT_PASSWORD_FILE: passwd,
  })
  const listening = bridge.logs.find((l) => l.msg === 'listening') as typeof ports | undefined
  ports = { mqttTlsPort: listening?.mqttTlsPort ?? 0, mqttWsPort: listening?.mqttWsPort ?? 0 }
})

afterAll(async () => {
  await bridge?.stop()
  await rm(dir, { recursive: true, force: true })
})

const login = { username: 'kitchen', password: 'kitchen-pw' }

describe('the TLS listener', () => {
  it('has its real port in the listening line, apart from the plain one', () => {
    expect(ports.mqttTlsPort).toBeGreaterThan(0)
    expect(ports.mqttTlsPort).not.toBe(bridge.mqttPort)
  })

  it('gets a display its frame over mqtts://, checked against the certificate', async () => {
    const ca = await readFile(cert)
    const device = await connectDevice(`mqtts://127.0.0.1:${ports.mqttTlsPort}`, 'kitchen', {
      mqtt: { ...login, ca, rejectUnauthorized: true },
    })
    await device.prompt('a lighthouse, sent encrypted')
    const [frame] = await device.waitForFrames(1)
    expect([frame!.width, frame!.height]).toEqual([240, 240])
    await device.close()
  })

  it('refuses a client that does not trust the certificate, and a wrong password over TLS', async () => {
    const untrusted = connectDevice(`mqtts://127.0.0.1:${ports.mqttTlsPort}`, 'kitchen', { mqtt: login })
    await expect(untrusted).rejects.toThrow(/self[- ]signed/i)
    const ca = await readFile(cert)
    const wrong = connectDevice(`mqtts://127.0.0.1:${ports.mqttTlsPort}`, 'kitchen', {
      mqtt: { username: 'kitchen', password: 'nope', ca },
    })
    await expect(wrong).rejects.toMatchObject({ code: 4 })
  })
})

describe('the WebSocket listener', () => {
  it('gets a display its frame over ws://…/mqtt', async () => {
    expect(ports.mqttWsPort).toBeGreaterThan(0)
    const device = await connectDevice(`ws://127.0.0.1:${ports.mqttWsPort}/mqtt`, 'kitchen', { mqtt: login })
    await device.prompt('a harbour, over a WebSocket')
    const [frame] = await device.waitForFrames(1)
    expect(frame!.pixels.length).toBe(240 * 240 * 2)
    await device.close()
  })

  it('answers a plain HTTP request with 426 and where to connect', async () => {
    const res = await fetch(`http://127.0.0.1:${ports.mqttWsPort}/`)
    expect(res.status).toBe(426)
    expect(await res.text()).toContain('/mqtt')
  })
})

describe('a TLS file that cannot be used', () => {
  it('stops the start with the setting named', async () => {
    const missing = join(dir, 'missing.pem')
    const failed = startBridge({ MQTT_TLS_PORT: 0, MQTT_TLS_CERT: missing, MQTT_TLS_KEY: key })
    await expect(failed).rejects.toMatchObject({
      name: 'TlsFileError',
      message: expect.stringMatching(/^MQTT_TLS_CERT: .*missing\.pem cannot be read \(ENOENT\)/),
    })
  })
})
