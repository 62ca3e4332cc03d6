# main.py - a Pico 2 W (or Pico W) picture frame for pico-a1111-bridge.
#
# Joins Wi-Fi, connects to the bridge's MQTT broker with umqtt.simple, draws every frame band as it arrives,
# shows the job status, and sends prompts from a button or from lines typed on the USB serial console.
# Settings live in config.py (copy config.example.py). Everything above run() takes its client, display and
# clock as arguments, so it also runs off the board (the project tests it under MicroPython compiled to
# WebAssembly, with fakes).

import gc
import json
import sys

import picoframe

FW_VERSION = "main.py 1"


def topics(base, device_id):
    """The topics of one device, as bytes (umqtt compares and sends bytes)."""
    p = "%s/%s/" % (base, device_id)
    return {k: (p + k).encode() for k in ("frame", "status", "prompt", "get", "cancel", "info")}


def info_payload(cfg, rssi=None):
    """The retained info (docs/protocol.md, "Display info"): the panel this board draws, and its telemetry."""
    gc.collect()
    info = {
        "panel": {"width": getattr(cfg, "WIDTH", 240), "height": getattr(cfg, "HEIGHT", 240),
                  "format": getattr(cfg, "PIXEL_FORMAT", "rgb565-be"), "band_rows": getattr(cfg, "BAND_ROWS", 20)},
        "fw": FW_VERSION,
        "heap_free": gc.mem_free(),
    }
    if rssi is not None:
        try:
            info["rssi"] = rssi()
        except Exception:
            pass
    return json.dumps(info)


def status_text(s):
    """One status message (a dict) -> (text for people, progress 0..1 or None)."""
    state = s.get("state")
    if state == "queued":
        pos = s.get("position")
        return ("queued, position %d" % pos if pos is not None else "queued"), None
    if state == "generating":
        p = s.get("progress")
        if p is None:
            return "generating", None
        text = "generating %d%%" % round(p * 100)
        eta = s.get("eta_s")
        if eta is not None:
            text += ", %d s left" % round(eta)
        return text, p
    if state == "sending":
        kind = "preview" if s.get("preview") else "frame"
        return "sending %s %s" % (kind, s.get("frame_id")), None
    if state == "done":
        seed = s.get("seed")
        return ("done, seed %s" % seed if seed is not None else "done"), None
    if state == "cancelled":
        return "cancelled: %s" % s.get("reason", "?"), None
    if state == "error":
        err = s.get("error") or {}
        code = err.get("code", "E_?")
        msg = err.get("message")
        return ("error %s: %s" % (code, msg) if msg else "error %s" % code), None
    return str(state), None


class Backoff:
    """Reconnect delays: first_ms, doubling, capped at max_ms; reset() after a success."""

    def __init__(self, first_ms=1000, max_ms=60000):
        self.first_ms = first_ms
        self.max_ms = max_ms
        self.reset()

    def reset(self):
        self._next = self.first_ms

    def next(self):
        d = self._next
        self._next = min(d * 2, self.max_ms)
        return d


class PromptCycle:
    """The config's PROMPTS, one per button press, round and round."""

    def __init__(self, prompts):
        self.prompts = list(prompts)
        self.i = 0

    def next(self):
        if not self.prompts:
            return None
        p = self.prompts[self.i % len(self.prompts)]
        self.i += 1
        return p


class Button:
    """A push button to ground (pin with PULL_UP): pressed() is True once per press, debounced."""

    def __init__(self, pin, clock, debounce_ms=50):
        self.pin = pin
        self.clock = clock
        self.debounce_ms = debounce_ms
        self._level = pin.value()
        self._changed = clock.ticks_ms()

    def pressed(self):
        level = self.pin.value()
        if level == self._level:
            return False
        now = self.clock.ticks_ms()
        if self.clock.ticks_diff(now, self._changed) < self.debounce_ms:
            return False
        self._level = level
        self._changed = now
        return level == 0


