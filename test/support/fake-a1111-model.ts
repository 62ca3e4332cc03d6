/**
 * The txt2img request model of A1111 v1.10.1 as the fake sees it: the field list with its defaults
 * (research §1.1), pydantic-v1 lax coercion with its 422 details (research §5.1), and the `info` string
 * (research §1.2).
 */

type Kind = 'int' | 'float' | 'str' | 'bool' | 'dict' | 'list'

/** Every field in schema order, as `PydanticModelGenerator` builds it; `parameters` echoes them in this order. */
const FIELDS: ReadonlyArray<readonly [string, Kind, unknown]> = [
  ['prompt', 'str', ''],
  ['negative_prompt', 'str', ''],
  ['styles', 'list', null],
  ['seed', 'int', -1],
  ['subseed', 'int', -1],
  ['subseed_strength', 'float', 0],
  ['seed_resize_from_h', 'int', -1],
  ['seed_resize_from_w', 'int', -1],
  ['sampler_name', 'str', null],
  ['scheduler', 'str', null],
  ['batch_size', 'int', 1],
  ['n_iter', 'int', 1],
  // The API default is 50 steps, not the UI's 20 (research §1.1).
  ['steps', 'int', 50],
  ['cfg_scale', 'float', 7],
  ['width', 'int', 512],
  ['height', 'int', 512],
  ['restore_faces', 'bool', null],
  ['tiling', 'bool', null],
  ['do_not_save_samples', 'bool', false],
  ['do_not_save_grid', 'bool', false],
  ['eta', 'float', null],
  // The base class default (null) wins over txt2img's 0.75 (research §1.1).
  ['denoising_strength', 'float', null],
  ['s_min_uncond', 'float', null],
  ['s_churn', 'float', null],
  ['s_tmax', 'float', null],
  ['s_tmin', 'float', null],
  ['s_noise', 'float', null],
  ['override_settings', 'dict', null],
  ['override_settings_restore_afterwards', 'bool', true],
  ['refiner_checkpoint', 'str', null],
  ['refiner_switch_at', 'float', null],
  ['disable_extra_networks', 'bool', false],
  ['firstpass_image', 'str', null],
  ['comments', 'dict', null],
  ['enable_hr', 'bool', false],
  ['firstphase_width', 'int', 0],
  ['firstphase_height', 'int', 0],
  ['hr_scale', 'float', 2],
  ['hr_upscaler', 'str', null],
  ['hr_second_pass_steps', 'int', 0],
  ['hr_resize_x', 'int', 0],
  ['hr_resize_y', 'int', 0],
  ['hr_checkpoint_name', 'str', null],
  ['hr_sampler_name', 'str', null],
  ['hr_scheduler', 'str', null],
  ['hr_prompt', 'str', ''],
  ['hr_negative_prompt', 'str', ''],
  ['force_task_id', 'str', null],
  ['sampler_index', 'str', 'Euler'],
  ['script_name', 'str', null],
  ['script_args', 'list', []],
  ['send_images', 'bool', true],
  ['save_images', 'bool', false],
  ['alwayson_scripts', 'dict', {}],
  ['infotext', 'str', null],
]

/** Names whose numbers Python prints with a fraction (`7.0`), for `pyJson`. */
export const FLOAT_KEYS: ReadonlySet<string> = new Set([
  ...FIELDS.filter(([, kind]) => kind === 'float').map(([name]) => name),
  'progress',
  'eta_relative',
])

export interface ValidationIssue {
  loc: (string | number)[]
  msg: string
  type: string
}

const ISSUES: Record<Kind, { msg: string; type: string }> = {
  int: { msg: 'value is not a valid integer', type: 'type_error.integer' },
  float: { msg: 'value is not a valid float', type: 'type_error.float' },
  str: { msg: 'str type expected', type: 'type_error.str' },
  bool: { msg: 'value could not be parsed to a boolean', type: 'type_error.bool' },
  dict: { msg: 'value is not a valid dict', type: 'type_error.dict' },
  list: { msg: 'value is not a valid list', type: 'type_error.list' },
}

