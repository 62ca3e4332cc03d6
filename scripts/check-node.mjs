/*
 * Runs before anything else in `npm start`, `npm run build`, `npm run bench` and `npm run fake-a1111`, and
 * the installed command (bin/pico-a1111-bridge.mjs) calls nodeVersionProblem before it loads any .ts file.
 * It is plain JavaScript on purpose: an older Node cannot even load the project's .ts files, and without this
 * check it dies with ERR_UNKNOWN_FILE_EXTENSION and no word about the version it needs.
 */
import { fileURLToPath } from 'node:url'

export const NEED_MAJOR = 22
export const NEED_MINOR = 19

/** The message for a Node that is too old, or null when `version` (e.g. "20.20.2") is new enough. */
export function nodeVersionProblem(version) {
  const [major = 0, minor = 0] = String(version).split('.').map(Number)
  if (major > NEED_MAJOR || (major === NEED_MAJOR && minor >= NEED_MINOR)) return null
  return (
    `pico-a1111-bridge needs Node.js ${NEED_MAJOR}.${NEED_MINOR} or newer (Node 24 recommended); this is Node ${version}.\n` +
    'Get Node 24 from the npm registry without touching the system:\n' +
    '  npm install --prefix "$HOME/.node24" node@24 && export PATH="$HOME/.node24/node_modules/.bin:$PATH"'
  )
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const problem = nodeVersionProblem(process.versions.node)
  if (problem) {
    process.stderr.write(`${problem}\n`)
    process.exit(1)
  }
}
