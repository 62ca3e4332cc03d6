import { hostname } from 'node:os'
import type { Config } from '../config/schema.ts'
import { createHaTopics } from './discovery.ts'
import { createHomeAssistant, type HomeAssistant, type HomeAssistantDeps } from './home-assistant.ts'
import { createKnownDisplays } from './known-displays.ts'
import { createHaLink } from './link.ts'

/*
 * Which broker Home Assistant is reached on (README "Home Assistant"):
 * HA_MQTT_URL when set; otherwise, in MQTT_URL mode, that same broker over a second connection of its own
 * (with MQTT_USERNAME and MQTT_PASSWORD when the URL carries no login), so the link's will, birth and
 * reconnects stay apart from the displays' connection. Without either, or with HA_DISCOVERY=false, there is
 * no link: the embedded broker speaks MQTT 3.1.1 and Home Assistant needs 5.
 */

export function homeAssistantFromConfig(
  config: Config,
  deps: Omit<HomeAssistantDeps, 'link' | 'known'>,
): HomeAssistant | null {
  const url = config.HA_MQTT_URL ?? config.MQTT_URL
  if (url === undefined || config.HA_DISCOVERY === false) return null
  const own = config.HA_MQTT_URL !== undefined
  const topics = createHaTopics(config.BASE_TOPIC, config.HA_DISCOVERY_PREFIX)
  const link = createHaLink({
    url,
    username: own ? undefined : config.MQTT_USERNAME,
    password: own ? undefined : config.MQTT_PASSWORD,
    // One per bridge and base topic: bridges that share a broker (MQTT_URL, "Scaling out") are told apart by
    // MQTT_CLIENT_ID, else one with the same settings on the same host takes the link over.
    clientId: `${config.MQTT_CLIENT_ID ?? `pico-a1111-bridge-${hostname()}`}-ha-${topics.bridgeNodeId}`.slice(
      0,
      128,
    ),
    availabilityTopic: topics.bridgeAvailability,
    log: deps.log,
  })
  return createHomeAssistant(
    {
      baseTopic: config.BASE_TOPIC,
      prefix: config.HA_DISCOVERY_PREFIX,
      // Several bridges may serve one external broker: each command from Home Assistant goes to one of them.
      shareGroup: config.MQTT_URL === undefined ? undefined : config.MQTT_SHARE_GROUP,
    },
    { ...deps, link, known: createKnownDisplays(config.DATA_DIR, deps.log) },
  )
}
