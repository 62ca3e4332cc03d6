import { once } from 'node:events'
import { createServer, type Server } from 'node:net'
import { afterAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/config/load.ts'
import { describeStartFailure } from '../../src/start-failure.ts'

/*
 * Issue 13: "port 18830 is in use (MQTT_PORT, HTTP_PORT)" should say which one. The errors are real: a
 * second listen on a loopback port that a first server holds.
 */

const servers: Server[] = []
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
})

/** A loopback port that is taken, and the error a second listen on it gets. */
async function takenPort(): Promise<{ port: number; err: NodeJS.ErrnoException }> {
  const holder = createServer()
  servers.push(holder)
  holder.listen(0, '127.0.0.1')
  await once(holder, 'listening')
  const port = (holder.address() as { port: number }).port
  const second = createServer()
  second.listen(port, '127.0.0.1')
  const [err] = (await once(second, 'error')) as [NodeJS.ErrnoException]
  return { port, err }
}

describe('describeStartFailure', () => {
  it('names MQTT_PORT when the broker’s port is taken', async () => {
    const { port, err } = await takenPort()
    expect(err.code).toBe('EADDRINUSE')
    const config = loadConfig({ env: { MQTT_PORT: String(port), HTTP_PORT: '0' } })
    expect(describeStartFailure(err, config)).toBe(
      `cannot listen: port ${port} (MQTT_PORT) is in use by another program; stop it or set MQTT_PORT to a free port`,
    )
  })

  it('names HTTP_PORT when the HTTP listener’s port is taken', async () => {
    const { port, err } = await takenPort()
    const config = loadConfig({ env: { MQTT_PORT: '0', HTTP_PORT: String(port) } })
    expect(describeStartFailure(err, config)).toBe(
      `cannot listen: port ${port} (HTTP_PORT) is in use by another program; stop it or set HTTP_PORT to a free port`,
    )
  })

  it('says so when MQTT_PORT and HTTP_PORT are the same port', async () => {
    const { port, err } = await takenPort()
    const config = loadConfig({ env: { MQTT_PORT: String(port), HTTP_PORT: String(port) } })
    expect(describeStartFailure(err, config)).toBe(
      `cannot listen: MQTT_PORT and HTTP_PORT are both ${port}; give each its own port`,
    )
  })

  it('names the setting of a port that needs privileges', () => {
    const err = Object.assign(new Error('listen EACCES'), { code: 'EACCES', syscall: 'listen', port: 80 })
    const config = loadConfig({ env: { MQTT_PORT: '0', HTTP_PORT: '80' } })
    expect(describeStartFailure(err, config)).toBe(
      'cannot listen: port 80 (HTTP_PORT) needs privileges (use a port above 1023)',
    )
  })
})
