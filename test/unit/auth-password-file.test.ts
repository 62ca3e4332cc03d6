import { once } from 'node:events'
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { type Reloaded, readPasswordFile, watchPasswordFile } from '../../src/auth/files.ts'
import {
  AuthFileError,
  DEFAULT_ITERATIONS,
  formatLine,
  type PasswordFile,
  parsePasswordFile,
  userNameProblem,
  verify,
} from '../../src/auth/password-file.ts'
import { type PasswdIo, runPasswd } from '../../src/cli/passwd.ts'

// Lines written by Debian's mosquitto_passwd 2.0.11 (`-b`, and `-H sha512 -b`), with the passwords used.
const MOSQUITTO_PBKDF2 =
  'alice:$7$101$beAcTf6J0E5u1fgx$KPHCBJJGTKCAiCB88IU3Wj0v84vhD9KuwfbPE3ZNVkVyt87oME17PHZmWSPEojrExXcIuD7YGdNmr6kbufTfmA=='
const MOSQUITTO_SHA512 =
  'carol:$6$RWpQDkL3zKl7wyH6$FLfT0+iPuvhNTiFyxiW2y+2epT7CRvmriB+gKFkxvG1LcheOlYse0T3tR1GArd9Oo+mXPWkaFONUvJ7JPet4fw=='
const MOSQUITTO_SPACE_NAME =
  'dave smith:$7$101$wUPTUHX9oGzuLYSj$lSYRDCPJtg3X/Q5T9gWac500TujcKfomjHEn/1a0ocmfhr3huGkiF2qQ8RJRf0bR68zwAXLSct/N9tLsq5Ca/g=='

const SEED = 20261122

function parseError(text: string): AuthFileError {
  try {
    parsePasswordFile(text, '/etc/pico/passwd')
  } catch (err) {
    expect(err).toBeInstanceOf(AuthFileError)
    return err as AuthFileError
  }
  throw new Error('expected the file to be refused')
}

describe('password file: reading what mosquitto_passwd writes', () => {
  const file = parsePasswordFile(
    `# made by mosquitto_passwd\n${MOSQUITTO_PBKDF2}\n\n${MOSQUITTO_SHA512}\r\n${MOSQUITTO_SPACE_NAME}`,
    'pw',
  )

  it('reads $7$ and $6$ lines, comments, blank lines and CRLF', () => {
    expect([...file.users.keys()]).toEqual(['alice', 'carol', 'dave smith'])
    expect(file.users.get('alice')).toMatchObject({ kind: 'pbkdf2-sha512', iterations: 101 })
    expect(file.users.get('carol')).toMatchObject({ kind: 'sha512' })
  })

  it('accepts the right passwords and nothing else', async () => {
    expect(await verify(file, 'alice', Buffer.from('secret'))).toBe(true)
    expect(await verify(file, 'carol', 'pässword 6')).toBe(true)
    expect(await verify(file, 'dave smith', 'x:y$z')).toBe(true)
    expect(await verify(file, 'alice', 'Secret')).toBe(false)
    expect(await verify(file, 'alice', '')).toBe(false)
    expect(await verify(file, 'carol', 'secret')).toBe(false)
    // Mosquitto compares C strings; the whole CONNECT password counts here, so trailing bytes fail.
    expect(await verify(file, 'alice', Buffer.from('secret\0junk'))).toBe(false)
  })

  it('refuses an unknown user after hashing against the decoy', async () => {
    expect(file.decoy).toMatchObject({ kind: 'pbkdf2-sha512', iterations: 101 })
    expect(await verify(file, 'mallory', 'secret')).toBe(false)
    expect(await verify(parsePasswordFile('', 'empty'), 'alice', 'secret')).toBe(false)
    expect(parsePasswordFile('', 'empty').decoy).toMatchObject({ iterations: DEFAULT_ITERATIONS })
  })

  it('reads the 64-byte salts Mosquitto 2.1 writes', async () => {
    const { pbkdf2Sync } = await import('node:crypto')
    const salt = Buffer.alloc(64, 7)
    const hash = pbkdf2Sync('pw', salt, 3, 64, 'sha512')
    const pw = parsePasswordFile(`u:$7$3$${salt.toString('base64')}$${hash.toString('base64')}\n`, 'f')
    expect(await verify(pw, 'u', 'pw')).toBe(true)
  })
})

