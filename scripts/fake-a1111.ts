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
import { type Fault, startFakeA1111 } from '../test/support/fake-a1111.ts'

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '7861' },
    'step-ms': { type: 'string', default: '100' },
    noise: { type: 'boolean', default: false },
    fault: { type: 'string' },
  },
})
const fake = await startFakeA1111({
  port: Number(values.port),
  stepMs: Number(values['step-ms']),
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
