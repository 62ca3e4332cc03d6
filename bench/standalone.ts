import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Bench } from './lib.ts'

/*
 * The benches that are scripts of their own (each runnable as `node bench/<name>.ts`) join `npm run bench`
 * through this: the script runs in a child process, as it would from the shell, and its Markdown output is the
 * report's section. A child keeps each script's process flags, worker pools and heap apart from the others.
 */

interface Script {
  file: string
  title: string
  method: string
  /** Arguments for a full run and for `--quick`. */
  args: { full: string[]; quick: string[] }
}

export function scriptBench(script: Script): Bench {
  return async ({ quick }) => {
    const path = fileURLToPath(new URL(script.file, import.meta.url))
    const args = quick ? script.args.quick : script.args.full
    const output = await new Promise<string>((resolve, reject) => {
      execFile(
        process.execPath,
        [path, ...args],
        { maxBuffer: 16 * 1024 * 1024, env: process.env },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`${script.file} failed: ${stderr.trim() || err.message}`, { cause: err }))
          else resolve(stdout)
        },
      )
    })
    return { title: script.title, method: script.method, body: dropMachineTable(output).trim() }
  }
}

/** The report names the machine once at its top; a script's own machine table would repeat it. */
function dropMachineTable(markdown: string): string {
  const lines = markdown.split('\n')
  if (!lines[0]?.startsWith('| CPU |')) return markdown
  const end = lines.findIndex((line) => !line.startsWith('|'))
  return lines.slice(end === -1 ? lines.length : end).join('\n')
}

export const answer = scriptBench({
  file: './answer.ts',
  title: 'Reading A1111 answers: in place, in the worker pool, and the old main-thread parse',
  method:
    'node bench/answer.ts in a child process: a 660 KB and a 40 MB txt2img answer handed over as 64 KB chunks, read one at a time and four at once with a 1 ms timer running (its gaps are the event loop stalls)',
  args: { full: [], quick: ['--quick'] },
})

export const dither = scriptBench({
  file: './dither.ts',
  title: 'Packing and dithering a frame, per panel kind',
  method:
    'node bench/dither.ts in a child process: each pixel format and dither on a noisy picture of the panel size, median of the runs after warm-up, next to the 240x240 RGB565 conversion from PNG',
  args: { full: [], quick: ['--runs', '5'] },
})

export const auth = scriptBench({
  file: './auth.ts',
  title: 'Access control: logins and publishes with a password file and an ACL, next to an open broker',
  method:
    'node bench/auth.ts in a child process: daemons with no access control, an ACL, and a password file at two PBKDF2 iteration counts, measured in rotation, medians',
  args: { full: [], quick: [] },
})
