import { describe, expect, it } from 'vitest'
import {
  type AskTask,
  createOwnJobTracker,
  createTaskTracker,
  type ProgressSnapshot,
  parseSnapshot,
} from '../../src/generator/a1111-own-job.ts'
import { parseTaskAnswer, type TaskAnswer } from '../../src/generator/a1111-progress.ts'

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

describe('following our A1111 job by its task id', () => {
  const signal = new AbortController().signal
  const task = (over: Partial<TaskAnswer>): TaskAnswer => ({
    active: false,
    queued: false,
    completed: false,
    ...over,
  })
  /** A server that gives these answers in turn, and the reasons the tracker gave up. */
  function tracker(...answers: (TaskAnswer | 'gone' | undefined)[]) {
    const lost: string[] = []
    const ask: AskTask = async () => answers.shift()
    return { t: createTaskTracker(ask, (why) => lost.push(why)), lost }
  }

  it('reads /internal/progress answers, and nothing else', () => {
    expect(
      parseTaskAnswer('{"active":false,"queued":true,"completed":false,"textinfo":"In queue: 1/2"}'),
    ).toEqual({ active: false, queued: true, completed: false })
    for (const text of ['', 'null', '[]', '{"active":1,"queued":false,"completed":false}', '{"active":true}'])
      expect(parseTaskAnswer(text)).toBeUndefined()
  })

  it('is ours once A1111 says it runs or is done, and not while it waits', async () => {
    const { t, lost } = tracker(
      task({ queued: true }),
      undefined,
      task({ queued: true }),
      task({ active: true }),
    )
    for (let i = 0; i < 3; i++) {
      await t.check!(signal)
      expect(t.started).toBe(false)
    }
    await t.check!(signal)
    expect(t.started).toBe(true)
    const done = tracker(task({ completed: true }))
    await done.t.check!(signal)
    expect(done.t.started).toBe(true)
    expect([...lost, ...done.lost]).toEqual([])
  })

  it('takes the job as ours, and says why, when the server cannot say', async () => {
    const gone = tracker('gone')
    await gone.t.check!(signal)
    expect(gone.t.started).toBe(true)
    expect(gone.lost).toEqual(['it does not answer /internal/progress'])
    // One unknown answer can be a poll that came before the job; two are a server that ignores the id.
    const unknown = tracker(task({}), task({}))
    await unknown.t.check!(signal)
    expect(unknown.t.started).toBe(false)
    await unknown.t.check!(signal)
    expect(unknown.t.started).toBe(true)
    expect(unknown.lost).toEqual(['it does not know the task it was sent'])
  })

  it('asks once at a time', async () => {
    let asked = 0
    let answer: (a: TaskAnswer) => void = () => {}
    const t = createTaskTracker(
      () => {
        asked++
        return new Promise((resolve) => {
          answer = resolve
        })
      },
      () => {},
    )
    const both = Promise.all([t.check!(signal), t.check!(signal)])
    answer(task({ active: true }))
    await both
    expect(asked).toBe(1)
    expect(t.started).toBe(true)
    await t.check!(signal)
    expect(asked).toBe(1)
  })
})
