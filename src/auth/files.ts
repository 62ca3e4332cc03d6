import { type FSWatcher, watch } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename, dirname } from 'node:path'
import { type AclFile, parseAcl } from './acl.ts'
import { AuthFileError } from './auth-file-error.ts'
import { type PasswordFile, parsePasswordFile } from './password-file.ts'

/*
 * The file side of access control: reading the password and ACL files, and noticing when they change (issue
 * 10: re-read on SIGHUP and when the file changes). The parsers stay pure; this is the adapter around them.
 */

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    throw new AuthFileError(path, 0, `cannot be read (${code})`, { cause: err })
  }
}

export async function readPasswordFile(path: string): Promise<PasswordFile> {
  return parsePasswordFile(await readText(path), path)
}

export async function readAclFile(path: string): Promise<AclFile> {
  return parseAcl(await readText(path), path)
}

export type Reloaded<T> = { ok: true; value: T } | { ok: false; error: unknown }

export interface FileWatch {
  /** Read the file again now (SIGHUP), even if unchanged. The result arrives through onChange. */
  reload(): void
  close(): void
}

export interface WatchOptions {
  /** Editors write a file in several steps; changes closer together than this make one reload. */
  debounceMs?: number
}

/**
 * Calls `onChange` with the file read afresh whenever it changes, and with `{ ok: false }` when it cannot be
 * read or parsed (the caller keeps what it had and logs). The directory is watched, not the file, because
 * mosquitto_passwd, `pico-a1111-bridge passwd` and most editors replace the file by renaming a new one over
 * it, which ends a watch on the old file. A change that leaves the text as it was is not reported.
 */
export function watchAuthFile<T>(
  path: string,
  parse: (text: string, file: string) => T,
  onChange: (result: Reloaded<T>) => void,
  options: WatchOptions = {},
): FileWatch {
  const debounceMs = options.debounceMs ?? 100
  const name = basename(path)
  let timer: NodeJS.Timeout | undefined
  let closed = false
  let lastText: string | undefined
  let running: Promise<void> = Promise.resolve()

  const run = async (force: boolean) => {
    let text: string
    try {
      text = await readText(path)
    } catch (error) {
      lastText = undefined
      if (!closed) onChange({ ok: false, error })
      return
    }
    if (closed || (text === lastText && !force)) return
    lastText = text
    let value: T
    try {
      value = parse(text, path)
    } catch (error) {
      onChange({ ok: false, error })
      return
    }
    onChange({ ok: true, value })
  }
  // Reloads run one after another, so an older read can never overwrite a newer one.
  const reload = (force: boolean) => {
    running = running.then(() => run(force))
  }
  const schedule = () => {
    if (closed) return
    clearTimeout(timer)
    timer = setTimeout(reload, debounceMs, false)
  }

  // The text at start is what the caller already loaded; only a different text is a change.
  running = readText(path).then(
    (text) => {
      lastText = text
    },
    () => {
      lastText = undefined
    },
  )
  const watcher: FSWatcher = watch(dirname(path), { persistent: false }, (_event, file) => {
    if (file === null || file === name) schedule()
  })
  watcher.on('error', (error) => {
    if (!closed) onChange({ ok: false, error })
  })

  return {
    reload() {
      if (!closed) reload(true)
    },
    close() {
      if (closed) return
      closed = true
      clearTimeout(timer)
      watcher.close()
    },
  }
}

export function watchPasswordFile(
  path: string,
  onChange: (result: Reloaded<PasswordFile>) => void,
  options?: WatchOptions,
): FileWatch {
  return watchAuthFile(path, parsePasswordFile, onChange, options)
}

export function watchAclFile(
  path: string,
  onChange: (result: Reloaded<AclFile>) => void,
  options?: WatchOptions,
): FileWatch {
  return watchAuthFile(path, parseAcl, onChange, options)
}
