/**
 * Watching Nebula's tunnels for `tbmesh up`: over Nebula's debug server ({@link DebugConnection}), `list-hostmap -json`
 * every `intervalMs` and at once whenever Nebula writes any output (its output is a wake-up, never parsed: its format
 * changed in 1.11). Each tunnel is checked against the peer policy ({@link checkTunnel}).
 *
 * On Nebula ≥ 1.7 it also lists the hostmap `-by-index`, which shows every tunnel, including one that a newer handshake
 * for the same address replaced (1.11 keeps the replaced one as a non-primary tunnel); the plain listing tells which
 * tunnel is the primary for its address. Only a primary tunnel is closed (`close-tunnel` acts on the address, so
 * closing it while a legitimate peer is primary would promote the impostor's tunnel).
 *
 * The defence itself is the caller's ({@link WatchOptions.onViolations}: blocklist and reload); this module closes the
 * offending tunnels first (that is what stops the flow at once), and again for as long as a blocked certificate holds a
 * primary tunnel (on 1.6.1 the debug server restarts before the new blocklist is in force). Polling goes on while the
 * caller handles a batch (a slow disk must not stop the watch); a batch the caller could not block is reported again.
 *
 * The operator hears when the watch begins (and Nebula's version), when Nebula could not be read for a second or more,
 * and when it can be again; with `trace` set, every change of the hostmap and every failed poll (for `DEBUG`).
 */

import {setTimeout as sleep} from 'node:timers/promises'

import {quoted, safeLine} from '../lib/text.js'
import {DebugConnection, type DebugKeys} from './debug-ssh.js'
import {parseHostmap, type Tunnel} from './hostmap.js'
import {checkTunnel, type PeerPolicy, type PeerViolation} from './policy.js'

/** One violation found in a poll. */
export interface FoundViolation {
  violation: PeerViolation
  tunnel: Tunnel
  /** When the poll that found it started. */
  observedAt: Date
  /** For each address of the tunnel: the underlay `ip:port` of the last peer that held it legitimately, when seen. */
  lastGood: Record<string, string>
}

/** What {@link PeerWatch} needs. */
export interface WatchOptions {
  /** Loopback port of Nebula's debug server, and this run's keys. */
  port: number
  keys: DebugKeys
  /** The policy in force (it may change when the installation is reloaded). */
  policy: () => PeerPolicy
  /** Whether a fingerprint is already blocked by `up` (those are closed again, not reported again). */
  isBlocked: (fingerprint: string) => boolean
  /**
   * Called with every batch of new violations, after their primary tunnels were closed. When it rejects (nothing of the
   * batch was blocked), the batch's certificates count as not reported, so the next poll that sees them reports them
   * again.
   */
  onViolations: (found: FoundViolation[]) => Promise<void>
  /** Called when Nebula could not be observed for `blindLimitMs` (the caller stops Nebula: fail closed). */
  onBlind: (reason: string) => void
  /** Milliseconds between polls when Nebula is quiet. Default 200. */
  intervalMs?: number
  /** Milliseconds without a successful poll before {@link WatchOptions.onBlind}. Default 10 000. */
  blindLimitMs?: number
  /** Called once, after the first poll that succeeded (the caller opens Nebula's firewall). */
  onWatching: () => void
  /** One line for the operator: the watch began, or began again after a warning. */
  log: (line: string) => void
  /** One line for the operator (warnings). */
  warn: (line: string) => void
  /** Lines for debugging: each change of the hostmap, each failed poll. */
  trace?: (line: string) => void
}

/** How long polls may fail before the operator is warned (ms): Nebula's debug server restarts on every reload. */
const QUIET_FAILURES_MS = 1000

/** Shortest pause between two polls, whatever wakes the watcher (a chatty Nebula must not turn it into a busy loop). */
const MIN_GAP_MS = 10

/** The watcher: {@link PeerWatch.start}, {@link PeerWatch.wake} on Nebula's output, {@link PeerWatch.stop}. */
export class PeerWatch {
  private connection: DebugConnection | undefined
  private stopped = false
  private wakeUp: (() => void) | undefined
  private loop: Promise<void> | undefined
  private byIndex = false
  /** Overlay address → underlay `ip:port` of the last legitimate peer seen holding it. */
  private readonly lastGood = new Map<string, string>()
  /** Fingerprints reported in this run (never reported twice). */
  private readonly reported = new Set<string>()
  private lastSuccess = Date.now()
  /** Whether a poll has ever succeeded (the operator was told the watch began). */
  private watching = false
  /** Whether the operator was warned of the current run of failed polls. */
  private warned = false
  private lastMap = ''
  /** What Nebula's `version` command answered. */
  private version = ''

  constructor(private readonly opts: WatchOptions) {}

  start(): void {
    this.loop ??= this.run()
  }

