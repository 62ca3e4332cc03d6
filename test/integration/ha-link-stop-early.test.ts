import { once } from 'node:events'
import { type AddressInfo, connect, createServer, type Socket } from 'node:net'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { createHaLink } from '../../src/ha/link.ts'

/*
 * The Home Assistant link loads mqtt.js when it starts, so a stop can come while it loads (a daemon told to
 * stop as it starts). A link stopped then must not connect afterwards, with nobody left to close it.
 */

describe('a Home Assistant link stopped while it starts', () => {
  const sockets: Socket[] = []
  let close: (() => Promise<void>) | undefined
  afterEach(async () => {
    for (const s of sockets.splice(0)) s.destroy()
    await close?.()
  })

  it('never connects to the broker', async () => {
    // A listener that only counts: a link that connects shows up as a connection here.
    const accepted: Socket[] = []
    const server = createServer((socket) => {
      accepted.push(socket)
      sockets.push(socket)
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    close = () => new Promise((resolve) => server.close(() => resolve()))
    const { port } = server.address() as AddressInfo
    const link = createHaLink({
      url: `mqtt://127.0.0.1:${port}`,
      clientId: 'stopped-early',
      availabilityTopic: 'pico-a1111-bridge/availability',
      log: pino({ level: 'silent' }),
    })
    const starting = link.start({ connected: () => {}, message: () => {} })
    await link.stop()
    await starting
    // A connection of our own, opened after start() returned: had the link connected, its connection
    // would have come first. Only ours arrives.
    const probe = connect(port, '127.0.0.1')
    sockets.push(probe)
    await once(probe, 'connect')
    const isProbe = (s: Socket) => s.remotePort === probe.localPort
    while (!accepted.some(isProbe)) await once(server, 'connection')
    expect(accepted.length).toBe(1)
    expect(link.isConnected()).toBe(false)
    expect(link.publish('pico-a1111-bridge/availability', 'online')).toBe(false)
  })
})
