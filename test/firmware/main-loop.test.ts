import { beforeEach, describe, expect, it } from 'vitest'
import { encodeFrame } from '../../src/protocol/frame.ts'
import { type Board, bootMicroPython } from './micropython.ts'

/*
 * The parts of firmware-examples/micropython/main.py that do not touch hardware, under real MicroPython with
 * the fakes of fakes.py: a fake umqtt client over a fake broker, a fake panel, a clock that moves when told.
 */

type Call = [string, ...unknown[]]

let board: Board
beforeEach(async () => {
  board = await bootMicroPython()
  board.run(`
from fakes import *
import main
net = Net()
clock = Clock()
disp = Display()
logs = []
stdin = Stdin()
button = Pin(1)
cancel = Pin(1)
dev = main.Device(Cfg(), lambda: Client(net), disp, clock, logs.append,
                  button=main.Button(button, clock), cancel_button=main.Button(cancel, clock),
                  console=main.ConsoleReader(stdin, Poller(stdin)))

def at(t):
    clock.t = t
    dev.step()

def drain():
    while dev.step():
        pass
`)
})

const calls = () => board.values('out(net.calls)')[0] as Call[]
const logs = () => board.values('out(logs)')[0] as string[]
const publishes = () => calls().filter((c) => c[0] === 'publish')

function pixels(seed: number): Buffer {
  const buf = Buffer.alloc(240 * 240 * 2)
  for (let i = 0; i < buf.length; i++) buf[i] = (i * seed + (i >> 8)) & 0xff
  return buf
}

/** Puts a frame's bands in the fake broker's inbox for the device's frame topic. */
function deliverFrame(frameId: number, topic = 'pico/kitchen/frame'): Buffer {
  const px = pixels(frameId)
  const chunks = encodeFrame({
    frameId,
    width: 240,
    height: 240,
    pixels: px,
    format: 'rgb565-be',
    bandRows: 20,
    compress: frameId % 2 === 0,
    preview: false,
  })
  chunks.forEach((c, i) => {
    board.put(`/data/f${frameId}-${i}.bin`, c)
  })
  board.run(`
for i in range(${chunks.length}):
    net.deliver(b"${topic}", read("/data/f${frameId}-%d.bin" % i))
`)
  return px
}

