import type { FastifyInstance } from 'fastify'
import { AppError } from '../errors.ts'
import { panelPixelsToPng } from '../image/convert.ts'
import type { PanelProfile } from '../image/panel.ts'
import type { DeviceInfo } from '../jobs/device-registry.ts'
import type { Intake } from '../jobs/intake.ts'
import type { JobQueue, JobView } from '../jobs/job.ts'
import { parseDeviceId } from '../protocol/device-id.ts'
import { parsePromptJson } from '../protocol/prompt.ts'
import { rounded } from '../protocol/status.ts'
import type { FrameStore } from '../store/frame-store.ts'
import { sendError } from './errors.ts'

/*
 * An HTTP door to the devices, for automations that do not speak MQTT (Home Assistant's rest_command, a
 * cron job, a dashboard): queue a prompt for a device, follow or cancel the job, list the devices and fetch
 * a device's last picture as PNG (Home Assistant's image entity can take it by URL).
 */

export interface DevicesDeps {
  intake: Intake
  queue: JobQueue
  store: FrameStore
  devices(): DeviceInfo[]
  /** One of them, looked up alone. */
  device(deviceId: string): DeviceInfo | undefined
  /** The panel a display's frames are made for (frame.png shows its palette's inks). */
  panelOf?(deviceId: string): PanelProfile
  /** Forgets a display: its last frame, its entry in the list, its Home Assistant device. False if unknown. */
  forgetDevice?(deviceId: string): Promise<boolean>
}

/** Route schemas (Fastify validates them; a failure is E_BAD_REQUEST). The id's own rule is device-id.ts. */
const DEVICE_PARAMS = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 64 } },
} as const
const JOB_PARAMS = {
  type: 'object',
  required: ['job'],
  properties: { job: { type: 'string', minLength: 1, maxLength: 64 } },
} as const
/** The prompt's fields are checked by parsePromptJson, whose messages name each one (E_BAD_PROMPT). */
const PROMPT_ROUTE = { schema: { params: DEVICE_PARAMS, body: { type: 'object' } } } as const
const DEVICE_ROUTE = { schema: { params: DEVICE_PARAMS } } as const
const JOB_ROUTE = { schema: { params: JOB_PARAMS } } as const

export function registerDeviceRoutes(app: FastifyInstance, deps: DevicesDeps): void {
  app.post('/api/v1/devices/:id/prompt', PROMPT_ROUTE, async (request, reply) => {
    const id = deviceId(request.params)
    const prompt = parsePromptJson(request.body)
    // 202 promises the job will run, after a crash too: submitPrompt resolves once it is on disk.
    const job = await deps.intake.submitPrompt(id, prompt, { remote: request.ip })
    return reply.code(202).send({ job: job.id, device: id, status_url: `/api/v1/jobs/${job.id}` })
  })

  app.get('/api/v1/jobs/:job', JOB_ROUTE, async (request, reply) => {
    const view = deps.queue.view((request.params as { job: string }).job)
    if (!view) return sendError(reply, notFound('job'))
    return reply.send(describeJob(view))
  })

  app.delete('/api/v1/jobs/:job', JOB_ROUTE, async (request, reply) => {
    const jobId = (request.params as { job: string }).job
    const view = deps.queue.view(jobId)
    if (!view) return sendError(reply, notFound('job'))
    if (!deps.queue.cancel(jobId, 'requested')) {
      return sendError(
        reply,
        new AppError('E_JOB_FINISHED', `job ${jobId} has already finished (${view.state})`),
      )
    }
    return reply.send(describeJob(deps.queue.view(jobId)!))
  })

  app.get('/api/v1/devices', async (_request, reply) => reply.send({ devices: deps.devices() }))

  app.delete('/api/v1/devices/:id', DEVICE_ROUTE, async (request, reply) => {
    const id = deviceId(request.params)
    if (!(await deps.forgetDevice?.(id))) return sendError(reply, notFound('device'))
    // A display that is still connected comes back the next time it sends something.
    return reply.send({ device: id, forgotten: true })
  })

  app.get('/api/v1/devices/:id/frame.png', DEVICE_ROUTE, async (request, reply) => {
    const id = deviceId(request.params)
    const frame = await deps.store.read(id)
    if (!frame) return sendError(reply, new AppError('E_NOT_FOUND', `device ${id} has no picture yet`))
    // As the panel shows it: an indexed frame in the panel's inks (its palette, if the format is still its own).
    const panel = deps.panelOf?.(id)
    const palette = panel?.format === frame.format ? panel.palette : undefined
    const png = await panelPixelsToPng(frame.pixels, { ...frame, palette })
    return reply
      .type('image/png')
      .header('cache-control', 'no-cache')
      .header('last-modified', new Date(frame.finishedAt).toUTCString())
      .header('x-frame-id', String(frame.frameId))
      .send(png)
  })
}

function deviceId(params: unknown): string {
  const parsed = parseDeviceId((params as { id: string }).id)
  if (!parsed.ok) throw new AppError('E_BAD_REQUEST', parsed.message)
  return parsed.id
}

function notFound(what: string): AppError {
  return new AppError('E_NOT_FOUND', `no such ${what} (finished jobs are kept for a while, then forgotten)`)
}

/** A job as the HTTP API shows it: its state, and the fields of its latest status message. */
function describeJob(view: JobView): Record<string, unknown> {
  const { state: _state, ...last } = view.last ? rounded(view.last) : {}
  const body: Record<string, unknown> = {
    job: view.id,
    device: view.deviceId ?? null,
    state: view.state,
    position: view.position ?? null,
    ...last,
  }
  if (view.requestId !== undefined) body.request_id = view.requestId
  return body
}
