import { describe, expect, it } from 'vitest'
import { configSchema } from '../../src/config/schema.ts'
import { AppError } from '../../src/errors.ts'
import { type PanelProfile, resolvePanel } from '../../src/image/panel.ts'
import { unpackToRgb } from '../../src/image/unpack.ts'
import { parseInfoPayload } from '../../src/protocol/info.ts'

/*
 * A display's info (docs/protocol.md, "Display info"), the DEVICES setting, how the two resolve into a panel,
 * and packed pixels back to the colours a panel shows.
 */

const DEFAULTS: PanelProfile = {
  ...{ width: 240, height: 240, format: 'rgb565-be', fit: 'cover', invert: false },
  ...{ bandRows: 20, compress: false, dither: 'none' },
}

function refusal(payload: string): string {
  try {
    parseInfoPayload(Buffer.from(payload))
  } catch (err) {
    expect(err).toBeInstanceOf(AppError)
    expect((err as AppError).code).toBe('E_BAD_INFO')
    return (err as AppError).message
  }
  throw new Error(`${payload} was taken`)
}

describe('an info message', () => {
  it('takes the fields it knows and ignores the others', () => {
    const info = { panel: { width: 296, height: 128, format: 'mono', band_rows: 16 }, rssi: -61, extra: 1 }
    expect(parseInfoPayload(Buffer.from(JSON.stringify(info)))).toEqual({
      panel: { width: 296, height: 128, format: 'mono', band_rows: 16 },
      rssi: -61,
    })
  })

  it('is refused naming the field: wrong types, a 10000x10000 panel, an unknown format', () => {
    expect(refusal('{"panel": {"width": 10000, "height": 10000}}')).toMatch(
      /panel\.width: must be at most 2048$/,
    )
    expect(refusal('{"panel": {"format": "rgb888"}}')).toMatch(/panel\.format: must be one of rgb565-be, /)
    expect(refusal('{"heap_free": 1.5}')).toMatch(/heap_free: must be a whole number$/)
    expect(refusal('{"fw": 3}')).toMatch(/fw: must be a string$/)
    expect(refusal('[1]')).toMatch(/must be a JSON object/)
    expect(refusal(`{"fw": "${'x'.repeat(5000)}"}`)).toMatch(/larger than 4096 bytes/)
  })
})

describe('a display’s panel', () => {
  it('is its DEVICES entry over its info over the settings, field by field', () => {
    const panel = resolvePanel(
      DEFAULTS,
      { width: 296, height: 128, format: 'mono', band_rows: 16 },
      {
        band_rows: 8,
        palette: [
          [20, 20, 20],
          [230, 230, 220],
        ],
      },
    )
    expect(panel).toEqual({
      ...DEFAULTS,
      ...{ width: 296, height: 128, format: 'mono', bandRows: 8, dither: 'floyd-steinberg' },
      palette: [
        [20, 20, 20],
        [230, 230, 220],
      ],
    })
    expect(resolvePanel(DEFAULTS, undefined, undefined)).toEqual(DEFAULTS)
    // A palette with more inks than the format has is left out rather than failing every frame.
    expect(
      resolvePanel(
        DEFAULTS,
        { format: 'mono' },
        {
          palette: [
            [0, 0, 0],
            [9, 9, 9],
            [255, 255, 255],
          ],
        },
      ).palette,
    ).toBeUndefined()
  })

  it('DEVICES is JSON in the environment, checked with the field named', () => {
    const ok = configSchema.parse({
      DEVICES: '{"eink": {"width": 800, "height": 480, "format": "palette7"}}',
    })
    expect(ok.DEVICES).toEqual({ eink: { width: 800, height: 480, format: 'palette7' } })
    expect(configSchema.parse({ PIXEL_FORMAT: 'gray4' }).PIXEL_FORMAT).toBe('gray4')
    const bad = (devices: string) => {
      const r = configSchema.safeParse({ DEVICES: devices })
      expect(r.success).toBe(false)
      return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')
    }
    expect(bad('{"eink": {"format": "rgb888"}}')).toMatch(/^DEVICES\.eink\.format: must be one of/)
    expect(bad('{"eink": {"colour": true}}')).toMatch(/^DEVICES\.eink: /)
    expect(bad('{"../x": {}}')).toMatch(/^DEVICES\.\.\.\/x: /)
    expect(bad('{"a": {"format": "mono", "palette": [[0,0,0],[1,1,1],[2,2,2]]}}')).toMatch(
      /palette: mono has at most 2 colours/,
    )
    expect(bad('not json')).toMatch(/^DEVICES: must be a JSON object/)
  })
})

describe('packed pixels back to colours', () => {
  it('shows each index as its ink, leftmost pixel in the high bits, rows on whole bytes', () => {
    // mono 3x2: rows 0b101_00000 and 0b010_00000.
    const mono = unpackToRgb(Buffer.from([0b1010_0000, 0b0100_0000]), 3, 2, 'mono')
    expect([...mono]).toEqual([255, 255, 255, 0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255, 0, 0, 0])
    // gray4 2x1 with a palette of our own: levels 3 then 1.
    const inks = [
      [0, 0, 0],
      [10, 20, 30],
      [40, 50, 60],
      [70, 80, 90],
    ] as const
    expect([...unpackToRgb(Buffer.from([0b11_01_0000]), 2, 1, 'gray4', inks)]).toEqual([
      70, 80, 90, 10, 20, 30,
    ])
    // palette7 3x1: 2 bytes; indices 4 (red), 1 (white), 6 (orange).
    const seven = unpackToRgb(Buffer.from([0x41, 0x60]), 3, 1, 'palette7')
    expect([...seven]).toEqual([156, 72, 75, 255, 255, 255, 177, 106, 73])
    expect(() => unpackToRgb(Buffer.alloc(3), 3, 2, 'mono')).toThrow(RangeError)
  })
})
