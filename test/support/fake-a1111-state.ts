import { EventEmitter } from 'node:events'
import { makePng } from './fake-a1111-image.ts'
import { infoObject, infotext, type JobFacts, pyJson, resolveSampler } from './fake-a1111-model.ts'

/**
 * A1111's single global `shared.state` (modules/shared_state.py) and the generation loop around it: one job
 * at a time behind a FIFO queue lock (research §5.2), progress as `/sdapi/v1/progress` computes it (research
 * §2), interrupts that stop at the next step and still answer with the partial picture (research §3).
 */

export interface StateDict {
  skipped: boolean
  interrupted: boolean
  stopping_generation: boolean
  job: string
  job_count: number
  job_timestamp: string
  job_no: number
  sampling_step: number
  sampling_steps: number
}

export interface ProgressAnswer {
  progress: number
  eta_relative: number
  state: StateDict
  current_image: string | null
  textinfo: null
}

export interface Txt2ImgAnswer {
  images: string[]
  parameters: Record<string, unknown>
  info: string
}

export interface SdStateOptions {
  stepMs: number
  /** A fixed wait before the first step of every generation; 0 or absent adds nothing. */
  latencyMs?: number
  noise: boolean
  /** `opts.show_progress_every_n_steps`, 10 by default in shared_options.py. */
  showProgressEveryNSteps: number
  /** Aborted when the fake closes: sleeping steps end at once. */
  closed: AbortSignal
}

