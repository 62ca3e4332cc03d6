import { randomBytes } from 'node:crypto'
import { chmod, open, readFile, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import {
  AuthFileError,
  formatLine,
  parsePasswordFile,
  passwordProblem,
  userNameProblem,
} from '../auth/password-file.ts'

/*
 * `pico-a1111-bridge passwd FILE USER [--stdin]`: adds a user to a Mosquitto password file or replaces its
 * password (README, "Security"), so a display's login can be made without installing mosquitto_passwd. The
 * line is one that mosquitto_passwd and Mosquitto accept; the rest of the file is kept as it was.
 */

const EXIT_OK = 0
const EXIT_FAILED = 1
const EXIT_USAGE = 64
/** mosquitto_passwd makes new files readable by their owner only; so do we. */
const NEW_FILE_MODE = 0o600

export const PASSWD_HELP = `Usage: pico-a1111-bridge passwd FILE USER [--stdin]

Adds USER to the Mosquitto password file FILE (made if missing), or replaces USER's password. The file is
the bridge's MQTT_PASSWORD_FILE; mosquitto_passwd and Mosquitto read it too. The password is asked for twice
on the terminal without echo, or read as one line from standard input with --stdin:

  printf '%s\\n' "$PASSWORD" | pico-a1111-bridge passwd /etc/pico-a1111-bridge/passwd kitchen --stdin

Options:
  --stdin   read the password from the first line of standard input
  --help    show this help

Exit codes: 0 written, 1 failed (nothing is changed), 64 bad usage.`

export interface PasswdIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown }
  stdout: { write(text: string): unknown }
  stderr: { write(text: string): unknown }
}

class Failure extends Error {}

export async function runPasswd(argv: string[], io: PasswdIo): Promise<number> {
  let parsed: ReturnType<typeof parseOptions>
  try {
    parsed = parseOptions(argv)
  } catch (err) {
    io.stderr.write(`pico-a1111-bridge passwd: ${(err as Error).message}\n\n${PASSWD_HELP}\n`)
    return EXIT_USAGE
  }
  if (parsed === 'help') {
    io.stdout.write(`${PASSWD_HELP}\n`)
    return EXIT_OK
  }
  const { file, user, stdin } = parsed
  try {
    const nameProblem = userNameProblem(user)
    if (nameProblem) throw new Failure(`cannot add user: ${nameProblem}`)
    const existing = await readExisting(file)
    const password = stdin ? await readLine(io.stdin) : await askTwice(io)
    const problem = passwordProblem(password)
    if (problem) throw new Failure(problem)
    const line = await formatLine(user, password)
    const { text, replaced } = withUser(existing?.text ?? '', user, line)
    await writeAtomically(file, text, existing?.mode ?? NEW_FILE_MODE)
    io.stdout.write(
      replaced ? `replaced the password of user ${user} in ${file}\n` : `added user ${user} to ${file}\n`,
    )
    return EXIT_OK
  } catch (err) {
    if (!(err instanceof Failure) && !(err instanceof AuthFileError)) throw err
    io.stderr.write(`pico-a1111-bridge passwd: ${err.message}\n`)
    return EXIT_FAILED
  }
}

function parseOptions(argv: string[]): { file: string; user: string; stdin: boolean } | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { stdin: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: true,
  })
  if (values.help) return 'help'
  if (positionals.length !== 2) throw new Error('expected FILE and USER')
  const [file, user] = positionals as [string, string]
  return { file, user, stdin: values.stdin }
}

/** The file as it is, checked the way the broker will read it; null when it does not exist yet. */
async function readExisting(file: string): Promise<{ text: string; mode: number } | null> {
  let text: string
  let mode: number
  try {
    text = await readFile(file, 'utf8')
    mode = (await stat(file)).mode & 0o777
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return null
    throw new Failure(`cannot read ${file} (${code ?? 'error'})`)
  }
  // A file the broker cannot read is not made worse: the error names the line to fix.
  parsePasswordFile(text, file)
  return { text, mode }
}

/** The file's text with `line` in place of the user's line, or added at the end. */
function withUser(text: string, user: string, line: string): { text: string; replaced: boolean } {
  const lines = text === '' ? [] : text.replace(/\n$/, '').split('\n')
  const at = lines.findIndex((l) => {
    const colon = l.indexOf(':')
    return !l.startsWith('#') && colon >= 0 && l.slice(0, colon).trim() === user
  })
  if (at >= 0) lines[at] = line
  else lines.push(line)
  return { text: `${lines.join('\n')}\n`, replaced: at >= 0 }
}

/** A new file beside the old one, then a rename: a reader sees the old file or the new one, never half. */
async function writeAtomically(file: string, text: string, mode: number): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  try {
    const handle = await open(tmp, 'wx', mode)
    try {
      await handle.writeFile(text, 'utf8')
      await handle.sync()
    } finally {
      await handle.close()
    }
    // The umask may have narrowed the mode open() was given; an existing file keeps exactly its own.
    await chmod(tmp, mode)
    await rename(tmp, file)
  } catch (err) {
    await rm(tmp, { force: true })
    const code = (err as NodeJS.ErrnoException).code
    throw new Failure(`cannot write ${file} (${code ?? 'error'})`)
  }
}

/** The first line of standard input, without its line ending. */
async function readLine(stdin: PasswdIo['stdin']): Promise<string> {
  let text = ''
  for await (const chunk of stdin) {
    text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8')
    if (text.includes('\n')) break
  }
  const end = text.indexOf('\n')
  return (end >= 0 ? text.slice(0, end) : text).replace(/\r$/, '')
}

async function askTwice(io: PasswdIo): Promise<string> {
  if (!io.stdin.isTTY || !io.stdin.setRawMode) {
    throw new Failure('standard input is not a terminal: give the password on standard input with --stdin')
  }
  const first = await askHidden(io, 'Password: ')
  const second = await askHidden(io, 'Reenter password: ')
  if (first !== second) throw new Failure('the passwords do not match')
  return first
}

/** Reads one line from the terminal in raw mode, so nothing typed is echoed. */
function askHidden(io: PasswdIo, prompt: string): Promise<string> {
  const { stdin } = io
  io.stderr.write(prompt)
  stdin.setRawMode?.(true)
  stdin.resume()
  return new Promise((resolve, reject) => {
    let typed = ''
    const finish = (error: Failure | null) => {
      stdin.off('data', onData)
      stdin.setRawMode?.(false)
      stdin.pause()
      io.stderr.write('\n')
      if (error) reject(error)
      else resolve(typed)
    }
    const onData = (chunk: Buffer | string) => {
      for (const ch of typeof chunk === 'string' ? chunk : chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return finish(null)
        if (ch === '\u0003' || (ch === '\u0004' && typed === '')) return finish(new Failure('cancelled'))
        if (ch === '\u007f' || ch === '\b') typed = [...typed].slice(0, -1).join('')
        else typed += ch
      }
    }
    stdin.on('data', onData)
  })
}
