import { connect, type IClientOptions, type MqttClient } from 'mqtt'
import { type AssembledFrame, createFrameAssembler } from '../../src/protocol/frame.ts'
import type { StatusMessage } from '../../src/protocol/status.ts'

/**
 * A simulated display: an mqtt.js client that subscribes like a Pico (MQTT 3.1.1, QoS 1, clean session) and
 * records statuses, raw chunks and reassembled frames. Listeners are attached before CONNECT so nothing sent
 * right after CONNACK is missed.
 */
export interface TestDevice {
  client: MqttClient
  id: string
  statuses: StatusMessage[]
  chunks: Buffer[]
  frames: AssembledFrame[]
  prompt(body: string | object, qos?: 0 | 1): Promise<void>
  publish(kind: 'get' | 'cancel', body?: string): Promise<void>
  /** Resolves with the first status (from now or already seen, after `from`) that matches. */
  waitForStatus(match: (s: StatusMessage) => boolean, from?: number): Promise<StatusMessage>
  /** Resolves once `count` frames have been assembled in total. */
  waitForFrames(count: number): Promise<AssembledFrame[]>
  close(): Promise<void>
}

export async function connectDevice(
  url: string,
  id: string,
  options: { subscribe?: boolean; base?: string; clientId?: string; mqtt?: IClientOptions } = {},
): Promise<TestDevice> {
  const base = options.base ?? 'pico'
  const client = connect(url, {
    clientId: options.clientId ?? `test-${id}-${Math.random().toString(16).slice(2, 8)}`,
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 0,
    manualConnect: true,
    ...options.mqtt,
  })
  const statuses: StatusMessage[] = []
  const chunks: Buffer[] = []
  const frames: AssembledFrame[] = []
  const assembler = createFrameAssembler()
  const waiters = new Set<() => void>()
  const wake = () => {
    for (const w of [...waiters]) w()
  }
  client.on('message', (topic, payload) => {
    if (topic === `${base}/${id}/status`) {
      if (payload.length > 0) statuses.push(JSON.parse(payload.toString()) as StatusMessage)
    } else if (topic === `${base}/${id}/frame`) {
      chunks.push(payload)
      const frame = assembler.push(payload)
      if (frame) frames.push(frame)
    }
    wake()
  })
  client.connect()
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
  })
  if (options.subscribe !== false) {
    await client.subscribeAsync([`${base}/${id}/status`, `${base}/${id}/frame`], { qos: 1 })
  }

  function waitUntil<T>(check: () => T | undefined): Promise<T> {
    return new Promise((resolve) => {
      const attempt = () => {
        const value = check()
        if (value === undefined) return
        waiters.delete(attempt)
        resolve(value)
      }
      waiters.add(attempt)
      attempt()
    })
  }

  return {
    client,
    id,
    statuses,
    chunks,
    frames,
    async prompt(body, qos = 1) {
      await client.publishAsync(
        `${base}/${id}/prompt`,
        typeof body === 'string' ? body : JSON.stringify(body),
        {
          qos,
        },
      )
    },
    async publish(kind, body = '') {
      await client.publishAsync(`${base}/${id}/${kind}`, body, { qos: 1 })
    },
    waitForStatus(match, from = 0) {
      return waitUntil(() => statuses.slice(from).find(match))
    },
    waitForFrames(count) {
      return waitUntil(() => (frames.length >= count ? frames.slice(0, count) : undefined))
    },
    async close() {
      await client.endAsync(true)
    },
  }
}
