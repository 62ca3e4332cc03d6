import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { type FileHandle, open as openFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { AppError } from '../errors.ts'
import { writeFileAtomic } from './atomic-file.ts'
import { type JournalJob, journalLine, readJournalLine } from './journal-lines.ts'

export type { JournalJob } from './journal-lines.ts'

/*
 * The jobs a device was promised: an append-only journal in DATA_DIR, one JSON line per event, fsync'd before
 * the prompt is acknowledged (the QoS 1 PUBACK, or the HTTP 202). Writes go through libuv's thread pool one
 * after another, so a slow disk (an SD card) delays only the acknowledgement, never the event loop, and an
 * end is never written before its add. After a crash or a restart the jobs that were added and never ended
 * run again. The file is rewritten with only the open jobs at start, whenever enough ended jobs have piled
 * up, and at a clean stop, so finished prompts do not stay on disk. Lines are checked as they are read
 * (journal-lines.ts); a line that cannot be read or fails the checks is reported and skipped, and the daemon
 * starts either way.
 */

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

/** Rewrite the file once this many ended jobs have accumulated in it. */
const COMPACT_AFTER = 1_000

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
    const text = pendingEnds.map((id) => journalLine({ op: 'end', id })).join('')
    pendingEnds = []
    // Not fsync'd: if these lines are lost in a crash the jobs run once more, which is harmless.
    append(text, false).catch(() => {
      // Reported by storageError and the chain's log line; nothing waits for an end.
    })
  }

  /** Writes the open jobs to a new file, fsyncs it and swaps it in for the journal. */
  async function rewrite(): Promise<void> {
    const body = [...open.values()].map((job) => journalLine({ op: 'add', job })).join('')
    try {
      await writeFileAtomic(path, body)
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
      const read = readJournalLine(raw)
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
      return append(journalLine({ op: 'add', job }), true).catch((err: unknown) => {
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
