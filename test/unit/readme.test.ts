import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { SETTING_NAMES } from '../../src/config/schema.ts'

/*
 * Issue 13, "First hour": the README's commands must run as written. Running them all needs a daemon, a
 * broker client and minutes; this checks what goes stale without anyone noticing, cheaply: every option a
 * README command passes is one its program lists in its own --help, every npm script it runs exists, and
 * every setting it sets (NAME=value before a command, or a row of the settings table) is a real setting.
 */

const REPO = fileURLToPath(new URL('../../', import.meta.url))
const README = readFileSync(join(REPO, 'README.md'), 'utf8')
const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as {
  bin: Record<string, string>
  scripts: Record<string, string>
}

/** The help text a program prints, whatever its exit code (mosquitto_sub --help exits 1). */
function helpOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: REPO, encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } })
  if (r.error) {
    throw new Error(
      `${cmd} could not run (${r.error.message}); for mosquitto_sub and mosquitto_pub: apt-get install -y mosquitto-clients`,
    )
  }
  return `${r.stdout}${r.stderr}`
}

const BIN = join(REPO, pkg.bin['pico-a1111-bridge']!)
const helps = {
  bridge: helpOf(process.execPath, [BIN, '--help']),
  device: helpOf(process.execPath, [BIN, 'device', '--help']),
  fake: helpOf(process.execPath, [join(REPO, 'scripts/fake-a1111.ts'), '--help']),
  mosquittoSub: helpOf('mosquitto_sub', ['--help']),
  mosquittoPub: helpOf('mosquitto_pub', ['--help']),
}

/** Shell words, quotes kept, so a quoted `-m '...'` value is not taken for options. */
const words = (command: string) => command.match(/'[^']*'|"(?:\\.|[^"\\])*"|[^\s'"]+/g) ?? []

/** The commands of the README: each line of its ```sh blocks and each inline `code` that starts a command. */
function readmeCommands(): string[] {
  const commands: string[] = []
  for (const block of README.matchAll(/```sh\n([\s\S]*?)```/g)) {
    const text = block[1]!.replace(/\\\n\s*/g, ' ')
    for (const line of text.split('\n')) {
      const command = line.replace(/\s+#\s.*$/, '').trim()
      if (command !== '' && !command.startsWith('#')) commands.push(command)
    }
  }
  for (const inline of README.matchAll(/`([^`\n]+)`/g)) {
    const code = inline[1]!.trim()
    if (
      /^(npx (--prefix \S+ )?pico-a1111-bridge|pico-a1111-bridge|npm (start|run)|mosquitto_(sub|pub)) /.test(
        code,
      )
    )
      commands.push(code)
  }
  // One command per pipeline stage and per `&&`.
  return commands.flatMap((c) => c.split(/\s(?:\||&&)\s/)).map((c) => c.trim())
}

/** The help that lists a command's options, or undefined for programs this test does not know. */
function helpFor(argv: string[]): { help: string; options: string[] } | undefined {
  const options = (from: number) => argv.slice(from).filter((w) => /^--?[A-Za-z]/.test(w))
  if (argv[0] === 'npx') {
    const start = argv[1] === '--prefix' ? 3 : 1
    if (argv[start] !== 'pico-a1111-bridge') return undefined
    return argv[start + 1] === 'device'
      ? { help: helps.device, options: options(start + 2) }
      : { help: helps.bridge, options: options(start + 1) }
  }
  if (argv[0] === 'pico-a1111-bridge') {
    return argv[1] === 'device'
      ? { help: helps.device, options: options(2) }
      : { help: helps.bridge, options: options(1) }
  }
  if (argv[0] === 'npm' && argv[1] === 'start') {
    return { help: helps.bridge, options: options(argv.indexOf('--') + 1 || argv.length) }
  }
  if (argv[0] === 'npm' && argv[1] === 'run' && argv[2] === 'fake-a1111') {
    return { help: helps.fake, options: options(argv.indexOf('--') + 1 || argv.length) }
  }
  if (argv[0] === 'mosquitto_sub') return { help: helps.mosquittoSub, options: options(1) }
  if (argv[0] === 'mosquitto_pub') return { help: helps.mosquittoPub, options: options(1) }
  return undefined
}

/** True when `help` lists `option` as a word of its own: `--out`, `-W`, `[-v]`, `--out FILE`, `-W,`. */
function lists(help: string, option: string): boolean {
  const escaped = option.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  return new RegExp(`(^|[\\s\\[|,])${escaped}(?=[\\s\\]|,=]|$)`, 'm').test(help)
}

const commands = readmeCommands()

describe('the README’s commands', () => {
  it('are found: the quick start, the fake A1111, the simulated device and mosquitto', () => {
    const programs = new Set(commands.map((c) => words(c).find((w) => !/^[A-Z0-9_]+=/.test(w))))
    for (const program of ['npm', 'npx', 'mosquitto_sub', 'mosquitto_pub'])
      expect(programs).toContain(program)
    expect(commands.filter((c) => c.includes('pico-a1111-bridge device')).length).toBeGreaterThanOrEqual(4)
  })

  it.each(commands)('`%s` uses only options its program lists', (command) => {
    const argv = words(command).filter(
      (_w, i, all) => !all.slice(0, i + 1).every((x) => /^[A-Z0-9_]+=/.test(x)),
    )
    const found = helpFor(argv)
    if (found === undefined) return
    const unknown = found.options.map((o) => o.replace(/=.*$/, '')).filter((o) => !lists(found.help, o))
    expect(unknown, found.help).toEqual([])
  })

  it.each(commands)('`%s` sets only real settings and runs only existing npm scripts', (command) => {
    const argv = words(command)
    const settings = argv.filter((_w, i) => argv.slice(0, i + 1).every((x) => /^[A-Z0-9_]+=/.test(x)))
    for (const setting of settings) expect(SETTING_NAMES).toContain(setting.slice(0, setting.indexOf('=')))
    const rest = argv.slice(settings.length)
    if (rest[0] === 'npm' && rest[1] === 'run') expect(Object.keys(pkg.scripts)).toContain(rest[2])
    if (rest[0] === 'npm' && ['start', 'test'].includes(rest[1]!))
      expect(pkg.scripts).toHaveProperty(rest[1]!)
  })

  it('names only real settings in its settings table', () => {
    const table = README.slice(README.indexOf('| setting | meaning | default |'))
    const rows = table.slice(0, table.indexOf('\n\n')).split('\n').slice(2)
    expect(rows.length).toBeGreaterThan(10)
    for (const row of rows) {
      const names = [...row.split('|')[1]!.matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1]!)
      expect(names.length, row).toBeGreaterThan(0)
      for (const name of names) expect(SETTING_NAMES, row).toContain(name)
    }
  })
})
