import { topicMatches } from '../protocol/topics.ts'
import { AuthFileError } from './auth-file-error.ts'

/*
 * Mosquitto ACL files (MQTT_ACL_FILE, README "Security"), with the meaning Mosquitto's built-in check gives them
 * (upstream src/security_default.c: aclfile__parse, add__acl, add__acl_pattern, mosquitto_acl_check_default):
 *
 * - `topic [read|write|readwrite|deny] FILTER` (no access word: readwrite) lines before the first `user NAME`
 *   apply to clients without a user name; after it, to that user. `pattern ...` lines apply to every client.
 * - A publish is checked as "write" on its topic; each message is checked as "read" on its topic when it is
 *   about to be delivered (also retained ones). Mosquitto's built-in check grants every SUBSCRIBE and filters
 *   per message; see canSubscribe for what we answer at subscribe time.
 * - The user's topic rules are tried first, then the patterns. Within each, a matching `deny` wins over
 *   everything; otherwise a matching rule with the access allows; otherwise the answer is no.
 * - A topic starting with `$` only matches a rule starting with `$` (so `#` never gives $SYS).
 * - Once there are patterns, a user name or client id holding `+` or `#` is refused everything past the
 *   user's own topic rules (it could otherwise widen a pattern).
 * - `%u` and `%c` stand for a whole topic level, as Mosquitto 2.1 matches them
 *   (libcommon/topic_common.c, topic_matches_sub with patterns): a name holding `/` never matches, an empty
 *   or missing one never matches, and `x%u` is literal text. Mosquitto 2.0 pasted the text in instead, which
 *   let a client id such as `pico/other` reach another display's topics through `pattern readwrite %c/#`.
 */

import { filterCovers, filtersOverlap, isValidFilter, isValidTopic } from './topic-filters.ts'

export { filterCovers, filtersOverlap, isValidFilter, isValidTopic } from './topic-filters.ts'

const ACCESS_WORDS: ReadonlySet<string> = new Set(['read', 'write', 'readwrite', 'deny'])

export type AclAccess = 'read' | 'write' | 'readwrite' | 'deny'

export interface AclRule {
  readonly access: AclAccess
  readonly filter: string
  /** Where the rule was read, for messages; 0 for rules not from a file. */
  readonly line: number
}

export interface AclWarning {
  readonly line: number
  readonly message: string
}

export interface AclFile {
  readonly file: string
  /** Topic rules before the first `user` line: clients without a user name. */
  readonly anonymous: readonly AclRule[]
  readonly users: ReadonlyMap<string, readonly AclRule[]>
  readonly patterns: readonly AclRule[]
  /** Lines Mosquitto accepts but that probably do not do what was meant. */
  readonly warnings: readonly AclWarning[]
}

/** Who is asking: the user name the client authenticated with (undefined: none) and its client id. */
export interface AclClient {
  readonly username: string | undefined
  readonly clientId: string
}

/**
 * Reads the text of an ACL file. Throws {@link AuthFileError} naming the file and line for the lines Mosquitto
 * refuses (an unknown keyword or access word, a bad filter, `user` without a name) and for a comment that does
 * not start the line (Mosquitto refuses that too: only a `#` in the first column starts a comment).
 */
export function parseAcl(text: string, file: string): AclFile {
  const anonymous: AclRule[] = []
  const users = new Map<string, AclRule[]>()
  const patterns: AclRule[] = []
  const warnings: AclWarning[] = []
  let current: AclRule[] = anonymous
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1
    const fail = (reason: string): never => {
      throw new AuthFileError(file, line, reason)
    }
    // Trailing white space goes (isspace upstream); fields are split on spaces only, as strtok_r(" ") does.
    const raw = (lines[i] ?? '').replace(/\s+$/, '')
    if (raw === '' || raw.startsWith('#')) continue
    if (raw.includes('\0')) fail('the line holds a NUL byte')
    const body = raw.replace(/^ +/, '')
    const space = body.indexOf(' ')
    const keyword = space < 0 ? body : body.slice(0, space)
    const rest = space < 0 ? '' : body.slice(space + 1).replace(/^[ \t]+/, '')
    if (keyword === 'user') {
      if (rest === '') fail('"user" needs a user name')
      const name = rest.replace(/[ \t]+$/, '')
      current = users.get(name) ?? []
      users.set(name, current)
      continue
    }
    if (keyword !== 'topic' && keyword !== 'pattern') {
      if (keyword.startsWith('#')) fail('a comment must start at the beginning of the line')
      fail(`unknown keyword ${JSON.stringify(shorten(keyword))} (expected user, topic or pattern)`)
    }
    if (rest === '') fail(`"${keyword}" needs a topic filter`)
    const split = rest.indexOf(' ')
    let access: AclAccess = 'readwrite'
    let filter = rest
    // With one word after the keyword, that word is the filter ("topic read" allows the topic "read").
    if (split >= 0) {
      const word = rest.slice(0, split)
      if (!ACCESS_WORDS.has(word)) {
        fail(`unknown access ${JSON.stringify(shorten(word))} (expected read, write, readwrite or deny)`)
      }
      access = word as AclAccess
      filter = rest.slice(split + 1).replace(/^[ \t]+/, '')
    }
    if (!isValidFilter(filter)) fail(`${JSON.stringify(shorten(filter))} is not a valid topic filter`)
    const rule: AclRule = { access, filter, line }
    if (keyword === 'topic') {
      current.push(rule)
      continue
    }
    if (!filter.includes('%u') && !filter.includes('%c')) {
      warnings.push({ line, message: 'this pattern has no %u or %c, so it applies to every client alike' })
    } else if (filter.split('/').some((l) => l !== '%u' && l !== '%c' && /%[uc]/.test(l))) {
      warnings.push({
        line,
        message: '%u and %c stand for a whole topic level; inside a level they are plain text here',
      })
    }
    patterns.push(rule)
  }
  return { file, anonymous, users, patterns, warnings }
}