describe('main.py: connecting', () => {
  it('connects with a clean session, subscribes at QoS 1 and publishes get', () => {
    board.run('at(0)')
    expect(calls()).toEqual([
      ['connect', true, 15],
      ['subscribe', 'pico/kitchen/frame', 1],
      ['subscribe', 'pico/kitchen/status', 1],
      ['publish', 'pico/kitchen/get', '', false, 0],
    ])
    expect(logs()).toEqual(['connecting to bridge.local', 'connected as kitchen'])
    // umqtt's setblocking(True) after the first byte of a message becomes a 15 s timeout, not "forever".
    board.run('dev.client.sock.setblocking(True)\ndev.client.sock.setblocking(False)')
    expect(calls().slice(-2)).toEqual([
      ['settimeout', 15],
      ['setblocking', false],
    ])
  })

  it('publishes its panel and telemetry as retained info before subscribing (docs/protocol.md, "Display info")', () => {
    board.run('cfgi = Cfg()\ncfgi.PUBLISH_INFO = True\ncfgi.WIDTH = 320\ncfgi.HEIGHT = 240')
    board.run(
      'dev = main.Device(cfgi, lambda: Client(net), disp, clock, logs.append, rssi=lambda: -61)\nat(0)',
    )
    const [connect, info, sub] = calls()
    expect(connect).toEqual(['connect', true, 15])
    expect(info!.slice(0, 2)).toEqual(['publish', 'pico/kitchen/info'])
    expect(info!.slice(3)).toEqual([true, 0])
    const body = JSON.parse(info![2] as string)
    expect(body).toMatchObject({
      panel: { width: 320, height: 240, format: 'rgb565-be', band_rows: 20 },
      fw: expect.any(String),
      rssi: -61,
      heap_free: expect.any(Number),
    })
    expect(sub).toEqual(['subscribe', 'pico/kitchen/frame', 1])
  })

  it('retries with backoff while the bridge is down, then resets the backoff', () => {
    expect(
      board.values(
        'b = main.Backoff(1000, 8000)\nout([b.next() for _ in range(6)])\nb.reset()\nout(b.next())',
      ),
    ).toEqual([[1000, 2000, 4000, 8000, 8000, 8000], 1000])
    board.run('net.refuse = 3')
    const attemptsAt = (t: number) => {
      board.run(`at(${t})`)
      return calls().filter((c) => c[0] === 'connect').length
    }
    expect([0, 999, 1000, 2999, 3000, 6999, 7000].map(attemptsAt)).toEqual([1, 1, 2, 2, 3, 3, 4])
    expect(logs().filter((l) => l.startsWith('no bridge'))).toEqual([
      'no bridge (OSError 113); retry in 1 s',
      'no bridge (OSError 113); retry in 2 s',
      'no bridge (OSError 113); retry in 4 s',
    ])
    expect(logs().at(-1)).toBe('connected as kitchen')
    // Connected again: the next loss starts the backoff from the first delay.
    board.run('net.drop = True\nat(8000)')
    expect(logs().at(-1)).toBe('connection lost (OSError -1); retry in 1 s')
    expect([8999, 9000].map(attemptsAt)).toEqual([4, 5])
  })

  it('after a lost connection: closes the socket, subscribes again, asks for the frame again, forgets the frame id', () => {
    board.run('at(0)')
    deliverFrame(501)
    board.run('drain()\nfirst = dev.client\nnet.drop = True\nat(100)')
    expect(board.values('out([first.sock._s.closed, dev.client is None, dev.decoder.frame_id])')).toEqual([
      [true, true, 501],
    ])
    board.run('at(1100)')
    const c = calls()
    expect(c.filter((x) => x[0] === 'subscribe')).toHaveLength(4)
    expect(c.filter((x) => x[0] === 'publish' && x[1] === 'pico/kitchen/get')).toHaveLength(2)
    // The bridge lost its data and counts from 2 again: without the reset, 2 would be "older" than 501.
    const px = deliverFrame(2)
    board.run('drain()\nwrite("/data/fb.bin", disp.fb)')
    expect(board.get('/data/fb.bin').equals(px)).toBe(true)
    expect(board.values('out(dev.decoder.frame_id)')).toEqual([2])
  })

  it('pings every keepalive / 3 (umqtt never does)', () => {
    board.run('at(0)')
    const pingsAt = (t: number) => {
      board.run(`at(${t})`)
      return calls().filter((c) => c[0] === 'ping').length
    }
    expect([19_999, 20_000, 39_999, 40_000, 60_000].map(pingsAt)).toEqual([0, 1, 1, 2, 3])
  })
})

