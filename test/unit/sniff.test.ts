import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { sniffFormat } from '../../src/image/convert.ts'

describe('sniffFormat', () => {
  const base = () => sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } })

  it('tells every format a generator sends by its first bytes, as sharp itself reads them', async () => {
    const made = {
      png: await base().png().toBuffer(),
      jpeg: await base().jpeg().toBuffer(),
      webp: await base().webp().toBuffer(),
      gif: await base().gif().toBuffer(),
      tiff: await base().tiff().toBuffer(),
      heif: await base().avif().toBuffer(),
    }
    for (const [format, bytes] of Object.entries(made)) {
      expect(sniffFormat(bytes), format).toBe(format)
      expect((await sharp(bytes).metadata()).format, format).toBe(format)
    }
  })

  it('refuses what is a program to render or not a picture at all', () => {
    expect(sniffFormat(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'))).toBeUndefined()
    expect(sniffFormat(Buffer.from('%PDF-1.7\n'))).toBeUndefined()
    expect(sniffFormat(Buffer.from([0x89, 0x50]))).toBeUndefined()
    expect(sniffFormat(Buffer.alloc(0))).toBeUndefined()
  })
})
