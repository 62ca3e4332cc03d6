import sharp from 'sharp'

/**
 * The frame a picture should become, computed here without the bridge's code: sharp for the resize (the same
 * library, as the bridge is meant to use it) and an independent RGB565 packing with round-to-nearest.
 */
export async function expectedFrame(
  png: Buffer,
  options: { width: number; height: number; fit: 'cover' | 'contain' | 'fill'; littleEndian?: boolean },
): Promise<Buffer> {
  const { data } = await sharp(png)
    .flatten({ background: { r: 0, g: 0, b: 0 } })
    .resize(options.width, options.height, {
      fit: options.fit,
      kernel: 'lanczos3',
      background: { r: 0, g: 0, b: 0 },
    })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true })
  const out = Buffer.alloc(options.width * options.height * 2)
  for (let p = 0; p < options.width * options.height; p++) {
    const r = data[p * 3]!
    const g = data[p * 3 + 1]!
    const b = data[p * 3 + 2]!
    const word =
      (Math.floor((r * 31 + 127) / 255) << 11) |
      (Math.floor((g * 63 + 127) / 255) << 5) |
      Math.floor((b * 31 + 127) / 255)
    if (options.littleEndian) out.writeUInt16LE(word, p * 2)
    else out.writeUInt16BE(word, p * 2)
  }
  return out
}

/** Asks the fake A1111 (or any A1111) for the picture of a fixed seed, as the bridge would get it. */
export async function fetchPicture(baseUrl: string, body: Record<string, unknown>): Promise<Buffer> {
  const res = await fetch(`${baseUrl}/sdapi/v1/txt2img`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const json = (await res.json()) as { images: string[] }
  return Buffer.from(json.images[0]!, 'base64')
}
