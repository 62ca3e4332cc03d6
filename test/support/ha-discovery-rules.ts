/*
 * What Home Assistant's MQTT integration requires of a device-based discovery message, written down from its
 * MQTT discovery documentation (the device discovery schema, the text and image platforms) so the tests can check the bridge's payloads without a Home Assistant, which cannot be installed
 * here. It answers with every problem it finds, so a test shows them all at once.
 */

type Json = Record<string, unknown>

/** The platforms the bridge uses, and the others Home Assistant takes in `cmps`. */
const PLATFORMS = new Set([
  ...['alarm_control_panel', 'binary_sensor', 'button', 'camera', 'climate', 'cover', 'device_tracker'],
  ...['event', 'fan', 'humidifier', 'image', 'lawn_mower', 'light', 'lock', 'notify', 'number', 'scene'],
  ...['select', 'sensor', 'siren', 'switch', 'tag', 'text', 'update', 'vacuum', 'valve', 'water_heater'],
])
/** Abbreviations Home Assistant expands; a message may not use both spellings of one key. */
const PAIRS: [string, string][] = [
  ['dev', 'device'],
  ['o', 'origin'],
  ['cmps', 'components'],
  ['p', 'platform'],
  ['avty', 'availability'],
  ['avty_t', 'availability_topic'],
  ['avty_mode', 'availability_mode'],
  ['uniq_id', 'unique_id'],
  ['stat_t', 'state_topic'],
  ['cmd_t', 'command_topic'],
]
const ID = /^[A-Za-z0-9_-]+$/

function pick(body: Json, short: string, long: string): unknown {
  return body[short] ?? body[long]
}

