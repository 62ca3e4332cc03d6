import { readFile } from 'node:fs/promises'

/*
 * A V8 heap snapshot (.heapsnapshot, as --heapsnapshot-signal writes it) summed by what holds the bytes:
 * each node's self size by its type and constructor or closure name, so two snapshots can be compared.
 * Strings and code are summed by type only (their names are their contents).
 */

export interface HeapSummary {
  totalBytes: number
  /** `type name` -> bytes and count. */
  groups: Map<string, { bytes: number; count: number }>
}

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } }
  nodes: number[]
  strings: string[]
}

const BY_TYPE_ONLY = new Set(['string', 'concatenated string', 'sliced string', 'code', 'number', 'symbol'])

export async function summarizeHeap(path: string): Promise<HeapSummary> {
  const snap = JSON.parse(await readFile(path, 'utf8')) as Snapshot
  const fields = snap.snapshot.meta.node_fields
  const types = snap.snapshot.meta.node_types[0]
  const width = fields.length
  const typeAt = fields.indexOf('type')
  const nameAt = fields.indexOf('name')
  const sizeAt = fields.indexOf('self_size')
  const groups = new Map<string, { bytes: number; count: number }>()
  let totalBytes = 0
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt]!]!
    const size = snap.nodes[i + sizeAt]!
    const name = BY_TYPE_ONLY.has(type) ? '' : snap.strings[snap.nodes[i + nameAt]!]!.slice(0, 60)
    const key = `${type} ${name}`.trim()
    const group = groups.get(key) ?? { bytes: 0, count: 0 }
    group.bytes += size
    group.count++
    groups.set(key, group)
    totalBytes += size
  }
  return { totalBytes, groups }
}

/** What grew from `before` to `after`, largest first: bytes and count per group. */
export function heapGrowth(
  before: HeapSummary,
  after: HeapSummary,
  top: number,
): { key: string; bytes: number; count: number }[] {
  const rows: { key: string; bytes: number; count: number }[] = []
  for (const [key, a] of after.groups) {
    const b = before.groups.get(key) ?? { bytes: 0, count: 0 }
    rows.push({ key, bytes: a.bytes - b.bytes, count: a.count - b.count })
  }
  return rows.sort((x, y) => y.bytes - x.bytes).slice(0, top)
}
