import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  type AclClient,
  type AclFile,
  type AclRule,
  aclAllows,
  canPublish,
  canRead,
  canSubscribe,
  filterCovers,
  filtersOverlap,
  formatAcl,
  isValidFilter,
  parseAcl,
} from '../../src/auth/acl.ts'
import { AuthFileError } from '../../src/auth/auth-file-error.ts'
import { parsePasswordFile } from '../../src/auth/password-file.ts'
import { createAuthorizer, type Session } from '../../src/auth/policy.ts'

const SEED = 20261122

const anon = (clientId = 'anon-1'): AclClient => ({ username: undefined, clientId })
const user = (username: string, clientId = `${username}-1`): AclClient => ({ username, clientId })

function refused(text: string): AuthFileError {
  try {
    parseAcl(text, '/etc/pico/acl')
  } catch (err) {
    expect(err).toBeInstanceOf(AuthFileError)
    return err as AuthFileError
  }
  throw new Error('expected the file to be refused')
}

describe('ACL file: reading', () => {
  it('puts lines before the first user in the anonymous block, patterns apart, repeated users together', () => {
    const acl = parseAcl(
      [
        '# comment',
        'topic read public/#',
        '  topic   write   public/in  ',
        'pattern readwrite dev/%u/#',
        '',
        'user alice',
        'topic home/alice/#',
        'topic deny home/alice/secret',
        'user  bob smith ',
        'topic read a b/c',
        'user alice',
        'topic read extra',
        'topic read',
      ].join('\n'),
      'acl',
    )
    expect(acl.anonymous).toEqual([
      { access: 'read', filter: 'public/#', line: 2 },
      { access: 'write', filter: 'public/in', line: 3 },
    ])
    expect(acl.patterns).toEqual([{ access: 'readwrite', filter: 'dev/%u/#', line: 4 }])
    expect([...acl.users.keys()]).toEqual(['alice', 'bob smith'])
    expect(acl.users.get('alice')?.map((r) => [r.access, r.filter])).toEqual([
      ['readwrite', 'home/alice/#'],
      ['deny', 'home/alice/secret'],
      ['read', 'extra'],
      // One word after "topic" is the filter, with readwrite: what Mosquitto's strtok_r parsing gives.
      ['readwrite', 'read'],
    ])
    expect(acl.users.get('bob smith')).toEqual([{ access: 'read', filter: 'a b/c', line: 10 }])
    expect(acl.warnings).toEqual([])
  })

  it('warns about patterns without %u/%c and %u inside a level', () => {
    const acl = parseAcl('pattern read all/#\npattern read dev-%u/x\n', 'acl')
    expect(acl.warnings.map((w) => w.line)).toEqual([1, 2])
  })

  const cases: [string, number, RegExp][] = [
    ['topic read a\nfoo bar', 2, /unknown keyword "foo"/],
    ['topic reed a/b', 1, /unknown access "reed"/],
    ['topic read a/#/b', 1, /not a valid topic filter/],
    ['topic read a+', 1, /not a valid topic filter/],
    ['pattern', 1, /needs a topic filter/],
    ['pattern  ', 1, /needs a topic filter/],
    ['user', 1, /needs a user name/],
    ['user   ', 1, /needs a user name/],
    ['topic read a\n  # indented', 2, /comment must start/],
    ['\ttopic read a', 1, /unknown keyword/],
  ]
  for (const [text, line, reason] of cases) {
    it(`refuses line ${line}: ${reason.source}`, () => {
      const err = refused(text)
      expect(err.file).toBe('/etc/pico/acl')
      expect(err.line).toBe(line)
      expect(err.message).toMatch(new RegExp(`^/etc/pico/acl:${line}: `))
      expect(err.message).toMatch(reason)
    })
  }
})

