# epaper_example.py - pico-a1111-bridge on a Waveshare Pico-ePaper-2.9 (128x296, SSD1680, black and white).
#
# E-paper is not an LCD: it keeps its picture without power, a refresh takes about two seconds and flashes, and
# the panel wears if it is refreshed too often. So this sink never draws a band as it arrives. It copies each
# band into the panel-sized buffer (4,736 bytes: the bridge's `mono` rows are already the controller's RAM
# layout, 1 bit a pixel, most significant bit leftmost, 1 white), and refreshes once, when the whole frame is
# there, and no sooner than MIN_REFRESH_S after the last refresh. A frame that completes too soon waits in the
# buffer; a newer one that arrives meanwhile simply replaces it.
#
# Ask the bridge for this panel with the info message run() publishes (width 128, height 296, format mono), or
# with DEVICES on the bridge. Previews are skipped: each would cost a refresh.
#
#   import epaper_example; epaper_example.run()

import time

import picoframe

WIDTH = 128
HEIGHT = 296
ROW_BYTES = WIDTH // 8
# Waveshare's e-Paper precautions: refresh no more often than every 180 s, and at least once a day.
MIN_REFRESH_S = 180


class SSD1680:
    """The few SSD1680 commands a full black-and-white refresh needs (Solomon Systech SSD1680 datasheet)."""

    def __init__(self, spi, cs, dc, rst, busy, sleep_ms=time.sleep_ms):
        self.spi = spi
        self.cs = cs
        self.dc = dc
        self.rst = rst
        self.busy = busy
        self.sleep_ms = sleep_ms

    def _cmd(self, c, data=None):
        self.cs(0)
        self.dc(0)
        self.spi.write(bytes((c,)))
        if data is not None:
            self.dc(1)
            self.spi.write(data)
        self.cs(1)

    def _wait(self, timeout_ms=10_000):
        # BUSY is high while the controller works; a refresh takes about 2 s.
        while self.busy() == 1 and timeout_ms > 0:
            self.sleep_ms(10)
            timeout_ms -= 10

    def init(self):
        self.rst(1)
        self.sleep_ms(20)
        self.rst(0)
        self.sleep_ms(2)
        self.rst(1)
        self.sleep_ms(20)
        self._wait()
        self._cmd(0x12)  # software reset
        self._wait()
        self._cmd(0x01, bytes(((HEIGHT - 1) & 0xFF, (HEIGHT - 1) >> 8, 0x00)))  # gate lines
        self._cmd(0x11, b"\x03")  # data entry: x then y increasing, so rows arrive top to bottom
        self._cmd(0x44, bytes((0, ROW_BYTES - 1)))  # RAM x window, in bytes
        self._cmd(0x45, bytes((0, 0, (HEIGHT - 1) & 0xFF, (HEIGHT - 1) >> 8)))  # RAM y window
        self._cmd(0x3C, b"\x05")  # border waveform: follow white
        self._cmd(0x18, b"\x80")  # internal temperature sensor
        self._wait()

    def show(self, buf):
        """Writes a whole frame to RAM and runs one full refresh, then puts the controller to sleep."""
        self.init()  # wakes it from deep sleep, which only a reset ends
        self._cmd(0x4E, b"\x00")
        self._cmd(0x4F, b"\x00\x00")
        self._cmd(0x24, buf)
        self._cmd(0x22, b"\xF7")  # full update with the OTP waveform
        self._cmd(0x20)
        self._wait()
        self._cmd(0x10, b"\x01")  # deep sleep: the picture stays, the panel draws no current


