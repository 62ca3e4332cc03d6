import type { Logger } from 'pino'
import type { Clock } from '../clock.ts'
import { a1111Servers, type Config } from '../config/schema.ts'
import { createA1111Generator } from './a1111.ts'
import { createDemoGenerator } from './demo.ts'
import type { Generator } from './types.ts'

/** The generators the settings ask for: one A1111 client per server, or the demo generator without any. */
export function createGenerators(config: Config, log: Logger, clock: Clock): Generator[] {
  const servers = a1111Servers(config)
  if (servers.length === 0) {
    log.warn(
      'A1111_BASE_URL is not set: using the demo generator, which draws the prompt instead of a picture',
    )
    return [createDemoGenerator({ stepMs: config.DEMO_STEP_MS })]
  }
  return servers.map((server) =>
    createA1111Generator(
      {
        baseUrl: server.url,
        username: server.username,
        password: server.password,
        timeoutMs: server.timeoutS * 1000,
        progressIntervalMs: config.A1111_PROGRESS_INTERVAL * 1000,
        hungAfterMs: config.A1111_HUNG_TIMEOUT * 1000,
      },
      { log: log.child({ module: 'a1111' }), clock },
    ),
  )
}