class ConsoleReader:
    """Collects a line typed on the USB serial console without ever blocking.

    poller is select.poll() with the stream registered for POLLIN; poll() returns a finished line or None.
    """

    def __init__(self, stream, poller, echo=None, limit=400):
        self.stream = stream
        self.poller = poller
        self.echo = echo
        self.limit = limit
        self.buf = []

    def poll(self):
        while self.poller.poll(0):
            ch = self.stream.read(1)
            if not ch:
                return None
            if ch == "\r" or ch == "\n":
                if not self.buf:
                    continue
                line = "".join(self.buf)
                self.buf = []
                if self.echo:
                    self.echo("\r\n")
                return line
            if ch == "\x08" or ch == "\x7f":
                if self.buf:
                    self.buf.pop()
                    if self.echo:
                        self.echo("\x08 \x08")
                continue
            if len(self.buf) < self.limit:
                self.buf.append(ch)
                if self.echo:
                    self.echo(ch)
        return None


class TimeoutSocket:
    """Wraps umqtt's socket so a half-received message cannot hang the board.

    umqtt.simple calls setblocking(True) after the first byte of every message, which removes any timeout:
    if Wi-Fi drops in the middle of a band the next read would wait forever. Here "blocking" means "with a
    timeout", so the read raises OSError and the main loop reconnects.
    """

    def __init__(self, sock, timeout_s):
        self._s = sock
        self._t = timeout_s

    def setblocking(self, flag):
        if flag:
            self._s.settimeout(self._t)
        else:
            self._s.setblocking(False)

    def settimeout(self, t):
        self._s.settimeout(t)

    def read(self, *args):
        return self._s.read(*args)

    def readinto(self, *args):
        return self._s.readinto(*args)

    def write(self, *args):
        return self._s.write(*args)

    def close(self):
        self._s.close()


WIFI_STATUS = {-3: "wrong password", -2: "network not found", -1: "connection failed"}


