import { mkdir, open, rename, rm } from 'node:fs/promises'
import { dirname } from 'node:path'

/**
 * Writes `body` to `<path>.tmp`, fsyncs it and renames it over `path`, so a crash leaves the old file or the
 * new one, never half of either. A directory that is missing (never made, or removed while the daemon ran)
 * is made, so callers need not make it before every write. On failure the temporary file is removed (best
 * effort) and the error is rethrown for the caller to report in its own words.
 */
export async function writeFileAtomic(path: string, body: string | Buffer): Promise<void> {
  const tmp = `${path}.tmp`
  try {
    const handle = await open(tmp, 'w').catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
      await mkdir(dirname(path), { recursive: true })
      return open(tmp, 'w')
    })
    try {
      await handle.writeFile(body)
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
