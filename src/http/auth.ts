import { createHash, timingSafeEqual } from 'node:crypto'

/**
 * Compares an X-API-Key header with SERVICE_API_KEY in constant time. Both sides are hashed first so that
 * neither the comparison nor an early length check tells anything about the key.
 */
export function createKeyCheck(key: string): (given: string | string[] | undefined) => boolean {
  const expected = createHash('sha256').update(key).digest()
  return (given) => {
    if (typeof given !== 'string') return false
    return timingSafeEqual(createHash('sha256').update(given).digest(), expected)
  }
}
