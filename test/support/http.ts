import { request } from 'undici'

/**
 * One real HTTP exchange with the bridge's listener on loopback. undici's `request` sends only the headers
 * given (no Content-Type, no Accept added), so tests can play clients as bare as MicroPython's urequests.
 */
export interface HttpAnswer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  text(): string
  json<T = Record<string, unknown>>(): T
}

export interface HttpOptions {
  method?: 'GET' | 'POST' | 'DELETE' | 'HEAD'
  headers?: Record<string, string>
  /** A string or bytes are sent as they are; anything else as JSON (Content-Type only if given). */
  body?: unknown
  signal?: AbortSignal
}

export async function httpCall(port: number, path: string, options: HttpOptions = {}): Promise<HttpAnswer> {
  const { body } = options
  const payload =
    body === undefined || typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body)
  const res = await request(`http://127.0.0.1:${port}${path}`, {
    method: options.method ?? (payload === undefined ? 'GET' : 'POST'),
    headers: options.headers ?? {},
    body: payload as string | Buffer | undefined,
    signal: options.signal,
  })
  const bytes = Buffer.from(await res.body.arrayBuffer())
  return {
    status: res.statusCode,
    headers: res.headers as Record<string, string | string[] | undefined>,
    body: bytes,
    text: () => bytes.toString('utf8'),
    json: <T>() => JSON.parse(bytes.toString('utf8')) as T,
  }
}

/** The `host:port` of a URL, to check that an answer does not leak it. */
export function hostPort(url: string): string {
  return new URL(url).host
}
