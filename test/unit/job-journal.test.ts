import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { AppError } from '../../src/errors.ts'
import { parsePromptJson, parsePromptPayload } from '../../src/protocol/prompt.ts'
import { createJobJournal, type JournalJob } from '../../src/store/job-journal.ts'
import { executedBlocks } from '../support/executed-blocks.ts'

const JOURNAL = new URL('../../src/store/job-journal.ts', import.meta.url)
const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'pab-journal-'))
  dirs.push(dir)
  return dir
}

function capture() {
  const lines: Record<string, unknown>[] = []
  const raw: string[] = []
  const log = pino(
    { level: 'debug' },
    {
      write(s: string) {
        raw.push(s)
        lines.push(JSON.parse(s))
      },
    },
  )
  return { log, lines, raw }
}

const at = new Date('2026-01-02T03:04:05.000Z')
const job = (
  id: string,
  deviceId: string,
  text: string,
  extra: Record<string, unknown> = {},
): JournalJob => ({
  id,
  deviceId,
  prompt: { ...parsePromptJson({ prompt: text, ...extra }) },
  createdAt: at.toISOString(),
})
const lineOf = (j: unknown) => `${JSON.stringify({ op: 'add', job: j })}\n`

describe('the job journal', () => {
  it('gives back the prompts it was given, every field included', async () => {
    const dir = tempDir()
    const prompts = [
      parsePromptPayload(Buffer.from('  a plain text prompt  ')),
      parsePromptJson({
        prompt: 'every field',
        negative_prompt: 'blurry',
        seed: 4294967295,
        steps: 150,
        cfg_scale: 7.5,
        sampler_name: 'Euler a',
        width: 2048,
        height: 64,
        fit: 'contain',
        request_id: 'r-1',
        preview: true,
      }),
      parsePromptJson({ prompt: 'numbered', request_id: 42, preview: false, seed: -1 }),
    ]
    const first = createJobJournal(dir, capture())
    expect(await first.open()).toEqual([])
    await Promise.all(
      prompts.map((p, i) =>
        first.add({ id: `job${i}`, deviceId: `d-${i}`, prompt: { ...p }, createdAt: at.toISOString() }),
      ),
    )
    // A crash: the file is read as it is, without close().
    const second = createJobJournal(dir, capture())
    const jobs = await second.open()
    expect(jobs.map((j) => j.prompt)).toEqual(prompts)
    expect(jobs.map((j) => [j.id, j.deviceId, j.createdAt])).toEqual(
      prompts.map((_, i) => [`job${i}`, `d-${i}`, at.toISOString()]),
    )
    // One at a time, as the DATA_DIR lock has it.
    await second.close()
    await first.close()
  })

  it('skips and reports lines that fail the checks, never quoting the prompt', async () => {
    const dir = tempDir()
    const good = job('aaaa', 'kitchen', 'kept prompt')
    const secret = 'SECRET-PROMPT-TEXT'
    const p = (extra: Record<string, unknown>) => ({ ...good.prompt, prompt: secret, ...extra })
    writeFileSync(
      join(dir, 'jobs.journal'),
      [
        lineOf(good),
        lineOf({ ...good, id: 'b1', deviceId: '../../../x', prompt: p({}) }),
        lineOf({ ...good, id: 'b2', deviceId: 'bridge', prompt: p({}) }),
        lineOf({ ...good, id: 'b3', prompt: p({ steps: 9999 }) }),
        lineOf({ ...good, id: 'b4', prompt: p({ shell: 'rm -rf /' }) }),
        lineOf({ ...good, id: 'b5', prompt: p({ prompt: '   ' }) }),
        lineOf({ ...good, id: '../b6', prompt: p({}) }),
        `{"op":"add","job":${JSON.stringify({ ...good, id: 'b7' }).slice(0, -1)}, ${secret}\n`,
        lineOf({ ...good, id: 'b8', prompt: p({ width: 115200 }) }),
      ].join(''),
    )
    const { log, lines, raw } = capture()
    const journal = createJobJournal(dir, { log })
    const jobs = await journal.open()
    expect(jobs).toEqual([good])
    const skipped = lines.filter((l) => l.msg === 'journal line skipped')
    expect(skipped.map((l) => l.line)).toEqual([2, 3, 4, 5, 6, 7, 8, 9])
    expect(skipped.every((l) => l.file === join(dir, 'jobs.journal') && typeof l.reason === 'string')).toBe(
      true,
    )
    expect(skipped.map((l) => l.reason)).toEqual([
      expect.stringContaining('device id'),
      expect.stringContaining('device id'),
      expect.stringContaining('steps: must be at most 150'),
      expect.stringContaining('unknown field "shell"'),
      expect.stringContaining('prompt: must not be empty'),
      'job id is not valid',
      'not JSON',
      expect.stringContaining('width'),
    ])
    expect(raw.join('').includes(secret)).toBe(false)
    await journal.close()
    // Compacted at start and at stop: what failed is gone from the journal itself.
    expect(readFileSync(join(dir, 'jobs.journal'), 'utf8')).toBe(lineOf(good))
  })

  it('keeps only the open jobs after a clean stop, so finished prompts leave DATA_DIR', async () => {
    const dir = tempDir()
    const journal = createJobJournal(dir, capture())
    await journal.open()
    await journal.add(job('j1', 'a', 'first finished prompt'))
    await journal.add(job('j2', 'b', 'still waiting'))
    await journal.add(job('j3', 'c', 'second finished prompt'))
    journal.end('j1')
    journal.end('j3')
    await journal.close()
    await journal.close()
    const text = readFileSync(join(dir, 'jobs.journal'), 'utf8')
    expect(text).toBe(lineOf(job('j2', 'b', 'still waiting')))
    await expect(journal.add(job('j4', 'd', 'late'))).rejects.toMatchObject({ code: 'E_SHUTTING_DOWN' })
  })

  it('writes a new add before an end made in the same turn (a superseding prompt)', async () => {
    const dir = tempDir()
    const journal = createJobJournal(dir, capture())
    await journal.open()
    await journal.add(job('old', 'kitchen', 'old prompt'))
    // What intake does: queueing the new job supersedes the old one (its end), then records the new one.
    journal.end('old')
    await journal.add(job('new', 'kitchen', 'new prompt'))
    // Writes land in order: once a later add is on disk, so is everything before it.
    await journal.add(job('later', 'hall', 'later prompt'))
    const ops = readFileSync(join(dir, 'jobs.journal'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { op: string; id?: string; job?: { id: string } })
      .map((l) => `${l.op} ${l.id ?? l.job?.id}`)
    expect(ops).toEqual(['add old', 'add new', 'end old', 'add later'])
    await journal.close()
  })
})

function tryRoot(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

/** A small tmpfs of our own: real ENOSPC and EROFS, where this test may mount (root with CAP_SYS_ADMIN). */
function mountTmpfs(options: string): string | null {
  const dir = tempDir()
  return tryRoot('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]) ? dir : null
}

const canMount = (() => {
  const dir = mountTmpfs('size=64k')
  return dir !== null && tryRoot('umount', [dir])
})()

describe('the job journal on a disk that refuses writes', () => {
  it('refuses a job on a full disk with E_STORAGE, says so in problem() and recovers', {
    skip: !canMount,
  }, async () => {
    const dir = mountTmpfs('size=256k')!
    try {
      const journal = createJobJournal(dir, { ...capture(), now: () => at })
      await journal.open()
      await journal.add(job('j1', 'a', 'before the disk filled'))
      const filler = join(dir, 'filler')
      expect(() => writeFileSync(filler, Buffer.alloc(1024 * 1024))).toThrow(/ENOSPC/)
      // Longer than a page, so the append needs space the disk no longer has.
      const long = job('j2', 'b', `PROMPT-ON-A-FULL-DISK ${'x'.repeat(3900)}`, {
        negative_prompt: 'y'.repeat(4000),
      })
      const err = await journal.add(long).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(AppError)
      expect(err).toMatchObject({ code: 'E_STORAGE' })
      const message = (err as AppError).message
      expect(message).toContain('DATA_DIR cannot be written (the disk is full)')
      expect(message).toContain(join(dir, 'jobs.journal'))
      expect(message).not.toContain('PROMPT-ON-A-FULL-DISK')
      expect(journal.problem()).toEqual({
        code: 'E_STORAGE',
        reason: 'the disk is full',
        since: at.toISOString(),
      })

      rmSync(filler)
      await journal.add(job('j3', 'c', 'after space was freed'))
      expect(journal.problem()).toBeNull()
      const after = createJobJournal(dir, capture())
      expect((await after.open()).map((j) => j.id)).toEqual(['j1', 'j3'])
      await after.close()
      await journal.close()
    } finally {
      execFileSync('umount', ['-l', dir])
    }
  })

  it('refuses to open on a read-only DATA_DIR with E_STORAGE', { skip: !canMount }, async () => {
    const dir = mountTmpfs('size=64k,ro')!
    try {
      const journal = createJobJournal(dir, capture())
      await expect(journal.open()).rejects.toMatchObject({
        code: 'E_STORAGE',
        message: expect.stringContaining('(the file system is read-only)'),
      })
      expect(journal.problem()?.reason).toBe('the file system is read-only')
    } finally {
      execFileSync('umount', ['-l', dir])
    }
  })

  const canChattr = tryRoot('chattr', ['-i', tmpdir()])
  it('refuses a job when the journal file cannot be written (chattr +i), and recovers', {
    skip: !canChattr,
  }, async () => {
    const dir = tempDir()
    const path = join(dir, 'jobs.journal')
    const { log, lines } = capture()
    const journal = createJobJournal(dir, { log })
    await journal.open()
    await journal.add(job('j1', 'a', 'first'))
    execFileSync('chattr', ['+i', path])
    try {
      await expect(journal.add(job('j2', 'b', 'refused'))).rejects.toMatchObject({
        code: 'E_STORAGE',
        message: expect.stringContaining('(permission denied)'),
      })
      expect(journal.problem()?.reason).toBe('permission denied')
      expect(lines.some((l) => l.msg === 'job journal write failed' && l.code === 'E_STORAGE')).toBe(true)
    } finally {
      execFileSync('chattr', ['-i', path])
    }
    await journal.add(job('j3', 'c', 'third'))
    expect(journal.problem()).toBeNull()
    const after = createJobJournal(dir, capture())
    expect((await after.open()).map((j) => j.id)).toEqual(['j1', 'j3'])
    await after.close()
    await journal.close()
  })
})

describe('reading a long journal', () => {
  it('costs work in proportion to its length (3,000 and 6,000 jobs)', async () => {
    const work = async (n: number) => {
      const dir = tempDir()
      const prompt = job('x', 'x', 'a fox').prompt
      let text = ''
      for (let i = 0; i < n; i++)
        text += lineOf({ id: `j${i}`, deviceId: `d${i % 500}`, prompt, createdAt: at.toISOString() })
      for (let i = 0; i < n; i += 2) text += `${JSON.stringify({ op: 'end', id: `j${i}` })}\n`
      writeFileSync(join(dir, 'jobs.journal'), text)
      return executedBlocks(
        JOURNAL,
        async ({ createJobJournal: create }: typeof import('../../src/store/job-journal.ts')) => {
          const journal = create(dir, capture())
          expect(await journal.open()).toHaveLength(n / 2)
          for (let i = 1; i < n; i += 2) journal.end(`j${i}`)
          await journal.close()
        },
      )
    }
    const [small, large] = [await work(3_000), await work(6_000)]
    expect(large / small).toBeLessThan(2.2)
  })
})
