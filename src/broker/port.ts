/*
 * What the daemon needs from MQTT, whichever broker carries it: messages devices send to the bridge (with an
 * acknowledgement that waits for the journal), retained status, frames to a device's subscribers, who is
 * connected, and the bridge's own state. The embedded Aedes broker (embedded.ts) is the first adapter.
 */

import type { InboundKind } from '../protocol/topics.ts'

export type { InboundKind } from '../protocol/topics.ts'

export interface InboundMessage {
  kind: InboundKind
  /** The device the topic names, or null when the topic's id breaks the device-id rule (`rawId` has it). */
  deviceId: string | null
  rawId: string
  payload: Buffer
  /** The MQTT client that sent it, for logs and for sending a frame to the one who asked. */
  clientId: string
  /** The sender's address, when the broker knows it: the prompt rate limit counts per address too. */
  remote?: string | undefined
  /** The broker sent it before (MQTT DUP flag): a prompt taken already is not taken again. */
  redelivered?: boolean
}

export interface BrokerHandlers {
  /**
   * A message on a topic the bridge reads. The broker acknowledges it (the QoS 1 PUBACK) only once the
   * promise settles, so what the handler records is on disk before the sender hears it arrived.
   */
  inbound(msg: InboundMessage): Promise<void>
  /** A client's new subscription covers a device's frame topic: it should get the last frame once. */
  frameSubscribed(deviceId: string, clientId: string): void
}

export interface FrameTarget {
  /** Only this client, when the broker can tell it is subscribed (everyone subscribed otherwise). */
  onlyClientId?: string | undefined
  /** The frame's identity: a resend is not queued again for a client still receiving the same frame. */
  tag?: string | undefined
}

export interface BrokerReport {
  kind: 'embedded' | 'external'
  clients: number
  queued_chunks: number
  /** External: the broker's URL without its password, whether the link is up, what it speaks, this bridge. */
  url?: string
  connected?: boolean
  protocol?: 4 | 5
  client_id?: string
  /** Who may connect (the embedded broker's): open, an ACL file only, or the users of a password file. */
  access?: 'open' | 'acl' | 'password'
  /** Whether clients without a user name may connect. */
  anonymous?: boolean
  /** The real port of each listener, null when it is off. */
  listeners?: { mqtt: number | null; mqtts: number | null; ws: number | null }
  /** The embedded broker's persistent sessions and what their queues hold (persistent-sessions.ts). */
  sessions?: {
    persistent_sessions: number
    sessions: number
    messages: number
    bytes: number
    dropped: number
  }
}

/** The ports a broker listens on; the TLS and WebSocket ones only when set. */
export interface ListeningPorts {
  port: number
  tlsPort?: number
  wsPort?: number
}

export interface BrokerPort {
  /** Ready to publish (retained status is kept for later subscribers) but not yet taking connections. */
  open(handlers: BrokerHandlers): Promise<void>
  /** Takes connections; the port is the real one when the settings said 0. */
  listen(): Promise<ListeningPorts>
  /** Stops taking connections, lets clients read what was written, and closes. */
  close(): Promise<void>
  /**
   * The bridge is stopping: where other bridges share the prompts (an external broker's shared
   * subscriptions), leave the group so the broker hands new prompts to them. Resolves once every prompt sent
   * before is in line. Cancels still come, for the jobs this bridge holds.
   */
  stopTaking?(): Promise<void>
  /** Publishes a device's status, retained, so a device that connects later reads its last state. */
  publishStatus(deviceId: string, body: string): Promise<void>
  /** The bridge's own retained state (`<base>/bridge/state`). */
  publishBridgeState(state: 'online' | 'offline'): Promise<void>
  /** Hands a frame's chunks to the subscribers of the device's frame topic. Returns how many get it. */
  sendFrame(deviceId: string, chunks: readonly Buffer[], options?: FrameTarget): number
  /** Device ids whose frame topic a connected client subscribed to (the displays that are online). */
  connectedDeviceIds(): ReadonlySet<string>
  /**
   * Hears each display that comes online (`true`) or goes (`false`), as `connectedDeviceIds()` changes;
   * returns the function that stops it. Only a broker that sees every connection has it (the embedded one).
   */
  onPresence?(listener: (deviceId: string, online: boolean) => void): () => void
  connectedClients(): number
  /** Frame chunks waiting for slow clients. */
  queuedChunks(): number
  report(): BrokerReport
}
