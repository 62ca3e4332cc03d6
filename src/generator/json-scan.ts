import { AppError } from '../errors.ts'

/*
 * The first step of reading an A1111 answer (answer-scan.ts does the second): a scan of its bytes that checks
 * the JSON grammar and bounds the shape (depth, number of values, string sizes) without building anything,
 * and finds where the root object's members lie. A JSON of nested arrays under the 64 MB cap took 2.9 GB and
 * minutes in JSON.parse (issue 13); the scan rejects it at its 65th byte. Pure.
 */

export interface JsonLimits {
  /** Containers inside containers; A1111's answers nest about 6 deep (alwayson_scripts args). */
  maxDepth: number
  /** Values of any kind, keys not counted; /sdapi/v1/options has about 600. */
  maxValues: number
  /** The longest string outside `images` (and the longest key), in bytes as sent. */
  maxStringBytes: number
}

export const DEFAULT_LIMITS: Readonly<JsonLimits> = Object.freeze({
  maxDepth: 64,
  maxValues: 200_000,
  maxStringBytes: 16 * 1024 * 1024,
})

/** What the scan saw, for logs and error details. */
export interface JsonShape {
  bytes: number
  depth: number
  values: number
  longestStringBytes: number
}

/** A value's bytes in the body: [start, end). */
export interface Span {
  start: number
  end: number
  /** Only for strings: the bytes between the quotes hold a backslash escape. */
  escaped: boolean
  /** The first byte: `"`, `{`, `[`, `t`, `f`, `n`, `-` or a digit. */
  first: number
}

export interface JsonScan {
  shape: JsonShape
  /** The root value is an object, as every A1111 answer the bridge reads. */
  isObject: boolean
  /** The root object's members, the last one of each key (as JSON.parse keeps it); empty for other roots. */
  members: Map<string, Span>
  /** The string elements of the root's array member named by `collect`, when it is an array. */
  collected: Span[]
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OBJECT = 1
const ARRAY = 2

// What the scanner expects next.
const VALUE = 0
const VALUE_OR_CLOSE = 1 // just after `[`
const KEY = 2 // after `,` in an object
const KEY_OR_CLOSE = 3 // just after `{`
const COLON = 4
const COMMA_OR_CLOSE = 5
const END = 6

/**
 * Checks that `bytes` is one JSON value within `limits`, and finds the root object's members. Linear in the
 * bytes, and it stops at the first byte that breaks a limit. String contents are not checked here (escapes,
 * control characters): every string the bridge uses is given to JSON.parse or to the base64 decoder, which
 * check them.
 *
 * @throws AppError E_A1111_BAD_RESPONSE that says what was wrong and at which byte.
 */
export function scanJson(bytes: Buffer, limits: JsonLimits = DEFAULT_LIMITS, collect?: string): JsonScan {
  const n = bytes.length
  const stack = new Uint8Array(limits.maxDepth + 1)
  const members = new Map<string, Span>()
  const collected: Span[] = []
  let depth = 0
  let maxSeen = 0
  let values = 0
  let longest = 0
  let state = VALUE
  let i = 0
  // The next backslash at or after i, found once per backslash, so strings cost one memchr each.
  let nextBackslash = -2
  // The root object's current member, and whether it is the collected array.
  let key = ''
  let keyMatches = false
  let memberStart = -1
  let collecting = false

  const fail = (what: string, at: number, first = false): never => {
    // Something else on the port (a web page, a proxy's error page) fails on its first byte.
    const hint = first ? ": is A1111_BASE_URL the address of A1111's API (usually port 7860)?" : ''
    throw new AppError('E_A1111_BAD_RESPONSE', `A1111's answer is ${what} (at byte ${at} of ${n})${hint}`, {
      details: { at, bytes: n, depth: maxSeen, values, start: bytes.toString('utf8', 0, 120) },
    })
  }

  /** The index of the closing quote of the string that opens at `start`. */
  const stringEnd = (start: number): number => {
    let from = start + 1
    for (;;) {
      const q = bytes.indexOf(QUOTE, from)
      if (q < 0) return fail('not JSON: a string never ends', start)
      if (nextBackslash < from && nextBackslash !== -1) nextBackslash = bytes.indexOf(BACKSLASH, from)
      if (nextBackslash === -1 || nextBackslash > q) return q
      let k = q - 1
      while (k > start && bytes[k] === BACKSLASH) k--
      if ((q - 1 - k) % 2 === 0) return q
      from = q + 1
    }
  }

  /** Called when a value ending at `end` is complete; depth is that of the value (root members: 1). */
  const completed = (start: number, end: number, first: number, escaped: boolean) => {
    if (depth === 1 && stack[0] === OBJECT) {
      members.set(key, { start: memberStart, end, escaped, first: bytes[memberStart]! })
      collecting = false
    } else if (depth === 2 && collecting && first === QUOTE) {
      collected.push({ start, end, escaped, first })
    }
  }

  while (i < n) {
    const c = bytes[i]!
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) {
      i++
      continue
    }
    if (state === COLON) {
      if (c !== 0x3a) fail(`not JSON: expected ':' but found ${describe(c)}`, i)
      state = VALUE
      i++
      continue
    }
    if (state === COMMA_OR_CLOSE) {
      if (c === 0x2c) {
        state = stack[depth - 1] === OBJECT ? KEY : VALUE
        i++
        continue
      }
      if ((c === 0x7d && stack[depth - 1] === OBJECT) || (c === 0x5d && stack[depth - 1] === ARRAY)) {
        depth--
        i++
        completed(-1, i, c, false)
        state = depth === 0 ? END : COMMA_OR_CLOSE
        continue
      }
      fail(`not JSON: expected ',' or a closing bracket but found ${describe(c)}`, i)
    }
    if (state === KEY || state === KEY_OR_CLOSE) {
      if (c === 0x7d && state === KEY_OR_CLOSE) {
        depth--
        i++
        completed(-1, i, c, false)
        state = depth === 0 ? END : COMMA_OR_CLOSE
        continue
      }
      if (c !== QUOTE) fail(`not JSON: expected a key but found ${describe(c)}`, i)
      const end = stringEnd(i)
      if (end - i - 1 > limits.maxStringBytes) {
        fail(`refused before parsing: a key of ${end - i - 1} bytes`, i)
      }
      if (depth === 1) {
        const escaped = nextBackslash !== -1 && nextBackslash < end
        key = escaped ? parseKey(bytes, i, end + 1) : bytes.toString('utf8', i + 1, end)
        keyMatches = collect !== undefined && key === collect
      }
      i = end + 1
      state = COLON
      continue
    }
    if (state === END) fail(`not JSON: ${describe(c)} after the end of the value`, i)
    // A value, where VALUE or VALUE_OR_CLOSE expects one.
    if (c === 0x5d && state === VALUE_OR_CLOSE) {
      depth--
      i++
      completed(-1, i, c, false)
      state = depth === 0 ? END : COMMA_OR_CLOSE
      continue
    }
    if (++values > limits.maxValues) {
      fail(`refused before parsing: more than ${limits.maxValues} values`, i)
    }
    if (depth === 1 && stack[0] === OBJECT) {
      memberStart = i
      collecting = keyMatches && c === 0x5b
    }
    if (c === 0x7b || c === 0x5b) {
      if (depth >= limits.maxDepth)
        fail(`refused before parsing: nested deeper than ${limits.maxDepth} levels`, i)
      stack[depth++] = c === 0x7b ? OBJECT : ARRAY
      if (depth > maxSeen) maxSeen = depth
      state = c === 0x7b ? KEY_OR_CLOSE : VALUE_OR_CLOSE
      i++
      continue
    }
    const start = i
    let escaped = false
    if (c === QUOTE) {
      const end = stringEnd(i)
      escaped = nextBackslash !== -1 && nextBackslash < end
      const size = end - i - 1
      if (size > longest) longest = size
      if (size > limits.maxStringBytes && !(depth === 2 && collecting)) {
        fail(`refused before parsing: a string of ${size} bytes`, i)
      }
      i = end + 1
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      i = numberEnd(bytes, i)
      if (i < 0) fail('not JSON: a malformed number', start)
    } else if (c === 0x74) i = literalEnd(bytes, i, 'true')
    else if (c === 0x66) i = literalEnd(bytes, i, 'false')
    else if (c === 0x6e) i = literalEnd(bytes, i, 'null')
    else fail(`not JSON: ${describe(c)} where a value should be`, i, values === 1)
    if (i < 0) fail('not JSON: a misspelt true, false or null', start)
    completed(start, i, c, escaped)
    state = depth === 0 ? END : COMMA_OR_CLOSE
  }
  if (state !== END) fail(values === 0 ? 'empty' : 'not JSON: it ends before the value does', n, values === 0)
  return {
    shape: { bytes: n, depth: maxSeen, values, longestStringBytes: longest },
    isObject: stack[0] === OBJECT,
    members,
    collected,
  }
}

