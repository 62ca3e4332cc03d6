import { once } from 'node:events'
import { connect, type Socket } from 'node:net'

/*
 * A hand-built MQTT 3.1.1 client for the cases mqtt.js cannot play: a display that subscribes and then stops
 * reading its socket (as a Pico stuck in a long blit or a half-dead Wi-Fi link does), or a client that
 * announces an oversized packet.
 */

/** MQTT's variable-length Remaining Length field (3.1.1 section 2.2.3). */
export function remainingLength(n: number): Buffer {
  const bytes: number[] = []
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    bytes.push(byte)
  } while (n > 0)
  return Buffer.from(bytes)
}

function utf8Field(s: string): Buffer {
  const body = Buffer.from(s, 'utf8')
  const len = Buffer.alloc(2)
  len.writeUInt16BE(body.length)
  return Buffer.concat([len, body])
}

function packet(type: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type]), remainingLength(body.length), body])
}

/** CONNECT, protocol level 4, clean session, keepalive 0 (no pings expected). */
export function connectPacket(clientId: string): Buffer {
  return packet(0x10, Buffer.concat([utf8Field('MQTT'), Buffer.from([4, 0x02, 0, 0]), utf8Field(clientId)]))
}

export function subscribePacket(filter: string, qos: 0 | 1, packetId = 1): Buffer {
  const id = Buffer.alloc(2)
  id.writeUInt16BE(packetId)
  return packet(0x82, Buffer.concat([id, utf8Field(filter), Buffer.from([qos])]))
}

/** The first bytes of a PUBLISH that announces `size` bytes of remaining length. */
export function oversizedPublishHeader(size: number): Buffer {
  return Buffer.concat([Buffer.from([0x30]), remainingLength(size), utf8Field('pico/x/prompt')])
}

/** Connects, subscribes, waits for CONNACK and SUBACK, then stops reading. */
export async function frozenSubscriber(port: number, filter: string): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port })
  await once(socket, 'connect')
  socket.write(connectPacket(`frozen-${Math.random().toString(16).slice(2, 8)}`))
  socket.write(subscribePacket(filter, 1))
  let seen = Buffer.alloc(0)
  await new Promise<void>((resolve) => {
    const onData = (data: Buffer) => {
      seen = Buffer.concat([seen, data])
      // CONNACK is 4 bytes (0x20 0x02 ...), SUBACK 5 bytes (0x90 0x03 ...).
      if (seen.length >= 9 && seen[0] === 0x20 && seen[4] === 0x90) {
        socket.off('data', onData)
        resolve()
      }
    }
    socket.on('data', onData)
  })
  socket.pause()
  return socket
}
