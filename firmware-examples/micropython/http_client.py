# http_client.py - one picture over plain HTTP, for setups without MQTT.
#
# The older proxy's MicroPython example read the whole 115,200-byte answer into memory (resp.content) and
# then wrote it to a file. On a Pico W that one allocation can fail with MemoryError. Here the answer is read
# straight from the socket into one band buffer and each band goes to the panel before the next is read, so
# the heap never holds more than a band.
#
# Talks to the bridge's passthrough: POST /sdapi/v1/txt2img with Accept: application/octet-stream, which
# answers with the frame as raw RGB565 big-endian bytes and X-Image-Width / X-Image-Height / X-Image-Format.

import json


class HttpError(Exception):
    """The bridge answered with an error: status, code (E_...) and message."""

    def __init__(self, status, code, message):
        super().__init__("HTTP %d %s: %s" % (status, code, message))
        self.status = status
        self.code = code
        self.message = message


def parse_url(url):
    """'http://host:8080/prefix' -> ('host', 8080, '/prefix'). Only plain http (no TLS on a small heap)."""
    if not url.startswith("http://"):
        raise ValueError("only http:// URLs are supported: %s" % url)
    rest = url[7:]
    slash = rest.find("/")
    hostport, prefix = (rest, "") if slash < 0 else (rest[:slash], rest[slash:].rstrip("/"))
    colon = hostport.rfind(":")
    if colon >= 0:
        return hostport[:colon], int(hostport[colon + 1:]), prefix
    return hostport, 80, prefix


def request_bytes(host, port, path, body, api_key=None):
    """An HTTP/1.0 POST: the server closes the connection after the answer, so no chunked encoding."""
    head = "POST %s HTTP/1.0\r\nHost: %s:%d\r\nContent-Type: application/json\r\n" % (path, host, port)
    head += "Accept: application/octet-stream\r\nContent-Length: %d\r\n" % len(body)
    if api_key:
        head += "X-API-Key: %s\r\n" % api_key
    return head.encode() + b"\r\n" + body


def read_head(stream):
    """Reads the status line and headers. Returns (status, {lower-case name: value})."""
    line = stream.readline()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise OSError("not an HTTP answer: %r" % line[:40])
    status = int(parts[1])
    headers = {}
    while True:
        line = stream.readline()
        if not line or line == b"\r\n" or line == b"\n":
            return status, headers
        colon = line.find(b":")
        if colon > 0:
            headers[line[:colon].strip().lower().decode()] = line[colon + 1:].strip().decode()


def read_exactly(stream, mv):
    """Fills the memoryview from the stream (readinto may return less than asked)."""
    got = 0
    n = len(mv)
    while got < n:
        k = stream.readinto(mv[got:])
        if not k:
            raise OSError("connection closed %d bytes early" % (n - got))
        got += k


def read_bands(stream, width, height, band, on_band):
    """Reads width x height RGB565 pixels as whole-row bands that fit in `band`, calling on_band for each."""
    rows = len(band) // (width * 2)
    if rows == 0:
        raise ValueError("the band buffer must hold at least one row (%d bytes)" % (width * 2))
    mv = memoryview(band)
    y = 0
    while y < height:
        h = min(rows, height - y)
        n = h * width * 2
        read_exactly(stream, mv[:n])
        on_band(0, y, width, h, mv[:n])
        y += h
    return y


def read_error(stream, status, headers):
    n = int(headers.get("content-length", "2048"))
    body = stream.read(min(n, 2048)) or b""
    try:
        err = json.loads(body)["error"]
        return HttpError(status, err.get("code", "E_?"), err.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return HttpError(status, "E_HTTP", body[:200].decode())


def receive_frame(stream, band, display):
    """Reads one answer from the passthrough and draws it. Returns (width, height). Raises HttpError."""
    status, headers = read_head(stream)
    if status != 200:
        raise read_error(stream, status, headers)
    width = int(headers.get("x-image-width", "240"))
    height = int(headers.get("x-image-height", "240"))
    fmt = headers.get("x-image-format", "rgb565-be")
    if fmt != "rgb565-be":
        raise HttpError(status, "E_FORMAT", "got %s; set PIXEL_FORMAT=rgb565-be on the bridge" % fmt)
    length = int(headers.get("content-length", "-1"))
    if length != width * height * 2:
        raise HttpError(status, "E_LENGTH", "%d bytes for %dx%d" % (length, width, height))
    display.frame_start(0, False)
    read_bands(stream, width, height, band, display.band)
    display.frame_done(0, False)
    return width, height


def txt2img(url, prompt, display, band, api_key=None, steps=None, timeout_s=330):
    """Asks the bridge at `url` for a picture and streams it into the display, band by band."""
    import socket

    host, port, prefix = parse_url(url)
    payload = {"prompt": prompt}
    if steps:
        payload["steps"] = steps
    body = json.dumps(payload).encode()
    addr = socket.getaddrinfo(host, port)[0][-1]
    s = socket.socket()
    s.settimeout(timeout_s)  # generation takes a while: A1111_TIMEOUT is 300 s by default
    try:
        s.connect(addr)
        s.write(request_bytes(host, port, prefix + "/sdapi/v1/txt2img", body, api_key))
        return receive_frame(s, band, display)
    finally:
        s.close()


def demo(prompt=None):
    """From the REPL (after stopping main.py with Ctrl-C): import http_client; http_client.demo("a red fox")."""
    import network
    import time

    import config as cfg
    from display import open_display
    from main import connect_wifi

    display = open_display(cfg)
    band = bytearray(getattr(cfg, "WIDTH", 240) * getattr(cfg, "BAND_ROWS", 20) * 2)  # one band, allocated once
    connect_wifi(network.WLAN(network.STA_IF), cfg.WIFI_SSID, cfg.WIFI_PASSWORD, time)
    text = prompt or (cfg.PROMPTS[0] if getattr(cfg, "PROMPTS", None) else "a red fox in the snow")
    display.status("asking for: %s" % text, None)
    t = time.ticks_ms()
    try:
        w, h = txt2img(cfg.HTTP_URL, text, display, band, getattr(cfg, "API_KEY", None))
    except HttpError as e:
        print(e)
        display.status("error %s: %s" % (e.code, e.message), None)
        return
    print("%dx%d drawn in %d ms" % (w, h, time.ticks_diff(time.ticks_ms(), t)))


if __name__ == "__main__":
    demo()
