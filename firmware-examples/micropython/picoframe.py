# picoframe.py - decodes the frame bands of pico-a1111-bridge (docs/protocol.md, "Frames").
#
# Pure: no network, no display, no clock. Feed it each message from the frame topic; it checks the
# 24-byte header, inflates zlib bands into one buffer allocated once, checks the CRC-32 and calls
# on_band(x, y, w, h, pixels) so the caller can blit_buffer the band straight to the panel (or, for e-paper,
# copy it into the panel's framebuffer: see epaper_example.py).
# Raw bands are handed over as a memoryview of the message umqtt already read: no copy at all.
#
# Header, big-endian, struct format "!2sBB8HI":
#   magic "PF" | version 1 | flags | frame_id | chunk_index | chunk_count | x | y | w | h | format | crc32

import binascii
import deflate
import io

HEADER_BYTES = 24
FLAG_ZLIB = 1
FLAG_PREVIEW = 2
FORMAT_BE = 0  # RGB565 high byte first: what st7789py and gc9a01py push to the panel unchanged
FORMAT_LE = 1
# Packed formats: leftmost pixel in the most significant bits, every row starting on a whole byte.
FORMAT_GRAY4 = 2     # 2 bits a pixel, 0 black .. 3 white
FORMAT_MONO = 3      # 1 bit a pixel, 1 white: the layout of framebuf.MONO_HLSB
FORMAT_PALETTE7 = 4  # 4 bits a pixel: black, white, green, blue, red, yellow, orange
_BITS = b"\x10\x10\x02\x01\x04"  # bits a pixel, by format code

# What feed() returns. Strings are interned once, so returning them allocates nothing.
OK = "ok"
SHORT = "short"        # shorter than the header (e.g. an emptied retained topic)
MAGIC = "magic"        # not "PF"
VERSION = "version"    # a header version this decoder does not know
INDEX = "index"        # chunk_index outside 0..chunk_count-1
FORMAT = "format"      # byte order other than the one the panel wants (set PIXEL_FORMAT on the bridge)
GEOMETRY = "geometry"  # band outside the panel
SIZE = "size"          # pixel bytes do not match the band's packed size, or it is larger than the band buffer
ZLIB = "zlib"          # corrupt compressed data
CRC = "crc"            # CRC-32 mismatch
STALE = "stale"        # a band of a frame older than the one being drawn
PREVIEW = "preview"    # a preview band, skipped because previews are off


def _u16(m, o):
    return (m[o] << 8) | m[o + 1]


def row_bytes(pixel_format, w):
    """Bytes of one row of w pixels: w * 2 for RGB565, rounded up to a whole byte for the packed formats."""
    return (w * _BITS[pixel_format] + 7) >> 3


def is_older(frame_id, current):
    """True when frame_id comes before current, comparing 16-bit ids modulo 65536 (RFC 1982 style)."""
    return (frame_id - current) & 0xFFFF >= 0x8000


class Decoder:
    """Turns frame messages into bands.

    on_band(x, y, w, h, pixels)   called for every good band; pixels is valid only during the call
    on_start(frame_id, preview)   called when a frame starts (band 0, or a newer frame_id)
    on_done(frame_id, preview)    called once every band of the frame has been drawn, in order
    max_band_bytes                the largest compressed band to expect: row_bytes(format, width) * BAND_ROWS
    width, height                 the panel; bands outside it are refused
    pixel_format                  FORMAT_BE for st7789py/gc9a01py; FORMAT_MONO, FORMAT_GRAY4 or FORMAT_PALETTE7
                                  for e-paper (the bridge's PIXEL_FORMAT or the panel in the device's info)
    previews                      False to skip preview frames (flag bit 1)
    """

    def __init__(self, on_band, max_band_bytes=240 * 20 * 2, width=240, height=240,
                 pixel_format=FORMAT_BE, previews=True, on_start=None, on_done=None):
        self.on_band = on_band
        self.on_start = on_start
        self.on_done = on_done
        self.band = bytearray(max_band_bytes)  # the only buffer, allocated once
        self._mv = memoryview(self.band)
        self.width = width
        self.height = height
        self.pixel_format = pixel_format
        self.previews = previews
        self.reset()

    def reset(self):
        """Forget the current frame: call it on every (re)connect, the bridge then sends its last frame again."""
        self.frame_id = None
        self.preview = False
        self.expected = 0  # index of the next band, in order; the frame is complete when it reaches the count
        self.count = 0

    def feed(self, msg):
        """Checks one message and draws it. Returns OK or the reason it was dropped."""
        n = len(msg)
        if n < HEADER_BYTES:
            return SHORT
        if msg[0] != 0x50 or msg[1] != 0x46:
            return MAGIC
        if msg[2] != 1:
            return VERSION
        flags = msg[3]
        fid = _u16(msg, 4)
        idx = _u16(msg, 6)
        cnt = _u16(msg, 8)
        x = _u16(msg, 10)
        y = _u16(msg, 12)
        w = _u16(msg, 14)
        h = _u16(msg, 16)
        if idx >= cnt:
            return INDEX
        if _u16(msg, 18) != self.pixel_format:
            return FORMAT
        if w == 0 or h == 0 or x + w > self.width or y + h > self.height:
            return GEOMETRY
        preview = flags & FLAG_PREVIEW != 0
        if preview and not self.previews:
            return PREVIEW
        cur = self.frame_id
        if cur is not None and is_older(fid, cur):
            return STALE
        size = row_bytes(self.pixel_format, w) * h
        if flags & FLAG_ZLIB:
            if size > len(self.band):
                return SIZE
            px = self._inflate(memoryview(msg)[HEADER_BYTES:], size)
            if px is None:
                return ZLIB
        else:
            if n - HEADER_BYTES != size:
                return SIZE
            px = memoryview(msg)[HEADER_BYTES:]
        if binascii.crc32(px) != (_u16(msg, 20) << 16 | _u16(msg, 22)):
            return CRC
        # Only a band that passed every check may move the frame on, so a broken band cannot hijack it.
        if cur is None or fid != cur or idx == 0:
            self.frame_id = fid
            self.preview = preview
            self.expected = 0
            self.count = cnt
            if self.on_start:
                self.on_start(fid, preview)
        self.on_band(x, y, w, h, px)
        if idx == self.expected:
            self.expected += 1
            if self.expected == self.count and self.on_done:
                self.on_done(fid, preview)
        return OK

    def _inflate(self, data, size):
        # Each band is one complete zlib stream (RFC 1950) with a 1 KiB window; DeflateIO takes the window
        # size from the stream header. readinto may return less than asked, so loop until the band is full.
        mv = self._mv
        got = 0
        try:
            d = deflate.DeflateIO(io.BytesIO(data), deflate.ZLIB)
            while got < size:
                k = d.readinto(mv[got:size])
                if not k:
                    break
                got += k
        except (OSError, ValueError):
            return None
        if got != size:
            return None
        return mv[:size]
