/*
 * Home Assistant's device-based MQTT discovery for the displays and the bridge: the topics the link uses on
 * Home Assistant's broker and the one retained config message per device. Keys follow Home Assistant's MQTT
 * docs (https://www.home-assistant.io/integrations/mqtt/, "Device discovery payload"; the text, image,
 * sensor and button pages under /integrations/<platform>.mqtt/). Pure.
 */

/** The telemetry a display may report in `info` that becomes a diagnostic sensor. */
export const TELEMETRY_KEYS = ['rssi', 'heap_free', 'battery_v', 'fw'] as const
export type TelemetryKey = (typeof TELEMETRY_KEYS)[number]

/** Home Assistant's text entity holds at most 255 characters (its `max` may not exceed it). */
export const HA_TEXT_MAX = 255

export type HaCommand = 'prompt' | 'again' | 'cancel'
const COMMANDS: ReadonlySet<string> = new Set(['prompt', 'again', 'cancel'])

export interface HaTopics {
  /** `<prefix>/status`: Home Assistant's own birth and will (online / offline). */
  readonly haStatus: string
  readonly bridgeAvailability: string
  readonly bridgeState: string
  /** The filter that covers every display's command topics. */
  readonly commandFilter: string
  discovery(nodeId: string): string
  nodeId(deviceId: string): string
  readonly bridgeNodeId: string
  display(deviceId: string, what: 'availability' | 'status' | 'picture' | 'prompt' | 'info'): string
  command(deviceId: string, command: HaCommand): string
  /** Reads a command topic; null for any other topic. */
  parseCommand(topic: string): { deviceId: string; command: HaCommand } | null
}

/** Node ids allow only `[a-zA-Z0-9_-]` (Home Assistant's MQTT docs, "Discovery topic"). */
function slug(text: string): string {
  return text.replace(/[^A-Za-z0-9_-]/g, '_')
}

export function createHaTopics(base: string, prefix: string): HaTopics {
  const node = slug(base)
  return {
    haStatus: `${prefix}/status`,
    bridgeAvailability: `${base}/bridge/ha/availability`,
    bridgeState: `${base}/bridge/ha/state`,
    commandFilter: `${base}/+/ha/set/+`,
    discovery: (nodeId) => `${prefix}/device/${nodeId}/config`,
    nodeId: (deviceId) => `${node}_${deviceId}`,
    // `bridge` is no device id (docs/protocol.md, "Devices and topics"), so this node id is the bridge's alone.
    bridgeNodeId: `${node}_bridge`,
    display: (deviceId, what) => `${base}/${deviceId}/ha/${what}`,
    command: (deviceId, command) => `${base}/${deviceId}/ha/set/${command}`,
    parseCommand(topic) {
      if (!topic.startsWith(`${base}/`)) return null
      const rest = topic.slice(base.length + 1).split('/')
      if (rest.length !== 4 || rest[1] !== 'ha' || rest[2] !== 'set') return null
      const [deviceId, , , command] = rest as [string, string, string, string]
      return COMMANDS.has(command) ? { deviceId, command: command as HaCommand } : null
    },
  }
}

export interface Origin {
  name: string
  sw: string
  /** The support URL (`support_url`, abbreviated `url`); optional. */
  url?: string
}

export interface DisplayFacts {
  deviceId: string
  /** `240x240 rgb565-be`, when the bridge knows the panel. */
  panel: string | undefined
  /** The telemetry keys the display has reported so far. */
  telemetry: ReadonlySet<TelemetryKey>
  fw: string | undefined
}

type Json = Record<string, unknown>

const TELEMETRY_SENSORS: Record<TelemetryKey, Json> = {
  rssi: {
    name: 'Signal strength',
    device_class: 'signal_strength',
    unit_of_measurement: 'dBm',
    state_class: 'measurement',
  },
  heap_free: { name: 'Free heap', device_class: 'data_size', unit_of_measurement: 'B' },
  battery_v: {
    name: 'Battery',
    device_class: 'voltage',
    unit_of_measurement: 'V',
    state_class: 'measurement',
  },
  fw: { name: 'Firmware', icon: 'mdi:chip' },
}

