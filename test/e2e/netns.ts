/**
 * A small library for end-to-end tests that run real Nebula nodes in Linux network namespaces.
 *
 * Topology of a lab: one namespace per host plus one namespace holding a Linux bridge (`br0`), the "public" underlay.
 * Each host gets a veth pair whose host end (`eth0`, with an underlay address from 192.0.2.0/24) lives in the host's
 * namespace and whose other end (`v<index>`) is enslaved to the bridge inside the bridge namespace.
 *
 * A lab may also have NAT gateways ({@link GatewayOptions}), modelled on an organization's Internet router: a namespace
 * whose `eth0` sits on the public bridge like a host's, and whose `lan0` bridge holds the private LAN
 * (`172.16.<n>.0/24`, the gateway at `.1`) of the hosts behind it; each of those hosts has its `eth0` there and a
 * default route via the gateway. The gateway forwards, masquerades onto its public address (port-preserving, or a new
 * port per destination: {@link NatMode}), admits from outside only packets of flows its LAN started, and drops
 * unsolicited UDP addressed to itself (so that an early packet from a peer cannot take the mapping a LAN host needs).
 * Its iptables rules, like everything else, live in its own namespace and go with it.
 *
 * The root namespace's network configuration is never touched: the only things created outside our namespaces are the
 * namespace names themselves (`ip netns add`), and all traffic stays on the private bridges.
 *
 * Namespace names are `tbm<pid>-<4 hex>-<label>` for hosts and `tbm<pid>-<4 hex>.br` for the bridge, where `<pid>`
 * is the creating process. {@link sweepStale} uses that pid to remove what a crashed run left behind.
 *
 * Cleanup is layered: {@link Lab.cleanup} (call it from `afterAll`), a synchronous last resort on process `exit`,
 * `SIGINT`, `SIGTERM` and `SIGHUP`, helper processes that exit when their parent's pipe closes or after a maximum
 * lifetime, and {@link sweepStale} (run by {@link createLab}) for runs that were killed outright.
 *
 * Requires root (CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2, `/dev/net/tun`, `nebula` and `nebula-cert` on PATH.
 * Call {@link requireLab} first: e2e tests fail, never skip, when they cannot run.
 */

import {type ChildProcess, spawn, spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {closeSync, existsSync, mkdirSync, openSync, readFileSync} from 'node:fs'
import {dirname, resolve} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

/** Every namespace this library creates starts with this prefix. */
export const NS_PREFIX = 'tbm'

/** The line a {@link Listener} writes to every accepted connection; {@link Lab.connect} succeeds only on reading it. */
export const GREETING = 'tbmesh-ok'

/**
 * The Nebula log messages the suites wait for, as every version tested words them (Debian 12's 1.6.1, Debian 13's
 * 1.9.3, unstable's 1.11.0), in one place. Nebula's log is no interface: 1.11 switched from logrus
 * (`level=info msg="…" key="value"`) to slog (`level=INFO msg="…" key=value`) and reworded messages, and some
 * (the trusted CAs after a reload) went to debug level. So a pattern matches message text only, never field syntax;
 * a suite that needs a peer's name adds `certName=<name>` (unquoted in both formats for tbmesh's names) and a reason
 * from the error text, which the versions share. Where a version has no message for a fact, suites observe it instead
 * (connections, interface counters, the files installed).
 */
export const NEBULA_LOG = {
  /** SIGHUP caught; the config, certificate and CAs are re-read right after (every version). */
  reloading: /Caught HUP, reloading config/,
  /** The host certificate was re-read (1.6–1.9 "Client cert refreshed…", 1.11 "Client certificate(s) refreshed…"). */
  certReloaded: /Client cert(?:ificate\(s\))? refreshed from disk/,
  /** A tunnel was torn down because the peer's certificate stopped being valid (1.11 words the blocklisted case apart). */
  tornDown: /Remote certificate is (?:no longer valid|blocked), tearing down the tunnel/,
  /** A handshake was refused (1.6–1.9 "Invalid certificate from host", 1.11 "Failed to process handshake packet"). */
  refused: /Invalid certificate from host|Failed to process handshake packet/,
  /** A handshake message with a peer, either way (every version). */
  handshake: /Handshake message (?:received|sent)/,
  /** The reason a certificate on the blocklist is refused (1.6 "…has been blocked", later "…is in the block list"). */
  blocked: /certificate has been blocked|certificate is in the block list|Remote certificate is blocked/,
} as const

/** Matches the names this library gives namespaces; group 1 is the creator's pid, group 2 the lab id. */
const NS_NAME = /^(tbm(\d+)-[0-9a-f]{4})(?:-[a-z][a-z0-9]{0,15}|\.br)$/

/** Host labels: short, lower-case, start with a letter. */
const LABEL = /^[a-z][a-z0-9]{0,15}$/

/** Helper servers exit on their own after this long, whatever happens to the test. */
const MAX_SERVER_LIFE_MS = 30 * 60 * 1000

/** Cap on the output kept per process (the tail is kept). */
const MAX_OUTPUT = 256 * 1024

/**
 * How a NAT gateway maps its LAN's flows onto its public address:
 * - `port-preserving`: `MASQUERADE`, which keeps a flow's source port whenever it is free, so a LAN host's UDP socket
 *   appears at the same public port for every destination (endpoint-independent mapping): Nebula's hole punching works;
 * - `symmetric`: `MASQUERADE --random-fully`, a new random port for every destination, as many corporate firewalls do:
 *   punching cannot work, only a relay connects two hosts behind such gateways.
 */
export type NatMode = 'port-preserving' | 'symmetric'

/** A NAT gateway of a lab (see the module comment). */
export interface GatewayOptions {
  /** Label of the gateway's own namespace (same rules as host labels). */
  label: string
  /** Labels (given to {@link createLab}) of the hosts behind it: they leave the public bridge for its LAN. */
  hosts: string[]
  mode: NatMode
}

/** A host of a lab: one network namespace with one underlay interface `eth0`. */
export interface Host {
  /** The label given to {@link createLab}, e.g. `a` or `lighthouse`. */
  label: string
  /** The network namespace name, usable with `ip netns exec` / `ip -n`. */
  name: string
  /** Position in the lab (0-based; gateways come after the hosts). */
  index: number
  /**
   * IPv4 address of `eth0` (without prefix length): on the public bridge (`192.0.2.<10 + index>`), or for a host
   * behind a gateway on that gateway's LAN (`172.16.<n>.<10 + index>`). For a gateway, its public address.
   */
  underlayIp: string
  /** For a host behind a NAT gateway: the gateway's label. */
  behind?: string
  /** For a NAT gateway: how it maps, and its address on its LAN (`lan0`). */
  gateway?: {mode: NatMode; lanIp: string}
}

/** A host, or its label. */
export type HostRef = Host | string

/** Options of {@link createLab}. */
export interface LabOptions {
  /** First three octets of the underlay /24. Default `192.0.2` (TEST-NET-1, documentation range). */
  underlayPrefix?: string
  /** Last octet of the first host's underlay address; host i gets `first + i`. Default 10. */
  firstHostOctet?: number
  /** Run {@link sweepStale} before creating anything. Default true. */
  sweep?: boolean
  /** NAT gateways, each with some of the hosts behind it (at most 200). */
  gateways?: GatewayOptions[]
}

/** Options of {@link Lab.run}. */
export interface RunOptions {
  /** Kill the command (SIGKILL) after this long. Default 30 000 ms. */
  timeoutMs?: number
  /** Reject when the command exits non-zero, is killed or times out. Default true. */
  reject?: boolean
  /** Working directory. Default: the current one. */
  cwd?: string
  /** Text written to the command's stdin (stdin is closed afterwards). */
  input?: string
}

/** The outcome of a finished command. */
export interface RunResult {
  /** The command line, for messages. */
  command: string
  /** Exit code, or null when killed by a signal. */
  exitCode: number | null
  /** The signal that ended it, if any. */
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** True when the command was killed because it exceeded `timeoutMs`. */
  timedOut: boolean
}

/** How a long-running process ended. */
export interface ExitInfo {
  exitCode: number | null
  signal: NodeJS.Signals | null
}

/** Options of {@link Lab.startNebula}. */
export interface NebulaOptions {
  /**
   * Working directory of nebula; relative `pki.*` paths in the config resolve against it.
   * Default: the config file's directory.
   */
  cwd?: string
  /** Name of the tun device to wait for (`tun.dev`). Default: any tun device that appears in the namespace. */
  tunDev?: string
  /** How long to wait for the tun device to be up with an IPv4 address. Default 15 000 ms. */
  timeoutMs?: number
  /** Path of the nebula binary. Default `nebula` (from PATH). */
  binary?: string
  /**
   * The whole command to run instead of `<binary> -config <config>`, e.g. `tbmesh up --dir …`, which runs nebula
   * itself; the lab still waits for the tun device. The process's pid is then the command's.
   */
  command?: string[]
  /** Variables added to nebula's environment (e.g. `NOTIFY_SOCKET`). */
  env?: Record<string, string>
}

/** A running `nebula` inside a host's namespace. */
export interface NebulaProcess {
  host: Host
  /** Pid of nebula itself (`ip netns exec` execs it in place). */
  pid: number
  /** Absolute path of the config file. */
  configPath: string
  /** The tun device nebula brought up. */
  tunDev: string
  /** IPv4 addresses on the tun device (the overlay IPs), without prefix length. */
  overlayIps: string[]
  /** Resolves once the process has exited. */
  exited: Promise<ExitInfo>
  /** True once the process has exited. */
  isRunning(): boolean
  /** Everything nebula wrote to stdout and stderr so far (interleaved, tail-capped at 256 KiB). */
  output(): string
  /**
   * Resolve with the first output line matching `pattern` that was written after output offset `since`
   * (default 0: anywhere in the output). Rejects after `timeoutMs` (default 10 000) or when nebula exits.
   *
   * Nebula's log is no interface (see {@link NEBULA_LOG}, the patterns that hold for every version tested).
   */
  waitForLog(pattern: RegExp, opts?: {timeoutMs?: number; since?: number}): Promise<string>
  /** Length of the output so far; pass it as `since` to {@link NebulaProcess.waitForLog}. */
  outputLength(): number
  /** Send SIGHUP (nebula re-reads its config and certificates) and wait until nebula logs that it caught it. */
  reload(opts?: {timeoutMs?: number}): Promise<void>
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 000); resolves when it has exited. Idempotent. */
  stop(opts?: {graceMs?: number}): Promise<ExitInfo>
}