const TRUE_WORDS = new Set(['1', 'on', 't', 'true', 'y', 'yes'])
const FALSE_WORDS = new Set(['0', 'off', 'f', 'false', 'n', 'no'])

/** pydantic v1's lax validators: `"7"` becomes 7, `20.7` becomes 20, `"yes"` becomes true (research §1.1). */
function coerce(kind: Kind, v: unknown): { ok: true; value: unknown } | { ok: false } {
  if (v === null) return { ok: true, value: null }
  switch (kind) {
    case 'int': {
      if (typeof v === 'boolean') return { ok: true, value: v ? 1 : 0 }
      if (typeof v === 'number') return { ok: true, value: Math.trunc(v) }
      if (typeof v === 'string' && /^\s*[-+]?\d+\s*$/.test(v))
        return { ok: true, value: Number.parseInt(v, 10) }
      return { ok: false }
    }
    case 'float': {
      if (typeof v === 'boolean') return { ok: true, value: v ? 1 : 0 }
      if (typeof v === 'number') return { ok: true, value: v }
      if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)))
        return { ok: true, value: Number(v) }
      return { ok: false }
    }
    case 'str':
      if (typeof v === 'string') return { ok: true, value: v }
      if (typeof v === 'number') return { ok: true, value: String(v) }
      if (typeof v === 'boolean') return { ok: true, value: v ? 'True' : 'False' }
      return { ok: false }
    case 'bool': {
      if (typeof v === 'boolean') return { ok: true, value: v }
      const word = String(v).toLowerCase()
      if ((typeof v === 'number' || typeof v === 'string') && TRUE_WORDS.has(word))
        return { ok: true, value: true }
      if ((typeof v === 'number' || typeof v === 'string') && FALSE_WORDS.has(word))
        return { ok: true, value: false }
      return { ok: false }
    }
    case 'dict':
      return typeof v === 'object' && !Array.isArray(v) ? { ok: true, value: v } : { ok: false }
    case 'list':
      return Array.isArray(v) ? { ok: true, value: v } : { ok: false }
  }
}

/**
 * Validates a parsed body like `StableDiffusionTxt2ImgProcessingAPI`: every field optional, unknown keys
 * dropped (`Extra.ignore`), defaults filled. Returns the `parameters` echo or the 422 issues.
 */
export function validateTxt2Img(
  body: Record<string, unknown>,
): { ok: true; parameters: Record<string, unknown> } | { ok: false; issues: ValidationIssue[] } {
  const parameters: Record<string, unknown> = {}
  const issues: ValidationIssue[] = []
  for (const [name, kind, fallback] of FIELDS) {
    if (!(name in body)) {
      parameters[name] = structuredClone(fallback)
      continue
    }
    const result = coerce(kind, body[name])
    if (result.ok) parameters[name] = result.value
    else issues.push({ loc: ['body', name], ...ISSUES[kind] })
  }
  return issues.length === 0 ? { ok: true, parameters } : { ok: false, issues }
}

const SAMPLERS = new Set([
  'DPM++ 2M',
  'DPM++ SDE',
  'DPM++ 2M SDE',
  'DPM++ 2M SDE Heun',
  'DPM++ 2S a',
  'DPM++ 3M SDE',
  'Euler a',
  'Euler',
  'LMS',
  'Heun',
  'DPM2',
  'DPM2 a',
  'DPM fast',
  'DPM adaptive',
  'Restart',
  'DDIM',
  'DDIM CFG++',
  'PLMS',
  'UniPC',
  'LCM',
])

/** `get_sampler_and_scheduler`: an unknown name silently falls back to "DPM++ 2M" (research §1.1). */
export function resolveSampler(parameters: Record<string, unknown>): string {
  const asked = (parameters.sampler_name || parameters.sampler_index) as string | null
  if (typeof asked === 'string' && SAMPLERS.has(asked)) return asked
  const legacy = typeof asked === 'string' ? asked.replace(/ (Karras|Exponential)$/, '') : ''
  return SAMPLERS.has(legacy) ? legacy : 'DPM++ 2M'
}

