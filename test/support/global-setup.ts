import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

/** Builds dist/ once before the tests, so end-to-end tests run the daemon exactly as `npm start` does. */
export default function setup(): void {
  const script = fileURLToPath(new URL('../../scripts/build.ts', import.meta.url))
  execFileSync(process.execPath, [script], { stdio: 'inherit' })
}
