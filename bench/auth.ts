import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, type MqttClient } from 'mqtt'
import { DEFAULT_ITERATIONS, formatLine, parsePasswordFile, verify } from '../src/auth/password-file.ts'
import { type Bridge, machineInfo, NO_RATE_LIMIT, startBridge, table } from './lib.ts'

/*
 * What access control costs on the embedded broker (issue 10): connections per second and QoS 1 publishes
 * per second against the same daemon build, open and with a password file and an ACL file, in one run on
 * this machine. Every setup is its own daemon, started as `npm start` starts it and all running at once;
 * the measurements take turns (open, password, ...) so each sees the same machine state, and the table has
 * the median of RUNS turns. Run: node scripts/build.ts && node bench/auth.ts
 */

const RUNS = 3
/** Logins per measurement, CONCURRENT at a time (displays coming back after the bridge restarted). */
const CONNECTS = 60
const CONCURRENT = 4
/** Publishers, each sending MESSAGES one after another at QoS 1 (waiting for each PUBACK). */
const PUBLISHERS = 8
const MESSAGES = 500
const PAYLOAD = Buffer.from('{"t":21.5}')
const USERS = Array.from({ length: PUBLISHERS }, (_, i) => `display${i}`)
const PASSWORD = 'bench-password'

// Each user writes and reads its own subtree; `bench/` is no topic of the bridge's, so no handler runs and
// what is measured is the broker. A subscriber per user makes every message pass authorizeForward.
const ACL = `pattern readwrite bench/%u/#
pattern read pico/%u/#
pattern write pico/%u/prompt
`

interface Setup {
  name: string
  bridge: Bridge
  login: boolean
}

function open(url: string, user: string | undefined, clientId: string): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = connect(url, {
      clientId,
      protocolVersion: 4,
      reconnectPeriod: 0,
      clean: true,
      ...(user === undefined ? {} : { username: user, password: PASSWORD }),
    })
    client.once('connect', () => resolve(client))
    client.once('error', reject)
  })
}

/** Connections per second: CONNECTS logins, CONCURRENT at a time, each closed once CONNACK came. */
async function connectRate(setup: Setup): Promise<number> {
  let next = 0
  const started = performance.now()
  const worker = async () => {
    while (next < CONNECTS) {
      const i = next++
      const user = USERS[i % USERS.length]!
      const client = await open(setup.bridge.url, setup.login ? user : undefined, `c-${i}`)
      await client.endAsync(true)
    }
  }
  await Promise.all(Array.from({ length: CONCURRENT }, worker))
  return (CONNECTS * 1000) / (performance.now() - started)
}

/** Publishes per second: PUBLISHERS clients at once, each MESSAGES QoS 1 publishes in a row. */
async function publishRate(setup: Setup): Promise<number> {
  const url = setup.bridge.url
  const as = (user: string) => (setup.login ? user : undefined)
  const readers = await Promise.all(USERS.map((u) => open(url, as(u), `r-${u}`)))
  const writers = await Promise.all(USERS.map((u) => open(url, as(u), `w-${u}`)))
  let received = 0
  const all = new Promise<void>((resolve) => {
    for (const reader of readers)
      reader.on('message', () => {
        if (++received === PUBLISHERS * MESSAGES) resolve()
      })
  })
  await Promise.all(readers.map((r, i) => r.subscribeAsync(`bench/${USERS[i]}/#`, { qos: 1 })))
  const started = performance.now()
  await Promise.all(
    writers.map(async (w, i) => {
      for (let m = 0; m < MESSAGES; m++) await w.publishAsync(`bench/${USERS[i]}/t`, PAYLOAD, { qos: 1 })
    }),
  )
  await all
  const rate = (PUBLISHERS * MESSAGES * 1000) / (performance.now() - started)
  await Promise.all([...readers, ...writers].map((c) => c.endAsync(true)))
  return rate
}

/** Milliseconds one password check takes in this process (what each login costs the broker's thread pool). */
async function verifyMs(iterations: number): Promise<number> {
  const file = parsePasswordFile(`${await formatLine('u', PASSWORD, { iterations })}\n`, 'bench')
  const samples: number[] = []
  for (let i = 0; i < 15; i++) {
    const started = performance.now()
    await verify(file, 'u', PASSWORD)
    samples.push(performance.now() - started)
  }
  return median(samples)
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]!
}

