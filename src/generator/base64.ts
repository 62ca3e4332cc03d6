/*
 * The pictures in an A1111 answer are base64 text: checked and decoded here, in one pass of Node's own
 * decoder. Pure: the worker thread and the main thread share it.
 */

/**
 * Decodes base64 (A1111 sends it bare; a `data:...;base64,` prefix from other servers is tolerated), or
 * undefined when it is not base64. Node's decoder skips what is not base64, so a string with a stray byte
 * decodes to fewer bytes than its length promises: comparing the two checks every character in the decoder's
 * own pass, instead of a regular expression over the whole string first (4-5 ms for 660 KB, issue 14).
 */
export function decodeBase64(text: string): Buffer | undefined {
  const b64 = text.startsWith('data:') ? text.slice(text.indexOf(',') + 1) : text
  const n = b64.length
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0
  if (n === 0 || n % 4 === 1 || (pad > 0 && n % 4 !== 0)) return undefined
  const expected = Math.floor(n / 4) * 3 + (n % 4 === 0 ? 0 : (n % 4) - 1) - pad
  if (expected === 0) return undefined
  // Not from Buffer's shared pool: the worker hands this memory over to the main thread.
  const out = Buffer.allocUnsafeSlow(expected)
  return out.write(b64, 'base64') === expected ? out : undefined
}
