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

  it('writes several buffers as one file, empty ones and large ones among them', async () => {
    const root = mkdtempSync(join(tmpdir(), 'atomic-file-'))
    dirs.push(root)
    const path = join(root, 'parts.bin')
    // Larger than one write of writeFile (512 KiB), so the file is whole only if every part went out.
    const big = Buffer.alloc(700 * 1024, 0x41)
    const parts = [Buffer.from('PFS1'), Buffer.alloc(0), big, Buffer.from([1, 2, 3])]
    await writeFileAtomic(path, parts)
    expect(readFileSync(path).equals(Buffer.concat(parts))).toBe(true)
    await writeFileAtomic(path, [])
    expect(readFileSync(path).length).toBe(0)
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
