/*
 * Which connected clients subscribed with which filters, kept current from Aedes' subscribe, unsubscribe and
 * disconnect events, so that a frame visits only the clients whose filters can match its topic (issue 14:
 * walking every client's subscriptions cost 29 ms a frame with 5,000 idle displays connected). Filters
 * without wildcards, nearly all of them (a display subscribes to its own frame and status topics), are
 * looked up by the topic itself; the few with `+` or `#` sit in a tree by level.
 *
 * The index holds references only: the filter strings are the ones Aedes keys the client's subscriptions by,
 * and the QoS stays on Aedes' client object, read when a frame goes out.
 */

/** One subscriber or several: most filters have one client, and a bare reference costs nothing to keep. */
type Holders<C> = C | Set<C>

interface WildNode<C> {
  children: Map<string, WildNode<C>> | undefined
  clients: Holders<C> | undefined
}

export interface SubscriptionIndex<C extends object> {
  /** Records that `client` holds `filter`; returns false when it did already. */
  add(client: C, filter: string): boolean
  /** Forgets one filter of a client; returns false when it did not hold it. */
  remove(client: C, filter: string): boolean
  /** Forgets a client and every filter it held; returns those filters. */
  drop(client: C): string[]
  /** Calls `visit` once for each (client, filter) pair whose filter matches `topic`. */
  match(topic: string, visit: (client: C, filter: string) => void): void
  /** The filters a client holds (empty for one the index does not know). */
  filtersOf(client: C): readonly string[]
  /** Clients the index knows (those holding at least one filter). */
  size(): number
}

export function createSubscriptionIndex<C extends object>(): SubscriptionIndex<C> {
  const exact = new Map<string, Holders<C>>()
  const wild: WildNode<C> = { children: undefined, clients: undefined }
  // Per client its filters, as an array: a display holds two, and an array of two is the cheapest set.
  const byClient = new Map<C, string[]>()

  function nodeOf(filter: string, create: boolean): WildNode<C> | undefined {
    let node = wild
    for (const level of filter.split('/')) {
      let next = node.children?.get(level)
      if (!next) {
        if (!create) return undefined
        next = { children: undefined, clients: undefined }
        node.children ??= new Map()
        node.children.set(level, next)
      }
      node = next
    }
    return node
  }

  function holdersOf(filter: string): Holders<C> | undefined {
    return isWild(filter) ? nodeOf(filter, false)?.clients : exact.get(filter)
  }

  function setHolders(filter: string, holders: Holders<C> | undefined): void {
    if (!isWild(filter)) {
      if (holders === undefined) exact.delete(filter)
      else exact.set(filter, holders)
      return
    }
    const node = nodeOf(filter, holders !== undefined)
    if (node) node.clients = holders
    if (holders === undefined) prune(filter)
  }

  /** Removes the empty nodes a filter leaves behind, deepest first. */
  function prune(filter: string): void {
    const levels = filter.split('/')
    const path: WildNode<C>[] = [wild]
    for (const level of levels) {
      const next = path.at(-1)!.children?.get(level)
      if (!next) return
      path.push(next)
    }
    for (let i = levels.length; i > 0; i--) {
      const node = path[i]!
      if (node.clients !== undefined || (node.children && node.children.size > 0)) return
      const parent = path[i - 1]!
      parent.children!.delete(levels[i - 1]!)
      if (parent.children!.size === 0) parent.children = undefined
    }
  }

  function visitHolders(holders: Holders<C> | undefined, filter: string, visit: (c: C, f: string) => void) {
    if (holders === undefined) return
    if (holders instanceof Set) for (const c of holders) visit(c, filter)
    else visit(holders, filter)
  }

  /** Walks the wildcard tree: at each level the literal child, `+`, and `#` (which also matches the parent). */
  function walk(
    node: WildNode<C>,
    levels: string[],
    i: number,
    path: string[],
    visit: (c: C, f: string) => void,
  ) {
    const children = node.children
    if (i === levels.length) {
      if (node.clients !== undefined && path.length > 0) visitHolders(node.clients, path.join('/'), visit)
    }
    if (!children) return
    const hash = children.get('#')
    if (hash?.clients !== undefined) visitHolders(hash.clients, [...path, '#'].join('/'), visit)
    if (i === levels.length) return
    const literal = children.get(levels[i]!)
    if (literal) walk(literal, levels, i + 1, [...path, levels[i]!], visit)
    const plus = children.get('+')
    if (plus) walk(plus, levels, i + 1, [...path, '+'], visit)
  }

  return {
    add(client, filter) {
      const held = byClient.get(client)
      if (held?.includes(filter)) return false
      // A new array of exactly the length: a pushed-to array reserves 17 slots (200 bytes for a display's two).
      byClient.set(client, held ? held.concat(filter) : [filter])
      const holders = holdersOf(filter)
      if (holders === undefined) setHolders(filter, client)
      else if (holders instanceof Set) holders.add(client)
      else setHolders(filter, new Set([holders, client]))
      return true
    },
    remove(client, filter) {
      const held = byClient.get(client)
      const at = held?.indexOf(filter) ?? -1
      if (!held || at < 0) return false
      held.splice(at, 1)
      if (held.length === 0) byClient.delete(client)
      const holders = holdersOf(filter)
      if (holders instanceof Set) {
        holders.delete(client)
        if (holders.size === 1) setHolders(filter, holders.values().next().value)
      } else if (holders === client) {
        setHolders(filter, undefined)
      }
      return true
    },
    drop(client) {
      const held = [...(byClient.get(client) ?? [])]
      for (const filter of held) this.remove(client, filter)
      return held
    },
    match(topic, visit) {
      visitHolders(exact.get(topic), topic, visit)
      if (wild.children === undefined) return
      // MQTT 3.1.1 section 4.7.2: a filter that begins with a wildcard does not match a `$` topic.
      const levels = topic.split('/')
      if (topic.startsWith('$')) {
        const first = wild.children.get(levels[0]!)
        if (first) walk(first, levels, 1, [levels[0]!], visit)
        return
      }
      walk(wild, levels, 0, [], visit)
    },
    filtersOf: (client) => byClient.get(client) ?? [],
    size: () => byClient.size,
  }
}

function isWild(filter: string): boolean {
  return filter.includes('+') || filter.includes('#')
}
