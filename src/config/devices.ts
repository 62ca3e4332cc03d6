import { z } from 'zod'
import { DITHER_METHODS } from '../image/dither.ts'
import { INDEXED_COLOURS, isIndexedFormat, PIXEL_FORMAT_NAMES } from '../image/pixel-format.ts'
import { DEVICE_ID_RULE, isDeviceId } from '../protocol/device-id.ts'

/*
 * The DEVICES setting (README, "Displays of other kinds"; docs/protocol.md, "Display info"): a JSON object of
 * device id to panel, `{"eink": {"width": 800, "height": 480, "format": "palette7"}}`. A display named here
 * gets these fields over what its own `info` says; what neither says comes from TARGET_WIDTH, TARGET_HEIGHT,
 * PIXEL_FORMAT, BAND_ROWS, RESIZE_FIT, LUMINANCE_INVERT and FRAME_COMPRESS.
 */

/** The same bounds as TARGET_WIDTH, TARGET_HEIGHT and BAND_ROWS. */
export const MAX_PANEL_SIDE = 2048
/** More displays than any home has; the setting is read once, but stays small in memory and in logs. */
const MAX_DEVICES_SETTING = 1000

const side = z
  .number({ error: 'must be a whole number' })
  .int({ error: 'must be a whole number' })
  .min(1, { error: 'must be at least 1' })
  .max(MAX_PANEL_SIDE, { error: `must be at most ${MAX_PANEL_SIDE}` })

export const pixelFormat = z.enum(PIXEL_FORMAT_NAMES, {
  error: `must be one of ${PIXEL_FORMAT_NAMES.join(', ')}`,
})
export const ditherMethod = z.enum(DITHER_METHODS, { error: `must be one of ${DITHER_METHODS.join(', ')}` })

const channel = z.number().int().min(0).max(255)
const colour = z.tuple([channel, channel, channel], { error: 'must be [r, g, b] with whole numbers 0-255' })

/** One display's panel in DEVICES: every field optional, none but these. */
export const devicePanelSchema = z
  .object({
    width: side.optional(),
    height: side.optional(),
    format: pixelFormat.optional(),
    band_rows: side.optional(),
    fit: z.enum(['cover', 'contain', 'fill'], { error: 'must be cover, contain or fill' }).optional(),
    dither: ditherMethod.optional(),
    invert: z.boolean({ error: 'must be true or false' }).optional(),
    compress: z.boolean({ error: 'must be true or false' }).optional(),
    /** The inks as the panel shows them, in wire order (image/palette.ts, DEFAULT_PALETTES). */
    palette: z.array(colour).min(2, { error: 'must have at least 2 colours' }).max(7).optional(),
    saturation: z.number().min(0).max(4).optional(),
    contrast: z.number().min(0).max(4).optional(),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.palette === undefined || p.format === undefined) return
    const max = isIndexedFormat(p.format) ? INDEXED_COLOURS[p.format] : 0
    if (p.palette.length > max)
      ctx.addIssue({
        code: 'custom',
        path: ['palette'],
        message: max === 0 ? `${p.format} has no palette` : `${p.format} has at most ${max} colours`,
      })
  })

export type DevicePanel = z.infer<typeof devicePanelSchema>

/** DEVICES: JSON text in the environment, an object in the config file; always an object once parsed. */
export const devicesSetting = z.preprocess(
  (v) => {
    if (typeof v !== 'string') return v
    if (v.trim() === '') return {}
    try {
      return JSON.parse(v)
    } catch {
      return Symbol('not JSON')
    }
  },
  z
    .record(
      z.string().refine(isDeviceId, { error: `is not a device id: ${DEVICE_ID_RULE}` }),
      devicePanelSchema,
      { error: 'must be a JSON object of device id to panel, e.g. {"eink": {"format": "palette7"}}' },
    )
    .refine((r) => Object.keys(r).length <= MAX_DEVICES_SETTING, {
      error: `must name at most ${MAX_DEVICES_SETTING} displays`,
    }),
)