function shorten(text: string): string {
  return text.length > 60 ? `${text.slice(0, 60)}...` : text
}

/** The text of an ACL file that {@link parseAcl} reads back into the same rules. */
export function formatAcl(acl: Pick<AclFile, 'anonymous' | 'users' | 'patterns'>): string {
  const out: string[] = []
  const rule = (kind: string, r: AclRule) => out.push(`${kind} ${r.access} ${r.filter}`)
  for (const r of acl.anonymous) rule('topic', r)
  for (const r of acl.patterns) rule('pattern', r)
  for (const [name, rules] of acl.users) {
    out.push(`user ${name}`)
    for (const r of rules) rule('topic', r)
  }
  return out.length > 0 ? `${out.join('\n')}\n` : ''
}

function grants(rule: AclRule, access: 'read' | 'write'): boolean {
  return rule.access === 'readwrite' || rule.access === access
}

/** A level is safe to stand in for `%u`/`%c` only if it is one whole, literal level. */
function substitutable(name: string | undefined): name is string {
  return name !== undefined && name !== '' && !/[/+#]/.test(name)
}

/**
 * A pattern with `%u`/`%c` levels replaced for this client, or null when it can match nothing for it (a
 * needed name is missing, empty or holds `/`).
 */
function resolvePattern(filter: string, who: AclClient): string | null {
  // Mosquitto skips a pattern naming %u for a client without a user name (ucount upstream).
  if (filter.includes('%u') && who.username === undefined) return null
  const levels = filter.split('/')
  const out: string[] = []
  for (const level of levels) {
    if (level === '%u' || level === '%c') {
      const name = level === '%u' ? who.username : who.clientId
      if (!substitutable(name)) return null
      out.push(name)
    } else {
      out.push(level)
    }
  }
  return out.join('/')
}

function dollarAgrees(filter: string, topic: string): boolean {
  return filter.startsWith('$') === topic.startsWith('$')
}

function dangerous(who: AclClient): boolean {
  return /[+#]/.test(who.username ?? '') || /[+#]/.test(who.clientId)
}

/** One step of the check, in the order Mosquitto walks them. */
type Step =
  | { readonly kind: 'deny'; readonly filter: string }
  | { readonly kind: 'allow'; readonly filter: string; readonly rule: AclRule }
  | { readonly kind: 'deny-all' }

/**
 * The rules for one client as the ordered list Mosquitto walks: the user's (or the anonymous block's) denies,
 * then its allows, then the patterns the same way (patterns are taken at face value when the client is
 * "dangerous", which ends the list with a refusal instead).
 */
function steps(acl: AclFile, who: AclClient): Step[] {
  const own = who.username === undefined ? acl.anonymous : acl.users.get(who.username)
  const out: Step[] = []
  const add = (rules: readonly { rule: AclRule; filter: string }[]) => {
    for (const { filter } of rules.filter((r) => r.rule.access === 'deny')) out.push({ kind: 'deny', filter })
    for (const { rule, filter } of rules.filter((r) => r.rule.access !== 'deny')) {
      out.push({ kind: 'allow', filter, rule })
    }
  }
  if (own) add(own.map((rule) => ({ rule, filter: rule.filter })))
  if (acl.patterns.length > 0) {
    if (dangerous(who)) {
      out.push({ kind: 'deny-all' })
      return out
    }
    const resolved: { rule: AclRule; filter: string }[] = []
    for (const rule of acl.patterns) {
      // The `$` rule looks at the pattern as written, before %u/%c are replaced (as upstream does).
      const filter = resolvePattern(rule.filter, who)
      if (filter !== null && filter.startsWith('$') === rule.filter.startsWith('$')) {
        resolved.push({ rule, filter })
      }
    }
    add(resolved)
  }
  return out
}

/** Mosquitto's per-topic answer: may this client write (publish) or read (receive) this topic? */
export function aclAllows(acl: AclFile, who: AclClient, topic: string, access: 'read' | 'write'): boolean {
  if (!isValidTopic(topic)) return false
  for (const step of steps(acl, who)) {
    if (step.kind === 'deny-all') return false
    if (!dollarAgrees(step.filter, topic) || !topicMatches(step.filter, topic)) continue
    if (step.kind === 'deny') return false
    if (grants(step.rule, access)) return true
  }
  return false
}

export function canPublish(acl: AclFile, who: AclClient, topic: string): boolean {
  return aclAllows(acl, who, topic, 'write')
}

/** May this message be delivered to this client? (Mosquitto checks "read" per message, retained ones too.) */
export function canRead(acl: AclFile, who: AclClient, topic: string): boolean {
  return aclAllows(acl, who, topic, 'read')
}

/**
 * Whether to grant a SUBSCRIBE. Mosquitto grants them all and filters each message with "read"; the contract
 * refuses (SUBACK 0x80) a filter that can never deliver anything. So this says no only when no topic the
 * filter matches could be read: no read rule overlaps the filter, or a deny that comes first covers all of it.
 * A granted subscription still needs {@link canRead} per message for the same deliveries as Mosquitto.
 */
export function canSubscribe(acl: AclFile, who: AclClient, filter: string): boolean {
  if (!isValidFilter(filter)) return false
  for (const step of steps(acl, who)) {
    if (step.kind === 'deny-all') return false
    if (step.kind === 'deny') {
      if (filterCovers(step.filter, filter)) return false
      continue
    }
    if (grants(step.rule, 'read') && filtersOverlap(step.filter, filter)) return true
  }
  return false
}
