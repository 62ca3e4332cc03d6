import { z } from 'zod'
import { ditherMethod } from '../config/devices.ts'
import { AppError } from '../errors.ts'
import type { DitherMethod } from '../image/dither.ts'

/** Largest prompt payload read; umqtt devices and automations send far less. */
export const MAX_PROMPT_BYTES = 16 * 1024
export const MAX_PROMPT_CHARS = 4000

/** Generation defaults of docs/protocol.md, "Prompts" (A1111's own API default of 50 steps is too slow for a panel). */
export const GENERATION_DEFAULTS = { width: 512, height: 512, steps: 20, cfgScale: 7, seed: -1 } as const

const text = (max: number) =>
  z.string({ error: 'must be a string' }).max(max, { error: `must be at most ${max} characters` })

const wholeNumber = (min: number, max: number, minMessage = `must be at least ${min}`) =>
  z
    .number({ error: 'must be a number' })
    .int({ error: 'must be a whole number' })
    .min(min, { error: minMessage })
    .max(max, { error: `must be at most ${max}` })

/** A generation size: A1111 works in multiples of 8 pixels. */
const size = wholeNumber(64, 2048).multipleOf(8, { error: 'must be a multiple of 8' })

/** The JSON form of a prompt on `<base>/<id>/prompt` (and the body of the HTTP device route). */
export const promptJsonSchema = z
  .object({
    prompt: z
      .string({ error: 'must be a string' })
      .max(MAX_PROMPT_CHARS, { error: `must be at most ${MAX_PROMPT_CHARS} characters` })
      .trim()
      .min(1, { error: 'must not be empty' }),
    negative_prompt: text(MAX_PROMPT_CHARS).optional(),
    seed: wholeNumber(-1, 4294967295, 'must be -1 (random) or a seed from 0 to 4294967295').optional(),
    steps: wholeNumber(1, 150).optional(),
    cfg_scale: z
      .number({ error: 'must be a number' })
      .min(1, { error: 'must be at least 1' })
      .max(30, { error: 'must be at most 30' })
      .optional(),
    sampler_name: text(64).trim().min(1, { error: 'must not be empty' }).optional(),
    width: size.optional(),
    height: size.optional(),
    fit: z.enum(['cover', 'contain', 'fill'], { error: 'must be cover, contain or fill' }).optional(),
    dither: ditherMethod.optional(),
    request_id: z.union([text(128), z.number()], { error: 'must be a string or a number' }).optional(),
    preview: z.boolean({ error: 'must be true or false' }).optional(),
  })
  .strict()

export type PromptJson = z.infer<typeof promptJsonSchema>

/** A validated prompt, with the generation defaults filled in. */
export interface PromptRequest {
  prompt: string
  negativePrompt: string
  seed: number
  steps: number
  cfgScale: number
  samplerName: string | undefined
  width: number
  height: number
  fit: 'cover' | 'contain' | 'fill' | undefined
  /** How this picture is dithered on an indexed panel; unset, the panel's own. */
  dither: DitherMethod | undefined
  requestId: string | number | undefined
  preview: boolean | undefined
}

/**
 * Reads a prompt payload: UTF-8 text is the prompt itself; a payload that starts with `{` is the JSON form.
 * Throws AppError E_BAD_PROMPT with a message that names what is wrong.
 */
export function parsePromptPayload(payload: Uint8Array): PromptRequest {
  if (payload.length > MAX_PROMPT_BYTES) {
    throw badPrompt(`payload of ${payload.length} bytes is larger than ${MAX_PROMPT_BYTES} bytes`)
  }
  let body: string
  try {
    body = new TextDecoder('utf-8', { fatal: true }).decode(payload)
  } catch {
    throw badPrompt('payload is not UTF-8 text')
  }
  const trimmed = body.trim()
  if (trimmed === '') throw badPrompt('prompt is empty: send the text to draw, or JSON {"prompt": "..."}')
  if (!trimmed.startsWith('{')) {
    if (trimmed.length > MAX_PROMPT_CHARS)
      throw badPrompt(`prompt is longer than ${MAX_PROMPT_CHARS} characters`)
    return fromJson({ prompt: trimmed })
  }
  let json: unknown
  try {
    json = JSON.parse(trimmed)
  } catch (err) {
    throw badPrompt(`payload starts with "{" but is not valid JSON: ${(err as Error).message}`)
  }
  return parsePromptJson(json)
}

/** Validates the JSON form (already parsed), for MQTT and HTTP alike. */
export function parsePromptJson(json: unknown): PromptRequest {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw badPrompt('JSON prompt must be an object like {"prompt": "a red fox"}')
  }
  // reportInput: without it zod 4 leaves the input off its issues and a wrong type reads like a missing field.
  const parsed = promptJsonSchema.safeParse(json, { reportInput: true })
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      if (issue.code === 'unrecognized_keys')
        return `unknown field ${issue.keys.map((k) => `"${k}"`).join(', ')}`
      const field = issue.path.map(String).join('.') || 'prompt'
      if (issue.code === 'invalid_type' && issue.input === undefined) return `${field}: is required`
      return `${field}: ${issue.message}`
    })
    throw badPrompt(problems.join('; '))
  }
  return fromJson(parsed.data)
}

function fromJson(p: PromptJson): PromptRequest {
  return {
    prompt: p.prompt,
    negativePrompt: p.negative_prompt ?? '',
    seed: p.seed ?? GENERATION_DEFAULTS.seed,
    steps: p.steps ?? GENERATION_DEFAULTS.steps,
    cfgScale: p.cfg_scale ?? GENERATION_DEFAULTS.cfgScale,
    samplerName: p.sampler_name,
    width: p.width ?? GENERATION_DEFAULTS.width,
    height: p.height ?? GENERATION_DEFAULTS.height,
    fit: p.fit,
    dither: p.dither,
    requestId: p.request_id,
    preview: p.preview,
  }
}

function badPrompt(message: string): AppError {
  return new AppError('E_BAD_PROMPT', message)
}