const dir = await mkdtemp(join(tmpdir(), 'pab-bench-auth-'))
const setups: Setup[] = []
try {
  const files = async (name: string, iterations: number) => {
    const passwd = join(dir, `${name}.passwd`)
    const lines = await Promise.all(USERS.map((u) => formatLine(u, PASSWORD, { iterations })))
    await writeFile(passwd, `${lines.join('\n')}\n`, { mode: 0o600 })
    return passwd
  }
  const acl = join(dir, 'acl')
  await writeFile(acl, ACL)
  const env = { ...NO_RATE_LIMIT, LOG_LEVEL: 'info', DEMO_STEP_MS: '0' }
  setups.push({ name: 'open (no files)', bridge: await startBridge(env), login: false })
  setups.push({
    name: `password file (${DEFAULT_ITERATIONS.toLocaleString('en')} iterations) + ACL file`,
    bridge: await startBridge({
      ...env,
      MQTT_PASSWORD_FILE: await files('default', DEFAULT_ITERATIONS),
      MQTT_ACL_FILE: acl,
    }),
    login: true,
  })
  setups.push({
    name: 'password file (101 iterations, mosquitto_passwd 2.0) + ACL file',
    bridge: await startBridge({ ...env, MQTT_PASSWORD_FILE: await files('mosq20', 101), MQTT_ACL_FILE: acl }),
    login: true,
  })

  const connects = new Map<string, number[]>()
  const publishes = new Map<string, number[]>()
  for (let run = 0; run < RUNS; run++) {
    for (const setup of setups) {
      connects.set(setup.name, [...(connects.get(setup.name) ?? []), await connectRate(setup)])
      publishes.set(setup.name, [...(publishes.get(setup.name) ?? []), await publishRate(setup)])
    }
  }
  const openConnects = median(connects.get(setups[0]!.name)!)
  const openPublishes = median(publishes.get(setups[0]!.name)!)
  const rows = setups.map((s) => {
    const c = median(connects.get(s.name)!)
    const p = median(publishes.get(s.name)!)
    return [s.name, c.toFixed(0), (c / openConnects).toFixed(2), p.toFixed(0), (p / openPublishes).toFixed(2)]
  })
  const [slow, fast] = [await verifyMs(DEFAULT_ITERATIONS), await verifyMs(101)]

  process.stdout.write(`${await machineInfo()}\n\n`)
  process.stdout.write('## Access control on the embedded broker\n\n')
  process.stdout.write(
    `Method: one daemon per setup (same build, loopback), all running; mqtt.js clients at MQTT 3.1.1 in ` +
      `this process. Connections: ${CONNECTS} logins, ${CONCURRENT} at a time, each closed after CONNACK. ` +
      `Publishes: ${PUBLISHERS} publishers at once, ${MESSAGES} QoS 1 publishes of ${PAYLOAD.length} bytes ` +
      `each in a row on their own allowed topic, with a subscriber per topic (so every message is ` +
      `authorised on the way in and on the way out), until the last is received. Median of ${RUNS} ` +
      `turns taken in rotation.\n\n`,
  )
  process.stdout.write(
    `${table(['setup', 'connections/s', 'ratio to open', 'publishes/s', 'ratio to open'], rows)}\n\n`,
  )
  process.stdout.write(
    `One password check (PBKDF2-SHA512, in this process, median of 15): ` +
      `${slow.toFixed(1)} ms at ${DEFAULT_ITERATIONS.toLocaleString('en')} iterations ` +
      `(what \`pico-a1111-bridge passwd\` and mosquitto_passwd 2.1 write), ${fast.toFixed(2)} ms at 101 ` +
      `(mosquitto_passwd 2.0). It runs on libuv's thread pool, so logins do not block the broker's thread, ` +
      `but a core does at most about ${(1000 / slow).toFixed(0)} such logins a second.\n`,
  )
} finally {
  for (const s of setups) await s.bridge.stop()
  await rm(dir, { recursive: true, force: true })
}