function isTopic(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && !/[+#\0]/.test(value)
}

export interface DiscoveryTopics {
  /** Topics Home Assistant reads: state, attributes, pictures, availability. */
  read: Set<string>
  /** Topics Home Assistant publishes commands on. */
  command: Set<string>
}

/** Every way `body` breaks Home Assistant's rules for `<prefix>/device/<node id>/config`; empty when none. */
export function discoveryProblems(body: Json, uniqueIds = new Set<string>()): string[] {
  const problems: string[] = []
  const bad = (text: string) => problems.push(text)
  for (const [short, long] of PAIRS) if (short in body && long in body) bad(`both ${short} and ${long}`)

  const dev = pick(body, 'dev', 'device') as Json | undefined
  if (typeof dev !== 'object' || dev === null) bad('no device (dev)')
  else {
    const ids = pick(dev, 'ids', 'identifiers')
    const connections = pick(dev, 'cns', 'connections')
    const hasIds = (Array.isArray(ids) && ids.length > 0) || typeof ids === 'string'
    if (!hasIds && !(Array.isArray(connections) && connections.length > 0))
      bad('device has neither identifiers nor connections')
  }
  const origin = pick(body, 'o', 'origin') as Json | undefined
  if (typeof origin !== 'object' || origin === null) bad('no origin (o)')
  else {
    if (typeof origin.name !== 'string' || origin.name === '') bad('origin has no name')
    for (const [short, long] of [
      ['sw', 'sw_version'],
      ['url', 'support_url'],
    ] as const) {
      const value = pick(origin, short, long)
      if (value !== undefined && typeof value !== 'string') bad(`origin ${long} is not a string`)
    }
    const url = pick(origin, 'url', 'support_url')
    if (typeof url === 'string' && !/^https?:\/\//.test(url)) bad('origin support_url is not a URL')
  }
  problems.push(...availabilityProblems(body, 'device'))

  const cmps = pick(body, 'cmps', 'components') as Record<string, Json> | undefined
  if (typeof cmps !== 'object' || cmps === null || Object.keys(cmps).length === 0) {
    bad('no components (cmps)')
    return problems
  }
  const shared = {
    state: pick(body, 'stat_t', 'state_topic'),
    command: pick(body, 'cmd_t', 'command_topic'),
  }
  for (const [key, c] of Object.entries(cmps)) {
    const where = `cmps.${key}`
    if (!ID.test(key)) bad(`${where}: id has characters outside [A-Za-z0-9_-]`)
    const platform = pick(c, 'p', 'platform')
    if (typeof platform !== 'string' || !PLATFORMS.has(platform)) bad(`${where}: platform ${platform}`)
    const uniqueId = pick(c, 'uniq_id', 'unique_id')
    if (typeof uniqueId !== 'string' || uniqueId === '') bad(`${where}: no unique_id`)
    else if (uniqueIds.has(uniqueId)) bad(`${where}: unique_id ${uniqueId} used twice`)
    else uniqueIds.add(uniqueId)
    const state = pick(c, 'stat_t', 'state_topic') ?? shared.state
    const command = pick(c, 'cmd_t', 'command_topic') ?? shared.command
    const category = pick(c, 'ent_cat', 'entity_category')
    if (category !== undefined && category !== 'config' && category !== 'diagnostic')
      bad(`${where}: entity_category ${category}`)
    problems.push(...availabilityProblems(c, where))
    switch (platform) {
      case 'text': {
        if (!isTopic(command)) bad(`${where}: a text entity needs a command_topic`)
        const max = c.max ?? 255
        const min = c.min ?? 0
        if (typeof max !== 'number' || max > 255) bad(`${where}: max ${max} is over 255`)
        if (typeof min !== 'number' || min < 0 || min > (max as number)) bad(`${where}: min ${min}`)
        if (c.mode !== undefined && c.mode !== 'text' && c.mode !== 'password')
          bad(`${where}: mode ${c.mode}`)
        break
      }
      case 'image': {
        const image = c.image_topic
        const url = c.url_topic
        if ((image === undefined) === (url === undefined))
          bad(`${where}: an image needs exactly one of image_topic and url_topic`)
        if (image !== undefined && !isTopic(image)) bad(`${where}: image_topic ${image}`)
        if (url !== undefined && !isTopic(url)) bad(`${where}: url_topic ${url}`)
        if (c.content_type !== undefined && url !== undefined)
          bad(`${where}: content_type cannot go with url_topic`)
        if (c.content_type !== undefined && !/^image\/[a-z0-9.+-]+$/.test(String(c.content_type)))
          bad(`${where}: content_type ${c.content_type}`)
        break
      }
      case 'sensor':
        if (!isTopic(state)) bad(`${where}: a sensor needs a state_topic`)
        if (category === 'config') bad(`${where}: a sensor cannot be a config entity`)
        break
      case 'button':
        if (!isTopic(command)) bad(`${where}: a button needs a command_topic`)
        break
    }
  }
  return problems
}

function availabilityProblems(body: Json, where: string): string[] {
  const problems: string[] = []
  const list = pick(body, 'avty', 'availability')
  const single = pick(body, 'avty_t', 'availability_topic')
  if (list !== undefined && single !== undefined)
    problems.push(`${where}: availability and availability_topic together`)
  if (list !== undefined) {
    if (!Array.isArray(list) || list.length === 0) problems.push(`${where}: availability is not a list`)
    else
      for (const item of list as Json[])
        if (!isTopic(pick(item, 't', 'topic'))) problems.push(`${where}: an availability item has no topic`)
  }
  if (single !== undefined && !isTopic(single)) problems.push(`${where}: availability_topic ${single}`)
  const mode = pick(body, 'avty_mode', 'availability_mode')
  if (mode !== undefined && !['all', 'any', 'latest'].includes(mode as string))
    problems.push(`${where}: availability_mode ${mode}`)
  return problems
}

/** The topics a discovery message (full key names) tells Home Assistant to read and to publish on. */
export function discoveryTopics(body: Json): DiscoveryTopics {
  const read = new Set<string>()
  const command = new Set<string>()
  const availability = (b: Json) => {
    for (const item of (b.availability as Json[] | undefined) ?? []) read.add(item.topic as string)
    if (typeof b.availability_topic === 'string') read.add(b.availability_topic)
  }
  availability(body)
  for (const c of Object.values(body.cmps as Record<string, Json>)) {
    availability(c)
    for (const key of ['state_topic', 'json_attributes_topic', 'image_topic', 'url_topic'])
      if (typeof c[key] === 'string') read.add(c[key])
    if (typeof c.command_topic === 'string') command.add(c.command_topic)
  }
  return { read, command }
}
