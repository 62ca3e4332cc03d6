import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { connect, type IClientOptions, type MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type AclClient, type AclFile, canPublish, canRead, canSubscribe } from '../../src/auth/acl.ts'
import { readAclFile, readPasswordFile } from '../../src/auth/files.ts'
import { formatLine, verify } from '../../src/auth/password-file.ts'
import { createAuthorizer } from '../../src/auth/policy.ts'
import { runPasswd } from '../../src/cli/passwd.ts'
import { topicMatches } from '../../src/protocol/topics.ts'
import { mosquittoPasswd, type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts'

/*
 * The same password file and ACL file, side by side on a real Mosquitto and in our code (README "Security":
 * the files move between the two brokers unchanged, so both must allow and deny the same things). Deliveries are observed with mqtt.js:
 * each round ends with a sync message the writer publishes after everything else, so "not delivered" is known
 * when the sync arrives, with no waiting for time to pass.
 */

const PASSWORD = {
  alice: 'alice-pw', // mosquitto_passwd, $7$
  carol: 'carol pw', // mosquitto_passwd -H sha512, $6$
  bob: 'bob-pw', // our formatLine
  dave: 'dave-pw', // our passwd command
  'ev+il': 'evil-pw',
  observer: 'observer-pw',
  writer: 'writer-pw',
} as const
type Name = keyof typeof PASSWORD

const ACL = `# the matrix the side-by-side test checks
topic read public/#
topic write public/anon
topic read sync/#
pattern readwrite dev/%u/#
pattern deny dev/%u/locked
pattern read cid/%c/in
pattern read sync/%c
user alice
topic readwrite home/alice/#
topic deny home/alice/secret
topic read home/+/status
topic write shared/#
topic read sync/#
user bob
topic read home/#
topic write home/bob/x
topic read $x/#
topic read sync/#
user ev+il
topic read sync/#
topic write public/evil
user observer
topic read #
topic read $x/#
user writer
topic write #
topic write $x/#
`

const TOPICS = [
  'public/anon',
  'public/x',
  'public/evil',
  'home/alice/a',
  'home/alice/secret',
  'home/alice/a/b',
  'home/alice/status',
  'home/bob/x',
  'home/bob/status',
  'shared/a',
  'dev/alice/a',
  'dev/alice/locked',
  'dev/carol/q',
  'dev/bob/z',
  'cid/alice-1/in',
  'cid/carol-1/in',
  'cid/anon-1/in',
  '$x/y',
  'misc',
]

const FILTERS = [
  '#',
  '+/+',
  'home/#',
  'home/+/status',
  'home/alice/secret',
  'dev/#',
  'dev/+/locked',
  'cid/+/in',
  '$x/#',
  'public/+',
  'shared/#',
  'nothing/here',
]

/** The clients of the matrix: who they are to the ACL, and how they log in. */
const SESSIONS: { label: string; who: AclClient }[] = [
  { label: 'anonymous', who: { username: undefined, clientId: 'anon-1' } },
  { label: 'alice', who: { username: 'alice', clientId: 'alice-1' } },
  { label: 'alice as x+y', who: { username: 'alice', clientId: 'x+y' } },
  { label: 'bob', who: { username: 'bob', clientId: 'bob-1' } },
  { label: 'carol', who: { username: 'carol', clientId: 'carol-1' } },
  { label: 'dave', who: { username: 'dave', clientId: 'dave-1' } },
  { label: 'ev+il', who: { username: 'ev+il', clientId: 'evil-1' } },
]

let broker: RunningMosquitto
let passwdPath: string
let acl: AclFile
const clients: MqttClient[] = []

function connectAs(who: AclClient, password?: string): Promise<MqttClient> {
  const options: IClientOptions = {
    clientId: who.clientId,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    clean: true,
  }
  if (who.username !== undefined) {
    options.username = who.username
    options.password = password ?? PASSWORD[who.username as Name]
  }
  return new Promise((resolve, reject) => {
    const client = connect(broker.url, options)
    clients.push(client)
    client.once('connect', () => resolve(client))
    client.once('error', (err) => {
      client.end(true)
      reject(err)
    })
  })
}

beforeAll(async () => {
  broker = await startMosquitto(async (dir) => {
    passwdPath = join(dir, 'passwd')
    mosquittoPasswd(passwdPath, 'alice', PASSWORD.alice)
    mosquittoPasswd(passwdPath, 'carol', PASSWORD.carol, 'sha512')
    for (const name of ['ev+il', 'observer', 'writer'] as const)
      mosquittoPasswd(passwdPath, name, PASSWORD[name])
    const { readFile } = await import('node:fs/promises')
    const bobLine = await formatLine('bob', PASSWORD.bob)
    await writeFile(passwdPath, `${await readFile(passwdPath, 'utf8')}${bobLine}\n`)
    let err = ''
    const io = {
      stdin: Readable.from([`${PASSWORD.dave}\n`]),
      stdout: { write: () => true },
      stderr: { write: (t: string) => (err += t) },
    }
    const code = await runPasswd([passwdPath, 'dave', '--stdin'], io)
    if (code !== 0) throw new Error(`passwd failed: ${err}`)
    await writeFile(join(dir, 'acl'), ACL)
    return [`password_file ${passwdPath}`, `acl_file ${join(dir, 'acl')}`, 'allow_anonymous true'].join('\n')
  })
  acl = await readAclFile(join(broker.dir, 'acl'))
})

afterAll(async () => {
  await Promise.all(clients.map((c) => c.endAsync(true)))
  await broker?.stop()
})

describe('password file, side by side with Mosquitto', () => {
  it('our code verifies the lines mosquitto_passwd wrote, and the other way round', async () => {
    const users = await readPasswordFile(passwdPath)
    expect(users.users.get('alice')?.kind).toBe('pbkdf2-sha512')
    expect(users.users.get('carol')?.kind).toBe('sha512')
    const auth = createAuthorizer({
      baseTopic: 'pico',
      users,
      acl: null,
      allowAnonymous: false,
      adminUsers: [],
    })
    for (const name of Object.keys(PASSWORD) as Name[]) {
      expect(await verify(users, name, PASSWORD[name]), name).toBe(true)
      expect(await auth.authenticate(name, Buffer.from(`${PASSWORD[name]}!`), 'c')).toEqual({
        ok: false,
        returnCode: 4,
      })
      // Mosquitto accepts the same password: formatLine's and the passwd command's lines included.
      const client = await connectAs({ username: name, clientId: `login-${name}` })
      await client.endAsync()
    }
  })

  it('Mosquitto refuses a wrong password with return code 5 (ours answers 4, MQTT 3.1.1 section 3.2.2.3)', async () => {
    for (const name of ['alice', 'bob', 'dave'] as const) {
      const err = await connectAs({ username: name, clientId: `bad-${name}` }, 'wrong').catch((e: Error) => e)
      expect(err).toBeInstanceOf(Error)
      expect((err as Error & { code?: number }).code).toBe(5)
    }
  })
})

describe('ACL file, side by side with Mosquitto', () => {
  let writer: MqttClient
  let observer: MqttClient
  const sessions: { label: string; who: AclClient; client: MqttClient; inbox: string[] }[] = []
  const syncWaiters = new Map<string, () => void>()

  /** A client id fit for a topic level. */
  const syncId = (clientId: string) => clientId.replace(/[+#]/g, '_')
  /** Resolves when the sync message for this client has arrived (everything sent before it has too). */
  function synced(clientId: string): Promise<void> {
    return new Promise((resolve) => syncWaiters.set(syncId(clientId), resolve))
  }
  async function sync(clientIds: string[]): Promise<void> {
    const arrived = clientIds.map(synced)
    await Promise.all(clientIds.map((id) => writer.publishAsync(`sync/${syncId(id)}`, 'sync', { qos: 1 })))
    await Promise.all(arrived)
  }
  function listen(client: MqttClient, clientId: string, inbox: string[]) {
    client.on('message', (topic, payload) => {
      if (topic === `sync/${syncId(clientId)}`) {
        syncWaiters.get(syncId(clientId))?.()
        return
      }
      if (!topic.startsWith('sync/')) inbox.push(`${topic} ${payload.toString()}`)
    })
  }

  beforeAll(async () => {
    writer = await connectAs({ username: 'writer', clientId: 'writer-1' })
    observer = await connectAs({ username: 'observer', clientId: 'observer-1' })
    for (const { label, who } of SESSIONS) {
      const client = await connectAs(who)
      const inbox: string[] = []
      listen(client, who.clientId, inbox)
      await client.subscribeAsync(`sync/${syncId(who.clientId)}`, { qos: 0 })
      sessions.push({ label, who, client, inbox })
    }
  })

  it('allows and refuses the same publishes', async () => {
    const seen: string[] = []
    listen(observer, 'observer-1', seen)
    await observer.subscribeAsync(['#', '$x/#'], { qos: 0 })
    // Mosquitto answers a refused QoS 1 publish with a PUBACK too (3.1.1 has no way to say no), so each
    // publish completes; the message just reaches nobody.
    for (const s of sessions) {
      for (const topic of TOPICS) await s.client.publishAsync(topic, s.label, { qos: 1 })
    }
    await sync(['observer-1'])
    const expected = sessions.flatMap((s) =>
      TOPICS.filter((t) => canPublish(acl, s.who, t)).map((t) => `${t} ${s.label}`),
    )
    expect(seen.sort()).toEqual(expected.sort())
    // The matrix means something only if it has both answers in it.
    expect(expected.length).toBeGreaterThan(5)
    expect(expected.length).toBeLessThan(sessions.length * TOPICS.length - 5)
  })

  it('delivers the same messages to the same subscriptions', async () => {
    let granted = 0
    let refused = 0
    for (const filter of FILTERS) {
      await Promise.all(sessions.map((s) => s.client.subscribeAsync(filter, { qos: 0 })))
      for (const s of sessions) s.inbox.length = 0
      for (const topic of TOPICS) await writer.publishAsync(topic, 'w', { qos: 1 })
      await sync(sessions.map((s) => s.who.clientId))
      for (const s of sessions) {
        const got = s.inbox.map((m) => m.slice(0, -2)).sort()
        const subscribe = canSubscribe(acl, s.who, filter)
        const expected = subscribe
          ? TOPICS.filter((t) => topicMatches(filter, t) && canRead(acl, s.who, t)).sort()
          : []
        expect(got, `${s.label} subscribed to ${filter}`).toEqual(expected)
        if (subscribe) granted++
        else refused++
      }
      await Promise.all(sessions.map((s) => s.client.unsubscribeAsync(filter)))
    }
    expect(granted).toBeGreaterThan(5)
    expect(refused).toBeGreaterThan(5)
  })
})