/** `%Y%m%d%H%M%S` in local time, as `State.begin()` stamps jobs. */
function timestamp(now: Date): string {
  const two = (n: number) => String(n).padStart(2, '0')
  return `${now.getFullYear()}${two(now.getMonth() + 1)}${two(now.getDate())}${two(now.getHours())}${two(now.getMinutes())}${two(now.getSeconds())}`
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

export function createSdState(options: SdStateOptions) {
  const events = new EventEmitter()
  const state: StateDict = {
    skipped: false,
    interrupted: false,
    stopping_generation: false,
    job: '',
    job_count: 0,
    // "0" on a fresh server (research §2).
    job_timestamp: '0',
    job_no: 0,
    sampling_step: 0,
    sampling_steps: 0,
  }
  let timeStart = 0
  let previewEvery = options.showProgressEveryNSteps
  let previewStep = 0
  let preview: Promise<Buffer> | undefined
  let previewSeed = 0
  let previewSize = { width: 512, height: 512 }
  let queue: Promise<unknown> = Promise.resolve()
  /** Ends the fixed latency wait early (an interrupt), while one is running. */
  let wakeFromLatency: (() => void) | undefined

  /** `State.begin()`: resets the flags, so an interrupt sent while idle or queued is lost (research §3). */
  function begin(): void {
    Object.assign(state, {
      sampling_step: 0,
      job_count: -1,
      job_no: 0,
      job_timestamp: timestamp(new Date()),
      skipped: false,
      interrupted: false,
      stopping_generation: false,
      job: 'scripts_txt2img',
    })
    previewStep = 0
    preview = undefined
    timeStart = performance.now()
    events.emit('begin', { ...state })
  }

  /** `State.end()` clears only job and job_count; job_no, sampling_steps and the flags stay (research §2). */
  function end(): void {
    state.job = ''
    state.job_count = 0
    events.emit('end', { ...state })
  }

  /** `set_current_image()`: a new preview once `show_progress_every_n_steps` steps have passed. */
  function refreshPreview(): void {
    if (previewEvery === -1 || state.sampling_step - previewStep < previewEvery) return
    previewStep = state.sampling_step
    const done = state.sampling_steps > 0 ? state.sampling_step / state.sampling_steps : 0
    preview = makePng({ seed: previewSeed, ...previewSize, noise: false, done, fast: true })
  }

  /** `progressapi`, formula and all, including the +0.01 offset (research §2). */
  async function progress(skipCurrentImage: boolean): Promise<ProgressAnswer> {
    const snapshot = { ...state }
    if (state.job_count === 0) {
      return { progress: 0, eta_relative: 0, state: snapshot, current_image: null, textinfo: null }
    }
    let value = 0.01
    if (state.job_count > 0) value += state.job_no / state.job_count
    if (state.sampling_steps > 0)
      value += ((1 / state.job_count) * state.sampling_step) / state.sampling_steps
    const elapsedS = (performance.now() - timeStart) / 1000
    const etaRelative = elapsedS / value - elapsedS
    if (!skipCurrentImage) refreshPreview()
    const image = skipCurrentImage || preview === undefined ? null : (await preview).toString('base64')
    return {
      progress: Math.min(value, 1),
      eta_relative: etaRelative,
      state: snapshot,
      current_image: image,
      textinfo: null,
    }
  }

  /** `shared.state.interrupt()`: the next step raises InterruptedException inside the sampler. */
  function interrupt(): void {
    state.interrupted = true
    wakeFromLatency?.()
    events.emit('interrupt', { ...state })
  }

  /**
   * The batch loop of `process_images_inner`. An interrupt ends sampling at the next step, the batch is still
   * decoded and `nextjob()` still runs; only the next batch sees the flag and stops (research §3).
   * Returns how many batches started and how far the last one got (0..1).
   */
  async function sample(steps: number, batches: number): Promise<{ started: number; done: number }> {
    state.job_count = batches
    state.sampling_steps = steps
    await latency()
    let started = 0
    let done = 0
    for (let n = 0; n < batches; n++) {
      if (state.interrupted || options.closed.aborted) break
      if (batches > 1) state.job = `Batch ${n + 1} out of ${batches}`
      started++
      let stepsDone = 0
      for (let step = 0; step < steps; step++) {
        if (state.interrupted || options.closed.aborted) break
        if (options.stepMs > 0) await sleep(options.stepMs, options.closed)
        // callback_state: sampling_step is the 0-based index of the step just done.
        state.sampling_step = step
        stepsDone++
        events.emit('step', { ...state })
      }
      done = stepsDone / Math.max(1, steps)
      // nextjob(): job_no moves on and the step count starts again.
      state.job_no++
      state.sampling_step = 0
      previewStep = 0
    }
    return { started, done }
  }

  /** The fixed `latencyMs` wait; an interrupt or close() ends it at once, and the steps then stop too. */
  async function latency(): Promise<void> {
    const ms = options.latencyMs ?? 0
    if (ms <= 0 || state.interrupted) return
    const wake = new AbortController()
    wakeFromLatency = () => wake.abort()
    try {
      await sleep(ms, AbortSignal.any([options.closed, wake.signal]))
    } finally {
      wakeFromLatency = undefined
    }
  }

  async function generate(parameters: Record<string, unknown>): Promise<Txt2ImgAnswer> {
    begin()
    try {
      const override = (parameters.override_settings ?? {}) as Record<string, unknown>
      previewEvery =
        typeof override.show_progress_every_n_steps === 'number'
          ? override.show_progress_every_n_steps
          : options.showProgressEveryNSteps
      const asked = parameters.seed as number
      // get_fixed_seed: -1 draws from [0, 4294967294).
      const seed = asked === -1 || asked === null ? Math.floor(Math.random() * 4294967294) : asked
      const subseed = Math.floor(Math.random() * 4294967294)
      const width = (parameters.width as number) ?? 512
      const height = (parameters.height as number) ?? 512
      const steps = (parameters.steps as number) ?? 50
      const batchSize = (parameters.batch_size as number) ?? 1
      previewSeed = seed
      previewSize = { width, height }
      const { started, done } = await sample(steps, (parameters.n_iter as number) ?? 1)
      // Closing: nobody is left to answer, so no pictures are encoded after close() resolved.
      if (options.closed.aborted) throw new Error('the fake A1111 is closed')
      const facts: JobFacts = {
        parameters,
        seed,
        subseed,
        sampler: resolveSampler(parameters),
        images: Math.max(1, started) * batchSize,
        timestamp: state.job_timestamp,
      }
      const images: string[] = []
      if (parameters.send_images !== false) {
        for (let i = 0; i < facts.images; i++) {
          const text = infotext(facts, i)
          const png = await makePng({
            seed: seed + i,
            width,
            height,
            noise: options.noise,
            done,
            infotext: text,
          })
          images.push(png.toString('base64'))
        }
      }
      return { images, parameters, info: pyJson(infoObject(facts), { compact: false }) }
    } finally {
      previewEvery = options.showProgressEveryNSteps
      end()
    }
  }

  /**
   * `queue_lock` is a FIFOLock: requests are accepted at once, then run one at a time in order. `onBegin`
   * runs as the job takes the lock (the API's `start_task`).
   */
  function enqueue(parameters: Record<string, unknown>, onBegin?: () => void): Promise<Txt2ImgAnswer> {
    const run = queue.then(() => {
      onBegin?.()
      return generate(parameters)
    })
    queue = run.catch(() => undefined)
    return run
  }

  return { events, progress, interrupt, enqueue, state: (): StateDict => ({ ...state }) }
}

export type SdState = ReturnType<typeof createSdState>
