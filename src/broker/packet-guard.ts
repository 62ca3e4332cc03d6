import type { Socket } from 'node:net'

/*
 * Aedes 1.x accepts any packet size MQTT allows (256 MiB) and buffers it whole before a hook sees it
 * (`lib/client.js`, its parser). This guard reads the fixed header of each MQTT packet as the bytes arrive
 * (MQTT 3.1.1 section 2.2: one type byte, then the Remaining Length in 1-4 bytes of 7 bits each) and
 * destroys the connection as soon as a packet announces more than the limit.
 */

type State =
  | { phase: 'type' }
  | { phase: 'length'; value: number; shift: number }
  | { phase: 'body'; left: number }

export function guardPacketSize(socket: Socket, maxBytes: number, onTooLarge: (size: number) => void): void {
  let state: State = { phase: 'type' }
  socket.on('data', (data: Buffer) => {
    let i = 0
    while (i < data.length) {
      if (state.phase === 'type') {
        state = { phase: 'length', value: 0, shift: 0 }
        i++
      } else if (state.phase === 'length') {
        const byte = data[i++]!
        const value = state.value + (byte & 0x7f) * 2 ** state.shift
        if (byte & 0x80) {
          // More than 4 length bytes is malformed; Aedes' parser rejects it, so leave that to the parser.
          state = state.shift >= 21 ? { phase: 'type' } : { phase: 'length', value, shift: state.shift + 7 }
          continue
        }
        if (value > maxBytes) {
          onTooLarge(value)
          socket.destroy()
          return
        }
        state = value === 0 ? { phase: 'type' } : { phase: 'body', left: value }
      } else {
        const take = Math.min(state.left, data.length - i)
        i += take
        state = state.left === take ? { phase: 'type' } : { phase: 'body', left: state.left - take }
      }
    }
  })
}
