import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { bootMicroPython, FIRMWARE_DIR, firmwareFiles } from './micropython.ts'

/* Every file a maker copies to the board must at least compile under MicroPython, and import without a board. */

describe('firmware-examples/micropython', () => {
  it('holds the files the README tells makers to copy', () => {
    expect(firmwareFiles()).toEqual([
      'config.example.py',
      'display.py',
      'epaper_example.py',
      'http_client.py',
      'main.py',
      'picoframe.py',
    ])
    const readme = readFileSync(`${FIRMWARE_DIR}README.md`, 'utf8')
    for (const file of firmwareFiles()) expect(readme).toContain(file)
    expect(readme).toContain('mpremote mip install umqtt.simple')
  })

  it.each(firmwareFiles())('%s compiles under MicroPython', async (file) => {
    const board = await bootMicroPython()
    const source = readFileSync(`${FIRMWARE_DIR}${file}`, 'utf8')
    board.put('/data/source.py', source)
    const [kind] = board.values(`
from fakes import out, read
code = compile(read("/data/source.py").decode(), "${file}", "exec")
out(type(code).__name__)
`)
    expect(kind).toBe('code')
  })

  it('imports every module without a board, and main.py does not start by itself', async () => {
    const board = await bootMicroPython()
    const [names] = board.values(`
from fakes import out
import picoframe, display, http_client, main, epaper_example
out([m.__name__ for m in (picoframe, display, http_client, main, epaper_example)])
`)
    expect(names).toEqual(['picoframe', 'display', 'http_client', 'main', 'epaper_example'])
  })

  it('config.example.py has every setting main.py and display.py read without a default', async () => {
    const board = await bootMicroPython()
    board.put('/fw/config.py', readFileSync(`${FIRMWARE_DIR}config.example.py`, 'utf8'))
    const [missing, prompts] = board.values(`
from fakes import out
import config
need = ["WIFI_SSID", "WIFI_PASSWORD", "MQTT_HOST", "DEVICE_ID", "DISPLAY", "SPI_ID", "SPI_BAUD", "PIN_SCK",
        "PIN_MOSI", "PIN_CS", "PIN_DC", "PIN_RST", "PIN_BL", "HTTP_URL"]
out([n for n in need if not hasattr(config, n)])
out(len(config.PROMPTS))
`)
    expect(missing).toEqual([])
    expect(prompts).toBeGreaterThan(1)
  })

  it('turns Wi-Fi power saving off with the named constant, not a magic number', () => {
    // network.WLAN.PM_NONE (MicroPython's rp2 WLAN docs); 0xA11140 is the cyw43 driver's raw value.
    const main = readFileSync(`${FIRMWARE_DIR}main.py`, 'utf8')
    expect(main).toContain('wlan.config(pm=wlan.PM_NONE)')
    expect(main).not.toMatch(/pm=0x/i)
  })

  it('config.example.py has the Waveshare Pico-LCD-1.3 settings of the st7789py driver', async () => {
    // st7789py's own config for this board (russhughes/st7789py_mpy, tft_configs/waveshare_13/tft_config.py):
    // SPI(1, baudrate=60000000, polarity=1, sck=Pin(10), mosi=Pin(11)), cs=9, dc=8, reset=12, backlight=13;
    // and the ST7789 constructor's default color_order is BGR (lib/st7789py.py).
    const board = await bootMicroPython()
    board.put('/fw/config.py', readFileSync(`${FIRMWARE_DIR}config.example.py`, 'utf8'))
    board.put(
      '/fw/machine.py',
      `class Pin:
    OUT = 1
    def __init__(self, n, mode=None):
        self.n = n
SPI_ARGS = []
class SPI:
    def __init__(self, id, **kw):
        SPI_ARGS.append((id, kw))
`,
    )
    board.put(
      '/fw/st7789py.py',
      `RGB = 0x00
BGR = 0x08
MADE = []
class ST7789:
    def __init__(self, spi, width, height, **kw):
        MADE.append((width, height, kw))
    def blit_buffer(self, buf, x, y, w, h):
        pass
`,
    )
    const [settings, spi, driver] = board.values(`
from fakes import out
import config, display, machine, st7789py
out([config.DISPLAY, config.COLOR_ORDER, config.SPI_ID, config.SPI_BAUD, config.SPI_POLARITY])
display.open_display(config)
spi_id, kw = machine.SPI_ARGS[0]
out([spi_id, kw["baudrate"], kw["polarity"], kw["sck"].n, kw["mosi"].n])
w, h, kw = st7789py.MADE[0]
out([w, h, kw["color_order"] == st7789py.BGR, kw["cs"].n, kw["dc"].n, kw["reset"].n, kw["backlight"].n])
`)
    expect(settings).toEqual(['st7789', 'BGR', 1, 60_000_000, 1])
    expect(spi).toEqual([1, 60_000_000, 1, 10, 11])
    expect(driver).toEqual([240, 240, true, 9, 8, 12, 13])
  })
})
