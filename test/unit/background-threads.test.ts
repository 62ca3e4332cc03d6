import { readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { BACKGROUND_NICE } from '../../src/image/background-threads.ts'
import { decodeToRgb } from '../../src/image/convert.ts'

/** Name and nice value of every thread of this process, by thread id (Linux /proc). */
function threads(): Map<number, { name: string; nice: number }> {
  const out = new Map<number, { name: string; nice: number }>()
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      // Field 19 of stat is the nice value; the fields after the name start at field 3.
      const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])
      out.set(Number(tid), { name, nice })
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out
}

const thisThread = () => Number(readlinkSync('/proc/thread-self').split('/').at(-1))

describe.runIf(process.platform === 'linux')('background threads yield to the event loop', () => {
  it("after a conversion, libuv's and libvips' threads have the background nice value; this thread not", async () => {
    const before = threads().get(thisThread())!.nice
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#123456' } })
      .png()
      .toBuffer()
    await decodeToRgb(png, { width: 16, height: 16, fit: 'cover' })
    const all = [...threads().values()]
    const background = all.filter((t) => /^(libuv-worker|libvips)/.test(t.name))
    expect(background.length).toBeGreaterThan(0)
    for (const t of background) expect(t, t.name).toMatchObject({ nice: BACKGROUND_NICE })
    expect(threads().get(thisThread())!.nice).toBe(before)
    expect(threads().get(process.pid)!.nice).not.toBe(BACKGROUND_NICE)
  })

  it('lowerThisThread gives a worker thread the background nice value', async () => {
    const url = new URL('../../src/image/background-threads.ts', import.meta.url).href
    const worker = new Worker(
      `import(${JSON.stringify(url)}).then(({ lowerThisThread }) => {
        lowerThisThread()
        const tid = Number(require('node:fs').readlinkSync('/proc/thread-self').split('/').at(-1))
        const { parentPort } = require('node:worker_threads')
        // Listening keeps the thread alive until terminate(): its nice value is read after this message.
        parentPort.on('message', () => {})
        parentPort.postMessage(tid)
      })`,
      { eval: true },
    )
    const tid = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
    })
    expect(threads().get(tid)?.nice).toBe(BACKGROUND_NICE)
    await worker.terminate()
    expect(threads().get(thisThread())!.nice).not.toBe(BACKGROUND_NICE)
  })
})
