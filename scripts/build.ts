/*
 * Builds dist/: the daemon's sources with their types stripped, as plain JavaScript. Node runs the .ts files
 * directly too, but it then keeps a TypeScript stripper in memory for the life of the process, about 25 MB of
 * a daemon that otherwise needs about 100 MB. This uses Node's own stripper (node:module), so it needs no
 * dev dependency and runs wherever the daemon runs, the installer included.
 *
 * Types are replaced by spaces, so line and column numbers in stack traces match the .ts sources. Relative
 * imports of `.ts` files are rewritten to `.js`.
 *
 * Usage: node scripts/build.ts [--out DIR]
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { stripTypeScriptTypes } from 'node:module'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const SOURCES = ['src', 'bin']
const outArg = process.argv.indexOf('--out')
const OUT = outArg > 0 && process.argv[outArg + 1] ? process.argv[outArg + 1]! : join(ROOT, 'dist')

/** `from './x.ts'`, `import('./x.ts')` and `export ... from '../y.ts'`: relative specifiers only. */
const RELATIVE_TS_IMPORT = /((?:\bfrom|\bimport)\s*\(?\s*)(['"])(\.{1,2}\/[^'"\n]+)\.ts\2/g

function* tsFiles(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) yield* tsFiles(path)
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) yield path
  }
}

/** Files the daemon serves as they are (the dashboard's page, script and style in src/http/dashboard/). */
function* assetFiles(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) yield* assetFiles(path)
    else if (/\.(html|js|css|svg)$/.test(name)) yield path
  }
}

export function buildFile(source: string): string {
  const stripped = stripTypeScriptTypes(source, { mode: 'strip' })
  return stripped.replace(RELATIVE_TS_IMPORT, (_all, head: string, quote: string, path: string) => {
    return `${head}${quote}${path}.js${quote}`
  })
}

function build(): number {
  rmSync(OUT, { recursive: true, force: true })
  let count = 0
  for (const top of SOURCES) {
    for (const file of tsFiles(join(ROOT, top))) {
      const target = join(OUT, relative(ROOT, file)).replace(/\.ts$/, '.js')
      mkdirSync(dirname(target), { recursive: true })
      writeFileSync(target, buildFile(readFileSync(file, 'utf8')), { mode: statSync(file).mode })
      count++
    }
  }
  for (const file of assetFiles(join(ROOT, 'src'))) {
    const target = join(OUT, relative(ROOT, file))
    mkdirSync(dirname(target), { recursive: true })
    copyFileSync(file, target)
    count++
  }
  // The daemon reads its version from the package.json one level above src/: give dist/ one of its own.
  const { name, version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<
    string,
    string
  >
  writeFileSync(
    join(OUT, 'package.json'),
    `${JSON.stringify({ name, version, type: 'module', private: true })}\n`,
  )
  return count
}

if (import.meta.main ?? process.argv[1] === fileURLToPath(import.meta.url)) {
  process.removeAllListeners('warning')
  const count = build()
  process.stdout.write(`built ${count} files into ${relative(process.cwd(), OUT) || OUT}\n`)
}
