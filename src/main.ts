import { parseArgs } from 'node:util'
import { pino } from 'pino'
import { createApp } from './app.ts'
import { ConfigError, describeConfig, loadConfig } from './config/load.ts'
import type { Config } from './config/schema.ts'
import { describeStartFailure, isSettingsFailure } from './start-failure.ts'

/*
 * The command line and the process: arguments, settings, the root logger, signals and exit codes. The only
 * module that touches process.*.
 */

/** EX_CONFIG from sysexits.h: the systemd unit is told not to restart on it. */
const EXIT_CONFIG = 78
const EXIT_USAGE = 64

const HELP = `Usage: pico-a1111-bridge [--config FILE] [--check-config]
       pico-a1111-bridge device --id ID [--url URL] [--prompt TEXT] [--out FILE] [--watch]
       pico-a1111-bridge passwd FILE USER [--stdin]

Runs the bridge: an MQTT broker for Pico displays that turns prompts into pictures from AUTOMATIC1111.
The device command acts as a simulated Pico display and writes the frames it gets as PNG
(pico-a1111-bridge device --help). The passwd command adds a user to a Mosquitto password file for
MQTT_PASSWORD_FILE (pico-a1111-bridge passwd --help).

Options:
  --config FILE    JSON file of settings (environment variables override it)
  --check-config   validate the settings, print them (secrets masked) and exit
  --help           show this help
  --version        print the version

Settings are environment variables (or keys of the config file), e.g. A1111_BASE_URL, MQTT_PORT,
HTTP_PORT, DATA_DIR; a .env file in the working directory is read too. See README.md.
SIGHUP reads MQTT_PASSWORD_FILE and MQTT_ACL_FILE again.
Exit codes: 0 stopped cleanly, 1 failed, 64 bad usage, 78 invalid settings or access files.`

export async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'device') {
    // Loaded only for this command: the daemon itself has no use for the MQTT client library.
    const { runDevice } = await import('./cli/device.ts')
    process.exitCode = await runDevice(argv.slice(1))
    return
  }
  if (argv[0] === 'passwd') {
    const { runPasswd } = await import('./cli/passwd.ts')
    process.exitCode = await runPasswd(argv.slice(1), process)
    return
  }
  let args: ReturnType<typeof parse>
  try {
    args = parse(argv)
  } catch (err) {
    process.stderr.write(`pico-a1111-bridge: ${(err as Error).message}\n\n${HELP}\n`)
    process.exitCode = EXIT_USAGE
    return
  }
  if (args.values.help) {
    process.stdout.write(`${HELP}\n`)
    return
  }
  if (args.values.version) {
    process.stdout.write(`${await readVersion()}\n`)
    return
  }

  let config: Config
  // Settings that were read but not used (a bad .env line): printed with --check-config and on a bad
  // config, logged once the logger exists.
  const warnings: string[] = []
  try {
    config = loadConfig({
      configFile: args.values.config,
      env: process.env,
      dotenvFile: '.env',
      onWarning: (warning) => warnings.push(warning),
    })
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    for (const warning of warnings) process.stderr.write(`pico-a1111-bridge: warning: ${warning}\n`)
    process.stderr.write(`pico-a1111-bridge: ${err.message}\n`)
    process.exitCode = EXIT_CONFIG
    return
  }
  if (args.values['check-config']) {
    for (const warning of warnings) process.stderr.write(`pico-a1111-bridge: warning: ${warning}\n`)
    process.stdout.write(`${JSON.stringify(describeConfig(config), null, 2)}\n`)
    process.stdout.write('settings are valid\n')
    return
  }

  const log = pino({
    level: config.LOG_LEVEL,
    base: { name: 'pico-a1111-bridge' },
    redact: {
      paths: [
        'password',
        '*.password',
        'headers.authorization',
        'headers["x-api-key"]',
        '*.headers.authorization',
      ],
      censor: '[redacted]',
    },
  })
  for (const warning of warnings) log.warn({ warning }, 'setting ignored')
  const app = createApp(config, { log })

  let stopping = false
  const stop = (reason: string) => {
    if (stopping) return
    stopping = true
    const deadline = setTimeout(() => {
      log.error(
        { timeoutS: config.SHUTDOWN_TIMEOUT },
        'stop took longer than SHUTDOWN_TIMEOUT; exiting anyway',
      )
      process.exit(1)
    }, config.SHUTDOWN_TIMEOUT * 1000)
    deadline.unref()
    app.stop(reason).then(
      () => {
        process.exitCode = 0
      },
      (err: unknown) => {
        log.error({ err }, 'stop failed')
        process.exitCode = 1
      },
    )
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
  // Later signals are ignored while the first stop runs (the deadline above ends a stuck stop).
  process.on('SIGTERM', () => {})
  process.on('SIGINT', () => {})
  // SIGHUP reads the password and ACL files again, as it does for Mosquitto (systemctl reload).
  process.on('SIGHUP', () => {
    if (!stopping) app.reload()
  })
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception; exiting')
    process.exit(1)
  })
  process.on('unhandledRejection', (err) => {
    log.fatal({ err }, 'unhandled promise rejection; exiting')
    process.exit(1)
  })

  try {
    await app.start()
  } catch (err) {
    log.fatal({ err }, describeStartFailure(err, config))
    await app.stop('start failed').catch(() => {})
    // A password, ACL or certificate file that cannot be used is a settings problem: the unit does not
    // restart on 78 (EX_CONFIG), as for a bad setting.
    process.exitCode = isSettingsFailure(err) ? EXIT_CONFIG : 1
  }
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      'check-config': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  })
}

async function readVersion(): Promise<string> {
  const { readFile } = await import('node:fs/promises')
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string
  }
  return pkg.version
}
