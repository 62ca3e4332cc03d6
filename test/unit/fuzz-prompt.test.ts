import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { AppError } from '../../src/errors.ts'
import { MAX_PROMPT_BYTES, MAX_PROMPT_CHARS, parsePromptPayload } from '../../src/protocol/prompt.ts'

/*
 * The prompt parser against what anyone on the network can publish on `<base>/<id>/prompt` (issue 10,
 * "Fuzzing"): it returns a prompt within the documented ranges or throws AppError E_BAD_PROMPT, and nothing
 * else, for any bytes, any JSON and any near-valid prompt object.
 */

const SEED = 20_241_010

function parseOrCode(
  payload: Uint8Array,
): { ok: true; value: ReturnType<typeof parsePromptPayload> } | { ok: false } {
  try {
    return { ok: true, value: parsePromptPayload(payload) }
  } catch (err) {
    expect(err).toBeInstanceOf(AppError)
    expect((err as AppError).code).toBe('E_BAD_PROMPT')
    return { ok: false }
  }
}

function inRanges(p: ReturnType<typeof parsePromptPayload>): void {
  expect(p.prompt.length).toBeGreaterThan(0)
  expect(p.prompt.length).toBeLessThanOrEqual(MAX_PROMPT_CHARS)
  expect(Number.isInteger(p.steps) && p.steps >= 1 && p.steps <= 150).toBe(true)
  expect(p.cfgScale >= 1 && p.cfgScale <= 30).toBe(true)
  for (const side of [p.width, p.height]) expect(side >= 64 && side <= 2048 && side % 8 === 0).toBe(true)
  expect(Number.isInteger(p.seed) && p.seed >= -1 && p.seed <= 4294967295).toBe(true)
}

const field = fc.oneof(
  fc.integer({ min: -10, max: 5000 }),
  fc.double(),
  fc.string(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer(), { maxLength: 3 }),
)

const nearPrompt = fc.record(
  {
    prompt: fc.oneof(fc.string({ maxLength: 50 }), fc.string({ minLength: 3990, maxLength: 4010 }), field),
    negative_prompt: fc.oneof(fc.string({ maxLength: 20 }), field),
    seed: field,
    steps: field,
    cfg_scale: field,
    sampler_name: fc.oneof(fc.string({ maxLength: 70 }), field),
    width: fc.oneof(fc.integer({ min: 0, max: 4096 }), field),
    height: fc.oneof(fc.integer({ min: 0, max: 4096 }), field),
    fit: fc.oneof(fc.constantFrom('cover', 'contain', 'fill', 'stretch'), field),
    preview: field,
    request_id: field,
    override_settings: fc.object({ maxDepth: 1 }),
  },
  { requiredKeys: [] },
)

describe('the prompt parser, fuzzed', () => {
  it('takes any bytes and either parses a prompt in range or says E_BAD_PROMPT', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
        const r = parseOrCode(bytes)
        if (r.ok) inRanges(r.value)
      }),
      { seed: SEED, numRuns: 4000 },
    )
  })

  it('takes any JSON value', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 3 }), (value) => {
        const r = parseOrCode(Buffer.from(JSON.stringify(value) ?? 'null'))
        if (r.ok) inRanges(r.value)
      }),
      { seed: SEED, numRuns: 3000 },
    )
  })

  it('takes near-valid prompt objects, accepting only those every field of which is in range', () => {
    fc.assert(
      fc.property(nearPrompt, (obj) => {
        const r = parseOrCode(Buffer.from(JSON.stringify(obj)))
        if (!r.ok) return
        inRanges(r.value)
        // A field the schema does not know is refused, never passed on.
        expect(obj).not.toHaveProperty('override_settings')
      }),
      { seed: SEED, numRuns: 4000 },
    )
  })

  it('refuses a payload over MAX_PROMPT_BYTES', () => {
    fc.assert(
      fc.property(fc.integer({ min: MAX_PROMPT_BYTES + 1, max: MAX_PROMPT_BYTES * 4 }), (n) => {
        expect(parseOrCode(Buffer.alloc(n, 0x61)).ok).toBe(false)
      }),
      { seed: SEED, numRuns: 200 },
    )
  })
})
