import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { writeFileAtomic } from '../../src/store/atomic-file.ts'

const dirs: string[] = []
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

describe('writeFileAtomic', () => {
  it('makes a missing directory, and leaves no temporary file behind', async () => {
    const root = mkdtempSync(join(tmpdir(), 'atomic-file-'))
    dirs.push(root)
    const path = join(root, 'made', 'on', 'demand.json')
    await writeFileAtomic(path, '{"a":1}')
    expect(readFileSync(path, 'utf8')).toBe('{"a":1}')
    await writeFileAtomic(path, Buffer.from('{"a":2}'))
    expect(readFileSync(path, 'utf8')).toBe('{"a":2}')
    expect(readdirSync(join(root, 'made', 'on'))).toEqual(['demand.json'])
  })

  it('fails, without a temporary file, where the directory cannot be made', async () => {
    const root = mkdtempSync(join(tmpdir(), 'atomic-file-'))
    dirs.push(root)
    const blocker = join(root, 'a-file')
    await writeFileAtomic(blocker, 'not a directory')
    await expect(writeFileAtomic(join(blocker, 'inside.json'), '{}')).rejects.toMatchObject({
      code: 'ENOTDIR',
    })
    expect(existsSync(`${join(blocker, 'inside.json')}.tmp`)).toBe(false)
  })
})
