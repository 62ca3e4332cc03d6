import { spawnSync } from 'node:child_process'
import { readFileSync, realpathSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
// @ts-expect-error plain JavaScript on purpose (it must load on an old Node), so it has no types
import { nodeVersionProblem } from '../../scripts/check-node.mjs'

/*
 * Issue 13, "First hour": the installed `pico-a1111-bridge` command on a Node older than 22.19 must say which
 * Node it needs and how to get it, not die with ERR_UNKNOWN_FILE_EXTENSION ".ts" and a stack trace. The
 * command is whatever package.json's "bin" names, run as npm's shim runs it: `node <that file>`.
 */

const REPO = fileURLToPath(new URL('../../', import.meta.url))
const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { bin: Record<string, string> }
const BIN = join(REPO, pkg.bin['pico-a1111-bridge']!)

function versionOf(node: string): string | undefined {
  const r = spawnSync(node, ['-p', 'process.versions.node'], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : undefined
}

/** A Node older than 22.19 on this machine (Debian's is 20), if there is one. */
function findOldNode(): { path: string; version: string } | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).filter((d) => d !== '')
  const seen = new Set<string>()
  for (const candidate of [...dirs.map((d) => join(d, 'node')), '/usr/bin/node', '/usr/local/bin/node']) {
    let real: string
    try {
      real = realpathSync(candidate)
    } catch {
      continue
    }
    if (seen.has(real)) continue
    seen.add(real)
    const version = versionOf(real)
    if (version !== undefined && nodeVersionProblem(version) !== null) return { path: real, version }
  }
  return undefined
}

function run(node: string, args: string[]) {
  return spawnSync(node, args, { cwd: REPO, encoding: 'utf8', env: { PATH: process.env.PATH ?? '' } })
}

function expectVersionMessage(r: ReturnType<typeof run>, version: string) {
  expect(r.status).toBe(1)
  expect(r.stdout).toBe('')
  expect(r.stderr).toContain(`needs Node.js 22.19 or newer (Node 24 recommended); this is Node ${version}.`)
  expect(r.stderr).toContain('npm install --prefix "$HOME/.node24" node@24')
  expect(r.stderr).not.toMatch(/ERR_UNKNOWN_FILE_EXTENSION|\n\s+at |node:internal/)
}

const oldNode = findOldNode()

describe('the installed command on an old Node', () => {
  it('is plain JavaScript that an old Node can load', () => {
    expect(BIN).toMatch(/\.m?js$/)
    expect(readFileSync(BIN, 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/)
  })

  it.runIf(oldNode !== undefined)(
    `says which Node it needs instead of a stack trace (real Node ${oldNode?.version ?? 'none'})`,
    () => {
      expectVersionMessage(run(oldNode!.path, [BIN, '--version']), oldNode!.version)
    },
  )

  it('says which Node it needs when the Node it runs on reports an old version', () => {
    // Without an old Node on the machine: this Node, told it is 20.11.1 before the command loads.
    const pretend =
      'data:text/javascript,Object.defineProperty(process,"versions",{value:{...process.versions,node:"20.11.1"}})'
    expectVersionMessage(run(process.execPath, ['--import', pretend, BIN, '--help']), '20.11.1')
  })

  it('runs the daemon’s command line on a Node that is new enough', () => {
    const r = run(process.execPath, [BIN, '--version'])
    expect(r.stderr).toBe('')
    expect(r.stdout.trim()).toBe(
      (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version,
    )
    expect(r.status).toBe(0)
  })
})