describe('password file: errors name the file and line, never the hash', () => {
  const hash = MOSQUITTO_PBKDF2.slice('alice:'.length)
  const cases: [string, number, RegExp][] = [
    ['alice secret', 1, /expected user:hash/],
    [`# c\n\n:${hash}`, 3, /user name is empty/],
    ['alice:', 1, /no password hash/],
    ['alice:plaintext', 1, /not hashed/],
    [`alice:${hash}\nalice:${hash}`, 2, /listed twice/],
    [`alice:${hash}:x`, 1, /more than one ":"/],
    ['alice:$5$abc$def', 1, /unknown hash type \$5\$/],
    ['alice:$7$0$AAAAAAAAAAAAAAAA$x', 1, /iteration count/],
    ['alice:$7$10x$AAAAAAAAAAAAAAAA$x', 1, /iteration count/],
    ['alice:$7$101$AAAA$AAAA', 1, /salt/],
    ['alice:$7$101$AAAAAAAAAAAAAAAA$AAAA', 1, /hash is not 64 bytes/],
    ['alice:$7$101$AAAAAAAAAAAAAAAA', 1, /four fields/],
    ['alice:$6$AAAAAAAAAAAAAAAA$not*base64', 1, /hash is not 64 bytes/],
  ]
  for (const [text, line, reason] of cases) {
    it(`line ${line}: ${reason.source}`, () => {
      const err = parseError(text)
      expect(err.file).toBe('/etc/pico/passwd')
      expect(err.line).toBe(line)
      expect(err.message).toMatch(new RegExp(`^/etc/pico/passwd:${line}: `))
      expect(err.message).toMatch(reason)
      expect(err.message).not.toContain(hash.slice(10, 30))
      expect(err.message).not.toContain('plaintext')
    })
  }

  it('says a missing file cannot be read', async () => {
    await expect(readPasswordFile('/nonexistent/passwd')).rejects.toThrow(
      /^\/nonexistent\/passwd: cannot be read \(ENOENT\)$/,
    )
  })
})

describe('password file: formatLine', () => {
  it('writes a $7$ line with a 12-byte salt that reads back and verifies', async () => {
    const line = await formatLine('kitchen', 'hunter2', { iterations: 5, salt: Buffer.alloc(12, 1) })
    expect(line).toMatch(/^kitchen:\$7\$5\$AQEBAQEBAQEBAQEB\$[A-Za-z0-9+/]{86}==$/)
    const pw = parsePasswordFile(line, 'f')
    expect(await verify(pw, 'kitchen', 'hunter2')).toBe(true)
    expect(await verify(pw, 'kitchen', 'hunter3')).toBe(false)
  })

  it('uses the default iteration count', async () => {
    expect(await formatLine('a', 'b')).toMatch(new RegExp(`^a:\\$7\\$${DEFAULT_ITERATIONS}\\$`))
  })

  it('refuses names and passwords the file cannot hold, without quoting the password', async () => {
    for (const [user, password, reason] of [
      ['a:b', 'pw', /":"/],
      ['', 'pw', /empty/],
      [' a', 'pw', /blank/],
      ['#a', 'pw', /comment/],
      ['a\nb', 'pw', /control/],
      ['a', '', /password is empty/],
      ['a', 'se\0cret', /NUL/],
    ] as const) {
      const err = await formatLine(user, password, { iterations: 1 }).catch((e: Error) => e)
      expect(err).toBeInstanceOf(Error)
      expect((err as Error).message).toMatch(reason)
      expect((err as Error).message).not.toContain('se\0cret')
    }
  })
})

