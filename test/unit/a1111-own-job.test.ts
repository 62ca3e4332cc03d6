import { describe, expect, it } from 'vitest'
import {
  createOwnJobTracker,
  type ProgressSnapshot,
  parseSnapshot,
} from '../../src/generator/a1111-own-job.ts'

const idle: ProgressSnapshot = { active: false, timestamp: '20261122101500', progress: 0 }
const running = (timestamp: string, progress: number): ProgressSnapshot => ({
  active: true,
  timestamp,
  progress,
})

describe("telling our A1111 job from someone else's", () => {
  it('has nothing ahead of ours when the server was idle', () => {
    const t = createOwnJobTracker(idle)
    expect(t.started).toBe(true)
  })

  it('waits while another job runs, and sees ours begin after it', () => {
    const t = createOwnJobTracker(running('20261122101000', 0.2))
    t.observe(running('20261122101000', 0.6))
    expect(t.started).toBe(false)
    t.observe(running('20261122101000', 0.1)) // progress starts over: a new job, in the same second
    expect(t.started).toBe(true)

    const viaTimestamp = createOwnJobTracker(running('20261122101000', 0.2))
    viaTimestamp.observe(running('20261122101009', 0.5))
    expect(viaTimestamp.started).toBe(true)

    const viaIdle = createOwnJobTracker(running('20261122101000', 0.2))
    viaIdle.observe(idle)
    expect(viaIdle.started).toBe(true)
  })

  it('takes the job as ours when the server has no progress to ask', () => {
    expect(createOwnJobTracker(undefined).started).toBe(true)
  })

  it('reads A1111 progress answers', () => {
    const text =
      '{"progress":0.51,"eta_relative":2.85,"state":{"skipped":false,"interrupted":false,"job":"scripts_txt2img",' +
      '"job_count":1,"job_timestamp":"20240727153012","job_no":0,"sampling_step":10,"sampling_steps":20},' +
      '"current_image":null,"textinfo":null}'
    expect(parseSnapshot(text)).toEqual({ active: true, timestamp: '20240727153012', progress: 0.51 })
    expect(parseSnapshot('{"progress":0.0,"state":{"job_count":0,"job_timestamp":"0"}}')).toMatchObject({
      active: false,
    })
    expect(parseSnapshot('<html>')).toBeUndefined()
    expect(parseSnapshot('{"detail":"Not Found"}')).toBeUndefined()
  })
})