describe('ACL file: Mosquitto meaning', () => {
  const acl = parseAcl(
    [
      'topic read public/#',
      'topic write public/anon',
      'pattern readwrite dev/%u/#',
      'pattern deny dev/%u/locked',
      'pattern read cid/%c/in',
      'user alice',
      'topic readwrite home/alice/#',
      'topic deny home/alice/secret',
      'topic read home/+/status',
      'topic read $SYS/broker/#',
      'topic write #',
      'user bob',
      'topic read #',
    ].join('\n'),
    'acl',
  )

  it('gives anonymous clients the lines before the first user, and patterns without %u', () => {
    expect(canRead(acl, anon(), 'public/x')).toBe(true)
    expect(canPublish(acl, anon(), 'public/x')).toBe(false)
    expect(canPublish(acl, anon(), 'public/anon')).toBe(true)
    expect(canRead(acl, anon('anon-1'), 'cid/anon-1/in')).toBe(true)
    expect(canRead(acl, anon(), 'dev/anon-1/x')).toBe(false)
  })

  it('tries deny first, then allows, then patterns', () => {
    const a = user('alice')
    expect(canPublish(acl, a, 'home/alice/x')).toBe(true)
    expect(canRead(acl, a, 'home/alice/secret')).toBe(false)
    // `topic write #` comes later in the file but deny lines are checked first.
    expect(canPublish(acl, a, 'home/alice/secret')).toBe(false)
    expect(canRead(acl, a, 'home/bob/status')).toBe(true)
    expect(canPublish(acl, a, 'anything/else')).toBe(true)
    expect(canRead(acl, a, 'dev/alice/x')).toBe(true)
    expect(canRead(acl, a, 'dev/alice/locked')).toBe(false)
    expect(canPublish(acl, a, 'dev/alice/locked')).toBe(true) // `topic write #` is a user rule: before patterns
    expect(canRead(acl, user('carol'), 'dev/carol/locked')).toBe(false)
    expect(canRead(acl, user('carol'), 'dev/carol/x')).toBe(true)
    expect(canRead(acl, user('carol'), 'dev/alice/x')).toBe(false)
  })

  it('keeps $ topics away from rules that do not start with $', () => {
    expect(canRead(acl, user('bob'), 'a/b')).toBe(true)
    expect(canRead(acl, user('bob'), '$SYS/broker/uptime')).toBe(false)
    expect(canRead(acl, user('alice'), '$SYS/broker/uptime')).toBe(true)
    expect(canPublish(acl, user('alice'), '$SYS/x')).toBe(false)
  })

  it('refuses names holding + or # once there are patterns, after the user rules', () => {
    expect(canRead(acl, user('ev+il'), 'dev/ev+il/x')).toBe(false)
    expect(canRead(acl, user('carol', 'c#1'), 'dev/carol/x')).toBe(false)
    expect(canPublish(acl, user('alice', 'x+y'), 'home/alice/x')).toBe(true)
    expect(canRead(acl, user('alice', 'x+y'), 'dev/alice/x')).toBe(false)
  })

  it('matches %u and %c as whole levels only (Mosquitto 2.1), so a / in a name reaches nothing', () => {
    const wide = parseAcl('pattern readwrite %c/#\npattern read x-%u/y\n', 'acl')
    expect(canRead(wide, user('a', 'pico'), 'pico/victim/frame')).toBe(true)
    // Mosquitto 2.0 pastes the text: client id "pico/victim" would get pico/victim/#.
    expect(canRead(wide, user('a', 'pico/victim'), 'pico/victim/frame')).toBe(false)
    expect(canRead(wide, user('a', ''), 'x')).toBe(false)
    expect(canRead(wide, user('a'), 'x-a/y')).toBe(false)
    expect(canRead(wide, user('a'), 'x-%u/y')).toBe(true)
  })

  it('answers topics that are not topics with no', () => {
    expect(canPublish(acl, user('alice'), 'home/alice/+')).toBe(false)
    expect(canPublish(acl, user('alice'), '')).toBe(false)
  })

  it('grants a subscription only when something under it could be read', () => {
    const a = user('alice')
    expect(canSubscribe(acl, a, 'home/#')).toBe(true) // home/alice/... and home/+/status
    expect(canSubscribe(acl, a, 'home/alice/secret')).toBe(false)
    expect(canSubscribe(acl, a, 'elsewhere/#')).toBe(false)
    expect(canSubscribe(acl, a, '#')).toBe(true)
    expect(canSubscribe(acl, a, '$SYS/#')).toBe(true)
    expect(canSubscribe(acl, user('bob'), '$SYS/#')).toBe(false)
    expect(canSubscribe(acl, user('ev+il'), 'dev/#')).toBe(false)
    expect(canSubscribe(acl, anon(), 'public/+')).toBe(true)
    expect(canSubscribe(acl, a, 'bad/#/filter')).toBe(false)
  })
})