describe('main.py: incoming messages', () => {
  it('draws frame bands from the frame topic and ignores other topics', () => {
    board.run('at(0)')
    const px = deliverFrame(7)
    deliverFrame(9, 'pico/other/frame')
    board.run('net.deliver(b"pico/kitchen/prompt", b"not for the display")\ndrain()')
    board.run('write("/data/fb.bin", disp.fb)')
    expect(board.get('/data/fb.bin').equals(px)).toBe(true)
    expect(board.values('out(disp.events)\nout(len(disp.bands))\nout(dev.frames)')).toEqual([
      [
        ['start', 7, false],
        ['done', 7, false],
      ],
      12,
      1,
    ])
    expect(logs()).toContain('frame 7 drawn')
  })

  it('logs a dropped band with its reason', () => {
    deliverFrame(3)
    board.run('at(0)\nnet.inbox[0] = (net.inbox[0][0], net.inbox[0][1][:5000])\nnet.inbox[1:] = []\ndrain()')
    expect(logs().at(-1)).toBe('band dropped: size')
    expect(board.values('out(dev.dropped)')).toEqual([1])
  })

  it('with BAND_ROWS = 10 draws 20-row raw bands, and drops 20-row compressed ones as size', () => {
    // What the firmware README says happens when the board's BAND_ROWS is smaller than the bridge's: the
    // setting only sizes the inflate buffer, so raw bands of any height are drawn from umqtt's message.
    board.run('cfg10 = Cfg()\ncfg10.BAND_ROWS = 10')
    board.run('dev = main.Device(cfg10, lambda: Client(net), disp, clock, logs.append)\nat(0)\ndrain()')
    deliverFrame(7) // odd frame ids are sent raw
    board.run('drain()')
    expect(logs()).toContain('frame 7 drawn')
    expect(board.values('out(len(disp.bands))')).toEqual([12])
    deliverFrame(8) // even ones compressed: 9,600 bytes do not fit the 4,800-byte buffer
    board.run('drain()')
    expect(logs().filter((l) => l === 'band dropped: size')).toHaveLength(12)
  })

  it('reports a MemoryError inside umqtt as a lost connection and tries again', () => {
    // On a Pico W, umqtt reads each message into one block (sock.read(sz)): a 9,624-byte band on a
    // fragmented heap raises MemoryError in check_msg, before the decoder ever sees the band.
    board.run('at(0)')
    board.run(`
def no_memory():
    raise MemoryError("memory allocation failed, allocating 9625 bytes")
dev.client.check_msg = no_memory
at(10)`)
    expect(logs().at(-1)).toBe(
      "connection lost (MemoryError('memory allocation failed, allocating 9625 bytes',)); retry in 1 s",
    )
  })

  it('with BAND_ROWS = 10 draws 20-row raw bands, and drops 20-row compressed ones as size', () => {
    // What the firmware README says happens when the board's BAND_ROWS is smaller than the bridge's: the
    // setting only sizes the inflate buffer, so raw bands of any height are drawn from umqtt's message.
    board.run('cfg10 = Cfg()\ncfg10.BAND_ROWS = 10')
    board.run('dev = main.Device(cfg10, lambda: Client(net), disp, clock, logs.append)\nat(0)\ndrain()')
    deliverFrame(7) // odd frame ids are sent raw
    board.run('drain()')
    expect(logs()).toContain('frame 7 drawn')
    expect(board.values('out(len(disp.bands))')).toEqual([12])
    deliverFrame(8) // even ones compressed: 9,600 bytes do not fit the 4,800-byte buffer
    board.run('drain()')
    expect(logs().filter((l) => l === 'band dropped: size')).toHaveLength(12)
  })

  it('reports a MemoryError inside umqtt as a lost connection and tries again', () => {
    // On a Pico W, umqtt reads each message into one block (sock.read(sz)): a 9,624-byte band on a
    // fragmented heap raises MemoryError in check_msg, before the decoder ever sees the band.
    board.run('at(0)')
    board.run(`
def no_memory():
    raise MemoryError("memory allocation failed, allocating 9625 bytes")
dev.client.check_msg = no_memory
at(10)`)
    expect(logs().at(-1)).toBe(
      "connection lost (MemoryError('memory allocation failed, allocating 9625 bytes',)); retry in 1 s",
    )
  })

  it('turns each status into text: queued, percent, sending, done, cancelled, error', () => {
    const texts = board.values(`
for s in [
    {"state": "queued", "job": "a1", "position": 2},
    {"state": "generating", "job": "a1", "progress": 0.45, "eta_s": 3.1},
    {"state": "generating", "job": "a1", "progress": 1},
    {"state": "generating", "job": "a1"},
    {"state": "sending", "job": "a1", "frame_id": 7, "chunks": 12},
    {"state": "sending", "job": "a1", "frame_id": 8, "chunks": 12, "preview": True},
    {"state": "done", "job": "a1", "frame_id": 7, "seed": 1234},
    {"state": "cancelled", "job": "a1", "reason": "superseded"},
    {"state": "error", "job": "a1", "error": {"code": "E_GEN_TIMEOUT", "message": "A1111 took longer than 300 s"}},
    {"state": "error", "job": "a1", "error": {"code": "E_QUEUE_FULL"}},
]:
    out(main.status_text(s))
`)
    expect(texts).toEqual([
      ['queued, position 2', null],
      ['generating 45%, 3 s left', 0.45],
      ['generating 100%', 1],
      ['generating', null],
      ['sending frame 7', null],
      ['sending preview 8', null],
      ['done, seed 1234', null],
      ['cancelled: superseded', null],
      ['error E_GEN_TIMEOUT: A1111 took longer than 300 s', null],
      ['error E_QUEUE_FULL', null],
    ])
  })

  it('shows statuses on the panel, but not the ones that come with the picture', () => {
    board.run('at(0)\ndisp.statuses = []\ndel logs[:]')
    const statuses = [
      { state: 'queued', job: 'j', position: 1 },
      { state: 'generating', job: 'j', progress: 0.5 },
      { state: 'sending', job: 'j', frame_id: 3, chunks: 12 },
      { state: 'done', job: 'j', frame_id: 3, seed: 42 },
      { state: 'error', job: 'k', error: { code: 'E_BAD_PROMPT', message: 'steps: must be at most 150' } },
    ]
    statuses.forEach((s, i) => {
      board.put(`/data/s${i}.json`, JSON.stringify(s))
    })
    board.run(`
for i in range(${statuses.length}):
    net.deliver(b"pico/kitchen/status", read("/data/s%d.json" % i))
net.deliver(b"pico/kitchen/status", b"{not json")
net.deliver(b"pico/kitchen/status", b"[1, 2]")
drain()
`)
    expect(board.values('out(disp.statuses)')).toEqual([
      [
        ['queued, position 1', null],
        ['generating 50%', 0.5],
        ['error E_BAD_PROMPT: steps: must be at most 150', null],
      ],
    ])
    expect(logs()).toEqual([
      'queued, position 1',
      'generating 50%',
      'sending frame 3',
      'done, seed 42',
      'error E_BAD_PROMPT: steps: must be at most 150',
    ])
  })
})

