import { readdirSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { loadMicroPython } from '@micropython/micropython-webassembly-pyscript'

/*
 * Real MicroPython (the 1.27 WebAssembly port, with struct, binascii.crc32, deflate and framebuf) in this
 * process. The firmware files are copied into its in-memory filesystem under /fw, and bytes travel both ways
 * as files there: the emscripten FS copies them with one memcpy, where a JS proxy would cross the boundary
 * once per byte.
 */

export const FIRMWARE_DIR = fileURLToPath(new URL('../../firmware-examples/micropython/', import.meta.url))

const FAKES = fileURLToPath(new URL('./fakes.py', import.meta.url))

export function firmwareFiles(): string[] {
  return readdirSync(FIRMWARE_DIR)
    .filter((f) => f.endsWith('.py'))
    .sort()
}

export interface Board {
  /** Runs Python in __main__ and returns what it printed (one entry per line). */
  run(code: string): string[]
  /** Writes bytes into the wasm filesystem, for Python to open(). */
  put(path: string, data: Uint8Array | string): void
  /** Reads a file Python wrote. */
  get(path: string): Buffer
  /** Runs Python and returns the values it handed over with fakes.out(), parsed from JSON. */
  values(code: string): unknown[]
}

export async function bootMicroPython(): Promise<Board> {
  let lines: string[] = []
  const mp = await loadMicroPython({
    heapsize: 8 * 1024 * 1024,
    stdout: (line) => lines.push(line),
    stderr: (line) => lines.push(line),
  })
  mp.FS.mkdir('/fw')
  mp.FS.mkdir('/data')
  mp.FS.mkdir('/test')
  mp.FS.writeFile('/test/fakes.py', readFileSync(FAKES, 'utf8'))
  for (const file of firmwareFiles()) {
    mp.FS.writeFile(`/fw/${file}`, readFileSync(`${FIRMWARE_DIR}${file}`, 'utf8'))
  }
  mp.runPython("import sys\nsys.path.insert(0, '/fw')\nsys.path.insert(0, '/test')")
  const board: Board = {
    run(code) {
      lines = []
      try {
        mp.runPython(code)
      } catch (err) {
        const e = err as Error & { type?: string }
        throw new Error(`MicroPython raised ${e.type ?? e.name}: ${e.message}\nprinted:\n${lines.join('\n')}`)
      }
      return lines
    },
    put(path, data) {
      mp.FS.writeFile(path, data)
    },
    get(path) {
      return Buffer.from(mp.FS.readFile(path))
    },
    values(code) {
      return board
        .run(code)
        .filter((line) => line.startsWith('@@'))
        .map((line) => JSON.parse(line.slice(2)) as unknown)
    },
  }
  return board
}
