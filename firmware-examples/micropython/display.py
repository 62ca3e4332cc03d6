# display.py - where the bands go: a 240x240 SPI panel, or a file on flash for a bare board.
#
# Every sink has the same four methods, which main.py and http_client.py call:
#   frame_start(frame_id, preview)   a frame begins
#   band(x, y, w, h, pixels)         draw one band of big-endian RGB565 pixels
#   frame_done(frame_id, preview)    every band of the frame has arrived
#   status(text, progress)           a short status line; progress is 0..1 or None
#
# Panel wraps any driver with blit_buffer(buf, x, y, w, h) (st7789py, gc9a01py, st7789_mpy, gc9a01_mpy);
# FileSink writes each finished frame to flash as a BMP you can copy off with mpremote.

import framebuf
import os

STRIP_ROWS = 20     # two lines of the built-in 8x8 font and a progress bar
_CHARS = 30         # 240 px / 8 px per character


def _wire(c):
    # framebuf.RGB565 stores little-endian words but the panel wants big-endian bytes: swap the colour.
    return ((c & 0xFF) << 8) | (c >> 8)


WHITE = 0xFFFF
BLACK = 0x0000
GREEN = _wire(0x07E0)
GREY = _wire(0x8410)


def split_text(text, width=_CHARS, lines=2):
    """Breaks text into at most `lines` lines of `width` characters, at spaces where it can."""
    out = []
    rest = text
    while rest and len(out) < lines:
        if len(rest) <= width:
            out.append(rest)
            break
        cut = rest.rfind(" ", 0, width + 1)
        if cut <= 0:
            cut = width
        out.append(rest[:cut])
        rest = rest[cut:].lstrip()
    return out


class Panel:
    """A panel driver with blit_buffer; status goes into a strip drawn over the picture."""

    def __init__(self, driver, width=240, height=240, status_y=None):
        self.driver = driver
        self.width = width
        self.height = height
        # On a round GC9A01 the bottom rows are cut off, so main.py puts the strip in the middle there.
        self.status_y = height - STRIP_ROWS if status_y is None else status_y
        self._strip = bytearray(width * STRIP_ROWS * 2)
        self._fb = framebuf.FrameBuffer(self._strip, width, STRIP_ROWS, framebuf.RGB565)

    def frame_start(self, frame_id, preview):
        pass

    def band(self, x, y, w, h, pixels):
        self.driver.blit_buffer(pixels, x, y, w, h)

    def frame_done(self, frame_id, preview):
        pass

    def status(self, text, progress=None):
        fb = self._fb
        fb.fill(BLACK)
        row = 1
        for line in split_text(text, self.width // 8):
            fb.text(line, (self.width - 8 * len(line)) // 2, row, WHITE)
            row += 9
        if progress is not None:
            p = min(max(progress, 0), 1)
            fb.fill_rect(0, STRIP_ROWS - 2, self.width, 2, GREY)
            fb.fill_rect(0, STRIP_ROWS - 2, int(self.width * p), 2, GREEN)
        self.driver.blit_buffer(self._strip, 0, self.status_y, self.width, STRIP_ROWS)


# BMP with BI_BITFIELDS masks for RGB565: 14-byte file header, 40-byte info header, 3 masks.
_BMP_HEADER = 66


def bmp_header(width, height):
    """The 66-byte header of a top-down 16-bit RGB565 BMP (pixels little-endian, rows a multiple of 4 bytes)."""
    row = (width * 2 + 3) & ~3
    size = _BMP_HEADER + row * height
    h = bytearray(_BMP_HEADER)
    h[0:2] = b"BM"
    _put32(h, 2, size)
    _put32(h, 10, _BMP_HEADER)
    _put32(h, 14, 40)
    _put32(h, 18, width)
    _put32(h, 22, (-height) & 0xFFFFFFFF)  # negative height: rows top to bottom, like the bands
    h[26] = 1   # planes
    h[28] = 16  # bits per pixel
    _put32(h, 30, 3)  # BI_BITFIELDS
    _put32(h, 34, row * height)
    _put32(h, 38, 2835)  # 72 dpi
    _put32(h, 42, 2835)
    _put32(h, 54, 0xF800)
    _put32(h, 58, 0x07E0)
    _put32(h, 62, 0x001F)
    return h


def _put32(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


class FileSink:
    """No panel: each finished frame is written to flash as `path` (a BMP), via a temporary file.

    Copy it off with `mpremote cp :frame.bmp .` and open it in any image viewer.
    """

    def __init__(self, path="frame.bmp", width=240, height=240, log=print):
        self.path = path
        self.tmp = path + ".part"
        self.width = width
        self.height = height
        self.log = log
        self._row = bytearray((width * 2 + 3) & ~3)  # one row, byte-swapped for the BMP
        self._f = None

    def frame_start(self, frame_id, preview):
        self._close()
        self._f = open(self.tmp, "wb")
        self._f.write(bmp_header(self.width, self.height))

    def band(self, x, y, w, h, pixels):
        f = self._f
        if f is None:
            return
        stride = len(self._row)
        row = self._row
        for r in range(h):
            o = r * w * 2
            for i in range(0, w * 2, 2):
                row[x * 2 + i] = pixels[o + i + 1]
                row[x * 2 + i + 1] = pixels[o + i]
            f.seek(_BMP_HEADER + (y + r) * stride)
            f.write(row)

    def frame_done(self, frame_id, preview):
        if self._f is None:
            return
        self._close()
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.rename(self.tmp, self.path)
        self.log("frame %d written to %s" % (frame_id, self.path))

    def status(self, text, progress=None):
        pass

    def _close(self):
        if self._f is not None:
            self._f.close()
            self._f = None


def open_display(cfg):
    """Builds the sink the config asks for: DISPLAY = "st7789", "gc9a01" or "none". Needs the board."""
    kind = getattr(cfg, "DISPLAY", "st7789")
    width = getattr(cfg, "WIDTH", 240)
    height = getattr(cfg, "HEIGHT", 240)
    if kind == "none":
        return FileSink(getattr(cfg, "FRAME_FILE", "frame.bmp"), width, height)

    from machine import Pin, SPI

    spi = SPI(cfg.SPI_ID, baudrate=cfg.SPI_BAUD, polarity=getattr(cfg, "SPI_POLARITY", 0), phase=0,
              sck=Pin(cfg.PIN_SCK), mosi=Pin(cfg.PIN_MOSI))
    pins = {
        "dc": Pin(cfg.PIN_DC, Pin.OUT),
        "cs": Pin(cfg.PIN_CS, Pin.OUT),
        "reset": Pin(cfg.PIN_RST, Pin.OUT),
        "backlight": Pin(cfg.PIN_BL, Pin.OUT),
        "rotation": getattr(cfg, "ROTATION", 0),
    }
    if kind == "st7789":
        import st7789py

        order = getattr(cfg, "COLOR_ORDER", None)
        if order and hasattr(st7789py, order):  # newer st7789py only; older versions are always RGB
            pins["color_order"] = getattr(st7789py, order)
        driver = st7789py.ST7789(spi, width, height, **pins)
        return Panel(driver, width, height)
    if kind == "gc9a01":
        import gc9a01py

        driver = gc9a01py.GC9A01(spi, **pins)
        return Panel(driver, width, height, status_y=(height - STRIP_ROWS) // 2)
    raise ValueError("DISPLAY must be st7789, gc9a01 or none, not %r" % kind)
