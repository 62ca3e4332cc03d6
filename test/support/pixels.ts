/** Deterministic pixel bytes that differ per pixel (and per seed), so a band from the wrong rows is noticed. */
export function noisePixels(width: number, height: number, seed = 1): Buffer {
  const buf = Buffer.alloc(width * height * 2)
  let s = seed >>> 0
  for (let i = 0; i < buf.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    buf[i] = s >>> 24
  }
  return buf
}

/** A smooth gradient, which zlib shrinks a lot (like most pictures on a panel). */
export function gradientPixels(width: number, height: number): Buffer {
  const buf = Buffer.alloc(width * height * 2)
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) buf.writeUInt16BE(((x >> 3) << 11) | ((y >> 2) << 5), (y * width + x) * 2)
  }
  return buf
}
