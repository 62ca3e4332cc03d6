import { randomBytes } from 'node:crypto'

/*
 * One-time tickets for the dashboard's event stream. A browser's EventSource cannot send an X-API-Key
 * header, and the key must not travel in a URL (URLs end up in proxy and browser logs). So the page trades
 * the key for a ticket (POST /api/v1/events/token, which needs the key) and opens the stream with
 * `?token=`: the ticket is good for one stream, for a short while, and worthless after (README, "Dashboard").
 */

export const TOKEN_TTL_MS = 60_000
/** Keeps a client that asks and never connects from growing the table without bound. */
const MAX_TOKENS = 1_000

export interface EventTokens {
  issue(): { token: string; expiresInS: number }
  /** True once for a ticket that was issued and has not expired; the ticket is spent either way. */
  redeem(token: unknown): boolean
}

export function createEventTokens(monotonic: () => number): EventTokens {
  const expiries = new Map<string, number>()
  function sweep(now: number): void {
    for (const [token, expiry] of expiries) if (expiry <= now) expiries.delete(token)
    while (expiries.size >= MAX_TOKENS) expiries.delete(expiries.keys().next().value!)
  }
  return {
    issue() {
      const now = monotonic()
      sweep(now)
      const token = randomBytes(24).toString('base64url')
      expiries.set(token, now + TOKEN_TTL_MS)
      return { token, expiresInS: TOKEN_TTL_MS / 1000 }
    },
    redeem(token) {
      if (typeof token !== 'string') return false
      const expiry = expiries.get(token)
      if (expiry === undefined) return false
      expiries.delete(token)
      return expiry > monotonic()
    },
  }
}