// --- properties -------------------------------------------------------------------------------------------

const LEVELS = ['a', 'b', '', '$s'] as const
const topicArb = fc
  .array(fc.constantFrom(...LEVELS), { minLength: 1, maxLength: 4 })
  .map((ls) => ls.map((l, i) => (i > 0 && l === '$s' ? 'a' : l)).join('/'))
  .filter((t) => t !== '')
const filterArb = fc
  .tuple(
    fc.array(fc.constantFrom('a', 'b', '', '+', '$s', '%u', '%c'), { minLength: 1, maxLength: 4 }),
    fc.boolean(),
  )
  .map(([ls, hash]) =>
    [...ls.map((l, i) => (i > 0 && l === '$s' ? 'b' : l)), ...(hash ? ['#'] : [])].join('/'),
  )
  .filter((f) => f !== '')
/** Every topic of the little universe the generators draw from. */
const UNIVERSE: string[] = (() => {
  const out: string[] = []
  const walk = (prefix: string[]) => {
    if (prefix.length > 0) out.push(prefix.join('/'))
    if (prefix.length === 5) return
    for (const l of ['a', 'b', '', ...(prefix.length === 0 ? ['$s'] : [])]) walk([...prefix, l])
  }
  walk([])
  return out.filter((t) => t !== '')
})()

/** MQTT 3.1.1 section 4.7 written as a regular expression, to check the matcher the rules use. */
function refMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') !== filter.startsWith('$')) return false
  const levels = filter.split('/')
  let re = ''
  levels.forEach((l, i) => {
    const sep = i === 0 ? '' : '/'
    if (l === '#') re = i === 0 ? '.*' : `${re}(/.*)?`
    else if (l === '+') re += `${sep}[^/]*`
    else re += sep + l.replace(/[$^\\.*+?()[\]{}|%]/g, '\\$&')
  })
  return new RegExp(`^${re}$`).test(topic)
}

const clientArb: fc.Arbitrary<AclClient> = fc.record({
  username: fc.option(fc.constantFrom('a', 'b', 'a/b', '+', 'c#'), { nil: undefined }),
  clientId: fc.constantFrom('a', 'b', 'x', 'a/b', 'x+'),
})
const ruleArb: fc.Arbitrary<AclRule> = fc.record({
  access: fc.constantFrom('read', 'write', 'readwrite', 'deny'),
  filter: filterArb,
  line: fc.constant(0),
})
const aclArb: fc.Arbitrary<AclFile> = fc
  .record({
    anonymous: fc.array(ruleArb, { maxLength: 4 }),
    users: fc.array(fc.tuple(fc.constantFrom('a', 'b', 'a/b', '+'), fc.array(ruleArb, { maxLength: 4 })), {
      maxLength: 3,
    }),
    patterns: fc.array(ruleArb, { maxLength: 4 }),
  })
  .map(({ anonymous, users, patterns }) => {
    const map = new Map<string, AclRule[]>()
    for (const [name, rules] of users) map.set(name, [...(map.get(name) ?? []), ...rules])
    return { file: 'gen', anonymous, users: map, patterns, warnings: [] }
  })

