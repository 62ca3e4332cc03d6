import { z } from 'zod'
import { promptJsonSchema } from '../protocol/prompt.ts'

/*
 * What the passthrough takes of an A1111 txt2img body (README, "HTTP"): the fields and ranges an MQTT prompt
 * has (src/protocol/prompt.ts, read from its schema so the two cannot drift), one picture per request, and
 * nothing else. A body once reached A1111 whole: width 100000, steps 1e9, batch 64 x 100, override_settings
 * with the checkpoint and output folders, script_name (issue 10). Fastify's validator drops the properties a
 * schema with `additionalProperties: false` does not name (its default `removeAdditional`), so an older
 * client that sends more still works and the rest never leaves the bridge.
 */

const PROMPT_FIELDS = [
  'prompt',
  'negative_prompt',
  'seed',
  'steps',
  'cfg_scale',
  'sampler_name',
  'width',
  'height',
] as const

const promptProperties = (z.toJSONSchema(promptJsonSchema, { io: 'input' }).properties ?? {}) as Record<
  string,
  unknown
>

export const TXT2IMG_BODY_SCHEMA = {
  type: 'object',
  required: ['prompt'],
  additionalProperties: false,
  properties: {
    ...Object.fromEntries(PROMPT_FIELDS.map((name) => [name, promptProperties[name]])),
    // The older proxy's Picos send these as A1111 documents them; more than one picture is never made.
    batch_size: { type: 'integer', enum: [1] },
    n_iter: { type: 'integer', enum: [1] },
    return_base64: { type: 'boolean' },
  },
} as const

/** `?width=&height=`: the frame size of one request. */
export const FRAME_SIZE_QUERY_SCHEMA = {
  type: 'object',
  properties: {
    width: { type: 'integer', minimum: 1, maximum: 2048 },
    height: { type: 'integer', minimum: 1, maximum: 2048 },
  },
} as const
