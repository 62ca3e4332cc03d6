import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startBridge, type TestBridge } from './bridge.ts'

/** A test bridge with a DATA_DIR of its own that survives restart(), for what must be remembered. */
export interface StartedBridge {
  readonly mqttUrl: string
  readonly mqttPort: number
  readonly httpPort: number | null
  readonly current: TestBridge
  /** Stops the bridge and starts it again on the same DATA_DIR and settings (new ports). */
  restart(): Promise<void>
  stop(): Promise<void>
}

export async function startBridgeFor(settings: Record<string, unknown>): Promise<StartedBridge> {
  const dir = await mkdtemp(join(tmpdir(), 'pab-ha-'))
  let current = await startBridge(settings, dir)
  return {
    get mqttUrl() {
      return current.mqttUrl
    },
    get mqttPort() {
      return current.mqttPort
    },
    get httpPort() {
      return current.httpPort
    },
    get current() {
      return current
    },
    async restart() {
      await current.stop()
      current = await startBridge(settings, dir)
    },
    async stop() {
      await current.stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}