/** Mosquitto's check as upstream writes it: one list of denies-then-allows per stage, text substitution per level. */
function refAllows(acl: AclFile, who: AclClient, topic: string, access: 'read' | 'write'): boolean {
  const own = who.username === undefined ? acl.anonymous : acl.users.get(who.username)
  if (!own && acl.patterns.length === 0) return false
  const stage = (rules: readonly AclRule[], subst: (f: string) => string | null): boolean | null => {
    const ordered = [...rules.filter((r) => r.access === 'deny'), ...rules.filter((r) => r.access !== 'deny')]
    for (const r of ordered) {
      const f = subst(r.filter)
      if (f === null || r.filter.startsWith('$') !== topic.startsWith('$') || !refMatches(f, topic)) continue
      if (r.access === 'deny') return false
      if (r.access === 'readwrite' || r.access === access) return true
    }
    return null
  }
  const first = stage(own ?? [], (f) => f)
  if (first !== null) return first
  if (acl.patterns.length === 0) return false
  if (/[+#]/.test(who.username ?? '') || /[+#]/.test(who.clientId)) return false
  const ok = (n: string | undefined) => n !== undefined && n !== '' && !/[/+#]/.test(n)
  const second = stage(acl.patterns, (f) => {
    if (f.includes('%u') && who.username === undefined) return null
    const levels = f.split('/').map((l) => (l === '%u' ? who.username : l === '%c' ? who.clientId : l))
    if (f.split('/').some((l, i) => (l === '%u' || l === '%c') && !ok(levels[i]))) return null
    return levels.join('/')
  })
  return second ?? false
}

describe('ACL properties', () => {
  it('the filter relations agree with brute force over every topic of a small universe', () => {
    fc.assert(
      fc.property(
        filterArb.filter((f) => !f.includes('%')),
        filterArb.filter((f) => !f.includes('%')),
        (x, y) => {
          // The empty topic is no topic, but `+` and `/#` both match it: the relation may count it, harmlessly.
          const both = ['', ...UNIVERSE].some((t) => refMatches(x, t) && refMatches(y, t))
          expect(filtersOverlap(x, y)).toBe(both)
          const covered = UNIVERSE.every((t) => !refMatches(y, t) || refMatches(x, t))
          // The universe is finite, so "covers" can be true by luck only when y matches nothing deep.
          if (filterCovers(x, y)) expect(covered).toBe(true)
          if (covered && !y.split('/').includes('#')) expect(filterCovers(x, y)).toBe(true)
        },
      ),
      { seed: SEED, numRuns: 4000 },
    )
  })

  it('aclAllows agrees with a plain re-statement of Mosquitto check for generated files and topics', () => {
    fc.assert(
      fc.property(
        aclArb,
        clientArb,
        topicArb,
        fc.constantFrom('read', 'write'),
        (acl, who, topic, access) => {
          expect(aclAllows(acl, who, topic, access as 'read' | 'write')).toBe(
            refAllows(acl, who, topic, access as 'read' | 'write'),
          )
        },
      ),
      { seed: SEED, numRuns: 5000 },
    )
  })

  it('a refused subscription could never have delivered anything', () => {
    fc.assert(
      fc.property(
        aclArb,
        clientArb,
        filterArb.filter((f) => !f.includes('%')),
        (acl, who, filter) => {
          if (canSubscribe(acl, who, filter)) return
          for (const t of UNIVERSE) if (refMatches(filter, t)) expect(canRead(acl, who, t)).toBe(false)
        },
      ),
      { seed: SEED, numRuns: 3000 },
    )
  })

  it('parse(format(acl)) gives back the same rules', () => {
    fc.assert(
      fc.property(aclArb, (acl) => {
        const again = parseAcl(formatAcl(acl), 'again')
        const strip = (rules: readonly AclRule[]) => rules.map(({ access, filter }) => ({ access, filter }))
        expect(strip(again.anonymous)).toEqual(strip(acl.anonymous))
        expect(strip(again.patterns)).toEqual(strip(acl.patterns))
        expect([...again.users.keys()]).toEqual([...acl.users.keys()])
        for (const [name, rules] of acl.users)
          expect(strip(again.users.get(name) ?? [])).toEqual(strip(rules))
      }),
      { seed: SEED, numRuns: 3000 },
    )
  })

  it('never throws anything but AuthFileError, whatever the text', () => {
    const word = fc.oneof(
      fc.constantFrom('user', 'topic', 'pattern', 'read', 'write', 'readwrite', 'deny', '#', '+', '%u', '%c'),
      fc.constantFrom(' ', '  ', '\t', '\n', '\r\n', '/', '$SYS'),
      fc.string({ maxLength: 6 }),
    )
    fc.assert(
      fc.property(fc.array(word, { maxLength: 16 }), (words) => {
        try {
          const acl = parseAcl(words.join(''), 'f')
          for (const r of [...acl.anonymous, ...acl.patterns, ...[...acl.users.values()].flat()]) {
            expect(isValidFilter(r.filter)).toBe(true)
          }
        } catch (err) {
          if (!(err instanceof AuthFileError)) throw err
          expect(err.line).toBeGreaterThan(0)
        }
      }),
      { seed: SEED, numRuns: 4000 },
    )
  })
})

// --- policy -------------------------------------------------------------------------------------------------

describe('policy: createAuthorizer', () => {
  // A well-formed line no password produces: these tests do not log in as kitchen.
  const users = parsePasswordFile(
    `kitchen:$7$1$AQEBAQEBAQEBAQEB$${Buffer.alloc(64, 2).toString('base64')}`,
    'pw',
  )
  const s = (user: string | undefined, clientId = 'c1'): Session => ({ user, clientId })

  it('opens everything but the bridge-owned topics without files', async () => {
    const auth = createAuthorizer({
      baseTopic: 'pico',
      users: null,
      acl: null,
      allowAnonymous: false,
      adminUsers: [],
    })
    expect(auth.open).toBe(true)
    expect(await auth.authenticate(undefined, undefined, 'c')).toEqual({ ok: true, user: undefined })
    expect(auth.canPublish(s(undefined), 'pico/a/prompt')).toBe(true)
    expect(auth.canPublish(s(undefined), 'anything')).toBe(true)
    for (const t of ['pico/a/frame', 'pico/a/status', 'pico/bridge/state', 'pico/bridge']) {
      expect(auth.canPublish(s(undefined), t)).toBe(false)
    }
    expect(auth.canSubscribe(s(undefined), '#')).toBe(true)
    expect(auth.canRead(s(undefined), 'pico/a/frame')).toBe(true)
  })

  it('acts as its own display only, with a password file and no ACL', async () => {
    const { formatLine } = await import('../../src/auth/password-file.ts')
    const pw = parsePasswordFile(
      [
        await formatLine('kitchen', 'k-pw', { iterations: 1 }),
        await formatLine('hall', 'h-pw', { iterations: 1 }),
        await formatLine('hass', 'a-pw', { iterations: 1 }),
        await formatLine('bridge', 'b-pw', { iterations: 1 }),
      ].join('\n'),
      'pw',
    )
    const auth = createAuthorizer({
      baseTopic: 'home/pico',
      users: pw,
      acl: null,
      allowAnonymous: false,
      adminUsers: ['hass'],
    })
    expect(auth.open).toBe(false)
    expect(await auth.authenticate('kitchen', Buffer.from('k-pw'), 'c')).toEqual({
      ok: true,
      user: 'kitchen',
    })
    expect(await auth.authenticate('kitchen', Buffer.from('h-pw'), 'c')).toEqual({ ok: false, returnCode: 4 })
    expect(await auth.authenticate('kitchen', undefined, 'c')).toEqual({ ok: false, returnCode: 4 })
    expect(await auth.authenticate('nobody', Buffer.from('k-pw'), 'c')).toEqual({ ok: false, returnCode: 4 })
    expect(await auth.authenticate(undefined, undefined, 'c')).toEqual({ ok: false, returnCode: 5 })

    const k = s('kitchen')
    for (const kind of ['prompt', 'get', 'cancel', 'info']) {
      expect(auth.canPublish(k, `home/pico/kitchen/${kind}`)).toBe(true)
      expect(auth.canPublish(k, `home/pico/hall/${kind}`)).toBe(false)
      expect(auth.canPublish(s('hass'), `home/pico/hall/${kind}`)).toBe(true)
    }
    expect(auth.canPublish(k, 'home/pico/kitchen/frame')).toBe(false)
    expect(auth.canPublish(s('hass'), 'home/pico/kitchen/status')).toBe(false)
    expect(auth.canPublish(s('hass'), 'home/pico/bridge/state')).toBe(false)
    expect(auth.canPublish(k, 'home/pico/kitchen/prompt/x')).toBe(false)
    expect(auth.canPublish(k, 'elsewhere')).toBe(false)
    // A user named like the bridge's own level is no display.
    expect(auth.canPublish(s('bridge'), 'home/pico/bridge/prompt')).toBe(false)

    expect(auth.canSubscribe(k, 'home/pico/kitchen/#')).toBe(true)
    expect(auth.canSubscribe(k, 'home/pico/kitchen/frame')).toBe(true)
    expect(auth.canSubscribe(k, 'home/pico/bridge/#')).toBe(true)
    expect(auth.canSubscribe(k, 'home/pico/+/frame')).toBe(false)
    expect(auth.canSubscribe(k, 'home/pico/#')).toBe(false)
    expect(auth.canSubscribe(k, '#')).toBe(false)
    expect(auth.canSubscribe(k, '$SYS/#')).toBe(false)
    expect(auth.canSubscribe(s('hass'), 'home/pico/#')).toBe(true)
    expect(auth.canSubscribe(s('hass'), '#')).toBe(false)
    expect(auth.canRead(k, 'home/pico/kitchen/frame')).toBe(true)
    expect(auth.canRead(k, 'home/pico/hall/frame')).toBe(false)
    expect(auth.canRead(s('hass'), 'home/pico/hall/frame')).toBe(true)
  })

  it('lets anonymous clients in only when allowed, and then only to the bridge topics', async () => {
    const auth = createAuthorizer({
      baseTopic: 'pico',
      users,
      acl: null,
      allowAnonymous: true,
      adminUsers: [],
    })
    expect(await auth.authenticate(undefined, undefined, 'c')).toEqual({ ok: true, user: undefined })
    expect(auth.canPublish(s(undefined), 'pico/a/prompt')).toBe(false)
    expect(auth.canSubscribe(s(undefined), 'pico/bridge/#')).toBe(true)
    expect(auth.canSubscribe(s(undefined), 'pico/a/#')).toBe(false)
  })

  it('lets the ACL file decide, except for the bridge-owned topics', () => {
    const acl = parseAcl('user kitchen\ntopic readwrite #\n', 'acl')
    const auth = createAuthorizer({ baseTopic: 'pico', users, acl, allowAnonymous: false, adminUsers: [] })
    expect(auth.canPublish(s('kitchen'), 'pico/hall/prompt')).toBe(true)
    expect(auth.canPublish(s('kitchen'), 'pico/hall/frame')).toBe(false)
    expect(auth.canPublish(s('kitchen'), 'pico/bridge/state')).toBe(false)
    expect(auth.canSubscribe(s('kitchen'), 'pico/#')).toBe(true)
    expect(auth.canRead(s('kitchen'), 'pico/hall/frame')).toBe(true)
    expect(auth.canRead(s('hall'), 'pico/hall/frame')).toBe(false)
  })

  it('never lets a client write a bridge-owned topic, whatever the ACL file says', () => {
    const acl = parseAcl('topic readwrite #\npattern readwrite #\nuser u\ntopic readwrite #\n', 'acl')
    const auth = createAuthorizer({
      baseTopic: 'pico',
      users: null,
      acl,
      allowAnonymous: true,
      adminUsers: ['u'],
    })
    fc.assert(
      fc.property(
        fc.option(fc.constantFrom('u', 'v'), { nil: undefined }),
        fc.stringMatching(/^[A-Za-z0-9_-]{1,8}$/),
        fc.constantFrom('frame', 'status', 'prompt'),
        (name, id, kind) => {
          expect(auth.canPublish(s(name), `pico/${id}/${kind}`)).toBe(kind === 'prompt' && id !== 'bridge')
          expect(auth.canPublish(s(name), `pico/bridge/${kind}`)).toBe(false)
        },
      ),
      { seed: SEED, numRuns: 2000 },
    )
  })
})
