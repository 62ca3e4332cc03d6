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
})
