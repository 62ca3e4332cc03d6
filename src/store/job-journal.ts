import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { type FileHandle, open as openFile, rename } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { AppError } from '../errors.ts'
import { type PromptRequest, parsePromptJson } from '../protocol/prompt.ts'
import { DEVICE_ID_PATTERN, RESERVED_DEVICE_ID } from '../protocol/topics.ts'

/*
 * The jobs a device was promised: an append-only journal in DATA_DIR, one JSON line per event, fsync'd before
 * the prompt is acknowledged (the QoS 1 PUBACK, or the HTTP 202). Writes go through libuv's thread pool one
 * after another, so a slow disk (an SD card) delays only the acknowledgement, never the event loop, and an
 * end is never written before its add. After a crash or a restart the jobs that were added and never ended
 * run again. The file is rewritten with only the open jobs at start, whenever enough ended jobs have piled
 * up, and at a clean stop, so finished prompts do not stay on disk. Lines are checked as they are read (the
 * file is input like any other: issue 13, "Files in DATA_DIR are trusted"); a line that cannot be read or
 * fails the checks is reported and skipped, and the daemon starts either way.
 */

export interface JournalJob {
  id: string
  deviceId: string
  /** The validated prompt, as the job was created from it. */
  prompt: PromptRequest
  createdAt: string
}

/** Why DATA_DIR cannot take the journal's writes, for /health; null while writes succeed. */
export interface StorageProblem {
  code: 'E_STORAGE'
  reason: string
  /** When the first of the failing writes failed (ISO 8601). */
  since: string
}

export interface JobJournal {
  /** Reads the journal, compacts it, and returns the unfinished jobs in the order they came. */
  open(): Promise<JournalJob[]>
  /**
   * Records a new job; resolves once it is written and fsync'd. Rejects with AppError E_STORAGE when
   * DATA_DIR cannot take it (full, read-only): then the job is not recorded.
   */
  add(job: JournalJob): Promise<void>
  /**
   * Records that a job ended (done, failed or cancelled). The line is written after the adds made in the same
   * turn of the event loop, so a prompt that supersedes another reaches the disk before the other's end.
   */
  end(id: string): void
  /** The last write failure, until a later write succeeds. */
  problem(): StorageProblem | null
  /** Waits for what is being written, rewrites the file with only the open jobs and closes. Idempotent. */
  close(): Promise<void>
}

type Line = { op: 'add'; job: JournalJob } | { op: 'end'; id: string }

/** Rewrite the file once this many ended jobs have accumulated in it. */
const COMPACT_AFTER = 1_000
/** Job ids come from newJobId (12 hex digits); a line with anything else was not written by the bridge. */
const JOB_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

