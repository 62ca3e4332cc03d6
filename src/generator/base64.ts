/*
 * The pictures in an A1111 answer are base64 text: checked and decoded here, in one pass of Node's own
 * decoder. Pure: the worker thread and the main thread share it.
 */

/**
 * Characters decoded at a time from bytes (a multiple of 4). Each slice becomes a string of its own on the way
 * to Node's decoder, small enough for V8's young generation, where it dies at no cost; the whole text of a
 * 512x512 picture as one string (660 KB) lands in the old generation and brings the next full collection
 * closer (issue 14).
 */
const SLICE_CHARS = 64 * 1024

/** Bytes a base64 text of `n` characters ending in `pad` '=' decodes to, or undefined if none can. */
function decodedLength(n: number, pad: number): number | undefined {
  if (n === 0 || n % 4 === 1 || (pad > 0 && n % 4 !== 0)) return undefined
  const expected = Math.floor(n / 4) * 3 + (n % 4 === 0 ? 0 : (n % 4) - 1) - pad
  return expected === 0 ? undefined : expected
}

/**
 * Decodes base64 (A1111 sends it bare; a `data:...;base64,` prefix from other servers is tolerated), or
 * undefined when it is not base64. Node's decoder skips what is not base64, so a string with a stray byte
 * decodes to fewer bytes than its length promises: comparing the two checks every character in the decoder's
 * own pass, instead of a regular expression over the whole string first (4-5 ms for 660 KB, issue 14).
 */
export function decodeBase64(text: string): Buffer | undefined {
  const b64 = text.startsWith('data:') ? text.slice(text.indexOf(',') + 1) : text
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0
  const expected = decodedLength(b64.length, pad)
  if (expected === undefined) return undefined
  // Not from Buffer's shared pool: the worker hands this memory over to the main thread.
  const out = Buffer.allocUnsafeSlow(expected)
  return out.write(b64, 'base64') === expected ? out : undefined
}

const EQUALS = 0x3d

/** decodeBase64 for text held as bytes (ASCII), as it is sliced out of an answer: decoded slice by slice. */
export function decodeBase64Bytes(bytes: Buffer): Buffer | undefined {
  let start = 0
  if (bytes.length >= 5 && bytes.toString('latin1', 0, 5) === 'data:') {
    const comma = bytes.indexOf(0x2c)
    start = comma < 0 ? bytes.length : comma + 1
  }
  const end = bytes.length
  const pad = end - start >= 2 && bytes[end - 1] === EQUALS ? (bytes[end - 2] === EQUALS ? 2 : 1) : 0
  const expected = decodedLength(end - start, pad)
  if (expected === undefined) return undefined
  const out = Buffer.allocUnsafeSlow(expected)
  let written = 0
  for (let at = start; at < end; at += SLICE_CHARS) {
    written += out.write(bytes.toString('latin1', at, Math.min(at + SLICE_CHARS, end)), written, 'base64')
  }
  return written === expected ? out : undefined
}