describe('password file: properties', () => {
  it('never throws anything but AuthFileError, whatever the text', () => {
    const piece = fc.oneof(
      fc.string(),
      fc.constantFrom(':', '$', '$6$', '$7$', '$7$101$', '\n', '\r\n', '#', '==', 'AAAAAAAAAAAAAAAA'),
      fc.base64String(),
    )
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
        try {
          parsePasswordFile(pieces.join(''), 'f')
        } catch (err) {
          if (!(err instanceof AuthFileError)) throw err
          expect(err.line).toBeGreaterThan(0)
        }
      }),
      { seed: SEED, numRuns: 3000 },
    )
  })

  it('parse(formatLine(user, password)) verifies that password and refuses others', async () => {
    const name = fc
      .string({ minLength: 1, maxLength: 20, unit: 'grapheme' })
      .filter((s) => userNameProblem(s) === null)
    const password = fc
      .string({ minLength: 1, maxLength: 30, unit: 'grapheme' })
      .filter((s) => !s.includes('\0'))
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.tuple(name, password), { minLength: 1, maxLength: 4, selector: (t) => t[0] }),
        async (entries) => {
          const lines = await Promise.all(entries.map(([u, p]) => formatLine(u, p, { iterations: 1 })))
          const pw = parsePasswordFile(`${lines.join('\n')}\n`, 'f')
          expect([...pw.users.keys()]).toEqual(entries.map(([u]) => u))
          for (const [u, p] of entries) {
            expect(await verify(pw, u, p)).toBe(true)
            expect(await verify(pw, u, `${p}x`)).toBe(false)
          }
        },
      ),
      { seed: SEED, numRuns: 2000 },
    )
  })
})

describe('watchPasswordFile', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pw-watch-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  /** A queue of the watcher's reports, awaited one at a time. */
  function reports() {
    const queue: Reloaded<PasswordFile>[] = []
    const waiters: ((r: Reloaded<PasswordFile>) => void)[] = []
    return {
      onChange(r: Reloaded<PasswordFile>) {
        const w = waiters.shift()
        if (w) w(r)
        else queue.push(r)
      },
      next(): Promise<Reloaded<PasswordFile>> {
        const r = queue.shift()
        return r ? Promise.resolve(r) : new Promise((resolve) => waiters.push(resolve))
      },
    }
  }

  it('reports a file replaced by rename, a broken file, and a forced reload', async () => {
    const path = join(dir, 'passwd')
    await writeFile(path, `${await formatLine('a', 'one', { iterations: 1 })}\n`)
    const seen = reports()
    const watch = watchPasswordFile(path, seen.onChange, { debounceMs: 10 })
    try {
      const tmp = join(dir, 'passwd.new')
      await writeFile(tmp, `${await formatLine('b', 'two', { iterations: 1 })}\n`)
      await rename(tmp, path)
      const first = await seen.next()
      expect(first.ok && [...first.value.users.keys()]).toEqual(['b'])

      await writeFile(path, 'b:plain\n')
      const second = await seen.next()
      expect(second.ok).toBe(false)
      expect(!second.ok && second.error).toBeInstanceOf(AuthFileError)
      expect(!second.ok && (second.error as AuthFileError).line).toBe(1)

      await writeFile(path, `${await formatLine('c', 'three', { iterations: 1 })}\n`)
      const third = await seen.next()
      expect(third.ok && [...third.value.users.keys()]).toEqual(['c'])

      watch.reload()
      const forced = await seen.next()
      expect(forced.ok && [...forced.value.users.keys()]).toEqual(['c'])
    } finally {
      watch.close()
      watch.close()
    }
  })
})