/** The end of the number at `i` (JSON's grammar: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?), or -1. */
function numberEnd(bytes: Buffer, i: number): number {
  const digits = (from: number): number => {
    let j = from
    while (j < bytes.length && bytes[j]! >= 0x30 && bytes[j]! <= 0x39) j++
    return j
  }
  let j = i
  if (bytes[j] === 0x2d) j++
  if (bytes[j] === 0x30) j++
  else {
    const k = digits(j)
    if (k === j) return -1
    j = k
  }
  if (bytes[j] === 0x2e) {
    const k = digits(j + 1)
    if (k === j + 1) return -1
    j = k
  }
  if (bytes[j] === 0x65 || bytes[j] === 0x45) {
    j++
    if (bytes[j] === 0x2b || bytes[j] === 0x2d) j++
    const k = digits(j)
    if (k === j) return -1
    j = k
  }
  return j
}

/** A key with escapes in it; JSON.parse checks the escapes. */
function parseKey(bytes: Buffer, start: number, end: number): string {
  try {
    return JSON.parse(bytes.toString('utf8', start, end)) as string
  } catch (err) {
    throw new AppError(
      'E_A1111_BAD_RESPONSE',
      `A1111's answer is not JSON: a key with a bad escape (at byte ${start})`,
      { cause: err, details: { at: start } },
    )
  }
}

function literalEnd(bytes: Buffer, i: number, word: string): number {
  for (let k = 1; k < word.length; k++) if (bytes[i + k] !== word.charCodeAt(k)) return -1
  return i + word.length
}

function describe(byte: number): string {
  return byte >= 0x21 && byte <= 0x7e ? `'${String.fromCharCode(byte)}'` : `byte 0x${byte.toString(16)}`
}
