import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { createDeviceRegistry } from '../../src/jobs/device-registry.ts'
import { createFrameStore } from '../../src/store/frame-store.ts'

/*
 * The device list under invented ids (issue 10, "Found by attacking it": ids taken from SUBSCRIBE filters
 * stayed in the registry, and 3,800 of them aborted the heap): it keeps 10,000 ids at most, the ones heard
 * from longest ago go first, and a subscription alone (touch) remembers nothing new.
 */

const dirs: string[] = []
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true })
})

async function registry(connected = new Set<string>()) {
  const dir = await mkdtemp(join(tmpdir(), 'pab-registry-'))
  dirs.push(dir)
  const now = () => new Date('2026-01-01T00:00:00Z')
  const store = createFrameStore(dir, { log: pino({ level: 'silent' }), now }, { keepDays: 1, maxBytes: 1e6 })
  return createDeviceRegistry({
    store,
    connectedIds: () => connected,
    clock: { now, monotonic: () => 0 },
  })
}

describe('the device list under invented ids', () => {
  it('keeps 10,000 ids, forgetting the one heard from longest ago', async () => {
    const devices = await registry()
    devices.seen('kitchen')
    for (let i = 0; i < 9_999; i++) devices.seen(`invented-${i}`)
    // kitchen is heard from again, so the oldest is now invented-0.
    expect(devices.touch('kitchen')).toBe(true)
    devices.seen('one-more')
    const ids = devices.list().map((d) => d.id)
    expect(ids).toHaveLength(10_000)
    expect([ids.includes('invented-0'), ids.includes('kitchen'), ids.includes('one-more')]).toEqual([
      false,
      true,
      true,
    ])
  })

  it('remembers nothing for a subscription under an id it does not know', async () => {
    const devices = await registry()
    for (let i = 0; i < 100; i++) expect(devices.touch(`ghost-${i}`)).toBe(false)
    expect(devices.list()).toEqual([])
  })
})

describe('one device looked up alone', () => {
  it('is what the list shows for it, and nothing for an id the list does not have', async () => {
    const devices = await registry(new Set(['listening']))
    devices.seen('kitchen')
    for (let i = 0; i < 100; i++) devices.seen(`other-${i}`)
    const list = devices.list()
    for (const id of ['kitchen', 'listening', 'other-42'])
      expect(devices.get(id)).toEqual(list.find((d) => d.id === id))
    expect(devices.get('listening')?.connected).toBe(true)
    expect(devices.get('never-seen')).toBeUndefined()
  })
})
