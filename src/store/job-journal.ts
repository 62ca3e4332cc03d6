import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from 'node:fs'
import { type FileHandle, open as openFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from 'pino'

/*
 * The jobs a device was promised: an append-only journal in DATA_DIR, one JSON line per event, fsync'd before
 * the prompt is acknowledged (the QoS 1 PUBACK, or the HTTP 202). Writes go through libuv's thread pool one
 * after another, so a slow disk (an SD card) delays only the acknowledgement, never the event loop, and an
 * end is never written before its add. After a crash or a restart the jobs that were added and never ended
 * run again. The file is rewritten with only the open jobs at start and whenever
 * enough ended jobs have piled up, so it stays small. Lines that cannot be read (a torn last write, a damaged
 * disk) are reported and skipped; the daemon starts either way.
 */

export interface JournalJob {
  id: string
  deviceId: string
  /** The validated prompt, as the job was created from it. */
  prompt: Record<string, unknown>
  createdAt: string
}

type Line = { op: 'add'; job: JournalJob } | { op: 'end'; id: string }

export interface JobJournal {
  /** Reads the journal, compacts it, and returns the unfinished jobs in the order they came. */
  open(): Promise<JournalJob[]>
  /** Records a new job; resolves once it is written and fsync'd. */
  add(job: JournalJob): Promise<void>
  /** Records that a job ended (done, failed or cancelled). */
  end(id: string): void
  /** Waits for what is being written, fsyncs and closes. */
  close(): Promise<void>
}

/** Rewrite the file once this many ended jobs have accumulated in it. */
const COMPACT_AFTER = 1_000

export function createJobJournal(dataDir: string, deps: { log: Logger }): JobJournal {
  const path = join(dataDir, 'jobs.journal')
  const open = new Map<string, JournalJob>()
  let file: FileHandle | null = null
  let ended = 0
  /** The chain of writes: each waits for the one before, so lines land in the order they were made. */
  let tail: Promise<void> = Promise.resolve()

  function enqueue(work: (handle: FileHandle) => Promise<void>): Promise<void> {
    const next = tail.then(() => {
      if (file === null) throw new Error('the job journal is not open')
      return work(file)
    })
    // A failed write must not stop the ones after it; the caller of that write sees the error.
    tail = next.catch((err: unknown) => deps.log.error({ err, file: path }, 'job journal write failed'))
    return next
  }

  function append(line: Line, durable: boolean): Promise<void> {
    const text = `${JSON.stringify(line)}\n`
    return enqueue(async (handle) => {
      await handle.appendFile(text)
      if (durable) await handle.datasync()
    })
  }

  /** Writes the open jobs to a new file and swaps it in (synchronous: at start, and rarely after). */
  function rewriteSync(): void {
    const tmp = `${path}.tmp`
    const body = [...open.values()]
      .map((job) => `${JSON.stringify({ op: 'add', job } satisfies Line)}\n`)
      .join('')
    const tmpFd = openSync(tmp, 'w')
    try {
      writeFileSync(tmpFd, body)
      fsyncSync(tmpFd)
    } finally {
      closeSync(tmpFd)
    }
    renameSync(tmp, path)
    ended = 0
  }

  function replay(text: string): void {
    let bad = 0
    const lines = text.split('\n')
    lines.forEach((raw, i) => {
      if (raw.trim() === '') return
      const line = parseLine(raw)
      if (!line) {
        bad++
        // The last line of a journal cut off by a crash is expected; anything else means damage.
        if (i < lines.length - 1 || !text.endsWith('\n'))
          deps.log.warn({ file: path, line: i + 1 }, 'unreadable journal line skipped')
        return
      }
      if (line.op === 'add') open.set(line.job.id, line.job)
      else open.delete(line.id)
    })
    if (bad > 0) {
      const copy = `${path}.damaged-${Date.now()}`
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
      rewriteSync()
      file = await openFile(path, 'a')
      return [...open.values()]
    },
    add(job) {
      open.set(job.id, job)
      return append({ op: 'add', job }, true)
    },
    end(id) {
      if (!open.delete(id)) return
      // Not fsync'd: if this line is lost in a crash the job runs once more, which is harmless.
      append({ op: 'end', id }, false).catch(() => {})
      if (++ended >= COMPACT_AFTER) {
        void enqueue(async (handle) => {
          await handle.close()
          rewriteSync()
          file = await openFile(path, 'a')
        }).catch(() => {})
      }
    },
    async close() {
      await tail
      const handle = file
      file = null
      if (handle) {
        await handle.datasync()
        await handle.close()
      }
    },
  }
}

function parseLine(raw: string): Line | null {
  try {
    const line = JSON.parse(raw) as Partial<Line> & { job?: Partial<JournalJob> }
    if (line.op === 'end' && typeof (line as { id?: unknown }).id === 'string') return line as Line
    const job = line.job
    if (
      line.op === 'add' &&
      job &&
      typeof job.id === 'string' &&
      typeof job.deviceId === 'string' &&
      typeof job.prompt === 'object' &&
      job.prompt !== null
    ) {
      return line as Line
    }
  } catch {
    // fall through: not JSON
  }
  return null
}
