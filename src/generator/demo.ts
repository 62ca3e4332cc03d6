import { randomInt } from 'node:crypto'
import { createRequire } from 'node:module'
import sharp, { type CreateText } from 'sharp'
import { GENERATION_DEFAULTS } from '../protocol/prompt.ts'
import { layoutLines } from './demo-layout.ts'
import type { GenerateHooks, GenerateResult, Generator, Txt2ImgPayload } from './types.ts'

/*
 * The demo generator: used when A1111_BASE_URL is unset, so a fresh clone shows real frames with no GPU. It
 * draws the prompt's words on a gradient chosen by the seed; the same seed always gives the same picture.
 */

export interface DemoGeneratorOptions {
  /** Pretend each sampling step takes this long, reporting progress per step. 0 (default) answers at once. */
  stepMs?: number
}

/** Sizes outside A1111's own range are clamped rather than refused: the demo never fails a job. */
const MIN_SIZE = 64
const MAX_SIZE = 2048
const MAX_STEPS = 150
const MAX_SEED = 4294967295
/** More than this is unreadable on a 240x240 panel anyway. */
const MAX_DRAWN_CHARS = 160

/**
 * The font the demo draws with, shipped as a dependency (the dejavu-fonts-ttf package, DejaVu's own licence:
 * free to use and redistribute) and handed to Pango as a file, so the picture is the same on every machine,
 * also on one without any fonts installed, where Pango would draw a box for every character.
 */
export const DEMO_FONT_FILE = createRequire(import.meta.url).resolve(
  'dejavu-fonts-ttf/ttf/DejaVuSans-Bold.ttf',
)
/** The family and style inside DEMO_FONT_FILE, as Pango names them. */
const DEMO_FONT = 'DejaVu Sans Bold'

interface DemoRequest {
  prompt: string
  negativePrompt: string
  seed: number
  steps: number
  cfgScale: number
  width: number
  height: number
}

/** Creates the demo generator (the Generator port, name `demo`). */
export function createDemoGenerator(options: DemoGeneratorOptions = {}): Generator {
  const stepMs = Math.max(0, options.stepMs ?? 0)

  async function generate(payload: Txt2ImgPayload, hooks: GenerateHooks): Promise<GenerateResult> {
    hooks.signal.throwIfAborted()
    const request = readPayload(payload)
    await hooks.recorded
    hooks.signal.throwIfAborted()
    if (stepMs > 0) await pretendToSample(request.steps, stepMs, hooks)
    const image = await drawPicture(request)
    hooks.signal.throwIfAborted()
    return {
      image,
      seed: request.seed,
      upstream: { images: [image.toString('base64')], parameters: payload, info: describeInfo(request) },
    }
  }

  return {
    name: 'demo',
    generate,
    check: async () => {},
    close: async () => {},
  }
}

function readPayload(payload: Txt2ImgPayload): DemoRequest {
  const seed = wholeNumber(payload.seed, -1, -1, MAX_SEED)
  return {
    prompt: typeof payload.prompt === 'string' ? payload.prompt.trim() : '',
    negativePrompt: typeof payload.negative_prompt === 'string' ? payload.negative_prompt : '',
    // Like A1111, -1 means "pick one"; the seed picked is reported so the picture can be drawn again.
    seed: seed === -1 ? randomInt(0, MAX_SEED + 1) : seed,
    steps: wholeNumber(payload.steps, GENERATION_DEFAULTS.steps, 1, MAX_STEPS),
    cfgScale: typeof payload.cfg_scale === 'number' ? payload.cfg_scale : GENERATION_DEFAULTS.cfgScale,
    width: wholeNumber(payload.width, GENERATION_DEFAULTS.width, MIN_SIZE, MAX_SIZE),
    height: wholeNumber(payload.height, GENERATION_DEFAULTS.height, MIN_SIZE, MAX_SIZE),
  }
}

function wholeNumber(value: unknown, fallback: number, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) return fallback
  return Math.min(max, Math.max(min, Math.round(value)))
}

/** A1111's `info` is a JSON string; the fields a client is most likely to read are here. */
function describeInfo(r: DemoRequest): string {
  return JSON.stringify({
    prompt: r.prompt,
    all_prompts: [r.prompt],
    negative_prompt: r.negativePrompt,
    seed: r.seed,
    all_seeds: [r.seed],
    width: r.width,
    height: r.height,
    steps: r.steps,
    cfg_scale: r.cfgScale,
    sampler_name: 'demo',
  })
}

