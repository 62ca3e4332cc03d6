import { isIP } from 'node:net'
import { z } from 'zod'
import { splitCommas } from './fields.ts'

/** Addresses and CIDR ranges (`127.0.0.1`, `10.0.0.0/8`, `::1`), comma-separated, as Fastify's trustProxy takes. */
export const addressList = z.preprocess(
  splitCommas,
  z.array(
    z.string().refine(
      (s) => {
        const [address = '', prefix, ...rest] = s.split('/')
        const family = isIP(address)
        if (family === 0 || rest.length > 0) return false
        return prefix === undefined || (/^\d+$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128))
      },
      { error: 'must be IP addresses or CIDR ranges, comma-separated (e.g. 127.0.0.1,10.0.0.0/8)' },
    ),
  ),
)