export function createJobJournal(dataDir: string, deps: { log: Logger; now?: () => Date }): JobJournal {
  const path = join(dataDir, 'jobs.journal')
  const now = deps.now ?? (() => new Date())
  const open = new Map<string, JournalJob>()
  let file: FileHandle | null = null
  /** Bytes of whole lines in the file: a failed append is cut back to this. */
  let goodBytes = 0
  /** A failed append may have left part of a line that could not be cut off: start the next on a new line. */
  let torn = false
  let ended = 0
  let pendingEnds: string[] = []
  let problem: StorageProblem | null = null
  let closing: Promise<void> | null = null
  /** Set once the writes made before close() are done: later ones are refused. */
  let closed = false
  /** The chain of writes: each waits for the one before, so lines land in the order they were made. */
  let tail: Promise<void> = Promise.resolve()

  function storageError(err: unknown, doing: string): AppError {
    const reason = storageReason(err)
    problem = { code: 'E_STORAGE', reason, since: problem?.since ?? now().toISOString() }
    return new AppError('E_STORAGE', `DATA_DIR cannot be written (${reason}) while ${doing} ${path}`, {
      cause: err,
    })
  }

  function enqueue(work: (handle: FileHandle) => Promise<void>): Promise<void> {
    const next = tail.then(async () => {
      if (closed) throw new AppError('E_SHUTTING_DOWN', 'the job journal is closed: the bridge is stopping')
      // Not open after a failed compaction: try again, the disk may have been fixed meanwhile.
      if (file === null) await reopen()
      return work(file!)
    })
    // A failed write must not stop the ones after it; the caller of that write sees the error.
    tail = next.catch((err: unknown) => {
      if (err instanceof AppError)
        deps.log.error({ code: err.code, reason: problem?.reason, file: path }, 'job journal write failed')
      else deps.log.error({ err, file: path }, 'job journal write failed')
    })
    return next
  }

  function append(text: string, durable: boolean): Promise<void> {
    return enqueue(async (handle) => {
      const body = torn ? `\n${text}` : text
      try {
        await handle.appendFile(body)
        if (durable) await handle.datasync()
      } catch (err) {
        // Cut back what part of the line got in, so the next line does not run into it.
        torn = await handle.truncate(goodBytes).then(
          () => false,
          () => true,
        )
        throw storageError(err, 'writing')
      }
      goodBytes += Buffer.byteLength(body)
      torn = false
      problem = null
    })
  }

  function flushEnds(): void {
    if (pendingEnds.length === 0) return
    const text = pendingEnds.map((id) => `${JSON.stringify({ op: 'end', id } satisfies Line)}\n`).join('')
    pendingEnds = []
    // Not fsync'd: if these lines are lost in a crash the jobs run once more, which is harmless.
    append(text, false).catch(() => {
      // Reported by storageError and the chain's log line; nothing waits for an end.
    })
  }

  /** Writes the open jobs to a new file, fsyncs it and swaps it in for the journal. */
  async function rewrite(): Promise<void> {
    const tmp = `${path}.tmp`
    const body = [...open.values()]
      .map((job) => `${JSON.stringify({ op: 'add', job } satisfies Line)}\n`)
      .join('')
    try {
      const handle = await openFile(tmp, 'w')
      try {
        await handle.writeFile(body)
        await handle.datasync()
      } finally {
        await handle.close()
      }
      await rename(tmp, path)
    } catch (err) {
      throw storageError(err, 'rewriting')
    }
    problem = null
    ended = 0
  }

  async function reopen(): Promise<void> {
    try {
      const handle = await openFile(path, 'a')
      goodBytes = (await handle.stat()).size
      file = handle
    } catch (err) {
      throw storageError(err, 'opening')
    }
    torn = false
  }

  function replay(text: string): void {
    let bad = 0
    const lines = text.split('\n')
    lines.forEach((raw, i) => {
      if (raw.trim() === '') return
      const read = readLine(raw)
      if ('reason' in read) {
        bad++
        // The last line of a journal cut off by a crash is expected; anything else means damage.
        if (i < lines.length - 1 || !text.endsWith('\n'))
          deps.log.warn({ file: path, line: i + 1, reason: read.reason }, 'journal line skipped')
        return
      }
      const { line } = read
      if (line.op === 'add') open.set(line.job.id, line.job)
      else open.delete(line.id)
    })
    if (bad > 0) {
      const copy = `${path}.damaged-${now().getTime()}`
      writeFileSync(copy, text)
      deps.log.error(
        { file: path, unreadable: bad, copy, recovered: open.size },
        'job journal was damaged; kept what was readable',
      )
    }
  }

  return {
    async open() {
      mkdirSync(dataDir, { recursive: true })
      if (existsSync(path)) replay(readFileSync(path, 'utf8'))
      await rewrite()
      await reopen()
      return [...open.values()]
    },
    add(job) {
      open.set(job.id, job)
      return append(`${JSON.stringify({ op: 'add', job } satisfies Line)}\n`, true).catch((err: unknown) => {
        // Not on disk, so not open: the caller refuses the prompt.
        open.delete(job.id)
        throw err
      })
    },
    end(id) {
      if (!open.delete(id) || closed) return
      if (pendingEnds.length === 0) queueMicrotask(flushEnds)
      pendingEnds.push(id)
      if (++ended >= COMPACT_AFTER) {
        ended = 0
        queueMicrotask(() => {
          enqueue(async (handle) => {
            await handle.close()
            file = null
            try {
              await rewrite()
            } finally {
              await reopen()
            }
          }).catch(() => {
            // Reported by storageError and the chain's log line; the old file stays in use.
          })
        })
      }
    },
    problem: () => problem,
    close() {
      closing ??= (async () => {
        flushEnds()
        await tail
        closed = true
        const handle = file
        file = null
        if (!handle) return
        await handle.close()
        // Compact: finished jobs, prompt text included, do not stay in DATA_DIR (issue 9).
        await rewrite()
      })()
      return closing
    },
  }
}