describe('main.py: sending prompts', () => {
  it('sends the next prompt of the list on each button press, debounced, round and round', () => {
    board.run('at(0)')
    const press = (down: number) =>
      board.run(`button.level = 0\nat(${down})\nbutton.level = 1\nat(${down + 100})`)
    press(100)
    // A bouncing contact: down, up and down again within the 50 ms debounce, then up. One press.
    board.run('button.level = 0\nat(300)\nbutton.level = 1\nat(310)\nbutton.level = 0\nat(320)')
    board.run('button.level = 1\nat(400)')
    press(500)
    press(700)
    board.run('cancel.level = 0\nat(1100)')
    expect(publishes().slice(1)).toEqual([
      ['publish', 'pico/kitchen/prompt', 'first prompt', false, 0],
      ['publish', 'pico/kitchen/prompt', 'second prompt', false, 0],
      ['publish', 'pico/kitchen/prompt', 'third prompt', false, 0],
      ['publish', 'pico/kitchen/prompt', 'first prompt', false, 0],
      ['publish', 'pico/kitchen/cancel', '', false, 0],
    ])
  })

  it('sends a line typed on the console once Enter comes, without waiting for it', () => {
    board.run('at(0)\nstdin.type("a red f")\nat(10)')
    expect(publishes()).toHaveLength(1) // only get
    board.run('stdin.type("ox in the snow\\r\\n")\nat(20)')
    board.run('stdin.type("café au lait\\n")\nat(30)')
    board.run('stdin.type("abx\\x7fc\\n\\n/get\\n/cancel\\n")\nat(40)\nat(50)\nat(60)')
    expect(publishes().slice(1)).toEqual([
      ['publish', 'pico/kitchen/prompt', 'a red fox in the snow', false, 0],
      ['publish', 'pico/kitchen/prompt', 'café au lait', false, 0],
      ['publish', 'pico/kitchen/prompt', 'abc', false, 0],
      ['publish', 'pico/kitchen/get', '', false, 0],
      ['publish', 'pico/kitchen/cancel', '', false, 0],
    ])
    expect(logs()).toContain('prompt sent: café au lait')
  })

  it('keeps a prompt typed while offline and sends it after connecting', () => {
    board.run('net.refuse = 1\nat(0)\nstdin.type("hello\\n")\nat(10)')
    expect(logs()).toContain('offline: the prompt goes out once connected')
    expect(publishes()).toEqual([])
    board.run('at(1000)')
    expect(publishes()).toEqual([
      ['publish', 'pico/kitchen/get', '', false, 0],
      ['publish', 'pico/kitchen/prompt', 'hello', false, 0],
    ])
  })
})

describe('main.py: Wi-Fi', () => {
  it('retries joining with a pause and returns the address', () => {
    const [ip, log, elapsed, disconnects] = board.values(`
wclock = Clock()
wlan = WLAN(wclock, failures=1, fail_status=-2, join_ms=1500)
wlog = []
out(main.connect_wifi(wlan, "home", "secret", wclock, wlog.append))
out(wlog)
out(wclock.t)
out(len([c for c in wlan.calls if c[0] == "disconnect"]))
`)
    expect(ip).toBe('192.168.1.50')
    expect(log).toEqual([
      'Wi-Fi: joining home',
      'Wi-Fi: network not found; retry in 2 s',
      'Wi-Fi: joining home',
    ])
    expect(elapsed).toBe(2000 + 1600)
    expect(disconnects).toBe(1)
  })
})
