/*
 * Where the demo picture's lines break. Pango's own wrapping ("word-char") broke words wherever that let it
 * pick a larger font: "monk-/ey", "base6/4" (issue 13). The demo breaks the lines itself and hands Pango text
 * that is already broken: between words, and inside a word only when the word is longer than a line.
 *
 * Pure: plain strings in and out. Lengths are counted in code points, so "é" or "🦊" is one character.
 */

/** No line is longer than this, whatever the prompt: a longer word is hyphenated. */
export const MAX_LINE_CHARS = 24
/** The narrowest line tried for a prompt of words that are all longer than MAX_LINE_CHARS. */
const MIN_LINE_CHARS = 8

/**
 * DejaVu Sans Bold, the demo's font, in ems: a character is about 0.7 wide on average and a line is about
 * 1.17 high. Only the choice between line widths uses these; Pango then sizes the real text to fit the box.
 */
const CHAR_WIDTH_EM = 0.7
const LINE_HEIGHT_EM = 1.17

const length = (s: string) => [...s].length

/**
 * Breaks `text` into lines of at most `lineChars` characters. Lines break at spaces; a word longer than a
 * line is cut into pieces of `lineChars - 1` characters, each but the last followed by a hyphen. Runs of
 * white space count as one space.
 */
export function breakLines(text: string, lineChars: number): string[] {
  const width = Math.max(2, Math.floor(lineChars))
  const lines: string[] = []
  let line = ''
  for (let word of text.split(/\s+/).filter((w) => w !== '')) {
    if (length(word) > width) {
      if (line !== '') lines.push(line)
      let chars = [...word]
      while (chars.length > width) {
        lines.push(`${chars.slice(0, width - 1).join('')}-`)
        chars = chars.slice(width - 1)
      }
      word = chars.join('')
      line = word
    } else if (line === '') {
      line = word
    } else if (length(line) + 1 + length(word) <= width) {
      line = `${line} ${word}`
    } else {
      lines.push(line)
      line = word
    }
  }
  if (line !== '') lines.push(line)
  return lines
}

/**
 * The lines that let `text` be drawn largest in a box of `widthPx` x `heightPx`. Every line width is tried
 * from the longest word that fits in MAX_LINE_CHARS up, so only a word longer than MAX_LINE_CHARS is ever
 * hyphenated.
 */
export function layoutLines(text: string, widthPx: number, heightPx: number): string[] {
  const words = text.split(/\s+/).filter((w) => w !== '')
  if (words.length === 0) return []
  const fitting = words.map(length).filter((n) => n <= MAX_LINE_CHARS)
  const total = length(words.join(' '))
  const narrowest = fitting.length > 0 ? Math.max(2, ...fitting) : MIN_LINE_CHARS
  const widest = Math.max(narrowest, Math.min(total, MAX_LINE_CHARS))
  let best: string[] = breakLines(text, narrowest)
  let bestEm = 0
  for (let chars = narrowest; chars <= widest; chars++) {
    const lines = breakLines(text, chars)
    const longest = Math.max(...lines.map(length))
    const em = Math.min(widthPx / (longest * CHAR_WIDTH_EM), heightPx / (lines.length * LINE_HEIGHT_EM))
    // Strictly larger only: of equal sizes the narrowest, which gives the most even lines.
    if (em > bestEm) {
      best = lines
      bestEm = em
    }
  }
  return best
}