export const MODEL = {
  title: 'v1-5-pruned-emaonly.safetensors [6ce0161689]',
  name: 'v1-5-pruned-emaonly',
  hash: '6ce0161689',
  sha256: '6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa',
}

export interface JobFacts {
  parameters: Record<string, unknown>
  seed: number
  subseed: number
  sampler: string
  images: number
  timestamp: string
}

/** The infotext of `create_infotext`, simplified (research §1.2). */
export function infotext(f: JobFacts, index: number): string {
  const p = f.parameters
  const negative = p.negative_prompt ? `\nNegative prompt: ${p.negative_prompt}` : ''
  const cfg = formatFloat(p.cfg_scale as number)
  return (
    `${p.prompt}${negative}\nSteps: ${p.steps}, Sampler: ${f.sampler}, Schedule type: Automatic, ` +
    `CFG scale: ${cfg}, Seed: ${f.seed + index}, Size: ${p.width}x${p.height}, Model hash: ${MODEL.hash}, ` +
    `Model: ${MODEL.name}, Version: v1.10.1`
  )
}

/** `Processed.js()`: the keys in A1111's order (research §1.2). */
export function infoObject(f: JobFacts): Record<string, unknown> {
  const p = f.parameters
  const indexes = Array.from({ length: f.images }, (_, i) => i)
  return {
    prompt: p.prompt,
    all_prompts: indexes.map(() => p.prompt),
    negative_prompt: p.negative_prompt,
    all_negative_prompts: indexes.map(() => p.negative_prompt),
    seed: f.seed,
    all_seeds: indexes.map((i) => f.seed + i),
    subseed: f.subseed,
    all_subseeds: indexes.map((i) => f.subseed + i),
    subseed_strength: p.subseed_strength,
    width: p.width,
    height: p.height,
    sampler_name: f.sampler,
    cfg_scale: p.cfg_scale,
    steps: p.steps,
    batch_size: p.batch_size,
    restore_faces: p.restore_faces ?? false,
    face_restoration_model: null,
    sd_model_name: MODEL.name,
    sd_model_hash: MODEL.hash,
    sd_vae_name: null,
    sd_vae_hash: null,
    seed_resize_from_w: p.seed_resize_from_w,
    seed_resize_from_h: p.seed_resize_from_h,
    denoising_strength: p.denoising_strength,
    extra_generation_params: {},
    index_of_first_image: 0,
    infotexts: indexes.map((i) => infotext(f, i)),
    styles: p.styles ?? [],
    job_timestamp: f.timestamp,
    clip_skip: 1,
    is_using_inpainting_conditioning: false,
    version: 'v1.10.1',
  }
}

function formatFloat(n: number): string {
  return Number.isInteger(n) ? n.toFixed(1) : String(n)
}

/**
 * Python's `json.dumps`: `info` uses the default `", "`/`": "` separators with ASCII escapes; FastAPI's
 * response body is compact and keeps UTF-8. Numbers under FLOAT_KEYS print as Python floats (`7.0`).
 */
export function pyJson(value: unknown, style: { compact: boolean }, key = ''): string {
  const [comma, colon] = style.compact ? [',', ':'] : [', ', ': ']
  if (value === null || value === undefined) return 'null'
  if (typeof value === 'number') return FLOAT_KEYS.has(key) ? formatFloat(value) : String(value)
  if (typeof value === 'string') {
    const json = JSON.stringify(value)
    if (style.compact) return json
    return json.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false'
  if (Array.isArray(value)) return `[${value.map((v) => pyJson(v, style, key)).join(comma)}]`
  const entries = Object.entries(value as Record<string, unknown>)
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}${colon}${pyJson(v, style, k)}`).join(comma)}}`
}