/** Why a write to DATA_DIR failed, in words for the person who has to free or fix it. */
export function storageReason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  switch (code) {
    case 'ENOSPC':
      return 'the disk is full'
    case 'EDQUOT':
      return 'the disk quota is used up'
    case 'EROFS':
      return 'the file system is read-only'
    case 'EACCES':
    case 'EPERM':
      return 'permission denied'
    case 'EIO':
      return 'input/output error: the disk may be failing'
    default:
      return code ?? 'unknown error'
  }
}

/** The journal's prompt fields and their names in the JSON form that the prompt schema checks. */
const PROMPT_FIELDS = {
  prompt: 'prompt',
  negativePrompt: 'negative_prompt',
  seed: 'seed',
  steps: 'steps',
  cfgScale: 'cfg_scale',
  samplerName: 'sampler_name',
  width: 'width',
  height: 'height',
  fit: 'fit',
  requestId: 'request_id',
  preview: 'preview',
} as const satisfies Record<keyof PromptRequest, string>

/**
 * Checks a journaled prompt with the same schema as a prompt from a device, so a line can never run what a
 * device could not have sent. The reason names fields, never the prompt text.
 */
function promptFromJournal(raw: unknown): PromptRequest | { reason: string } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return { reason: 'prompt is not an object' }
  const json: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(raw)) {
    const name = PROMPT_FIELDS[key as keyof PromptRequest]
    if (name === undefined)
      return { reason: `prompt has an unknown field ${JSON.stringify(key.slice(0, 40))}` }
    json[name] = value
  }
  try {
    return parsePromptJson(json)
  } catch (err) {
    return { reason: `prompt: ${err instanceof AppError ? err.message : 'not valid'}` }
  }
}

function readLine(raw: string): { line: Line } | { reason: string } {
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    // JSON.parse's message quotes the line, which may hold prompt text: say only what is wrong.
    return { reason: 'not JSON' }
  }
  if (typeof parsed !== 'object' || parsed === null) return { reason: 'not a journal line' }
  const line = parsed as { op?: unknown; id?: unknown; job?: unknown }
  if (line.op === 'end') {
    return typeof line.id === 'string'
      ? { line: { op: 'end', id: line.id } }
      : { reason: 'end without a job id' }
  }
  if (line.op !== 'add') return { reason: 'not a journal line' }
  if (typeof line.job !== 'object' || line.job === null) return { reason: 'add without a job' }
  const job = line.job as { id?: unknown; deviceId?: unknown; prompt?: unknown; createdAt?: unknown }
  if (typeof job.id !== 'string' || !JOB_ID_PATTERN.test(job.id)) return { reason: 'job id is not valid' }
  // The device id names a file in DATA_DIR and a topic level: `../../x` must never get that far.
  if (
    typeof job.deviceId !== 'string' ||
    !DEVICE_ID_PATTERN.test(job.deviceId) ||
    job.deviceId === RESERVED_DEVICE_ID
  ) {
    return { reason: 'device id is not valid: 1-64 letters, digits, _ or - (and not "bridge")' }
  }
  if (typeof job.createdAt !== 'string' || Number.isNaN(Date.parse(job.createdAt)))
    return { reason: 'createdAt is not a date' }
  const prompt = promptFromJournal(job.prompt)
  if ('reason' in prompt) return prompt
  return {
    line: { op: 'add', job: { id: job.id, deviceId: job.deviceId, prompt, createdAt: job.createdAt } },
  }
}