describe('passwd command', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'passwd-cli-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  function io(stdin: PasswdIo['stdin']) {
    let out = ''
    let err = ''
    return {
      io: {
        stdin,
        stdout: { write: (t: string) => (out += t) },
        stderr: { write: (t: string) => (err += t) },
      },
      out: () => out,
      err: () => err,
    }
  }

  it('makes a new file with mode 0600 from one line of stdin', async () => {
    const file = join(dir, 'passwd')
    const run = io(Readable.from(['kitchen-pw\r\nignored\n']))
    expect(await runPasswd([file, 'kitchen', '--stdin'], run.io)).toBe(0)
    expect(run.out()).toBe(`added user kitchen to ${file}\n`)
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    const pw = await readPasswordFile(file)
    expect(await verify(pw, 'kitchen', 'kitchen-pw')).toBe(true)
  })

  it('replaces one user and keeps every other line and the mode', async () => {
    const file = join(dir, 'passwd')
    await writeFile(file, `# displays\n${MOSQUITTO_PBKDF2}\n${MOSQUITTO_SHA512}\n`, { mode: 0o640 })
    const run = io(Readable.from(['new secret\n']))
    expect(await runPasswd([file, 'alice', '--stdin'], run.io)).toBe(0)
    expect(run.out()).toMatch(/^replaced the password of user alice/)
    const text = await readFile(file, 'utf8')
    const lines = text.split('\n')
    expect(lines[0]).toBe('# displays')
    expect(lines[1]).toMatch(/^alice:\$7\$/)
    expect(lines[2]).toBe(MOSQUITTO_SHA512)
    expect((await stat(file)).mode & 0o777).toBe(0o640)
    const pw = parsePasswordFile(text, file)
    expect(await verify(pw, 'alice', 'new secret')).toBe(true)
    expect(await verify(pw, 'carol', 'pässword 6')).toBe(true)
  })

  it('asks twice on a terminal without echo, with backspace', async () => {
    const file = join(dir, 'passwd')
    const tty = Object.assign(new PassThrough(), { isTTY: true, raw: [] as boolean[] })
    const stdin = Object.assign(tty, { setRawMode: (raw: boolean) => tty.raw.push(raw) })
    const run = io(stdin)
    const done = runPasswd([file, 'hall'], run.io)
    await once(stdin, 'resume')
    stdin.write('pw\u007fx1\r')
    await once(stdin, 'resume')
    stdin.write('px1\n')
    expect(await done).toBe(0)
    expect(run.err()).toBe('Password: \nReenter password: \n')
    expect(tty.raw).toEqual([true, false, true, false])
    expect(await verify(await readPasswordFile(file), 'hall', 'px1')).toBe(true)
  })

  it('refuses passwords that do not match, and a broken file, changing nothing', async () => {
    const file = join(dir, 'passwd')
    const stdin = Object.assign(new PassThrough(), { isTTY: true, setRawMode: () => {} })
    const run = io(stdin)
    const done = runPasswd([file, 'hall'], run.io)
    await once(stdin, 'resume')
    stdin.write('one\r')
    await once(stdin, 'resume')
    stdin.write('two\r')
    expect(await done).toBe(1)
    expect(run.err()).toMatch(/the passwords do not match\n$/)
    await expect(stat(file)).rejects.toThrow(/ENOENT/)

    await writeFile(file, `${MOSQUITTO_PBKDF2}\nbroken line\n`)
    const broken = io(Readable.from(['pw\n']))
    expect(await runPasswd([file, 'bob', '--stdin'], broken.io)).toBe(1)
    expect(broken.err()).toBe(`pico-a1111-bridge passwd: ${file}:2: expected user:hash\n`)
    expect(await readFile(file, 'utf8')).toBe(`${MOSQUITTO_PBKDF2}\nbroken line\n`)
  })

  it('answers bad usage with 64, and a pipe without --stdin with a hint', async () => {
    const run = io(Readable.from([]))
    expect(await runPasswd(['only-file'], run.io)).toBe(64)
    expect(run.err()).toMatch(/expected FILE and USER/)
    const bad = io(Readable.from([]))
    expect(await runPasswd([join(dir, 'p'), 'a:b', '--stdin'], bad.io)).toBe(1)
    expect(bad.err()).toMatch(/must not contain ":"/)
    const pipe = io(Readable.from(['pw\n']))
    expect(await runPasswd([join(dir, 'p'), 'a'], pipe.io)).toBe(1)
    expect(pipe.err()).toMatch(/--stdin/)
    const empty = io(Readable.from(['\n']))
    expect(await runPasswd([join(dir, 'p'), 'a', '--stdin'], empty.io)).toBe(1)
    expect(empty.err()).toMatch(/password is empty/)
  })
})
