import { AppError } from '../errors.ts'
import type { GenerateResult, Txt2ImgPayload } from '../generator/types.ts'
import type { StatusEvent } from '../protocol/status.ts'
import type { Job } from './job.ts'

/*
 * A job whose owner waits for its result instead of watching status messages: an HTTP request. The result
 * comes as a promise that settles with the finished value, or rejects with the AppError of a failure or a
 * cancellation.
 */

export interface AwaitedJob<T> {
  job: Job
  result: Promise<T>
}

export function createAwaitedJob<T>(
  id: string,
  owner: string,
  payload: Txt2ImgPayload,
  finish: (result: GenerateResult) => Promise<T>,
): AwaitedJob<T> {
  let resolve!: (value: T) => void
  let reject!: (err: AppError) => void
  const result = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  // Nobody may be listening any more (the client went away); that is not an unhandled rejection.
  result.catch(() => {})

  const job: Job = {
    id,
    deviceId: undefined,
    owner,
    durable: false,
    payload,
    requestId: undefined,
    report(event: StatusEvent) {
      if (event.state === 'error') reject(new AppError(event.error.code, event.error.message))
      else if (event.state === 'cancelled' && event.reason === 'shutdown') {
        reject(new AppError('E_SHUTTING_DOWN', 'the bridge is stopping; send the request again later'))
      } else if (event.state === 'cancelled') {
        reject(new AppError('E_CANCELLED', `the job was cancelled (${event.reason})`))
      }
    },
    async complete(generated, ctx) {
      const value = await finish(generated)
      if (ctx.claim()) resolve(value)
    },
  }
  return { job, result }
}
