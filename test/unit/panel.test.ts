import sharp from 'sharp'
import { describe, expect, it } from 'vitest'
import { configSchema } from '../../src/config/schema.ts'
import { imageToRgb565 } from '../../src/image/convert.ts'
import { encodePanelFrame, panelFromConfig, renderFrame, renderPixels } from '../../src/image/panel.ts'
import { createFrameAssembler, decodeHeader } from '../../src/protocol/frame.ts'

const png = (w: number, h: number) =>
  sharp({ create: { width: w, height: h, channels: 3, background: { r: 250, g: 120, b: 10 } } })
    .png()
    .toBuffer()

describe('the panel profile', () => {
  it('is derived once from the settings, with the defaults of docs/protocol.md', () => {
    const panel = panelFromConfig(configSchema.parse({}))
    expect(panel).toEqual({
      width: 240,
      height: 240,
      format: 'rgb565-be',
      fit: 'cover',
      invert: false,
      bandRows: 20,
      compress: false,
      dither: 'none',
    })
  })

  it('takes every frame setting the device paths used to read one by one', () => {
    const panel = panelFromConfig(
      configSchema.parse({
        TARGET_WIDTH: 320,
        TARGET_HEIGHT: 170,
        PIXEL_FORMAT: 'rgb565-le',
        RESIZE_FIT: 'contain',
        LUMINANCE_INVERT: true,
        BAND_ROWS: 10,
        FRAME_COMPRESS: true,
      }),
    )
    expect(panel).toMatchObject({
      width: 320,
      height: 170,
      format: 'rgb565-le',
      fit: 'contain',
      invert: true,
      bandRows: 10,
      compress: true,
    })
  })
})

describe('renderFrame', () => {
  it('gives the same pixels as the RGB565 conversion, in bands the assembler puts back together', async () => {
    const panel = { ...panelFromConfig(configSchema.parse({})), width: 64, height: 48, bandRows: 16 }
    const image = await png(300, 200)
    const { pixels, chunks } = await renderFrame(image, panel, { frameId: 9, preview: false })
    const reference = await imageToRgb565(image, { ...panel, format: 'rgb565-be' })
    expect(pixels.equals(reference)).toBe(true)
    expect(chunks).toHaveLength(3)
    expect(decodeHeader(chunks[0]!)).toMatchObject({ frameId: 9, w: 64, h: 16, format: 0, flags: 0 })
    const assembler = createFrameAssembler()
    const frame = chunks.map((c) => assembler.push(c)).at(-1)
    expect(frame).toMatchObject({ width: 64, height: 48, format: 'rgb565-be', frameId: 9 })
    expect(frame?.pixels.equals(pixels)).toBe(true)
  })

  it('writes the format code only in the header: 1 for rgb565-le, 4 for palette7 with packed bands', async () => {
    const base = { ...panelFromConfig(configSchema.parse({})), width: 8, height: 4, bandRows: 2 }
    const le = encodePanelFrame(
      Buffer.alloc(8 * 4 * 2),
      { ...base, format: 'rgb565-le' },
      { frameId: 1, preview: true },
    )
    expect(decodeHeader(le[0]!)).toMatchObject({ format: 1, flags: 0b10 })
    const palette = { ...base, format: 'palette7' as const, dither: 'none' as const }
    const { pixels, chunks } = await renderFrame(await png(8, 4), palette, { frameId: 2, preview: false })
    expect(pixels.length).toBe(4 * 4)
    expect(decodeHeader(chunks[0]!)).toMatchObject({ format: 4, w: 8, h: 2 })
    expect(chunks[0]!.length).toBe(24 + 2 * 4)
  })

  it('refuses bytes that are not a picture with E_BAD_IMAGE', async () => {
    const panel = panelFromConfig(configSchema.parse({}))
    await expect(renderPixels(Buffer.from('not a png'), panel)).rejects.toMatchObject({ code: 'E_BAD_IMAGE' })
  })
})