/** The retained config message of one display: its device, origin, availability and components. */
export function displayDiscovery(topics: HaTopics, origin: Origin, facts: DisplayFacts): Json {
  const { deviceId } = facts
  const nodeId = topics.nodeId(deviceId)
  const status = topics.display(deviceId, 'status')
  const cmps: Record<string, Json> = {
    prompt: {
      platform: 'text',
      unique_id: `${nodeId}_prompt`,
      name: 'Prompt',
      icon: 'mdi:draw',
      command_topic: topics.command(deviceId, 'prompt'),
      state_topic: topics.display(deviceId, 'prompt'),
      max: HA_TEXT_MAX,
      mode: 'text',
    },
    picture: {
      platform: 'image',
      unique_id: `${nodeId}_picture`,
      name: 'Picture',
      image_topic: topics.display(deviceId, 'picture'),
      content_type: 'image/png',
    },
    status: {
      platform: 'sensor',
      unique_id: `${nodeId}_status`,
      name: 'Status',
      icon: 'mdi:list-status',
      state_topic: status,
      value_template: '{{ value_json.state }}',
      json_attributes_topic: status,
    },
    progress: {
      platform: 'sensor',
      unique_id: `${nodeId}_progress`,
      name: 'Progress',
      icon: 'mdi:progress-clock',
      state_topic: status,
      value_template: '{{ value_json.progress }}',
      unit_of_measurement: '%',
    },
    again: {
      platform: 'button',
      unique_id: `${nodeId}_again`,
      name: 'Generate again',
      icon: 'mdi:refresh',
      command_topic: topics.command(deviceId, 'again'),
    },
    cancel: {
      platform: 'button',
      unique_id: `${nodeId}_cancel`,
      name: 'Cancel',
      icon: 'mdi:cancel',
      command_topic: topics.command(deviceId, 'cancel'),
    },
  }
  for (const key of TELEMETRY_KEYS) {
    if (!facts.telemetry.has(key)) continue
    cmps[key] = {
      platform: 'sensor',
      unique_id: `${nodeId}_${key}`,
      ...TELEMETRY_SENSORS[key],
      entity_category: 'diagnostic',
      state_topic: topics.display(deviceId, 'info'),
      value_template: `{{ value_json.${key} }}`,
    }
  }
  const dev: Json = {
    identifiers: [nodeId],
    name: `Display ${deviceId}`,
    manufacturer: 'pico-a1111-bridge',
    model: facts.panel ? `Pico display ${facts.panel}` : 'Pico display',
    via_device: topics.bridgeNodeId,
  }
  if (facts.fw !== undefined) dev.sw_version = facts.fw
  return {
    dev,
    o: origin,
    // Both must say online: the bridge that carries the display's commands, and the display itself.
    availability: [{ topic: topics.bridgeAvailability }, { topic: topics.display(deviceId, 'availability') }],
    availability_mode: 'all',
    qos: 1,
    cmps,
  }
}

/** The retained config message of the bridge itself: generators up, queue length, last error. */
export function bridgeDiscovery(topics: HaTopics, origin: Origin): Json {
  const nodeId = topics.bridgeNodeId
  const sensor = (key: string, name: string, extra: Json): Json => ({
    platform: 'sensor',
    unique_id: `${nodeId}_${key}`,
    name,
    state_topic: topics.bridgeState,
    value_template: `{{ value_json.${key} }}`,
    ...extra,
  })
  return {
    dev: {
      identifiers: [nodeId],
      name: 'Pico A1111 bridge',
      manufacturer: 'pico-a1111-bridge',
      model: 'Bridge',
      sw_version: origin.sw,
    },
    o: origin,
    availability: [{ topic: topics.bridgeAvailability }],
    qos: 1,
    cmps: {
      generators_up: sensor('generators_up', 'Generators up', {
        icon: 'mdi:server',
        state_class: 'measurement',
      }),
      queue: sensor('queue', 'Queue length', { icon: 'mdi:tray-full', state_class: 'measurement' }),
      last_error: sensor('last_error', 'Last error', { icon: 'mdi:alert-circle-outline' }),
    },
  }
}