async function pretendToSample(steps: number, stepMs: number, hooks: GenerateHooks): Promise<void> {
  for (let step = 1; step <= steps; step++) {
    await sleep(stepMs, hooks.signal)
    hooks.onProgress?.({ progress: step / steps, etaS: ((steps - step) * stepMs) / 1000, preview: undefined })
  }
}

/** Waits `ms`, rejecting with the signal's reason as soon as it is aborted (the port's promise). */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason)
      return
    }
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal.reason)
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/** mulberry32: a tiny seeded PRNG, so one seed always gives the same colours. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

interface Gradient {
  from: string
  to: string
  angleDeg: number
}

/** Two saturated, fairly dark colours far apart on the hue wheel, so white text stays readable on both. */
function pickGradient(seed: number): Gradient {
  const random = seededRandom(seed)
  const hue = random() * 360
  const otherHue = (hue + 90 + random() * 180) % 360
  return {
    from: `hsl(${hue.toFixed(1)}, ${(60 + random() * 30).toFixed(1)}%, ${(25 + random() * 15).toFixed(1)}%)`,
    to: `hsl(${otherHue.toFixed(1)}, ${(60 + random() * 30).toFixed(1)}%, ${(25 + random() * 15).toFixed(1)}%)`,
    angleDeg: random() * 360,
  }
}

function gradientSvg(width: number, height: number, g: Gradient): string {
  const rad = (g.angleDeg * Math.PI) / 180
  const dx = Math.cos(rad) / 2
  const dy = Math.sin(rad) / 2
  const end = (v: number) => (0.5 + v).toFixed(4)
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">` +
    `<defs><linearGradient id="g" x1="${end(-dx)}" y1="${end(-dy)}" x2="${end(dx)}" y2="${end(dy)}">` +
    `<stop offset="0" stop-color="${g.from}"/><stop offset="1" stop-color="${g.to}"/>` +
    `</linearGradient></defs><rect width="100%" height="100%" fill="url(#g)"/></svg>`
  )
}

/** Escapes the characters that XML (and so Pango markup) gives a meaning to. */
function escapeXml(text: string): string {
  return text
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&apos;')
}

/**
 * What the demo asks sharp's text renderer for: the prompt as white bold text in the shipped font, broken
 * into lines by layoutLines (Pango wraps nothing itself) and sized by Pango to fill most of the picture, so
 * it stays readable after downscaling to the panel. Undefined when there is nothing to draw.
 */
export function demoTextOptions(prompt: string, width: number, height: number): CreateText | undefined {
  const chars = [...prompt]
  const shown = chars.length > MAX_DRAWN_CHARS ? `${chars.slice(0, MAX_DRAWN_CHARS - 1).join('')}…` : prompt
  const boxWidth = Math.round(width * 0.84)
  const boxHeight = Math.round(height * 0.7)
  const lines = layoutLines(shown, boxWidth, boxHeight)
  if (lines.length === 0) return undefined
  return {
    text: `<span foreground="white">${escapeXml(lines.join('\n'))}</span>`,
    font: DEMO_FONT,
    fontfile: DEMO_FONT_FILE,
    width: boxWidth,
    height: boxHeight,
    align: 'centre',
    wrap: 'none',
    rgba: true,
  }
}

async function renderText(prompt: string, width: number, height: number): Promise<Buffer | undefined> {
  const options = demoTextOptions(prompt, width, height)
  if (options === undefined) return undefined
  try {
    const text = await sharp({ text: options }).png().toBuffer({ resolveWithObject: true })
    // A text larger than the picture cannot be composited.
    const { width: w, height: h } = text.info
    if (w < 2 || h < 2 || w > width || h > height) return undefined
    return text.data
  } catch {
    // The gradient alone still shows that the pipeline works; a demo never fails a job.
    return undefined
  }
}

async function drawPicture(r: DemoRequest): Promise<Buffer> {
  const background = Buffer.from(gradientSvg(r.width, r.height, pickGradient(r.seed)))
  const text = await renderText(r.prompt, r.width, r.height)
  const picture = sharp(background)
  if (text !== undefined) picture.composite([{ input: text, gravity: 'centre' }])
  return picture.png().toBuffer()
}
