import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'

/*
 * The jobs a device was promised: an append-only journal in DATA_DIR, one JSON line per event, fsync'd before
 * the prompt is acknowledged (the QoS 1 PUBACK, or the HTTP 202). After a crash or a restart the jobs that
 * were added and never ended run again. The file is rewritten with only the open jobs at start and whenever
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
  open(): JournalJob[]
  /** Records a new job durably (written and fsync'd) before returning. */
  add(job: JournalJob): void
  /** Records that a job ended (done, failed or cancelled). */
  end(id: string): void
  close(): void
}

/** Rewrite the file once this many ended jobs have accumulated in it. */
const COMPACT_AFTER = 1_000

export function createJobJournal(dataDir: string, deps: { log: Logger }): JobJournal {
  const path = join(dataDir, 'jobs.journal')
  const open = new Map<string, JournalJob>()
  let fd: number | null = null
  let ended = 0

  function append(line: Line, durable: boolean): void {
    if (fd === null) throw new Error('the job journal is not open')
    writeSync(fd, `${JSON.stringify(line)}\n`)
    if (durable) fsyncSync(fd)
  }

  function rewrite(): void {
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
    if (fd !== null) closeSync(fd)
    renameSync(tmp, path)
    fd = openSync(path, 'a')
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
    open() {
      mkdirSync(dataDir, { recursive: true })
      if (existsSync(path)) replay(readFileSync(path, 'utf8'))
      rewrite()
      return [...open.values()]
    },
    add(job) {
      open.set(job.id, job)
      append({ op: 'add', job }, true)
    },
    end(id) {
      if (!open.delete(id)) return
      // Not fsync'd: if this line is lost in a crash the job runs once more, which is harmless.
      append({ op: 'end', id }, false)
      if (++ended >= COMPACT_AFTER) rewrite()
    },
    close() {
      if (fd !== null) {
        fsyncSync(fd)
        closeSync(fd)
        fd = null
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
