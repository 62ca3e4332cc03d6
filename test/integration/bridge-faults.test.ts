import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBridge, type TestBridge } from '../support/bridge.ts'
import { connectDevice } from '../support/device.ts'
import { type FakeA1111, type Fault, startFakeA1111 } from '../support/fake-a1111.ts'
import { httpCall } from '../support/http.ts'

describe('A1111 failures reach the device as coded errors, and the bridge keeps serving', () => {
  let fake: FakeA1111
  let bridge: TestBridge

  beforeAll(async () => {
    fake = await startFakeA1111({ auth: { username: 'pico', password: 'secret' } })
    bridge = await startBridge({
      A1111_BASE_URL: fake.url,
      A1111_USERNAME: 'pico',
      A1111_PASSWORD: 'secret',
      A1111_TIMEOUT: 1,
    })
  })
  afterAll(async () => {
    await bridge?.stop()
    await fake?.close()
  })

  const cases: [Fault, string, RegExp][] = [
    ['no-api', 'E_A1111_NO_API', /--api/],
    ['error500', 'E_A1111_FAILED', /OutOfMemoryError.*CUDA out of memory/],
    ['reject422', 'E_A1111_REJECTED', /steps: value is not a valid integer/],
    ['not-json', 'E_A1111_BAD_RESPONSE', /./],
    ['no-images', 'E_A1111_NO_IMAGE', /./],
    ['bad-image', 'E_BAD_IMAGE', /./],
    ['hang', 'E_GEN_TIMEOUT', /A1111_TIMEOUT/],
    ['drop', 'E_A1111_UNREACHABLE', /./],
    ['deep-json', 'E_A1111_BAD_RESPONSE', /nested deeper than/],
  ]

  it.each(cases)('fault %s gives %s', async (fault, code, message) => {
    const device = await connectDevice(bridge.mqttUrl, `fault-${fault}`)
    fake.setFault(fault)
    const interruptsBefore = fake.interrupts
    await device.prompt('a cat')
    const status = await device.waitForStatus((s) => s.state === 'error')
    expect(status.error).toMatchObject({ code })
    const text = (status.error as { message: string }).message
    expect(text).toMatch(message)
    expect(text).not.toContain(fake.url.replace('http://', ''))
    expect(text).not.toContain('secret')
    // Abandoning a hung generation interrupts it, or A1111 would go on with it for nobody.
    if (fault === 'hang') expect(fake.interrupts).toBeGreaterThan(interruptsBefore)

    fake.setFault(null)
    const from = device.statuses.length
    await device.prompt('a cat, again')
    await device.waitForStatus((s) => s.state === 'done', from)
    await device.close()
  })

  it('names wrong A1111 credentials', async () => {
    const other = await startBridge({
      A1111_BASE_URL: fake.url,
      A1111_USERNAME: 'pico',
      A1111_PASSWORD: 'wrong',
    })
    try {
      const device = await connectDevice(other.mqttUrl, 'auth')
      await device.prompt('a cat')
      const status = await device.waitForStatus((s) => s.state === 'error')
      expect(status.error).toMatchObject({ code: 'E_A1111_AUTH' })
      expect((status.error as { message: string }).message).toMatch(/Incorrect username or password/)
      await device.close()
    } finally {
      await other.stop()
    }
  })

  it('says A1111 is unreachable when nothing listens', async () => {
    const gone = await startFakeA1111()
    const url = gone.url
    await gone.close()
    const other = await startBridge({ A1111_BASE_URL: url })
    try {
      const device = await connectDevice(other.mqttUrl, 'refused')
      await device.prompt('a cat')
      const status = await device.waitForStatus((s) => s.state === 'error')
      expect(status.error).toMatchObject({ code: 'E_A1111_UNREACHABLE' })
      expect((status.error as { message: string }).message).toMatch(/refused/)
      await device.close()
    } finally {
      await other.stop()
    }
  })
})

describe('a health check answered with a hostile JSON', () => {
  it('marks the server down with E_A1111_BAD_RESPONSE and keeps answering, without building the structure', async () => {
    const fake = await startFakeA1111({ fault: 'deep-json' })
    const heapBefore = process.memoryUsage().heapUsed
    const bridge = await startBridge({ A1111_BASE_URL: fake.url, HTTP_PORT: 0 })
    try {
      const down = await bridge.line((l) => l.msg === 'generator down')
      expect(down).toMatchObject({ code: 'E_A1111_BAD_RESPONSE' })
      expect(String(down.reason)).toMatch(/nested deeper than/)
      const health = await httpCall(bridge.httpPort!, '/health')
      expect(health.status).toBe(503)
      // 8 MB of brackets would be gigabytes as arrays; the scan refuses them before any is built.
      expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(256 * 1024 * 1024)
    } finally {
      await bridge.stop()
      await fake.close()
    }
  })
})