class EPaperSink:
    """Collects bands into the panel's buffer; poll() refreshes when a whole frame waits and the panel may."""

    def __init__(self, panel, ticks_ms=time.ticks_ms, ticks_diff=time.ticks_diff, min_refresh_s=MIN_REFRESH_S):
        self.panel = panel
        self.ticks_ms = ticks_ms
        self.ticks_diff = ticks_diff
        self.min_refresh_ms = min_refresh_s * 1000
        self.buf = bytearray(ROW_BYTES * HEIGHT)  # the only frame-sized buffer
        self.pending = False  # a complete frame is in buf and not yet on the panel
        self.last = None      # ticks of the last refresh
        self.refreshes = 0

    def frame_start(self, frame_id, preview):
        # Bands of the new frame overwrite the old one's; what is on the glass stays until the next refresh.
        self.pending = False

    def band(self, x, y, w, h, pixels):
        if x == 0 and w == WIDTH:
            o = y * ROW_BYTES
            self.buf[o:o + h * ROW_BYTES] = pixels
            return
        rb = (w + 7) >> 3
        xb = x >> 3  # the bridge sends whole-width bands; a narrower one must start on a byte
        for r in range(h):
            o = (y + r) * ROW_BYTES + xb
            self.buf[o:o + rb] = pixels[r * rb:(r + 1) * rb]

    def frame_done(self, frame_id, preview):
        self.pending = True

    def status(self, text, progress=None):
        print(text)  # a status line is not worth a refresh

    def poll(self):
        """Refreshes if a finished frame waits and MIN_REFRESH_S have passed. Returns True when it refreshed."""
        if not self.pending:
            return False
        now = self.ticks_ms()
        if self.last is not None and self.ticks_diff(now, self.last) < self.min_refresh_ms:
            return False
        self.panel.show(self.buf)
        self.pending = False
        self.last = self.ticks_ms()
        self.refreshes += 1
        return True


def decoder(sink):
    """A picoframe decoder for this panel: mono bands of at most 20 rows, previews skipped."""
    return picoframe.Decoder(sink.band, max_band_bytes=ROW_BYTES * 20, width=WIDTH, height=HEIGHT,
                             pixel_format=picoframe.FORMAT_MONO, previews=False,
                             on_start=sink.frame_start, on_done=sink.frame_done)


def run():
    """Wi-Fi, MQTT and the panel, with the settings of config.py (see README.md, "E-paper")."""
    import json

    import machine
    import network
    from umqtt.simple import MQTTClient

    import config

    # Waveshare Pico-ePaper-2.9 pins: SPI1 SCK GP10, MOSI GP11, CS GP9, DC GP8, RST GP12, BUSY GP13.
    spi = machine.SPI(1, baudrate=4_000_000, sck=machine.Pin(10), mosi=machine.Pin(11))
    pins = [machine.Pin(n, machine.Pin.OUT, value=1) for n in (9, 8, 12)]
    busy = machine.Pin(13, machine.Pin.IN, machine.Pin.PULL_UP)
    sink = EPaperSink(SSD1680(spi, pins[0], pins[1], pins[2], busy))
    dec = decoder(sink)

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    wlan.connect(config.WIFI_SSID, config.WIFI_PASSWORD)
    while not wlan.isconnected():
        time.sleep_ms(200)

    base = "%s/%s/" % (getattr(config, "BASE_TOPIC", "pico"), config.DEVICE_ID)
    frame_topic = (base + "frame").encode()

    def on_msg(topic, msg):
        if topic == frame_topic:
            r = dec.feed(msg)
            if r != picoframe.OK:
                print("band dropped:", r)

    client = MQTTClient(config.DEVICE_ID.encode(), config.MQTT_HOST, port=getattr(config, "MQTT_PORT", 1883),
                        keepalive=60)
    client.set_callback(on_msg)
    client.connect()
    dec.reset()
    info = {"panel": {"width": WIDTH, "height": HEIGHT, "format": "mono", "band_rows": 20}, "fw": "epaper_example"}
    client.publish((base + "info").encode(), json.dumps(info).encode(), retain=True)
    client.subscribe(frame_topic, qos=1)
    client.publish((base + "get").encode(), b"")
    last_ping = time.ticks_ms()
    while True:
        client.check_msg()
        sink.poll()
        if time.ticks_diff(time.ticks_ms(), last_ping) > 20_000:
            client.ping()
            last_ping = time.ticks_ms()
        time.sleep_ms(50)
