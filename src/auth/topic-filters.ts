/* Topic names and filters as MQTT 3.1.1 section 4.7 defines them, and how two filters relate. Pure. */

/** Mosquitto's TOPIC_HIERARCHY_LIMIT and its 65535-byte topic limit. */
const MAX_LEVELS = 200
const MAX_TOPIC_BYTES = 65_535

/** A topic filter as Mosquitto's mosquitto_sub_topic_check accepts it (MQTT 3.1.1 section 4.7.1). */
export function isValidFilter(filter: string): boolean {
  if (filter === '' || filter.includes('\0')) return false
  if (Buffer.byteLength(filter, 'utf8') > MAX_TOPIC_BYTES) return false
  const levels = filter.split('/')
  if (levels.length - 1 > MAX_LEVELS) return false
  return levels.every(
    (level, i) =>
      (level === '#' && i === levels.length - 1) ||
      level === '+' ||
      (!level.includes('+') && !level.includes('#')),
  )
}

/** A topic name a client may publish on (MQTT 3.1.1 section 4.7.3): no wildcards, not empty. */
export function isValidTopic(topic: string): boolean {
  return (
    topic !== '' &&
    !topic.includes('+') &&
    !topic.includes('#') &&
    !topic.includes('\0') &&
    Buffer.byteLength(topic, 'utf8') <= MAX_TOPIC_BYTES &&
    topic.split('/').length - 1 <= MAX_LEVELS
  )
}

/** Is there a topic that both filters match? (Both valid filters.) */
export function filtersOverlap(a: string, b: string): boolean {
  if (a.startsWith('$') !== b.startsWith('$')) return false
  const x = a.split('/')
  const y = b.split('/')
  for (let i = 0; ; i++) {
    const p = x[i]
    const q = y[i]
    if (p === '#' || q === '#') return true
    // One filter ended: only an equal length overlaps (`a/#` matching `a` itself was taken just above).
    if (p === undefined || q === undefined) return p === q
    if (p !== '+' && q !== '+' && p !== q) return false
  }
}

/** Does every topic that `inner` matches also match `outer`? (Both valid filters.) */
export function filterCovers(outer: string, inner: string): boolean {
  if (outer.startsWith('$') !== inner.startsWith('$')) return false
  const x = outer.split('/')
  const y = inner.split('/')
  for (let i = 0; ; i++) {
    const o = x[i]
    const n = y[i]
    if (o === '#') return true
    if (o === undefined) return n === undefined
    // `inner` ended first: `outer` goes on with something other than `#`, so it misses `inner`'s topic.
    if (n === undefined) return false
    if (n === '#') return false
    if (o === '+') continue
    if (n === '+' || o !== n) return false
  }
}
