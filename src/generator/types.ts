/**
 * The generator port: something that turns a txt2img request into a picture. The A1111 client and the demo
 * generator implement it; the queue runs one job at a time on each.
 */

/**
 * An A1111 txt2img body. Prompts from MQTT are mapped to it; the HTTP passthrough forwards the documented
 * fields of its clients' bodies. The A1111 client adds the task id it follows the job by (`force_task_id`).
 */
export type Txt2ImgPayload = Record<string, unknown> & { prompt?: unknown; [KEEP_UPSTREAM_IMAGES]?: boolean }

/**
 * Set to true on a payload whose caller gives A1111's pictures back as base64 (the HTTP passthrough's JSON
 * mode): only then does `upstream.images` hold them. Keeping 660 KB of text per frame that nobody reads cost
 * every MQTT frame memory and garbage collections (issue 14). A symbol, so it is never sent to A1111.
 */
export const KEEP_UPSTREAM_IMAGES: unique symbol = Symbol('keep upstream images')

export interface GenerateProgress {
  /** 0..1 */
  progress: number
  /** Seconds left, when the server knows. */
  etaS: number | undefined
  /** An intermediate picture (PNG or another format sharp reads), when the server has one. */
  preview: Buffer | undefined
}

export interface GenerateHooks {
  /** Aborted when the job is cancelled or superseded: the generator stops the work on its server. */
  signal: AbortSignal
  onProgress?: (p: GenerateProgress) => void
  /**
   * Settles once the job is on disk (a prompt's journal write and fsync). A generator may look at its server
   * before (A1111's own-job snapshot, where the server does not follow jobs by task id), but sends the work
   * only after it resolves, and gives up with its error if it rejects. Undefined: nothing to wait for.
   */
  recorded?: Promise<void> | undefined
}

export interface GenerateResult {
  /** The first picture, as encoded bytes (PNG from A1111 by default). */
  image: Buffer
  /** The seed actually used (A1111's `info.seed`), or -1 when the server does not say. */
  seed: number
  /**
   * The A1111 answer as received, for the HTTP passthrough's JSON mode; `images` is empty unless the payload
   * set KEEP_UPSTREAM_IMAGES.
   */
  upstream: { images: string[]; parameters: unknown; info: unknown }
}

export interface Generator {
  /** A short name for logs and health (never a password; may be the server's address). */
  readonly name: string
  /**
   * Runs one generation. Rejects with an AppError whose code says what went wrong; when `hooks.signal` is
   * aborted it rejects with the signal's reason after stopping the work upstream.
   */
  generate(payload: Txt2ImgPayload, hooks: GenerateHooks): Promise<GenerateResult>
  /** Answers quickly whether the server is there (for health); rejects with an AppError if not. */
  check(): Promise<void>
  /** Releases connections. Idempotent. */
  close(): Promise<void>
}
