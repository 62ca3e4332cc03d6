import { isDeviceId } from './device-id.ts'

export { DEVICE_ID_PATTERN, RESERVED_DEVICE_ID } from './device-id.ts'

export type DeviceTopicKind = 'prompt' | 'frame' | 'status' | 'get' | 'cancel' | 'info'

/** What devices send to the bridge; `info` (retained, docs/protocol.md) describes the panel and telemetry. */
export type InboundKind = 'prompt' | 'get' | 'cancel' | 'info'

const INBOUND_KINDS: ReadonlySet<string> = new Set(['prompt', 'get', 'cancel', 'info'])

export interface Topics {
  readonly base: string
  readonly bridgeState: string
  device(id: string, kind: DeviceTopicKind): string
  /** The subscription filter for everything devices send to the bridge. */
  readonly inboundFilters: readonly string[]
  /**
   * Reads a topic the bridge listens on. Returns null for topics that are not `<base>/<id>/<kind>`, and
   * `{ deviceId: null }` when the shape is right but the id is not allowed, so the caller can say why.
   */
  parseInbound(topic: string): { kind: InboundKind; deviceId: string | null; rawId: string } | null
}

export function createTopics(base: string): Topics {
  const prefix = `${base}/`
  return {
    base,
    bridgeState: `${base}/bridge/state`,
    device: (id, kind) => `${base}/${id}/${kind}`,
    inboundFilters: [`${base}/+/prompt`, `${base}/+/get`, `${base}/+/cancel`, `${base}/+/info`],
    parseInbound(topic) {
      if (!topic.startsWith(prefix)) return null
      const rest = topic.slice(prefix.length).split('/')
      if (rest.length !== 2) return null
      const [rawId, kind] = rest as [string, string]
      if (!INBOUND_KINDS.has(kind)) return null
      return { kind: kind as InboundKind, deviceId: isDeviceId(rawId) ? rawId : null, rawId }
    },
  }
}

/**
 * MQTT topic filter matching (MQTT 3.1.1 section 4.7): `+` matches one level, `#` (last) matches any number
 * of levels including the parent, and filters that start with a wildcard never match `$` topics (4.7.2).
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    const level = f[i]
    if (level === '#') return i === f.length - 1
    if (i >= t.length) return false
    if (level !== '+' && level !== t[i]) return false
  }
  return f.length === t.length
}
