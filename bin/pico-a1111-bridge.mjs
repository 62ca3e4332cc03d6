#!/usr/bin/env node
/*
 * The installed `pico-a1111-bridge` command (package.json "bin"). Plain JavaScript on purpose: a Node older
 * than 22.19 cannot load the project's .ts files at all and would die with ERR_UNKNOWN_FILE_EXTENSION, so
 * this checks the version first and says which Node is needed and how to get it. Only then does it load the
 * real entry point, bin/pico-a1111-bridge.ts (which `npm start` and the systemd unit run as dist/ JavaScript).
 */
import { nodeVersionProblem } from '../scripts/check-node.mjs'

const problem = nodeVersionProblem(process.versions.node)
if (problem) {
  process.stderr.write(`${problem}\n`)
  process.exit(1)
}
await import('./pico-a1111-bridge.ts')
