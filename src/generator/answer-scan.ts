import { AppError } from '../errors.ts'
import { decodeBase64Bytes } from './base64.ts'
import {
  DEFAULT_LIMITS,
  type JsonLimits,
  type JsonScan,
  type JsonShape,
  type Span,
  scanJson,
} from './json-scan.ts'

export { decodeBase64 } from './base64.ts'
export {
  DEFAULT_LIMITS,
  type JsonLimits,
  type JsonScan,
  type JsonShape,
  type Span,
  scanJson,
} from './json-scan.ts'

/*
 * Reading an A1111 answer from its bytes, in two steps: a scan that checks the JSON grammar and bounds the
 * shape without building anything (json-scan.ts), then the few parts the bridge needs, here. Only `parameters`
 * and `info` go through JSON.parse; the pictures are sliced out of the bytes. Pure: the worker thread
 * (answer-worker.ts) and the main thread share it.
 */

/** The parts of a txt2img or img2img answer (`{images, parameters, info}`) the bridge uses. */
export interface ImageAnswerParts {
  /** The first picture in `images`, decoded from base64 (PNG from A1111 by default). */
  image: Buffer
  /** The base64 text of every string in `images`, the first one included, as bytes; not decoded. */
  images: Buffer[]
  /** The request as A1111 understood it, parsed; undefined when absent. */
  parameters: unknown
  /** As given: A1111 sends a JSON string (parse it with seedFromInfo, a1111-info.ts); undefined when absent. */
  info: unknown
  shape: JsonShape
}

/**
 * Reads a txt2img/img2img answer without parsing its pictures: the scan finds `images`, the first one is
 * decoded straight from the bytes, and only `parameters` and `info` go through JSON.parse.
 *
 * @throws AppError E_A1111_BAD_RESPONSE (not JSON, hostile shape, not an object), E_A1111_NO_IMAGE (no
 *   picture in `images`) or E_BAD_IMAGE (the first picture is not base64).
 */
export function readImageParts(bytes: Buffer, limits: JsonLimits = DEFAULT_LIMITS): ImageAnswerParts {
  const scan = scanJson(bytes, limits, 'images')
  if (!scan.isObject) {
    throw new AppError('E_A1111_BAD_RESPONSE', 'A1111 answered with JSON that is not an object', {
      details: { ...scan.shape },
    })
  }
  const images = scan.collected.map((span) => stringBytes(bytes, span, 'images'))
  const first = images[0]
  if (first === undefined) {
    throw new AppError(
      'E_A1111_NO_IMAGE',
      'A1111 answered without any picture: is "send_images" false, or did a script drop the output? ' +
        "See A1111's console",
    )
  }
  const image = decodeBase64Bytes(first)
  if (image === undefined) {
    throw new AppError('E_BAD_IMAGE', 'A1111 sent a picture that is not valid base64', {
      details: { length: first.length, start: first.toString('latin1', 0, 16) },
    })
  }
  return {
    image,
    images,
    parameters: member(bytes, scan, 'parameters'),
    info: member(bytes, scan, 'info'),
    shape: scan.shape,
  }
}

/**
 * Scans, then parses the whole answer: for the small ones (options, progress, sd-models).
 *
 * @throws AppError E_A1111_BAD_RESPONSE when it is not JSON or not a shape A1111 sends.
 */
export function readJsonValue(bytes: Buffer, limits: JsonLimits = DEFAULT_LIMITS): unknown {
  scanJson(bytes, limits)
  return parseSlice(bytes, 0, bytes.length, 'the answer')
}

/** The bytes of a string value: a view into the body, or its unescaped copy when it holds escapes. */
function stringBytes(bytes: Buffer, span: Span, where: string): Buffer {
  if (!span.escaped) return bytes.subarray(span.start + 1, span.end - 1)
  return Buffer.from(parseSlice(bytes, span.start, span.end, where) as string, 'latin1')
}

function member(bytes: Buffer, scan: JsonScan, key: string): unknown {
  const span = scan.members.get(key)
  return span === undefined ? undefined : parseSlice(bytes, span.start, span.end, `"${key}"`)
}

function parseSlice(bytes: Buffer, start: number, end: number, where: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8', start, end))
  } catch (err) {
    // The scan checked the grammar; what is left is a bad escape or a raw control character in a string.
    throw new AppError('E_A1111_BAD_RESPONSE', `A1111's answer is not JSON: a bad string in ${where}`, {
      cause: err,
      details: { at: start, bytes: bytes.length },
    })
  }
}
