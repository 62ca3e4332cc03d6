import { readFile } from 'node:fs/promises'
import type { Origin } from './discovery.ts'

/** The bridge's version, and its home page as the origin's support URL when package.json names one. */
export async function packageOrigin(): Promise<Pick<Origin, 'sw' | 'url'>> {
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string
    homepage?: string
  }
  return pkg.homepage ? { sw: pkg.version, url: pkg.homepage } : { sw: pkg.version }
}