  /** Poll now (Nebula wrote something). */
  wake(): void {
    this.wakeUp?.()
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.wake()
    this.connection?.close()
    // A poll in flight ends with its own timeouts (2 s per command); never wait longer than that.
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      this.loop,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 5000)
      }),
    ])
    clearTimeout(timer)
  }

  private async run(): Promise<void> {
    const interval = this.opts.intervalMs ?? 200
    const blindLimit = this.opts.blindLimitMs ?? 10_000
    let lastError = ''
    while (!this.stopped) {
      const started = Date.now()
      try {
        await this.poll()
        this.lastSuccess = Date.now()
        if (!this.watching) {
          this.watching = true
          this.opts.log(`tbmesh up: watching the tunnels of Nebula ${this.version} over its debug server on 127.0.0.1:${this.opts.port}`)
          this.opts.onWatching()
        }
        if (this.warned) this.opts.log('tbmesh up: watching Nebula\'s tunnels again')
        this.warned = false
      } catch (error) {
        this.connection?.close()
        this.connection = undefined
        lastError = safeLine((error as Error).message)
        this.opts.trace?.(`poll failed: ${lastError}`)
        // Before the first success the debug server may simply not listen yet; the blind limit still applies.
        if (this.watching && !this.warned && Date.now() - this.lastSuccess >= QUIET_FAILURES_MS) {
          this.warned = true
          this.opts.warn(`cannot read Nebula's tunnels (${lastError}); retrying`)
        }
        if (Date.now() - this.lastSuccess > blindLimit) {
          this.opts.onBlind(`Nebula's debug server on 127.0.0.1:${this.opts.port} did not answer for ${Math.round(blindLimit / 1000)} s (${lastError})`)
          return
        }
        await sleep(50)
        continue
      }
      const elapsed = Date.now() - started
      await this.pause(Math.max(MIN_GAP_MS - elapsed, 0), Math.max(interval - elapsed, MIN_GAP_MS))
    }
  }

  /** Sleep at least `min` and at most `max` ms, returning early (after `min`) when woken. */
  private async pause(min: number, max: number): Promise<void> {
    if (min > 0) await sleep(min)
    if (this.stopped) return
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => done(), max - min)
      const done = (): void => {
        clearTimeout(timer)
        this.wakeUp = undefined
        resolve()
      }
      this.wakeUp = done
    })
  }

  private async connect(): Promise<DebugConnection> {
    if (this.connection && !this.connection.isClosed()) return this.connection
    const connection = await DebugConnection.connect(this.opts.port, this.opts.keys)
    const version = (await connection.exec('version')).trim()
    const [major, minor] = version.split('.').map(Number)
    // `-by-index` exists from Nebula 1.7 (1.6.1 ignores the flag but cannot list replaced tunnels anyway).
    this.byIndex = major > 1 || (major === 1 && minor >= 7)
    this.connection = connection
    this.version = version
    return connection
  }

  private async poll(): Promise<void> {
    const connection = await this.connect()
    const observedAt = new Date()
    const primaries = parseHostmap(await connection.exec('list-hostmap -json'))
    const all = this.byIndex ? parseHostmap(await connection.exec('list-hostmap -json -by-index')) : primaries
    const primary = new Set(primaries.map((t) => t.localIndex))
    if (this.opts.trace) this.traceMap(all, primary)
    const policy = this.opts.policy()
    const fresh: FoundViolation[] = []
    const toClose = new Set<string>()
    for (const tunnel of all) {
      const violation = checkTunnel(policy, tunnel)
      if (!violation) {
        if (tunnel.certificate && tunnel.remote && tunnel.relays.length === 0) for (const a of tunnel.addresses) this.lastGood.set(a, tunnel.remote)
        continue
      }
      if (primary.has(tunnel.localIndex)) for (const a of tunnel.addresses) toClose.add(a)
      if (this.reported.has(violation.fingerprint) || this.opts.isBlocked(violation.fingerprint)) continue
      this.reported.add(violation.fingerprint)
      const lastGood = Object.fromEntries(tunnel.addresses.flatMap((a) => (this.lastGood.has(a) ? [[a, this.lastGood.get(a)!]] : [])))
      fresh.push({violation, tunnel, observedAt, lastGood})
    }
    // Closing first is what ends the flow at once; the blocklist and reload (the caller's) keep it ended.
    let closeError: unknown
    for (const address of toClose) {
      try {
        await connection.exec(`close-tunnel ${address}`)
      } catch (error) {
        closeError ??= error
      }
    }
    if (fresh.length > 0) {
      this.opts.onViolations(fresh).catch(() => {
        for (const f of fresh) this.reported.delete(f.violation.fingerprint)
      })
    }
    if (closeError) throw closeError
  }

  /** Traces the hostmap when it changed: `localIndex:address:"name":P|s` per tunnel (P = primary for its address). */
  private traceMap(all: Tunnel[], primary: Set<number>): void {
    const entry = (t: Tunnel) => `${t.localIndex}:${t.addresses.join('+')}:${t.certificate ? quoted(t.certificate.name) : '-'}:${primary.has(t.localIndex) ? 'P' : 's'}`
    const map = [...all].sort((a, b) => a.localIndex - b.localIndex).map((t) => entry(t)).join(' ')
    if (map !== this.lastMap) this.opts.trace!(`hostmap ${map || '(empty)'}`)
    this.lastMap = map
  }
}
