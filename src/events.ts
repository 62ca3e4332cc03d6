import type { Logger } from 'pino'
import type { GeneratorState } from './generator/health.ts'
import type { PanelProfile } from './image/panel.ts'
import type { Telemetry } from './protocol/info.ts'

/*
 * The notices that cross parts: the queue, the generators, the broker and the journal announce what happened,
 * and metrics, health and the dashboard listen. Each listener runs on its own: one that throws is logged and
 * the others still hear the event.
 */

export interface BridgeEvents {
  /** A job ended for good (not a durable job interrupted by a stop: that one runs again). */
  'job.settled': { jobId: string; deviceId: string | undefined; state: 'done' | 'cancelled' | 'error' }
  /** One generation ran on a generator; `error` is undefined when it succeeded. */
  'generation.measured': { generatorId: string; ms: number; error: unknown }
  'generator.state': { generatorId: string; state: GeneratorState }
  /** A picture became a panel frame (or raw pixels for an HTTP client). */
  'frame.converted': { ms: number; via: 'mqtt' | 'http' }
  /** A frame was handed to a device's subscribers (with its chunks, which the dashboard shows previews from). */
  'frame.sent': { deviceId: string; preview: boolean; clients: number; chunks?: readonly Buffer[] }
  /** A frame chunk was written to a client's socket. */
  'chunk.sent': { bytes: number }
  /** A prompt was recorded durably (write and fsync) in the job journal. */
  'journal.write': { ms: number }
  /** A status message went to a device's status topic (the dashboard follows these). */
  'status.published': { deviceId: string; body: Record<string, unknown> }
  /**
   * A display's `info` was taken (docs/protocol.md, "Display info"): the panel its frames are now made for,
   * and its telemetry (null once its retained info is cleared). Home Assistant and the dashboard follow these.
   */
  'device.info': { deviceId: string; panel: PanelProfile; telemetry: Telemetry | null }
}

export type EventName = keyof BridgeEvents
type Listener<K extends EventName> = (payload: BridgeEvents[K]) => void

export interface EventBus {
  emit<K extends EventName>(name: K, payload: BridgeEvents[K]): void
  /** Returns the function that removes the listener again. */
  on<K extends EventName>(name: K, listener: Listener<K>): () => void
}

export function createEventBus(log: Logger): EventBus {
  const listeners = new Map<EventName, Set<Listener<EventName>>>()
  return {
    emit(name, payload) {
      const set = listeners.get(name)
      if (!set) return
      for (const listener of set) {
        try {
          ;(listener as Listener<typeof name>)(payload)
        } catch (err) {
          log.error({ err, event: name }, 'event listener failed')
        }
      }
    },
    on(name, listener) {
      let set = listeners.get(name)
      if (!set) {
        set = new Set()
        listeners.set(name, set)
      }
      set.add(listener as Listener<EventName>)
      return () => set.delete(listener as Listener<EventName>)
    },
  }
}