/** A TCP listener standing in for multichaind: it writes {@link GREETING} and a newline to each connection. */
export interface Listener {
  host: Host
  ip: string
  port: number
  /** Pid of the node process that listens. */
  pid: number
  /** Remote `address:port` of every connection accepted so far, oldest first. */
  accepted(): string[]
  /** The listener process's stdout and stderr so far. */
  output(): string
  /** Stop listening (kill the process). Idempotent. */
  close(): Promise<void>
}

/** One request a {@link HttpServer} received. */
export interface HttpRequestRecord {
  method: string
  /** Path and query, e.g. `/api/network.registerNode`. */
  url: string
  /** Remote `address:port`: who sent it, as the server's host sees it. */
  remote: string
  /** The request body (UTF-8). */
  body: string
}

/** A stand-in HTTP server (e.g. for TruBudget's API): records every request and answers 200 with `{}`. */
export interface HttpServer {
  host: Host
  ip: string
  port: number
  pid: number
  /** Every request received so far, oldest first. */
  requests(): HttpRequestRecord[]
  /** Stop serving (kill the process). Idempotent. */
  close(): Promise<void>
}

/** What a {@link Lab.httpPost} got: the status and body, or why there was none (`timeout` is what a firewall drop looks like). */
export type HttpPostResult = {ok: true; status: number; body: string} | {ok: false; reason: 'timeout' | 'refused' | 'error'; detail: string}

/** A long-running process in a host's namespace, started by {@link Lab.start} (killed by cleanup like every other). */
export interface LabProcess {
  host: Host
  /** Pid of the command itself (`ip netns exec` execs it in place). */
  pid: number
  /** The command line, for messages. */
  command: string
  exited: Promise<ExitInfo>
  isRunning(): boolean
  /** stdout and stderr so far, interleaved (tail-capped at 256 KiB). */
  output(): string
  /** stdout so far (tail-capped). */
  stdout(): string
  /** Length of the output so far, for `since`. */
  outputLength(): number
  /** The first complete output line matching `pattern` after offset `since` (default 0); rejects on timeout or exit. */
  waitForOutput(pattern: RegExp, opts?: {timeoutMs?: number; since?: number}): Promise<string>
  /** Send a signal if it still runs. */
  signal(sig: NodeJS.Signals): void
  /** SIGTERM, then SIGKILL after `graceMs` (default 5 000); resolves when it has exited. Idempotent. */
  stop(opts?: {graceMs?: number}): Promise<ExitInfo>
}

/** One line of a test flow: its sequence number, when the sender wrote it, and when it was seen (ms since the epoch). */
export interface FlowLine {
  seq: number
  sentAt: number
  at: number
}

/** A TCP client that writes a numbered line every few ms and reconnects on any error ({@link Lab.stream}). */
export interface FlowSender {
  process: LabProcess
  /** Lines written so far (`at` = `sentAt`). */
  sent(): FlowLine[]
  /** When each connection was established. */
  connects(): number[]
}

/** A TCP server that records every flow line it receives ({@link Lab.receive}). */
export interface FlowReceiver {
  process: LabProcess
  /** Lines received so far, `at` = when they arrived. */
  received(): FlowLine[]
}

/** A packet capture (tcpdump) on an interface ({@link Lab.capture}). */
export interface Capture {
  process: LabProcess
  /** Flow lines seen in captured packets, `at` = the packet's capture time. */
  flowLines(): FlowLine[]
}

/** Why a {@link Lab.connect} attempt ended. */
export type ConnectReason = 'ok' | 'timeout' | 'refused' | 'unreachable' | 'bad-greeting' | 'error'

/** The outcome of a {@link Lab.connect} attempt. */
export interface ConnectResult {
  /** True only when the greeting was read. */
  ok: boolean
  /** `timeout` is what a firewall drop looks like. */
  reason: ConnectReason
  /** Error code and message, or what was read instead of the greeting. */
  detail: string
  /** Time from the connect call (inside the namespace) to the outcome. */
  elapsedMs: number
}

/** Options of {@link Lab.waitForTcp}. */
export interface WaitForTcpOptions {
  /** Give up after this long. Default 20 000 ms. */
  timeoutMs?: number
  /** Timeout of each attempt. Default 2 000 ms (covers a lost SYN's first 1 s retransmission). */
  attemptTimeoutMs?: number
  /** Pause between attempts that failed fast (refused, unreachable). Default 100 ms. */
  intervalMs?: number
}

/** A set of namespaces joined by a bridge, and every process started in them. */
export interface Lab {
  /** Common prefix of all namespace names of this lab, e.g. `tbm1234-9f3a`. */
  id: string
  /** The hosts, in the order of the labels given to {@link createLab}. */
  hosts: Host[]
  /** Name of the namespace holding the bridge. */
  bridgeNamespace: string
  /** The host with this label (or the host itself); throws for an unknown label. */
  host(ref: HostRef): Host
  /** Run a command inside a host's namespace (`ip netns exec`) and wait for it. */
  run(host: HostRef, cmd: string[], opts?: RunOptions): Promise<RunResult>
  /** Start `nebula -config FILE` in a host's namespace and wait until its tun device is up. */
  startNebula(host: HostRef, configPath: string, opts?: NebulaOptions): Promise<NebulaProcess>
  /**
   * Add a namespace attached to `host` only, as a Docker container is to its host: a veth pair whose end `device` in
   * `host`'s namespace has `gateway` (`<subnet>.1/24`) and whose end `eth0` in the new namespace has `<subnet>.2/24`
   * and a default route via `gateway`. The new namespace is a host of the lab (`label`, `underlayIp` = its address),
   * removed with the others. `subnet`: three octets, default `172.31.0`.
   */
  attach(host: HostRef, label: string, opts?: {subnet?: string}): Promise<{host: Host; device: string; gateway: string}>
  /** Start a TCP listener on `ip:port` inside a host's namespace; resolves once it listens. */
  listen(host: HostRef, ip: string, port: number, opts?: {timeoutMs?: number}): Promise<Listener>
  /**
   * Connect from inside a host's namespace to `ip:port`; `ok` only if the greeting was read within `timeoutMs`
   * (default 3 000). Never rejects for network outcomes; bounded by `timeoutMs` plus process start-up.
   */
  connect(host: HostRef, ip: string, port: number, timeoutMs?: number): Promise<ConnectResult>
  /** Start a stand-in HTTP server on `ip:port` inside a host's namespace; resolves once it listens. */
  httpServer(host: HostRef, ip: string, port: number, opts?: {timeoutMs?: number}): Promise<HttpServer>
  /**
   * POST `body` (JSON text, `content-type: application/json`) to `url` from inside a host's namespace. Never rejects for
   * network outcomes; bounded by `timeoutMs` (default 3 000) plus process start-up.
   */
  httpPost(host: HostRef, url: string, body: string, timeoutMs?: number): Promise<HttpPostResult>
  /** Retry {@link Lab.connect} until it succeeds; rejects with the last result after `timeoutMs`. */
  waitForTcp(host: HostRef, ip: string, port: number, opts?: WaitForTcpOptions): Promise<void>
  /**
   * {@link Lab.waitForTcp} from every member to every other member's `ip:port`, all pairs at once; rejects with the
   * first pair that stays unreachable.
   */
  waitForMesh(members: ReadonlyArray<{host: HostRef; ip: string}>, port: number, opts?: WaitForTcpOptions): Promise<void>
  /** Start any long-running command in a host's namespace (tracked: cleanup stops it). */
  start(host: HostRef, cmd: string[], opts?: {cwd?: string}): LabProcess
  /**
   * A flow to `ip:port` from inside a host's namespace: a line `flow <seq> <sentAt>` every `intervalMs` (default 50)
   * on one connection, reconnecting 100 ms after any error or close.
   */
  stream(host: HostRef, ip: string, port: number, opts?: {intervalMs?: number}): Promise<FlowSender>
  /** A server on `ip:port` inside a host's namespace that records every flow line; resolves once it listens. */
  receive(host: HostRef, ip: string, port: number): Promise<FlowReceiver>
  /** tcpdump on `device` inside a host's namespace for TCP `port`; resolves once it captures. Needs `tcpdump`. */
  capture(host: HostRef, device: string, port: number): Promise<Capture>
  /**
   * Send `bytes` (pseudo-random) over one TCP connection from `from` to `ip:port`, where a sink started in `to` listens,
   * and check that exactly those bytes arrived (SHA-256). Rejects when the transfer does not complete within `timeoutMs`
   * (default 120 000), with what each side saw. Resolves with the transfer's duration as the sender measured it.
   */
  transfer(from: HostRef, to: HostRef, ip: string, port: number, bytes: number, opts?: {timeoutMs?: number}): Promise<{bytes: number; ms: number}>
  /** Bytes received and sent so far by interface `dev` (default `eth0`) of a host, from the kernel's counters. */
  linkBytes(host: HostRef, dev?: string): Promise<{rx: number; tx: number}>
  /** Change how a NAT gateway maps (and forget every mapping it holds, so that the next flows get the new behaviour). */
  setNatMode(gateway: HostRef, mode: NatMode): Promise<void>
  /** Addresses, routes, gateways' firewall counters and the output tail of every process, for failure messages. */
  diagnostics(): Promise<string>
  /**
   * Kill every process started (SIGTERM, then SIGKILL), kill anything else still inside our namespaces, delete
   * every namespace, and verify none is left. Idempotent; rejects if something could not be removed.
   */
  cleanup(): Promise<void>
}

