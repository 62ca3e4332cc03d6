# config.example.py - copy to config.py, fill in your network and bridge, and copy it to the board.

# Wi-Fi (2.4 GHz only: the Pico's radio cannot see 5 GHz networks)
WIFI_SSID = "your-network"
WIFI_PASSWORD = "your-password"
WIFI_COUNTRY = None          # e.g. "GB" or "US": sets the allowed Wi-Fi channels; None keeps the default

# The machine running pico-a1111-bridge (its MQTT broker listens on 1883)
MQTT_HOST = "192.168.1.10"
MQTT_PORT = 1883
# This display's login when the bridge has MQTT_PASSWORD_FILE (README, "Security"); None = no login.
# Make it on the bridge with: pico-a1111-bridge passwd /etc/pico-a1111-bridge/passwd kitchen
MQTT_USER = None             # e.g. "kitchen": the same as DEVICE_ID, unless the bridge's ACL file says otherwise
MQTT_PASSWORD = None
# TLS to the bridge's MQTT_TLS_PORT (README here, "TLS"): set MQTT_PORT to that port (8883 by convention).
MQTT_TLS = False
MQTT_CA_FILE = None          # with MQTT_TLS: the bridge's certificate in DER form on the board, e.g. "bridge.der";
                             # None encrypts without checking who answers
BASE_TOPIC = "pico"          # the bridge's BASE_TOPIC
DEVICE_ID = "kitchen"        # 1-64 letters, digits, _ or -; not "bridge"
KEEPALIVE_S = 60             # main.py pings every KEEPALIVE_S / 3 seconds
SOCKET_TIMEOUT_S = 15        # a read that stalls this long means the connection is gone: reconnect
RETRY_FIRST_MS = 1000        # reconnect after 1 s, then 2, 4, 8 ... up to RETRY_MAX_MS
RETRY_MAX_MS = 60000

# The panel: "st7789" (Waveshare Pico-LCD-1.3 and other 240x240 ST7789 boards), "gc9a01" (1.28" round)
# or "none" (no panel: each finished frame is written to flash as frame.bmp)
DISPLAY = "st7789"
WIDTH = 240
HEIGHT = 240
ROTATION = 0
COLOR_ORDER = "BGR"          # st7789 only: the Pico-LCD-1.3's order (st7789py's default); "RGB" if red and blue swap
FRAME_FILE = "frame.bmp"     # DISPLAY = "none" only

# SPI wiring. These are the Waveshare Pico-LCD-1.3's settings (SPI1, as in st7789py's own config for it);
# use the same pins for a GC9A01 module.
SPI_ID = 1
SPI_BAUD = 60_000_000        # lower it (e.g. 20_000_000) for long jumper wires
SPI_POLARITY = 1             # the Pico-LCD-1.3's (st7789py's tft_configs/waveshare_13); a GC9A01 module works with 0 or 1
PIN_SCK = 10
PIN_MOSI = 11
PIN_CS = 9
PIN_DC = 8
PIN_RST = 12
PIN_BL = 13

# The bridge's BAND_ROWS (20 by default; set 10 on the bridge for a Pico W). It only sizes the buffer that
# compressed bands (FRAME_COMPRESS) are inflated into; the bridge's setting decides the size of each message.
BAND_ROWS = 20
SHOW_PREVIEWS = True         # draw intermediate pictures while a prompt is generating

# Buttons to ground (None = no button). On the Waveshare Pico-LCD-1.3: A = 15, B = 17, X = 19, Y = 21.
BUTTON_PIN = 15              # sends the next prompt of PROMPTS
CANCEL_PIN = 17              # cancels the running job
PROMPTS = [
    "a red fox in the snow, watercolour",
    "a lighthouse at dusk, oil painting",
    "a bowl of ramen, studio photo",
    "a cat astronaut, pixel art",
]

# http_client.py only: the bridge's HTTP passthrough and its SERVICE_API_KEY (None if not set)
HTTP_URL = "http://192.168.1.10:8080"
API_KEY = None
