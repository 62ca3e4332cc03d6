import { type FileHandle, mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'

/**
 * Writes `body` to `<path>.tmp`, fsyncs it and renames it over `path`, so a crash leaves the old file or the
 * new one, never half of either. A directory that is missing (never made, or removed while the daemon ran)
 * is made, so callers need not make it before every write. On failure the temporary file is removed (best
 * effort) and the error is rethrown for the caller to report in its own words. Several buffers are written
 * one after the other, as one file, without first being copied into one.
 */
export async function writeFileAtomic(
  path: string,
  body: string | Buffer | readonly Buffer[],
): Promise<void> {
  const tmp = `${path}.tmp`
  try {
    const handle = await open(tmp, 'w').catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
      await mkdir(dirname(path), { recursive: true })
      return open(tmp, 'w')
    })
    try {
      if (typeof body === 'string' || Buffer.isBuffer(body)) await handle.writeFile(body)
      else await writeAll(handle, body)
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(tmp, path)
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined)
    throw err
  }
}

/** writev until every byte is written: a write to a regular file may still come back short (a full disk). */
async function writeAll(handle: FileHandle, parts: readonly Buffer[]): Promise<void> {
  let rest = parts.filter((part) => part.length > 0)
  while (rest.length > 0) {
    let { bytesWritten } = await handle.writev(rest)
    if (bytesWritten === 0) throw new Error('the disk took none of the bytes written')
    while (rest.length > 0 && bytesWritten >= rest[0]!.length) {
      bytesWritten -= rest[0]!.length
      rest = rest.slice(1)
    }
    if (bytesWritten > 0) rest = [rest[0]!.subarray(bytesWritten), ...rest.slice(1)]
  }
}