// ---------------------------------------------------------------------------------------------------------------
// Prerequisites

/**
 * Throw one clear error listing every missing prerequisite: Linux, root with CAP_NET_ADMIN and CAP_SYS_ADMIN,
 * iproute2 with netns support, `nebula` and `nebula-cert` on PATH, and a usable `/dev/net/tun` (created with
 * `mknod c 10 200` only if missing). Call it in `beforeAll`: e2e tests must fail, not skip, when they cannot run.
 */
export function requireLab(): void {
  const problems: string[] = []
  if (process.platform !== 'linux') {
    throw new Error(`e2e lab needs Linux network namespaces; this is ${process.platform}`)
  }

  if (process.getuid?.() !== 0) {
    problems.push(`must run as root (uid is ${process.getuid?.()}); network namespaces need it`)
  } else {
    const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1]
    const caps = capEff === undefined ? 0n : BigInt(`0x${capEff}`)
    if ((caps & (1n << 12n)) === 0n) problems.push('missing capability CAP_NET_ADMIN')
    if ((caps & (1n << 21n)) === 0n) problems.push('missing capability CAP_SYS_ADMIN (needed by ip netns)')
  }

  const ip = spawnSync('ip', ['netns', 'list'], {encoding: 'utf8'})
  if (ip.error) problems.push(`cannot run 'ip' (iproute2): ${ip.error.message}`)
  else if (ip.status !== 0) problems.push(`'ip netns list' failed (exit ${ip.status}): ${ip.stderr.trim()}`)

  for (const bin of ['nebula', 'nebula-cert']) {
    const r = spawnSync(bin, ['-version'], {encoding: 'utf8'})
    if (r.error) problems.push(`cannot run '${bin}': ${r.error.message}`)
    else if (r.status !== 0) problems.push(`'${bin} -version' failed (exit ${r.status}): ${r.stderr.trim()}`)
  }

  const tunProblem = ensureTun()
  if (tunProblem) problems.push(tunProblem)

  if (problems.length > 0) {
    throw new Error('e2e prerequisites missing (these tests must run as root on Linux with Nebula installed):\n' +
      problems.map((p) => `  - ${p}`).join('\n'))
  }
}

