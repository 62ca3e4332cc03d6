# fakes.py - stand-ins for the clock, Wi-Fi, umqtt.simple, pins, the serial console and the panel, so the
# firmware's main loop runs under MicroPython (WebAssembly) in the test suite. Loaded as /test/fakes.py.

import json


def out(value):
    """Hands a value to the TypeScript side (one JSON line)."""
    print("@@" + json.dumps(value))


class Clock:
    """time.ticks_ms and friends, on a clock that only moves when told to."""

    def __init__(self, t=0):
        self.t = t

    def ticks_ms(self):
        return self.t

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, t, d):
        return t + d

    def sleep_ms(self, ms):
        self.t += ms

    def advance(self, ms):
        self.t += ms


class Net:
    """The broker as the fake clients see it: what they did, what waits for them, what goes wrong next."""

    def __init__(self):
        self.calls = []
        self.inbox = []      # (topic bytes, payload bytes) delivered one per check_msg()
        self.refuse = 0      # refuse this many connection attempts with OSError(113)
        self.drop = False    # the next check_msg() finds the connection closed: OSError(-1)
        self.clients = []

    def deliver(self, topic, payload):
        self.inbox.append((topic, payload))

    def publishes(self):
        return [c for c in self.calls if c[0] == "publish"]


class Sock:
    def __init__(self, net):
        self.net = net
        self.closed = False

    def settimeout(self, t):
        self.net.calls.append(["settimeout", t])

    def setblocking(self, flag):
        self.net.calls.append(["setblocking", flag])

    def read(self, n):
        return b""

    def close(self):
        self.closed = True


def _text(b):
    return bytes(b).decode()


class Client:
    """umqtt.simple.MQTTClient's surface, as main.py uses it."""

    def __init__(self, net):
        self.net = net
        self.cb = None
        self.sock = None
        net.clients.append(self)

    def set_callback(self, f):
        self.cb = f

    def connect(self, clean_session=True, timeout=None):
        self.net.calls.append(["connect", clean_session, timeout])
        if self.net.refuse > 0:
            self.net.refuse -= 1
            raise OSError(113)
        self.sock = Sock(self.net)
        return 0

    def subscribe(self, topic, qos=0):
        assert self.cb is not None
        self.net.calls.append(["subscribe", _text(topic), qos])

    def publish(self, topic, msg, retain=False, qos=0):
        # umqtt sends len(msg) as the length: for a str that counts characters, not UTF-8 bytes.
        if not isinstance(topic, bytes) or not isinstance(msg, bytes):
            raise TypeError("publish wants bytes")
        self.net.calls.append(["publish", _text(topic), _text(msg), retain, qos])

    def ping(self):
        self.net.calls.append(["ping"])

    def check_msg(self):
        if self.net.drop:
            self.net.drop = False
            raise OSError(-1)
        if not self.net.inbox:
            return None
        topic, msg = self.net.inbox.pop(0)
        self.cb(topic, msg)
        return 0x30


class Display:
    """A panel that remembers: a framebuffer, the status lines and the frame events."""

    def __init__(self, width=240, height=240):
        self.width = width
        self.fb = bytearray(width * height * 2)
        self.bands = []
        self.statuses = []
        self.events = []

    def frame_start(self, frame_id, preview):
        self.events.append(["start", frame_id, preview])

    def band(self, x, y, w, h, pixels):
        self.bands.append([x, y, w, h])
        for r in range(h):
            o = ((y + r) * self.width + x) * 2
            self.fb[o:o + w * 2] = pixels[r * w * 2:(r + 1) * w * 2]

    def frame_done(self, frame_id, preview):
        self.events.append(["done", frame_id, preview])

    def status(self, text, progress=None):
        self.statuses.append([text, progress])


class Driver:
    """A panel driver's blit_buffer, recording each call and a copy of the bytes."""

    def __init__(self):
        self.blits = []

    def blit_buffer(self, buf, x, y, w, h):
        self.blits.append([x, y, w, h, bytes(buf)])


class Pin:
    def __init__(self, level=1):
        self.level = level

    def value(self):
        return self.level


class Stdin:
    """sys.stdin with text typed so far."""

    def __init__(self):
        self.buf = ""

    def type(self, text):
        self.buf += text

    def read(self, n):
        c = self.buf[:n]
        self.buf = self.buf[n:]
        return c


class Poller:
    """select.poll() with one stream registered for POLLIN."""

    def __init__(self, stream):
        self.stream = stream

    def poll(self, timeout=-1):
        return [(self.stream, 1)] if self.stream.buf else []


class WLAN:
    """network.WLAN(STA_IF): the first `failures` joins fail with `fail_status`; then it joins after join_ms."""

    def __init__(self, clock, failures=0, fail_status=-2, join_ms=1500):
        self.clock = clock
        self.failures = failures
        self.fail_status = fail_status
        self.join_ms = join_ms
        self.joins = 0
        self.up_at = None
        self.failed = False
        self.calls = []

    def active(self, on=None):
        self.calls.append(["active", on])
        return True

    def connect(self, ssid, password):
        self.calls.append(["connect", ssid, password])
        self.joins += 1
        if self.joins <= self.failures:
            self.failed = True
            return
        self.failed = False
        self.up_at = self.clock.t + self.join_ms

    def isconnected(self):
        return self.up_at is not None and self.clock.t >= self.up_at

    def status(self):
        if self.isconnected():
            return 3
        return self.fail_status if self.failed else 1

    def disconnect(self):
        self.calls.append(["disconnect"])

    def ifconfig(self):
        return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")


class Cfg:
    """config.py as the tests want it."""

    DEVICE_ID = "kitchen"
    MQTT_HOST = "bridge.local"
    BASE_TOPIC = "pico"
    KEEPALIVE_S = 60
    SOCKET_TIMEOUT_S = 15
    RETRY_FIRST_MS = 1000
    RETRY_MAX_MS = 8000
    BAND_ROWS = 20
    PUBLISH_INFO = False  # on in its own test, so the others see only what they are about
    PROMPTS = ["first prompt", "second prompt", "third prompt"]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
