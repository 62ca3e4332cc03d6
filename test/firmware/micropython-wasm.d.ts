/** The few parts of the MicroPython WebAssembly package (it ships no typings) that the firmware tests use. */
declare module '@micropython/micropython-webassembly-pyscript' {
  export interface LoadOptions {
    heapsize?: number
    pystack?: number
    linebuffer?: boolean
    stdout?: (line: string) => void
    stderr?: (line: string) => void
  }
  export interface MicroPythonFs {
    mkdir(path: string): void
    writeFile(path: string, data: string | Uint8Array): void
    readFile(path: string): Uint8Array
  }
  export interface MicroPython {
    FS: MicroPythonFs
    runPython(code: string): unknown
  }
  export function loadMicroPython(options?: LoadOptions): Promise<MicroPython>
}
