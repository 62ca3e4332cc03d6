import { AppError } from '../errors.ts'
import { isDeviceId } from '../protocol/device-id.ts'
import { type PromptRequest, parsePromptJson } from '../protocol/prompt.ts'

/*
 * The line format of the job journal (job-journal.ts): one JSON object a line, `{op:'add', job}` when a job is
 * promised and `{op:'end', id}` when it is over. Reading a line checks it as input like any other (issue 13,
 * "Files in DATA_DIR are trusted"): a line that is not what the bridge writes is refused with a reason that
 * names fields, never the prompt text.
 */

export interface JournalJob {
  id: string
  deviceId: string
  /** The validated prompt, as the job was created from it. */
  prompt: PromptRequest
  createdAt: string
}

export type JournalLine = { op: 'add'; job: JournalJob } | { op: 'end'; id: string }

/** Job ids come from newJobId (12 hex digits); a line with anything else was not written by the bridge. */
const JOB_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

/** One line of the journal, newline included. */
export function journalLine(line: JournalLine): string {
  return `${JSON.stringify(line)}\n`
}

/** The journal's prompt fields and their names in the JSON form that the prompt schema checks. */
const PROMPT_FIELDS = {
  prompt: 'prompt',
  negativePrompt: 'negative_prompt',
  seed: 'seed',
  steps: 'steps',
  cfgScale: 'cfg_scale',
  samplerName: 'sampler_name',
  width: 'width',
  height: 'height',
  fit: 'fit',
  dither: 'dither',
  requestId: 'request_id',
  preview: 'preview',
} as const satisfies Record<keyof PromptRequest, string>

/**
 * Checks a journaled prompt with the same schema as a prompt from a device, so a line can never run what a
 * device could not have sent. The reason names fields, never the prompt text.
 */
function promptFromJournal(raw: unknown): PromptRequest | { reason: string } {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    return { reason: 'prompt is not an object' }
  const json: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(raw)) {
    const name = PROMPT_FIELDS[key as keyof PromptRequest]
    if (name === undefined)
      return { reason: `prompt has an unknown field ${JSON.stringify(key.slice(0, 40))}` }
    json[name] = value
  }
  try {
    return parsePromptJson(json)
  } catch (err) {
    return { reason: `prompt: ${err instanceof AppError ? err.message : 'not valid'}` }
  }
}

/** Reads and checks one line of the journal (without its newline). */
export function readJournalLine(raw: string): { line: JournalLine } | { reason: string } {
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    // JSON.parse's message quotes the line, which may hold prompt text: say only what is wrong.
    return { reason: 'not JSON' }
  }
  if (typeof parsed !== 'object' || parsed === null) return { reason: 'not a journal line' }
  const line = parsed as { op?: unknown; id?: unknown; job?: unknown }
  if (line.op === 'end') {
    return typeof line.id === 'string'
      ? { line: { op: 'end', id: line.id } }
      : { reason: 'end without a job id' }
  }
  if (line.op !== 'add') return { reason: 'not a journal line' }
  if (typeof line.job !== 'object' || line.job === null) return { reason: 'add without a job' }
  const job = line.job as { id?: unknown; deviceId?: unknown; prompt?: unknown; createdAt?: unknown }
  if (typeof job.id !== 'string' || !JOB_ID_PATTERN.test(job.id)) return { reason: 'job id is not valid' }
  // The device id names a file in DATA_DIR and a topic level: `../../x` must never get that far.
  if (typeof job.deviceId !== 'string' || !isDeviceId(job.deviceId)) {
    return { reason: 'device id is not valid: 1-64 letters, digits, _ or - (and not "bridge")' }
  }
  if (typeof job.createdAt !== 'string' || Number.isNaN(Date.parse(job.createdAt)))
    return { reason: 'createdAt is not a date' }
  const prompt = promptFromJournal(job.prompt)
  if ('reason' in prompt) return prompt
  return {
    line: { op: 'add', job: { id: job.id, deviceId: job.deviceId, prompt, createdAt: job.createdAt } },
  }
}
