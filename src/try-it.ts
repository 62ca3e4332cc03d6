import type { Config } from './config/schema.ts'

/**
 * The line for people, logged after `listening`: the two commands that show the bridge working, with the
 * real ports and the host a client on this machine reaches.
 */
export function tryItLine(config: Config, ports: { mqttPort: number }): string {
  const listenHost =
    config.MQTT_HOST === '0.0.0.0' || config.MQTT_HOST === '::' ? '127.0.0.1' : config.MQTT_HOST
  // With MQTT_URL the displays are on that broker (its login is not repeated here).
  const host = config.MQTT_URL ? new URL(config.MQTT_URL).hostname.replace(/^\[|\]$/g, '') : listenHost
  // With a password file the commands need a login: an admin's, to see every display (README, "Security").
  const login = config.MQTT_PASSWORD_FILE !== undefined && !config.MQTT_URL
  const url = `mqtt://${login ? 'USER:PASSWORD@' : ''}${host.includes(':') ? `[${host}]` : host}:${ports.mqttPort}`
  return (
    `try it: npx pico-a1111-bridge device --id ${login ? 'USER' : 'demo'} --url ${url} --prompt "a red fox" ` +
    `(draws the frame into frame.png), and watch the statuses with ` +
    `mosquitto_sub -h ${host} -p ${ports.mqttPort}${login ? ' -u USER -P PASSWORD' : ''} -t '${config.BASE_TOPIC}/+/status' -v`
  )
}