/** Make sure `/dev/net/tun` exists (mknod only if missing) and opens; returns a problem description or undefined. */
function ensureTun(): string | undefined {
  const tun = '/dev/net/tun'
  if (!existsSync(tun)) {
    try {
      mkdirSync('/dev/net', {recursive: true})
    } catch (error) {
      return `${tun} is missing and /dev/net cannot be created: ${(error as Error).message}`
    }

    const r = spawnSync('mknod', ['-m', '0666', tun, 'c', '10', '200'], {encoding: 'utf8'})
    if (r.error || r.status !== 0) {
      return `${tun} is missing and 'mknod ${tun} c 10 200' failed: ${r.error?.message ?? r.stderr.trim()}`
    }
  }

  try {
    closeSync(openSync(tun, 'r+'))
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    return `${tun} cannot be opened (${code}): ${(error as Error).message}` +
      (code === 'ENODEV' ? ' (is the tun kernel module available?)' : '')
  }

  return undefined
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

/** Options of {@link Child}. */
interface SpawnOpts {
  cwd?: string
  stdin?: 'pipe' | 'ignore'
  /** Replacements for arguments when showing the command (e.g. a long inline script). */
  display?: Record<string, string>
  /** Variables added to the environment. */
  env?: Record<string, string>
}

/** A spawned child whose output is captured and whose exit is awaited. */
class Child {
  readonly proc: ChildProcess
  readonly pid: number
  readonly command: string
  readonly exited: Promise<ExitInfo>
  stdout = ''
  stderr = ''
  /** stdout and stderr interleaved, tail-capped. */
  combined = ''
  /** Characters dropped from the front of `combined`. */
  dropped = 0
  private exitInfo: ExitInfo | undefined
  private readonly waiters = new Set<() => void>()

  constructor(file: string, args: string[], opts: SpawnOpts = {}) {
    this.command = [file, ...args].map((arg) => opts.display?.[arg] ?? quote(arg)).join(' ')
    this.proc = spawn(file, args, {cwd: opts.cwd, stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'], env: opts.env ? {...process.env, ...opts.env} : undefined})
    this.exited = new Promise<ExitInfo>((resolveExit) => {
      const done = (info: ExitInfo): void => {
        if (this.exitInfo) return
        this.exitInfo = info
        this.notify()
        resolveExit(info)
      }

      this.proc.on('error', (error) => {
        this.append('stderr', `spawn error: ${error.message}\n`)
        done({exitCode: null, signal: null})
      })
      this.proc.on('close', (exitCode, signal) => done({exitCode, signal}))
    })
    if (this.proc.pid === undefined) {
      // Spawn failed synchronously-ish; 'error' will fire. Use -1 so nothing is ever killed by mistake.
      this.pid = -1
    } else {
      this.pid = this.proc.pid
    }

    this.proc.stdout?.setEncoding('utf8').on('data', (d: string) => this.append('stdout', d))
    this.proc.stderr?.setEncoding('utf8').on('data', (d: string) => this.append('stderr', d))
  }

  /** True until the process has exited (by pid state, not by our bookkeeping of pipes). */
  isRunning(): boolean {
    return this.pid > 0 && this.proc.exitCode === null && this.proc.signalCode === null && !this.exitInfo
  }

  /** Wait (bounded) until `predicate` holds, re-checking on every output and on exit. */
  async waitFor<T>(predicate: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const value = predicate()
      if (value !== undefined) return value
      if (this.exitInfo) throw new Error(`${what}: process exited (${describeExit(this.exitInfo)})\n${this.tail()}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`${what}: timed out after ${timeoutMs} ms\n${this.tail()}`)
      await new Promise<void>((wake) => {
        const timer = setTimeout(finish, Math.min(left, 250))
        const waiters = this.waiters
        function finish(): void {
          clearTimeout(timer)
          waiters.delete(finish)
          wake()
        }

        this.waiters.add(finish)
      })
    }
  }

  /** Send a signal if still running. */
  signal(sig: NodeJS.Signals): void {
    if (!this.isRunning()) return
    try {
      process.kill(this.pid, sig)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error
    }
  }

  /** SIGTERM, wait up to `graceMs`, then SIGKILL and wait (bounded) for the exit. */
  async stop(graceMs: number): Promise<ExitInfo> {
    if (this.exitInfo) return this.exitInfo
    this.signal('SIGTERM')
    const first = await withTimeout(this.exited, graceMs, undefined)
    if (first) return first
    this.signal('SIGKILL')
    return this.settle()
  }

  /**
   * Wait (bounded) for 'close' after the process was killed. If a grandchild still holds our pipes, 'close' never
   * comes on its own: destroy the pipes so it does.
   */
  async settle(): Promise<ExitInfo> {
    const info = await withTimeout(this.exited, 2000, undefined)
    if (info) return info
    this.proc.stdout?.destroy()
    this.proc.stderr?.destroy()
    this.proc.stdin?.destroy()
    return withTimeout(this.exited, 2000, {exitCode: null, signal: 'SIGKILL' as NodeJS.Signals})
  }

  /** Last part of the output with the command, for error messages. */
  tail(chars = 4000): string {
    const text = this.combined.length > chars ? `…${this.combined.slice(-chars)}` : this.combined
    return `--- ${this.command} (pid ${this.pid}) ---\n${text}`
  }

  private append(stream: 'stdout' | 'stderr', data: string): void {
    this[stream] = capTail(this[stream] + data)
    const combined = this.combined + data
    if (combined.length > MAX_OUTPUT) {
      this.dropped += combined.length - MAX_OUTPUT
      this.combined = combined.slice(-MAX_OUTPUT)
    } else {
      this.combined = combined
    }

    this.notify()
  }

  private notify(): void {
    for (const wake of this.waiters) {
      this.waiters.delete(wake)
      wake()
    }
  }
}

/** `promise`, or `fallback` after `ms` (the timer is cleared either way, so it never keeps the process alive). */
async function withTimeout<T, F>(promise: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([promise, new Promise<F>((resolveTimeout) => {
      timer = setTimeout(() => resolveTimeout(fallback), ms)
    })])
  } finally {
    clearTimeout(timer)
  }
}

function capTail(s: string): string {
  return s.length > MAX_OUTPUT ? s.slice(-MAX_OUTPUT) : s
}

function describeExit(info: ExitInfo): string {
  return info.signal ? `killed by ${info.signal}` : `exit code ${info.exitCode}`
}

function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", '\'\\\'\'')}'`
}

/** Run a command to completion with a hard timeout; `track` lets a lab kill it during cleanup. */
async function exec(file: string, args: string[], opts: RunOptions & {track?: Set<Child>; display?: Record<string, string>} = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000
  const child = new Child(file, args, {cwd: opts.cwd, stdin: opts.input === undefined ? 'ignore' : 'pipe', display: opts.display})
  opts.track?.add(child)
  if (opts.input !== undefined) {
    child.proc.stdin?.on('error', () => {})
    child.proc.stdin?.end(opts.input)
  }

  let timedOut = false
  const info = await withTimeout(child.exited, timeoutMs, undefined) ?? await (async () => {
    timedOut = true
    child.signal('SIGKILL')
    return child.settle()
  })()
  opts.track?.delete(child)
  const result: RunResult = {command: child.command, ...info, stdout: child.stdout, stderr: child.stderr, timedOut}
  if ((opts.reject ?? true) && (timedOut || info.exitCode !== 0)) {
    const why = timedOut ? `timed out after ${timeoutMs} ms` : describeExit(info)
    const err = new Error(`command failed (${why}): ${child.command}\n${child.stderr.trim() || child.stdout.trim()}`)
    Object.assign(err, {result})
    throw err
  }

  return result
}

/** `ip` with arguments; rejects with the command, exit code and stderr on failure. */
async function ip(...args: string[]): Promise<string> {
  return (await exec('ip', args, {timeoutMs: 15_000})).stdout
}

// ---------------------------------------------------------------------------------------------------------------
// Namespaces

/** Names of all network namespaces (`ip netns list`), ours and others'. */
export async function listNamespaces(): Promise<string[]> {
  return parseNetnsList(await ip('netns', 'list'))
}

function parseNetnsList(out: string): string[] {
  // Lines look like "name" or "name (id: 3)".
  return out.split('\n').map((line) => line.trim().split(/\s+/)[0]).filter(Boolean)
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Pids of processes inside a namespace (`ip netns pids`); empty if the namespace is gone. */
async function namespacePids(ns: string): Promise<number[]> {
  const r = await exec('ip', ['netns', 'pids', ns], {timeoutMs: 15_000, reject: false})
  return r.exitCode === 0 ? r.stdout.split(/\s+/).filter(Boolean).map(Number) : []
}

/**
 * Kill everything inside the namespaces and delete them. Returns the problems (empty when all went).
 * Deleting a namespace also deletes the veth ends and the bridge inside it.
 */
async function removeNamespaces(names: string[]): Promise<string[]> {
  const problems: string[] = []
  await Promise.all(names.map(async (ns) => {
    let pids = await namespacePids(ns)
    for (const pid of pids) killQuietly(pid, 'SIGKILL')
    const deadline = Date.now() + 5000
    while (pids.length > 0 && Date.now() < deadline) {
      await sleep(20)
      pids = pids.filter((pid) => pidAlive(pid))
    }

    if (pids.length > 0) problems.push(`processes ${pids.join(', ')} in ${ns} survived SIGKILL`)
  }))
  for (const ns of names) {
    const r = await exec('ip', ['netns', 'delete', ns], {timeoutMs: 15_000, reject: false})
    if (r.exitCode !== 0 && !/No such file|does not exist/i.test(r.stderr)) {
      problems.push(`ip netns delete ${ns} failed (${describeExit(r)}): ${r.stderr.trim()}`)
    }
  }

  const left = new Set(await listNamespaces())
  for (const ns of names) if (left.has(ns)) problems.push(`namespace ${ns} still exists`)
  return problems
}

function killQuietly(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch {
    // already gone
  }
}

/**
 * Remove leftover namespaces of crashed runs: every `tbm<pid>-…` namespace whose creator pid no longer exists,
 * after SIGKILLing any process still inside it (e.g. an orphaned nebula). Namespaces of live processes, including
 * concurrent runs, are left alone. A reused pid keeps its leftovers until it is gone too (harmless: names also
 * carry a random part). Returns the names removed.
 */
export async function sweepStale(): Promise<string[]> {
  const stale = (await listNamespaces()).filter((ns) => {
    const m = NS_NAME.exec(ns)
    return m !== null && !pidAlive(Number(m[2]))
  })
  if (stale.length === 0) return []
  const problems = await removeNamespaces(stale)
  if (problems.length > 0) throw new Error(`sweeping stale namespaces failed:\n  - ${problems.join('\n  - ')}`)
  return stale
}

// ---------------------------------------------------------------------------------------------------------------
// Last-resort cleanup on process exit / signals

const liveLabs = new Set<LabImpl>()
let hooksInstalled = false

function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', () => {
    for (const lab of liveLabs) lab.cleanupSync()
  })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      for (const lab of liveLabs) lab.cleanupSync()
      process.removeListener(sig, handler)
      // Keep the default behaviour (terminate) unless someone else handles the signal.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
    }

    process.on(sig, handler)
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Helper scripts run by node inside a namespace (argv: [node, ...args])

/**
 * The end of every server script (`server`, `ip`, `port`, `maxLifeMs` defined before it): listen on ip:port and print
 * LISTENING (or LISTEN-ERROR and exit 2); exit when stdin closes, after `maxLifeMs`, or on SIGTERM/SIGINT.
 */
const SERVE = `
server.on('error', (e) => { process.stderr.write('LISTEN-ERROR ' + e.code + ' ' + e.message + '\\n'); process.exit(2); });
server.listen({host: ip, port: Number(port), exclusive: true}, () => process.stdout.write('LISTENING\\n'));
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
setTimeout(() => process.exit(0), Number(maxLifeMs)).unref();
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
`

/** Listen on ip:port, greet every connection, report readiness and accepts on stdout. Exits when stdin closes. */
const LISTENER_SCRIPT = `
const net = require('node:net');
const [ip, port, greeting, maxLifeMs] = process.argv.slice(1);
const server = net.createServer((socket) => {
  process.stdout.write('ACCEPT ' + socket.remoteAddress + ':' + socket.remotePort + '\\n');
  socket.on('error', () => {});
  socket.end(greeting + '\\n');
});
${SERVE}`

/** HTTP server on ip:port: one `REQUEST <json>` line per request ({method, url, remote, body}), answers 200 `{}`. */
const HTTP_SERVER_SCRIPT = `
const http = require('node:http');
const [ip, port, maxLifeMs] = process.argv.slice(1);
const server = http.createServer((req, res) => {
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (d) => { if (body.length < 65536) body += d; });
  req.on('end', () => {
    const remote = req.socket.remoteAddress + ':' + req.socket.remotePort;
    process.stdout.write('REQUEST ' + JSON.stringify({method: req.method, url: req.url, remote, body}) + '\\n');
    res.writeHead(200, {'content-type': 'application/json'});
    res.end('{}');
  });
});
${SERVE}`

/** POST a JSON body to a URL, print one JSON line {ok, status, body} or {ok: false, reason, detail}. */
const HTTP_POST_SCRIPT = `
const http = require('node:http');
const [url, body, timeoutMs] = process.argv.slice(1);
let done = false;
const finish = (result) => { if (done) return; done = true; process.stdout.write(JSON.stringify(result) + '\\n'); process.exit(0); };
const req = http.request(url, {method: 'POST', headers: {'content-type': 'application/json'}}, (res) => {
  let text = '';
  res.setEncoding('utf8');
  res.on('data', (d) => { text += d; });
  res.on('end', () => finish({ok: true, status: res.statusCode, body: text}));
});
req.on('error', (e) => finish({ok: false, reason: e.code === 'ECONNREFUSED' ? 'refused' : 'error', detail: e.code + ' ' + e.message}));
setTimeout(() => finish({ok: false, reason: 'timeout', detail: 'no answer within ' + timeoutMs + ' ms'}), Number(timeoutMs));
req.end(body);
`

/**
 * A flow: connect to ip:port, write `flow <seq> <ms since epoch>` every intervalMs, log `SENT seq t`; on any error or
 * close, reconnect after 100 ms (`CONNECTED t` each time). Exits when stdin closes.
 */
const SENDER_SCRIPT = `
const net = require('node:net');
const [ip, port, intervalMs, maxLifeMs] = process.argv.slice(1);
let seq = 0;
let socket;
function connect() {
  const s = net.connect({host: ip, port: Number(port)});
  socket = s;
  s.setNoDelay(true);
  s.on('connect', () => process.stdout.write('CONNECTED ' + Date.now() + '\\n'));
  s.on('data', () => {});
  const again = (why) => {
    if (socket !== s) return;
    socket = undefined;
    process.stdout.write('DISCONNECTED ' + Date.now() + ' ' + why + '\\n');
    s.destroy();
    setTimeout(connect, 100);
  };
  s.on('error', (e) => again(e.code));
  s.on('close', () => again('close'));
}
connect();
setInterval(() => {
  if (!socket || socket.connecting) return;
  const t = Date.now();
  seq++;
  socket.write('flow ' + seq + ' ' + t + '\\n');
  process.stdout.write('SENT ' + seq + ' ' + t + '\\n');
}, Number(intervalMs));
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
setTimeout(() => process.exit(0), Number(maxLifeMs)).unref();
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
`

/** Accept on ip:port and log every flow line received: `RECV seq sentAt receivedAt`. Exits when stdin closes. */
const RECEIVER_SCRIPT = `
const net = require('node:net');
const [ip, port, maxLifeMs] = process.argv.slice(1);
const server = net.createServer((socket) => {
  process.stdout.write('ACCEPT ' + socket.remoteAddress + ':' + socket.remotePort + '\\n');
  let buf = '';
  socket.setEncoding('utf8');
  socket.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\\n')) >= 0) {
      const m = /^flow (\\d+) (\\d+)$/.exec(buf.slice(0, i));
      if (m) process.stdout.write('RECV ' + m[1] + ' ' + m[2] + ' ' + Date.now() + '\\n');
      buf = buf.slice(i + 1);
    }
  });
  socket.on('error', () => {});
});
server.on('error', (e) => { process.stderr.write('LISTEN-ERROR ' + e.code + ' ' + e.message + '\\n'); process.exit(2); });
server.listen({host: ip, port: Number(port), exclusive: true}, () => process.stdout.write('LISTENING\\n'));
process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
setTimeout(() => process.exit(0), Number(maxLifeMs)).unref();
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
`

/** Accept one connection on ip:port, read it to the end, print `RECEIVED <bytes> <sha256>`. Gives up after maxMs. */
const SINK_SCRIPT = `
const net = require('node:net');
const {createHash} = require('node:crypto');
const [ip, port, maxMs] = process.argv.slice(1);
const server = net.createServer((socket) => {
  server.close();
  const hash = createHash('sha256');
  let n = 0;
  socket.on('data', (d) => { n += d.length; hash.update(d); });
  socket.on('end', () => { process.stdout.write('RECEIVED ' + n + ' ' + hash.digest('hex') + '\\n'); socket.end(); });
  socket.on('error', (e) => { process.stderr.write('SINK-ERROR ' + e.code + ' after ' + n + ' bytes\\n'); process.exit(3); });
});
server.on('error', (e) => { process.stderr.write('LISTEN-ERROR ' + e.code + ' ' + e.message + '\\n'); process.exit(2); });
server.listen({host: ip, port: Number(port), exclusive: true}, () => process.stdout.write('LISTENING\\n'));
setTimeout(() => process.exit(0), Number(maxMs)).unref();
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
`

/**
 * Connect to ip:port, send `bytes` pseudo-random bytes (AES-CTR keystream: cheap, incompressible), half-close, wait for
 * the sink to close; print `SENT <bytes> <sha256> <ms>`. Exits 1 after maxMs or on an error.
 */
const SEND_SCRIPT = `
const net = require('node:net');
const {createCipheriv, createHash, randomBytes} = require('node:crypto');
const [ip, port, total, maxMs] = process.argv.slice(1);
const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
const zeros = Buffer.alloc(64 * 1024);
const hash = createHash('sha256');
let left = Number(total);
const start = Date.now();
const socket = net.connect({host: ip, port: Number(port)}, pump);
function pump() {
  while (left > 0) {
    const chunk = cipher.update(left >= zeros.length ? zeros : zeros.subarray(0, left));
    left -= chunk.length;
    hash.update(chunk);
    if (!socket.write(chunk)) return socket.once('drain', pump);
  }
  socket.end();
}
socket.on('data', () => {});
socket.on('close', (hadError) => {
  if (hadError || left > 0) process.exit(1);
  process.stdout.write('SENT ' + total + ' ' + hash.digest('hex') + ' ' + (Date.now() - start) + '\\n');
  process.exit(0);
});
socket.on('error', (e) => { process.stderr.write('SEND-ERROR ' + e.code + ' ' + e.message + ' with ' + left + ' bytes left\\n'); });
setTimeout(() => { process.stderr.write('SEND-TIMEOUT with ' + left + ' bytes left\\n'); process.exit(1); }, Number(maxMs)).unref();
`

/** Connect to ip:port, print one JSON line {reason, detail, elapsedMs}. */
const CONNECT_SCRIPT = `
const net = require('node:net');
const [ip, port, greeting, timeoutMs] = process.argv.slice(1);
const start = Date.now();
let buf = '';
let done = false;
const socket = net.connect({host: ip, port: Number(port)});
const finish = (reason, detail) => {
  if (done) return;
  done = true;
  process.stdout.write(JSON.stringify({reason, detail, elapsedMs: Date.now() - start}) + '\\n');
  socket.destroy();
  process.exit(0);
};
socket.setEncoding('utf8');
socket.on('data', (d) => { buf += d; if (buf.includes(greeting + '\\n')) finish('ok', ''); });
socket.on('end', () => finish('bad-greeting', 'connection closed after ' + JSON.stringify(buf)));
socket.on('error', (e) => finish(e.code === 'ECONNREFUSED' ? 'refused'
  : (e.code === 'EHOSTUNREACH' || e.code === 'ENETUNREACH') ? 'unreachable' : 'error', e.code + ' ' + e.message));
setTimeout(() => finish('timeout', 'no greeting within ' + timeoutMs + ' ms' + (buf ? ', read ' + JSON.stringify(buf) : '')), Number(timeoutMs));
`

// ---------------------------------------------------------------------------------------------------------------
// The lab

interface IpLinkJson {
  ifindex: number
  ifname: string
  flags?: string[]
  operstate?: string
  linkinfo?: {info_kind?: string}
  addr_info?: {family: string; local: string}[]
}

class LabImpl implements Lab {
  readonly hosts: Host[] = []
  readonly bridgeNamespace: string
  /** Namespaces created so far (hosts, then bridge), for cleanup. */
  private readonly namespaces: string[] = []
  private readonly children = new Set<Child>()
  private readonly nebulas: {host: Host; child: Child}[] = []
  private readonly listeners: {host: Host; child: Child; what: string}[] = []
  private readonly others: {host: Host; child: Child}[] = []
  private cleaning: Promise<void> | undefined

  constructor(readonly id: string) {
    this.bridgeNamespace = `${id}.br`
  }

  host(ref: HostRef): Host {
    if (typeof ref !== 'string') {
      if (!this.hosts.includes(ref)) throw new Error(`host ${ref.name} is not part of lab ${this.id}`)
      return ref
    }

    const host = this.hosts.find((h) => h.label === ref || h.name === ref)
    if (!host) throw new Error(`lab ${this.id} has no host '${ref}' (hosts: ${this.hosts.map((h) => h.label).join(', ')})`)
    return host
  }

  /** Create the bridge namespace, one namespace per label and per gateway, their links and the gateways' NAT. */
  async build(labels: string[], opts: LabOptions): Promise<void> {
    const prefix = opts.underlayPrefix ?? '192.0.2'
    const first = opts.firstHostOctet ?? 10
    const br = this.bridgeNamespace
    const gateways = opts.gateways ?? []
    await this.addNamespace(br)
    await ip('-n', br, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0')
    await ip('-n', br, 'link', 'set', 'br0', 'up')
    const behind = new Map(gateways.flatMap((g, n) => g.hosts.map((label) => [label, {gateway: g.label, lan: n + 1}] as const)))
    labels.forEach((label, index) => {
      const lan = behind.get(label)
      this.hosts.push(lan
        ? {label, name: `${this.id}-${label}`, index, underlayIp: `172.16.${lan.lan}.${first + index}`, behind: lan.gateway}
        : {label, name: `${this.id}-${label}`, index, underlayIp: `${prefix}.${first + index}`})
    })
    gateways.forEach((g, n) => {
      const index = labels.length + n
      this.hosts.push({label: g.label, name: `${this.id}-${g.label}`, index, underlayIp: `${prefix}.${first + index}`, gateway: {mode: g.mode, lanIp: `172.16.${n + 1}.1`}})
    })
    for (const host of this.hosts) await this.addNamespace(host.name)
    // Gateways first: the hosts behind them plug into their LAN bridge.
    await Promise.all(this.hosts.filter((h) => h.gateway).map(async (gw) => {
      await ip('-n', gw.name, 'link', 'add', 'lan0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0')
      await ip('-n', gw.name, 'addr', 'add', `${gw.gateway!.lanIp}/24`, 'dev', 'lan0')
      await ip('-n', gw.name, 'link', 'set', 'lan0', 'up')
    }))
    await Promise.all(this.hosts.map(async (host) => {
      const ns = host.name
      const port = `v${host.index}`
      // Created from inside the host namespace with the peer placed directly into the bridge (or gateway) namespace:
      // nothing ever appears in the root namespace.
      const [upstream, upstreamBridge] = host.behind ? [this.host(host.behind).name, 'lan0'] : [br, 'br0']
      await ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', port, 'netns', upstream)
      await ip('-n', upstream, 'link', 'set', port, 'master', upstreamBridge)
      await ip('-n', upstream, 'link', 'set', port, 'up')
      await ip('-n', ns, 'addr', 'add', `${host.underlayIp}/24`, 'dev', 'eth0')
      await ip('-n', ns, 'link', 'set', 'eth0', 'up')
      if (host.behind) await ip('-n', ns, 'route', 'add', 'default', 'via', this.host(host.behind).gateway!.lanIp)
    }))
    await Promise.all(this.hosts.filter((h) => h.gateway).map(async (gw) => this.configureGateway(gw)))
    // Wait until every underlay link has carrier, so the first packets are not lost.
    await Promise.all(this.hosts.map(async (host) => {
      await pollUntil(async () => {
        const links = JSON.parse(await ip('-j', '-n', host.name, 'link', 'show', 'eth0')) as IpLinkJson[]
        return links[0]?.operstate === 'UP' ? true : undefined
      }, 10_000, `underlay eth0 of ${host.name} to come up`)
    }))
  }

  async attach(ref: HostRef, label: string, opts: {subnet?: string} = {}): Promise<{host: Host; device: string; gateway: string}> {
    this.assertOpen()
    const parent = this.host(ref)
    if (!LABEL.test(label)) throw new Error(`invalid host label '${label}': use ${LABEL}`)
    if (this.hosts.some((h) => h.label === label)) throw new Error(`lab ${this.id} already has a host '${label}'`)
    const subnet = opts.subnet ?? '172.31.0'
    const host: Host = {label, name: `${this.id}-${label}`, index: this.hosts.length, underlayIp: `${subnet}.2`}
    const device = `c${host.index}`
    const gateway = `${subnet}.1`
    await this.addNamespace(host.name)
    this.hosts.push(host)
    // Created from inside the parent's namespace with the peer placed directly into the new one, as in build().
    await ip('-n', parent.name, 'link', 'add', device, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.name)
    await ip('-n', parent.name, 'addr', 'add', `${gateway}/24`, 'dev', device)
    await ip('-n', parent.name, 'link', 'set', device, 'up')
    await ip('-n', host.name, 'addr', 'add', `${host.underlayIp}/24`, 'dev', 'eth0')
    await ip('-n', host.name, 'link', 'set', 'eth0', 'up')
    await ip('-n', host.name, 'route', 'add', 'default', 'via', gateway)
    return {host, device, gateway}
  }

  /**
   * A gateway's forwarding and firewall (iptables, in its own namespace): forward; masquerade the LAN onto `eth0`
   * (`setNatMode`); from `eth0` forward only packets of flows the LAN started; drop unsolicited UDP addressed
   * to the gateway itself. That last rule is what real gateways do, and it matters: accepted, a peer's early punch
   * packet creates (and confirms) a conntrack entry holding exactly the public port a LAN host's mapping needs, and
   * that host's flow then gets another port, so punching fails even behind a port-preserving gateway. Dropped before
   * confirmation, the entry is never inserted.
   */
  private async configureGateway(gw: Host): Promise<void> {
    const run = async (...cmd: string[]): Promise<void> => {
      await exec('ip', ['netns', 'exec', gw.name, ...cmd], {timeoutMs: 15_000})
    }
    await run('sysctl', '-qw', 'net.ipv4.ip_forward=1')
    await run('iptables', '-w', '-A', 'FORWARD', '-i', 'eth0', '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT')
    await run('iptables', '-w', '-A', 'FORWARD', '-i', 'eth0', '-j', 'DROP')
    await run('iptables', '-w', '-A', 'INPUT', '-i', 'eth0', '-p', 'udp', '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP')
    await this.setNatMode(gw, gw.gateway!.mode)
  }

  async setNatMode(ref: HostRef, mode: NatMode): Promise<void> {
    this.assertOpen()
    const gw = this.host(ref)
    if (!gw.gateway) throw new Error(`${gw.label} is not a NAT gateway of lab ${this.id}`)
    const run = async (...cmd: string[]): Promise<void> => {
      await exec('ip', ['netns', 'exec', gw.name, ...cmd], {timeoutMs: 15_000})
    }
    await run('iptables', '-w', '-t', 'nat', '-F', 'POSTROUTING')
    await run('iptables', '-w', '-t', 'nat', '-A', 'POSTROUTING', '-o', 'eth0', '-j', 'MASQUERADE', ...(mode === 'symmetric' ? ['--random-fully'] : []))
    // Mappings made under the previous mode would outlive it.
    await exec('ip', ['netns', 'exec', gw.name, 'conntrack', '-F'], {timeoutMs: 15_000, reject: false})
    gw.gateway.mode = mode
  }

  private async addNamespace(ns: string): Promise<void> {
    await ip('netns', 'add', ns)
    this.namespaces.push(ns)
    await ip('-n', ns, 'link', 'set', 'lo', 'up')
  }

  private assertOpen(): void {
    if (this.cleaning) throw new Error(`lab ${this.id} has been cleaned up`)
  }

  async run(ref: HostRef, cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.runIn(ref, cmd, opts)
  }

  private async runIn(ref: HostRef, cmd: string[], opts: RunOptions & {display?: Record<string, string>}): Promise<RunResult> {
    this.assertOpen()
    const host = this.host(ref)
    return exec('ip', ['netns', 'exec', host.name, ...cmd], {...opts, track: this.children})
  }

  /** Start a long-running process in a namespace and track it. */
  private spawnIn(host: Host, cmd: string[], opts: SpawnOpts = {}): Child {
    this.assertOpen()
    const child = new Child('ip', ['netns', 'exec', host.name, ...cmd], opts)
    this.children.add(child)
    void child.exited.then(() => this.children.delete(child))
    return child
  }

  private async tunDevices(host: Host): Promise<IpLinkJson[]> {
    const links = JSON.parse(await ip('-j', '-d', '-n', host.name, 'addr', 'show')) as IpLinkJson[]
    return links.filter((l) => l.linkinfo?.info_kind === 'tun')
  }

  async startNebula(ref: HostRef, configPath: string, opts: NebulaOptions = {}): Promise<NebulaProcess> {
    const host = this.host(ref)
    const config = resolve(configPath)
    if (!existsSync(config)) throw new Error(`nebula config ${config} does not exist`)
    // Only a tun device that did not exist before counts (a previous nebula's device may linger briefly).
    const before = new Set((await this.tunDevices(host)).map((l) => l.ifindex))
    const timeoutMs = opts.timeoutMs ?? 15_000
    const child = this.spawnIn(host, opts.command ?? [opts.binary ?? 'nebula', '-config', config], {cwd: opts.cwd ?? dirname(config), env: opts.env})
    this.nebulas.push({host, child})

    let found: IpLinkJson | undefined
    const deadline = Date.now() + timeoutMs
    while (!found) {
      if (!child.isRunning()) {
        const info = await child.exited
        throw new Error(`nebula in ${host.name} exited before its tun device came up (${describeExit(info)})\n${child.tail()}`)
      }

      if (Date.now() > deadline) {
        await child.stop(2000)
        throw new Error(`nebula in ${host.name}: no tun device up with an IPv4 address after ${timeoutMs} ms\n${child.tail()}`)
      }

      found = (await this.tunDevices(host)).find((l) =>
        !before.has(l.ifindex) && (opts.tunDev === undefined || l.ifname === opts.tunDev) &&
        (l.flags ?? []).includes('UP') &&
        (l.addr_info ?? []).some((a) => a.family === 'inet'))
      if (!found) await sleep(25)
    }

    const tun = found
    const waitForLog = async (pattern: RegExp, o: {timeoutMs?: number; since?: number} = {}): Promise<string> =>
      waitForLine(child, `nebula in ${host.name}`, pattern, o)

    return {
      host,
      pid: child.pid,
      configPath: config,
      tunDev: tun.ifname,
      overlayIps: (tun.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => a.local),
      exited: child.exited,
      isRunning: () => child.isRunning(),
      output: () => child.combined,
      outputLength: () => child.dropped + child.combined.length,
      waitForLog,
      async reload(o = {}) {
        const since = child.dropped + child.combined.length
        child.signal('SIGHUP')
        await waitForLog(NEBULA_LOG.reloading, {since, timeoutMs: o.timeoutMs})
      },
      stop: async (o = {}) => child.stop(o.graceMs ?? 5000),
    }
  }

  /** Run a server script (ending in {@link SERVE}) with `args` in a host's namespace; resolves once it listens. */
  private async serve(host: Host, what: string, script: string, args: string[], timeoutMs = 10_000): Promise<Child> {
    const child = this.spawnIn(host, [process.execPath, '-e', script, ...args], {stdin: 'pipe', display: {[script]: `<${what} script>`}})
    child.proc.stdin?.on('error', () => {})
    this.listeners.push({host, child, what: `${what} ${args[0]}:${args[1]}`})
    try {
      await child.waitFor(() => (/^LISTENING$/m.test(child.stdout) ? true : undefined), timeoutMs, `${what} on ${args[0]}:${args[1]} in ${host.name}`)
    } catch (error) {
      await child.stop(1000)
      throw error
    }

    return child
  }

  async listen(ref: HostRef, ipAddr: string, port: number, opts: {timeoutMs?: number} = {}): Promise<Listener> {
    const host = this.host(ref)
    const child = await this.serve(host, 'listener', LISTENER_SCRIPT, [ipAddr, String(port), GREETING, String(MAX_SERVER_LIFE_MS)], opts.timeoutMs)
    return {
      host,
      ip: ipAddr,
      port,
      pid: child.pid,
      accepted: () => [...child.stdout.matchAll(/^ACCEPT (\S+)$/gm)].map((m) => m[1] as string),
      output: () => child.combined,
      async close() {
        await child.stop(2000)
      },
    }
  }

  async httpServer(ref: HostRef, ipAddr: string, port: number, opts: {timeoutMs?: number} = {}): Promise<HttpServer> {
    const host = this.host(ref)
    const child = await this.serve(host, 'http server', HTTP_SERVER_SCRIPT, [ipAddr, String(port), String(MAX_SERVER_LIFE_MS)], opts.timeoutMs)
    return {
      host,
      ip: ipAddr,
      port,
      pid: child.pid,
      requests: () => [...child.stdout.matchAll(/^REQUEST (.+)$/gm)].map((m) => JSON.parse(m[1] as string) as HttpRequestRecord),
      async close() {
        await child.stop(2000)
      },
    }
  }

  async httpPost(ref: HostRef, url: string, body: string, timeoutMs = 3000): Promise<HttpPostResult> {
    const host = this.host(ref)
    const r = await this.runIn(host, [process.execPath, '-e', HTTP_POST_SCRIPT, url, body, String(timeoutMs)],
      {timeoutMs: timeoutMs + 10_000, reject: false, display: {[HTTP_POST_SCRIPT]: '<http post script>'}})
    try {
      return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as HttpPostResult
    } catch {
      return {ok: false, reason: 'error', detail: `http post helper failed (${describeExit(r)}): ${r.stderr.trim() || r.stdout.trim()}`}
    }
  }

  async connect(ref: HostRef, ipAddr: string, port: number, timeoutMs = 3000): Promise<ConnectResult> {
    const host = this.host(ref)
    const started = Date.now()
    // Outer bound: the script's own timeout plus generous time for node to start.
    const r = await this.runIn(host, [process.execPath, '-e', CONNECT_SCRIPT, ipAddr, String(port), GREETING, String(timeoutMs)],
      {timeoutMs: timeoutMs + 10_000, reject: false, display: {[CONNECT_SCRIPT]: '<connect script>'}})
    const line = r.stdout.trim().split('\n').pop() ?? ''
    try {
      const parsed = JSON.parse(line) as {reason: ConnectReason; detail: string; elapsedMs: number}
      return {ok: parsed.reason === 'ok', ...parsed}
    } catch {
      const why = r.timedOut ? 'connect helper timed out' : `connect helper failed (${describeExit(r)})`
      return {ok: false, reason: 'error', detail: `${why}: ${r.stderr.trim() || r.stdout.trim()}`, elapsedMs: Date.now() - started}
    }
  }

  async waitForTcp(ref: HostRef, ipAddr: string, port: number, opts: WaitForTcpOptions = {}): Promise<void> {
    const host = this.host(ref)
    const timeoutMs = opts.timeoutMs ?? 20_000
    const deadline = Date.now() + timeoutMs
    let last: ConnectResult | undefined
    let attempts = 0
    while (Date.now() < deadline) {
      attempts++
      const attempt = Math.max(200, Math.min(opts.attemptTimeoutMs ?? 2000, deadline - Date.now()))
      last = await this.connect(host, ipAddr, port, attempt)
      if (last.ok) return
      if (last.reason !== 'timeout') await sleep(opts.intervalMs ?? 100)
    }

    throw new Error(`${ipAddr}:${port} not reachable from ${host.name} within ${timeoutMs} ms ` +
      `(${attempts} attempts; last: ${last?.reason} ${last?.detail})`)
  }

  async waitForMesh(members: ReadonlyArray<{host: HostRef; ip: string}>, port: number, opts: WaitForTcpOptions = {}): Promise<void> {
    const pairs = members.flatMap((from) => members.filter((to) => to !== from).map((to) => [from.host, to.ip] as const))
    await Promise.all(pairs.map(([host, ipAddr]) => this.waitForTcp(host, ipAddr, port, opts)))
  }

  start(ref: HostRef, cmd: string[], opts: {cwd?: string} = {}): LabProcess {
    const host = this.host(ref)
    const child = this.spawnIn(host, cmd, {cwd: opts.cwd})
    this.others.push({host, child})
    return labProcess(host, child)
  }

  async stream(ref: HostRef, ipAddr: string, port: number, opts: {intervalMs?: number} = {}): Promise<FlowSender> {
    const host = this.host(ref)
    const child = this.spawnIn(host, [process.execPath, '-e', SENDER_SCRIPT, ipAddr, String(port), String(opts.intervalMs ?? 50), String(30 * 60 * 1000)],
      {stdin: 'pipe', display: {[SENDER_SCRIPT]: '<flow sender script>'}})
    child.proc.stdin?.on('error', () => {})
    this.others.push({host, child})
    return {
      process: labProcess(host, child),
      sent: () => [...child.stdout.matchAll(/^SENT (\d+) (\d+)$/gm)].map((m) => ({seq: Number(m[1]), sentAt: Number(m[2]), at: Number(m[2])})),
      connects: () => [...child.stdout.matchAll(/^CONNECTED (\d+)$/gm)].map((m) => Number(m[1])),
    }
  }

  async receive(ref: HostRef, ipAddr: string, port: number): Promise<FlowReceiver> {
    const host = this.host(ref)
    const child = this.spawnIn(host, [process.execPath, '-e', RECEIVER_SCRIPT, ipAddr, String(port), String(30 * 60 * 1000)],
      {stdin: 'pipe', display: {[RECEIVER_SCRIPT]: '<flow receiver script>'}})
    child.proc.stdin?.on('error', () => {})
    this.listeners.push({host, child, what: `flow receiver ${ipAddr}:${port}`})
    try {
      await child.waitFor(() => (/^LISTENING$/m.test(child.stdout) ? true : undefined), 10_000, `flow receiver on ${ipAddr}:${port} in ${host.name}`)
    } catch (error) {
      await child.stop(1000)
      throw error
    }
    return {
      process: labProcess(host, child),
      received: () => [...child.stdout.matchAll(/^RECV (\d+) (\d+) (\d+)$/gm)].map((m) => ({seq: Number(m[1]), sentAt: Number(m[2]), at: Number(m[3])})),
    }
  }

  async capture(ref: HostRef, device: string, port: number): Promise<Capture> {
    const host = this.host(ref)
    const child = this.spawnIn(host, ['tcpdump', '-i', device, '-l', '-n', '-tt', '-A', '-s', '0', `tcp port ${port}`])
    this.others.push({host, child})
    try {
      await child.waitFor(() => (/listening on/.test(child.stderr) ? true : undefined), 10_000, `tcpdump on ${device} in ${host.name}`)
    } catch (error) {
      await child.stop(1000)
      throw error
    }
    return {
      process: labProcess(host, child),
      flowLines() {
        // A packet is a header line (`<seconds>.<micros> IP …`) followed by its bytes as text (-A).
        const lines: FlowLine[] = []
        let at = 0
        for (const line of child.stdout.split('\n')) {
          const header = /^(\d+)\.(\d{6}) IP /.exec(line)
          if (header) at = Number(header[1]) * 1000 + Math.floor(Number(header[2]) / 1000)
          for (const m of line.matchAll(/flow (\d+) (\d{13})/g)) lines.push({seq: Number(m[1]), sentAt: Number(m[2]), at})
        }
        return lines
      },
    }
  }

  async transfer(fromRef: HostRef, toRef: HostRef, ipAddr: string, port: number, bytes: number, opts: {timeoutMs?: number} = {}): Promise<{bytes: number; ms: number}> {
    const [from, to] = [this.host(fromRef), this.host(toRef)]
    const timeoutMs = opts.timeoutMs ?? 120_000
    const sink = this.spawnIn(to, [process.execPath, '-e', SINK_SCRIPT, ipAddr, String(port), String(timeoutMs)], {display: {[SINK_SCRIPT]: '<sink script>'}})
    this.listeners.push({host: to, child: sink, what: `sink ${ipAddr}:${port}`})
    try {
      await sink.waitFor(() => (/^LISTENING$/m.test(sink.stdout) ? true : undefined), 10_000, `sink on ${ipAddr}:${port} in ${to.name}`)
      const sent = await this.runIn(from, [process.execPath, '-e', SEND_SCRIPT, ipAddr, String(port), String(bytes), String(timeoutMs)],
        {timeoutMs: timeoutMs + 10_000, reject: false, display: {[SEND_SCRIPT]: '<send script>'}})
      const received = await sink.waitFor(() => /^RECEIVED (\d+) ([0-9a-f]{64})$/m.exec(sink.stdout) ?? undefined, 10_000, `sink on ${ipAddr}:${port} to report`)
        .catch((error: Error) => error)
      const report = /^SENT (\d+) ([0-9a-f]{64}) (\d+)$/m.exec(sent.stdout)
      let problem: string | undefined
      if (!report) problem = `the sender failed (${describeExit(sent)}): ${sent.stderr.trim() || sent.stdout.trim()}`
      else if (received instanceof Error) problem = `the sink reported nothing: ${received.message}`
      else if (received[1] !== String(bytes) || received[2] !== report[2]) problem = `sent ${report[1]} bytes (sha256 ${report[2]}), received ${received[1]} (sha256 ${received[2]})`
      if (problem) throw new Error(`transfer of ${bytes} bytes from ${from.label} to ${ipAddr}:${port} in ${to.label}: ${problem}`)
      return {bytes, ms: Number(report![3])}
    } finally {
      await sink.stop(2000)
    }
  }

  async linkBytes(ref: HostRef, dev = 'eth0'): Promise<{rx: number; tx: number}> {
    const host = this.host(ref)
    const links = JSON.parse(await ip('-j', '-s', '-n', host.name, 'link', 'show', 'dev', dev)) as Array<{stats64?: {rx: {bytes: number}; tx: {bytes: number}}}>
    const stats = links[0]?.stats64
    if (!stats) throw new Error(`no counters for ${dev} in ${host.name}`)
    return {rx: stats.rx.bytes, tx: stats.tx.bytes}
  }

  async diagnostics(): Promise<string> {
    const parts: string[] = [`lab ${this.id}`]
    for (const host of this.hosts) {
      const role = host.gateway ? `, NAT gateway (${host.gateway.mode})` : host.behind ? `, behind ${host.behind}` : ''
      parts.push(`=== ${host.label} (${host.name}, underlay ${host.underlayIp}${role}) ===`)
      for (const args of [['addr', 'show'], ['route', 'show']]) {
        const r = await exec('ip', ['-n', host.name, ...args], {timeoutMs: 5000, reject: false})
        parts.push(`$ ip -n ${host.name} ${args.join(' ')}\n${r.stdout}${r.stderr}`)
      }
      if (host.gateway) {
        for (const args of [['iptables', '-w', '-L', '-v', '-n'], ['iptables', '-w', '-t', 'nat', '-L', '-v', '-n'], ['conntrack', '-L', '-p', 'udp']]) {
          const r = await exec('ip', ['netns', 'exec', host.name, ...args], {timeoutMs: 5000, reject: false})
          parts.push(`$ ${args.join(' ')}\n${r.stdout}${r.stderr}`)
        }
      }
    }

    for (const {host, child} of this.nebulas) parts.push(`=== nebula in ${host.label} ===\n${child.tail(8000)}`)
    for (const {host, child, what} of this.listeners) parts.push(`=== ${what} in ${host.label} ===\n${child.tail(2000)}`)
    for (const {host, child} of this.others) parts.push(`=== ${child.command} in ${host.label} ===\n${child.tail(2000)}`)
    return parts.join('\n')
  }

  cleanup(): Promise<void> {
    this.cleaning ??= this.doCleanup()
    return this.cleaning
  }

  private async doCleanup(): Promise<void> {
    await Promise.all([...this.children].map(async (child) => child.stop(3000)))
    // Anything else still inside our namespaces (grandchildren, processes started by tests themselves) is killed by
    // removeNamespaces before the namespaces are deleted; hosts go first, the bridge last.
    const order = [...this.namespaces.filter((ns) => ns !== this.bridgeNamespace), ...this.namespaces.filter((ns) => ns === this.bridgeNamespace)]
    const problems = await removeNamespaces(order)
    for (const child of this.children) if (child.isRunning()) problems.push(`process ${child.pid} (${child.command}) is still running`)
    liveLabs.delete(this)
    if (problems.length > 0) throw new Error(`cleanup of lab ${this.id} left things behind:\n  - ${problems.join('\n  - ')}`)
  }

  /** Synchronous last resort (process exit / fatal signal): SIGKILL everything, delete the namespaces. */
  cleanupSync(): void {
    for (const child of this.children) if (child.isRunning()) killQuietly(child.pid, 'SIGKILL')
    for (const ns of this.namespaces) {
      const r = spawnSync('ip', ['netns', 'pids', ns], {encoding: 'utf8', timeout: 5000})
      for (const pid of (r.stdout ?? '').split(/\s+/).filter(Boolean)) killQuietly(Number(pid), 'SIGKILL')
    }

    for (const ns of this.namespaces) spawnSync('ip', ['netns', 'delete', ns], {stdio: 'ignore', timeout: 5000})
    liveLabs.delete(this)
  }
}

/** The first complete output line of `child` matching `pattern` after output offset `since`. */
async function waitForLine(child: Child, what: string, pattern: RegExp, o: {timeoutMs?: number; since?: number} = {}): Promise<string> {
  const since = o.since ?? 0
  return child.waitFor(() => {
    const start = Math.max(0, since - child.dropped)
    const text = child.combined.slice(start)
    const lines = text.slice(0, text.lastIndexOf('\n') + 1).split('\n')
    return lines.find((line) => pattern.test(line))
  }, o.timeoutMs ?? 10_000, `waiting for ${pattern} in the output of ${what}`)
}

function labProcess(host: Host, child: Child): LabProcess {
  return {
    host,
    pid: child.pid,
    command: child.command,
    exited: child.exited,
    isRunning: () => child.isRunning(),
    output: () => child.combined,
    stdout: () => child.stdout,
    outputLength: () => child.dropped + child.combined.length,
    waitForOutput: (pattern, o) => waitForLine(child, `${child.command} in ${host.name}`, pattern, o),
    signal: (sig) => child.signal(sig),
    stop: async (o = {}) => child.stop(o.graceMs ?? 5000),
  }
}

/** Poll an async check every 25 ms until it returns a value; reject with `what` after `timeoutMs`. */
async function pollUntil<T>(check: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(25)
  }
}

/**
 * Create a lab: a bridge namespace and one host namespace per label (labels: lower-case, start with a letter,
 * at most 16 characters, unique), plus one per NAT gateway (`opts.gateways`, with the hosts behind it). Host i gets
 * underlay address `192.0.2.(10 + i)/24` on `eth0`, or behind the n-th gateway `172.16.n.(10 + i)/24`; gateways
 * come after the hosts, on the public bridge. Stale namespaces of
 * crashed runs are swept first (see {@link sweepStale}). If creation fails, whatever was created is removed.
 * Always pair with `await lab.cleanup()` in `afterAll`.
 */
export async function createLab(labels: string[], opts: LabOptions = {}): Promise<Lab> {
  if (labels.length === 0) throw new Error('createLab needs at least one host label')
  for (const label of labels) {
    if (!LABEL.test(label)) throw new Error(`invalid host label '${label}': use ${LABEL}`)
  }

  const gateways = opts.gateways ?? []
  const all = [...labels, ...gateways.map((g) => g.label)]
  for (const g of gateways) if (!LABEL.test(g.label)) throw new Error(`invalid gateway label '${g.label}': use ${LABEL}`)
  if (new Set(all).size !== all.length) throw new Error(`host and gateway labels must be unique: ${all.join(', ')}`)
  const placed = gateways.flatMap((g) => g.hosts)
  for (const label of placed) if (!labels.includes(label)) throw new Error(`a gateway names '${label}', which is no host label`)
  if (new Set(placed).size !== placed.length) throw new Error('a host can sit behind one gateway only')
  if (gateways.length > 200) throw new Error('at most 200 gateways (172.16.1-200.0/24)')
  const first = opts.firstHostOctet ?? 10
  if (first < 2 || first + all.length > 255) throw new Error(`underlay addresses .${first}+ do not fit a /24`)
  if (opts.sweep ?? true) await sweepStale()

  const existing = new Set(await listNamespaces())
  let id: string
  do id = `${NS_PREFIX}${process.pid}-${randomBytes(2).toString('hex')}`
  while ([...existing].some((ns) => ns.startsWith(`${id}-`) || ns === `${id}.br`))

  installExitHooks()
  const lab = new LabImpl(id)
  liveLabs.add(lab)
  try {
    await lab.build(labels, opts)
  } catch (error) {
    await lab.cleanup().catch(() => lab.cleanupSync())
    throw error
  }

  return lab
}
