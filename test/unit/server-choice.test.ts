import { describe, expect, it } from 'vitest'
import { pickServer, type ServerSlot, shouldMoveJob } from '../../src/jobs/server-choice.ts'

const slot = (generator: string, over: Partial<ServerSlot<string>> = {}): ServerSlot<string> => ({
  generator,
  busy: false,
  down: false,
  freeSince: 0,
  ...over,
})

describe('pickServer', () => {
  it('takes the server idle longest', () => {
    const picked = pickServer(
      [slot('a', { freeSince: 5 }), slot('b', { freeSince: 2 }), slot('c', { freeSince: 9 })],
      new Set(),
    )
    expect(picked?.generator).toBe('b')
  })

  it('prefers an up server over a down one, and one that has not failed the job', () => {
    expect(pickServer([slot('a', { down: true }), slot('b', { freeSince: 100 })], new Set())?.generator).toBe(
      'b',
    )
    expect(pickServer([slot('a'), slot('b', { freeSince: 100 })], new Set(['a']))?.generator).toBe('b')
  })

  it('waits for a busy better server instead of taking a worse idle one', () => {
    expect(pickServer([slot('a', { busy: true }), slot('b', { down: true })], new Set())).toBeUndefined()
    expect(pickServer([slot('a', { busy: true }), slot('b')], new Set(['b']))).toBeUndefined()
  })

  it('gives a down server the job when no other could ever take it', () => {
    expect(pickServer([slot('a', { down: true })], new Set())?.generator).toBe('a')
    expect(
      pickServer([slot('a', { down: true }), slot('b', { down: true, busy: true })], new Set())?.generator,
    ).toBe('a')
  })

  it('answers nothing when every server is busy', () => {
    expect(pickServer([slot('a', { busy: true })], new Set())).toBeUndefined()
    expect(pickServer([], new Set())).toBeUndefined()
  })
})

describe('shouldMoveJob', () => {
  const base = { attempts: 1, retries: 2, failedOn: new Set(['a']), generators: ['a', 'b'] }

  it('moves a job whose server was unreachable or hung, to a server that has not failed it', () => {
    expect(shouldMoveJob({ ...base, code: 'E_A1111_UNREACHABLE' })).toBe(true)
    expect(shouldMoveJob({ ...base, code: 'E_GEN_TIMEOUT' })).toBe(true)
  })

  it('keeps failures of the prompt or the picture where they are', () => {
    for (const code of ['E_A1111_REJECTED', 'E_A1111_FAILED', 'E_BAD_IMAGE', 'E_INTERNAL'] as const)
      expect(shouldMoveJob({ ...base, code }), code).toBe(false)
  })

  it('stops when the retry budget is spent or no other server is left', () => {
    expect(shouldMoveJob({ ...base, code: 'E_GEN_TIMEOUT', attempts: 3 })).toBe(false)
    expect(shouldMoveJob({ ...base, code: 'E_GEN_TIMEOUT', failedOn: new Set(['a', 'b']) })).toBe(false)
    expect(shouldMoveJob({ ...base, code: 'E_GEN_TIMEOUT', generators: ['a'] })).toBe(false)
  })
})