def connect_wifi(wlan, ssid, password, clock, log=print, timeout_ms=20000, backoff=None):
    """Joins the Wi-Fi network, retrying with a growing pause until it works. Returns the IP address."""
    backoff = backoff or Backoff(2000, 30000)
    wlan.active(True)
    while True:
        if wlan.isconnected():
            return wlan.ifconfig()[0]
        log("Wi-Fi: joining %s" % ssid)
        wlan.connect(ssid, password)
        start = clock.ticks_ms()
        while not wlan.isconnected() and clock.ticks_diff(clock.ticks_ms(), start) < timeout_ms:
            if wlan.status() < 0:
                break
            clock.sleep_ms(200)
        if wlan.isconnected():
            continue
        st = wlan.status()
        delay = backoff.next()
        log("Wi-Fi: %s; retry in %d s" % (WIFI_STATUS.get(st, "status %s" % st), delay // 1000))
        wlan.disconnect()
        clock.sleep_ms(delay)


class Device:
    """The MQTT side of the frame: connect, subscribe, draw, show status, send prompts, reconnect.

    cfg          an object with the config.py settings (DEVICE_ID, MQTT_HOST, ...)
    make_client  returns a new, unconnected umqtt.simple.MQTTClient (or a fake)
    display      a display.py sink: band(), frame_start(), frame_done(), status()
    clock        has ticks_ms(), ticks_diff(a, b), ticks_add(t, ms): the time module on the board
    network      optional, called before each connection attempt to make sure Wi-Fi is up
    rssi         optional, returns the Wi-Fi signal strength in dBm for the info message
    """

    def __init__(self, cfg, make_client, display, clock, log=print, button=None, cancel_button=None,
                 console=None, network=None, rssi=None):
        self.cfg = cfg
        self.make_client = make_client
        self.display = display
        self.clock = clock
        self.log = log
        self.button = button
        self.cancel_button = cancel_button
        self.console = console
        self.network = network
        self.rssi = rssi
        self.topics = topics(getattr(cfg, "BASE_TOPIC", "pico"), cfg.DEVICE_ID)
        keepalive = getattr(cfg, "KEEPALIVE_S", 60)
        # umqtt never sends PINGREQ by itself; the broker drops a client silent for 1.5 x keepalive.
        self.ping_ms = keepalive * 1000 // 3
        self.socket_timeout_s = getattr(cfg, "SOCKET_TIMEOUT_S", 15)
        self.backoff = Backoff(getattr(cfg, "RETRY_FIRST_MS", 1000), getattr(cfg, "RETRY_MAX_MS", 60000))
        self.prompts = PromptCycle(getattr(cfg, "PROMPTS", ()))
        width = getattr(cfg, "WIDTH", 240)
        self.decoder = picoframe.Decoder(
            display.band,
            max_band_bytes=width * getattr(cfg, "BAND_ROWS", 20) * 2,
            width=width,
            height=getattr(cfg, "HEIGHT", 240),
            previews=getattr(cfg, "SHOW_PREVIEWS", True),
            on_start=display.frame_start,
            on_done=self._frame_done,
        )
        self.client = None
        self.retry_at = None  # ticks_ms of the next connection attempt; None = right away
        self.last_ping = 0
        self.pending = None   # a prompt given while offline, sent once connected
        self.last_text = None
        self.frames = 0
        self.dropped = 0

    # -- incoming messages ------------------------------------------------------------------------------------

    def on_message(self, topic, msg):
        """umqtt's callback: topic and msg are bytes."""
        if topic == self.topics["frame"]:
            r = self.decoder.feed(msg)
            if r != picoframe.OK:
                self.dropped += 1
                if r != picoframe.STALE and r != picoframe.PREVIEW:
                    self.log("band dropped: %s" % r)
        elif topic == self.topics["status"]:
            self.on_status(msg)

    def on_status(self, msg):
        try:
            s = json.loads(msg)
        except ValueError:
            return
        if not isinstance(s, dict):
            return
        text, progress = status_text(s)
        # "sending" and "done" come with the picture: writing over it would hide its bottom rows.
        self.show(text, progress, panel=s.get("state") not in ("sending", "done"))

    def show(self, text, progress=None, panel=True):
        if text == self.last_text:
            return
        self.last_text = text
        self.log(text)
        if panel:
            self.display.status(text, progress)

    def _frame_done(self, frame_id, preview):
        self.frames += 1
        self.display.frame_done(frame_id, preview)
        self.log("%s %d drawn" % ("preview" if preview else "frame", frame_id))
        gc.collect()  # the bands' message buffers are garbage now; free them in one go

    # -- connection -------------------------------------------------------------------------------------------

    def connect(self):
        """One connection attempt; raises on failure. Subscribes and asks for the last frame."""
        self.close()
        c = self.make_client()
        c.set_callback(self.on_message)
        c.connect(clean_session=True, timeout=self.socket_timeout_s)
        if self.socket_timeout_s:
            c.sock = TimeoutSocket(c.sock, self.socket_timeout_s)
        self.client = c
        self.show("connected as %s" % self.cfg.DEVICE_ID)
        # The bridge's frame ids start over when its data is lost; a stale id must not block new frames.
        self.decoder.reset()
        # The panel first, retained: the bridge then makes this board's frames (the last one, sent on
        # subscribe, included) for its size and format, whatever the bridge's defaults are.
        if getattr(self.cfg, "PUBLISH_INFO", True):
            c.publish(self.topics["info"], info_payload(self.cfg, self.rssi).encode(), True)
        c.subscribe(self.topics["frame"], 1)
        c.subscribe(self.topics["status"], 1)
        # The embedded broker sends the last frame on subscribe; `get` asks again, which also works with an
        # external broker. Either way the panel shows a picture right after boot.
        c.publish(self.topics["get"], b"")
        self.last_ping = self.clock.ticks_ms()
        self.backoff.reset()
        if self.pending is not None:
            text, self.pending = self.pending, None
            self.send_prompt(text)

    def close(self):
        c, self.client = self.client, None
        if c is not None:
            try:
                c.sock.close()
            except Exception:
                pass

    def _retry_later(self, why):
        self.close()
        delay = self.backoff.next()
        self.retry_at = self.clock.ticks_add(self.clock.ticks_ms(), delay)
        self.show("%s; retry in %d s" % (why, (delay + 999) // 1000))

    def step(self):
        """One pass of the main loop. Never blocks for long. Returns True when a message was handled."""
        busy = False
        if self.client is None:
            now = self.clock.ticks_ms()
            if self.retry_at is None or self.clock.ticks_diff(now, self.retry_at) >= 0:
                self._attempt()
        else:
            try:
                busy = self.client.check_msg() is not None
                now = self.clock.ticks_ms()
                if self.clock.ticks_diff(now, self.last_ping) >= self.ping_ms:
                    self.client.ping()
                    self.last_ping = now
            except Exception as e:  # OSError(-1) when the broker closed the socket, timeouts, bad packets
                self._retry_later("connection lost (%s)" % _why(e))
        self.poll_inputs()
        return busy

    def _attempt(self):
        if self.network is not None:
            self.network()
        self.show("connecting to %s" % self.cfg.MQTT_HOST)
        try:
            self.connect()
        except Exception as e:
            self._retry_later("no bridge (%s)" % _why(e))

    # -- outgoing ---------------------------------------------------------------------------------------------

    def poll_inputs(self):
        if self.button is not None and self.button.pressed():
            p = self.prompts.next()
            if p is not None:
                self.send_prompt(p)
        if self.cancel_button is not None and self.cancel_button.pressed():
            self.send(self.topics["cancel"], b"", "cancel")
        if self.console is not None:
            line = self.console.poll()
            if line is not None:
                self.command(line.strip())

    def command(self, line):
        """A console line: /get and /cancel, anything else is a prompt."""
        if not line:
            return
        if line == "/get":
            self.send(self.topics["get"], b"", "get")
        elif line == "/cancel":
            self.send(self.topics["cancel"], b"", "cancel")
        else:
            self.send_prompt(line)

    def send_prompt(self, text):
        if self.client is None:
            self.pending = text
            self.log("offline: the prompt goes out once connected")
            return
        if self.send(self.topics["prompt"], text.encode(), "prompt"):
            self.log("prompt sent: %s" % text)
        else:
            self.pending = text

    def send(self, topic, payload, what):
        """Publishes at QoS 0 (QoS 1 would make umqtt wait for the PUBACK inside publish()). True if sent."""
        if self.client is None:
            self.log("offline: %s not sent" % what)
            return False
        try:
            self.client.publish(topic, payload)
            return True
        except Exception as e:
            self._retry_later("connection lost (%s)" % _why(e))
            return False


def _why(e):
    if isinstance(e, OSError) and e.args:
        return "OSError %s" % e.args[0]
    return repr(e)


def tls_context(ca_file):
    """An SSLContext for umqtt's ssl= argument: the bridge's certificate checked when ca_file names it (DER)."""
    import tls

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)
    if ca_file:
        with open(ca_file, "rb") as f:
            ctx.load_verify_locations(cadata=f.read())
        ctx.verify_mode = tls.CERT_REQUIRED
    else:
        ctx.verify_mode = tls.CERT_NONE
    return ctx


def run():
    """Starts the frame on the board: needs config.py, umqtt.simple and (unless DISPLAY is none) a driver."""
    import binascii
    import machine
    import network
    import select
    import time

    import config as cfg
    from display import open_display

    display = open_display(cfg)

    def say(text):
        print(text)
        display.status(text, None)

    if getattr(cfg, "WIFI_COUNTRY", None):
        import rp2

        rp2.country(cfg.WIFI_COUNTRY)
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    try:
        wlan.config(pm=wlan.PM_NONE)  # no Wi-Fi power saving: bands arrive without 100 ms naps in between
    except Exception:
        pass

    def wifi():
        if not wlan.isconnected():
            ip = connect_wifi(wlan, cfg.WIFI_SSID, cfg.WIFI_PASSWORD, time, say)
            say("Wi-Fi: %s" % ip)

    uid = binascii.hexlify(machine.unique_id()).decode()
    client_id = "pico-%s-%s" % (cfg.DEVICE_ID, uid)  # unique: a duplicate id makes the broker kick the other

    use_tls = getattr(cfg, "MQTT_TLS", False)

    def make_client():
        from umqtt.simple import MQTTClient

        return MQTTClient(client_id, cfg.MQTT_HOST, port=getattr(cfg, "MQTT_PORT", 8883 if use_tls else 1883),
                          user=getattr(cfg, "MQTT_USER", None), password=getattr(cfg, "MQTT_PASSWORD", None),
                          keepalive=getattr(cfg, "KEEPALIVE_S", 60),
                          ssl=tls_context(getattr(cfg, "MQTT_CA_FILE", None)) if use_tls else None)

    def button(name):
        pin = getattr(cfg, name, None)
        if pin is None:
            return None
        return Button(machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP), time)

    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    device = Device(cfg, make_client, display, time, print, button=button("BUTTON_PIN"),
                    cancel_button=button("CANCEL_PIN"), console=ConsoleReader(sys.stdin, poller, sys.stdout.write),
                    network=wifi, rssi=lambda: wlan.status("rssi"))
    gc.collect()
    print("type a prompt and press Enter; /get shows the last picture again, /cancel stops the job")
    while True:
        if not device.step():
            time.sleep_ms(5)


if __name__ == "__main__":
    run()
