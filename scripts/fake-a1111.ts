/*
 * Runs the project's fake AUTOMATIC1111 (the one the tests use) as a server of its own on 127.0.0.1, to try
 * the bridge's progress, previews, cancel and failover without a GPU:
 *
 *   npm run fake-a1111 -- --port 7861 --step-ms 100
 *   A1111_BASE_URL=http://127.0.0.1:7861,http://127.0.0.1:7862 npm start
 *
 * Options: --port N (default 7861), --step-ms N (time per sampling step, default 100), --noise (realistic
 * 500 KB pictures), --fault NAME (no-api, hang, error500, reject422, ...). Ctrl-C stops it; so does killing
 * it in the middle of a job, which is how a server dying looks to the bridge.
 */
import { parseArgs } from 'node:util'
import { FAULTS, type Fault, startFakeA1111 } from '../test/support/fake-a1111.ts'

const USAGE = `Usage: npm run fake-a1111 -- [options]

A fake AUTOMATIC1111 on 127.0.0.1 that answers like the real one, to try the bridge without a GPU.

  --port N       the port (default 7861; 0 picks a free one)
  --step-ms N    time per sampling step in ms (default 100)
  --noise        realistic 512x512 pictures of about 500 KB
  --fault NAME   answer with a failure instead: ${FAULTS.join(', ')}
  --help         this text

Then: A1111_BASE_URL=http://127.0.0.1:7861 npm start
`

function fail(message: string): never {
  process.stderr.write(`${message}\n\n${USAGE}`)
  process.exit(64)
}

let values: { port: string; 'step-ms': string; noise: boolean; fault?: string; help: boolean }
try {
  values = parseArgs({
    options: {
      port: { type: 'string', default: '7861' },
      'step-ms': { type: 'string', default: '100' },
      noise: { type: 'boolean', default: false },
      fault: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values
} catch (err) {
  fail((err as Error).message)
}
if (values.help) {
  process.stdout.write(USAGE)
  process.exit(0)
}
const port = Number(values.port)
const stepMs = Number(values['step-ms'])
if (!Number.isInteger(port) || port < 0 || port > 65535)
  fail(`--port must be a port number, got ${values.port}`)
if (!Number.isFinite(stepMs) || stepMs < 0)
  fail(`--step-ms must be a number of milliseconds, got ${values['step-ms']}`)
if (values.fault !== undefined && !(FAULTS as readonly string[]).includes(values.fault)) {
  fail(`unknown --fault ${values.fault}; one of: ${FAULTS.join(', ')}`)
}
const fake = await startFakeA1111({
  port,
  stepMs,
  noise: values.noise,
  fault: (values.fault ?? null) as Fault,
})
fake.events.on('begin', () => process.stdout.write('job started\n'))
fake.events.on('end', () => process.stdout.write('job finished\n'))
fake.events.on('interrupt', () => process.stdout.write('interrupted\n'))
process.stdout.write(`fake A1111 listening on ${fake.url}\n`)
const stop = () => void fake.close().then(() => process.exit(0))
process.once('SIGINT', stop)
process.once('SIGTERM', stop)
