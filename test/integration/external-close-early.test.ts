import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { createExternalBroker } from '../../src/broker/external.ts'
import { systemClock } from '../../src/clock.ts'
import { createTopics } from '../../src/protocol/topics.ts'
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * MQTT_URL mode loads mqtt.js when it opens its link, so a stop can come while it loads (a daemon told to
 * stop as it starts). The link opened after that stop must not stay connected with nobody to close it.
 */

describe('an external broker closed while it opens', () => {
  let mosquitto: RunningMosquitto | undefined
  afterEach(async () => {
    await mosquitto?.stop()
  })

  it('closes the link it opens afterwards instead of keeping it', async () => {
    mosquitto = await startMosquitto('allow_anonymous true')
    const broker = createExternalBroker(
      { url: mosquitto.url, clientId: 'closed-early', shareGroup: 'bridges' },
      { log: pino({ level: 'silent' }), topics: createTopics('pico'), clock: systemClock },
    )
    const opening = broker.open({ inbound: async () => {}, frameSubscribed: () => {} })
    const closing = broker.close()
    await Promise.all([opening, closing])
    expect(broker.report()).toMatchObject({ connected: false })
    // Had the link stayed, it would be connected by now (open() waits for its first attempt) and never
    // disconnect: every connection Mosquitto logs for the bridge's client id is followed by its end.
    const balanced = () => {
      const log = mosquitto!.output()
      const connects = log.match(/New client connected from \S+ as closed-early /g)?.length ?? 0
      const ends = log.match(/Client closed-early (disconnected|closed its connection)/g)?.length ?? 0
      return connects === ends
    }
    await expect.poll(balanced, { timeout: 5_000 }).toBe(true)
  })
})
