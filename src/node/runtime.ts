/**
 * doctor's checks of the running system, beside its checks of the installed files (`doctor.ts`): the overlay address on
 * Nebula's tun device, what listens on the overlay IP's MultiChain P2P port, and, where Docker is installed, the
 * Compose version, the boot-order sysctl and the blockchain container as Docker runs it (`docker inspect`: its
 * effective environment, published ports, chain volume and restart policy). Each check returns a verdict and one line.
 */

import {readFile} from 'node:fs/promises'
import {connect} from 'node:net'

import {isIpv4} from '../lib/ip.js'
import {runChild} from '../lib/spawn.js'
import {lastLine} from '../lib/text.js'
import {compareVersions} from '../lib/version.js'
import {LABEL_NODE, LABEL_SERVICE, type LabelledService} from '../render/compose.js'
import {HOST_SYSCTLS} from '../render/host-sysctl.js'
import {MIN_COMPOSE_VERSION, MULTICHAIN_DIR} from '../render/trubudget.js'
import type {Verdict} from './compose-ports.js'

/** One check's outcome: its id, verdict and one line. */
export type RuntimeCheck = [name: string, status: Verdict, detail: string]

/** What the running blockchain container should show, from the installation's files. */
export interface ExpectedBlockchain {
  /** The node's name (the containers' `org.tbmesh.node` label). */
  node: string
  organization: string
  overlayIp: string
  /** The registrar the node joins at; undefined on the origin (P2P_HOST must be unset). */
  p2pHost?: string
  p2pPort: number
  /** The node's RPC password from node.env, compared, never printed. */
  rpcPassword?: string
}

/**
 * `overlay-address`: whether `tun` holds `overlayIp` (`ip -j -4 addr show dev TUN`). Warn when the device does not exist
 * (Nebula is not running), fail when it holds other addresses.
 */
export async function checkOverlayAddress(tun: string, overlayIp: string): Promise<RuntimeCheck> {
  const shown = await runChild('ip', ['-j', '-4', 'addr', 'show', 'dev', tun], {timeoutMs: 10_000})
  if (shown.exitCode !== 0) return ['overlay-address', 'warn', `${tun} does not exist: Nebula is not running (start it, then run doctor again)`]
  let addresses: string[] = []
  try {
    const links = JSON.parse(shown.stdout) as Array<{addr_info?: Array<{local?: string}>}>
    addresses = links.flatMap((l) => (l.addr_info ?? []).map((a) => a.local ?? '')).filter(Boolean)
  } catch {
    return ['overlay-address', 'warn', `cannot read the addresses of ${tun}`]
  }
  if (addresses.includes(overlayIp)) return ['overlay-address', 'pass', `${tun} holds the overlay IP ${overlayIp}`]
  return ['overlay-address', 'fail', `${tun} holds ${addresses.join(', ') || 'no IPv4 address'}, not the overlay IP ${overlayIp}: another Nebula config runs`]
}

/** The local IPv4 addresses (dotted, `0.0.0.0` for every interface) listening on TCP `port`, from /proc/net/tcp and tcp6. */
export async function tcpListeners(port: number): Promise<string[]> {
  const found: string[] = []
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(file, 'utf8').catch(() => '')
    for (const line of text.split('\n').slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/)
      if (state !== '0A' || !local) continue // 0A: LISTEN
      const [hex, portHex] = local.split(':')
      if (Number.parseInt(portHex, 16) !== port) continue
      if (/^0+$/.test(hex)) found.push('0.0.0.0')
      else if (hex.length === 8) found.push([3, 2, 1, 0].map((i) => Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16)).join('.'))
      else if (hex.length === 32 && hex.startsWith('0000000000000000FFFF0000')) found.push([3, 2, 1, 0].map((i) => Number.parseInt(hex.slice(24 + i * 2, 26 + i * 2), 16)).join('.'))
    }
  }
  return [...new Set(found)]
}

/** Whether a TCP connection to `ip:port` is accepted within `ms`. */
async function accepts(ip: string, port: number, ms = 1500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({host: ip, port})
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(ms, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}

/**
 * `p2p-listener`: fail when MultiChain P2P listens on every interface (reachable on the underlay address too); pass
 * when it listens on the overlay IP, or (Docker publishing without a userland proxy) a connection to it is accepted;
 * warn when nothing answers (TruBudget is not running). A connection is tried only when the host holds `overlayIp`
 * (`local`): otherwise it would leave the host by its default route.
 */
export async function checkP2pListener(overlayIp: string, port: number, local: boolean): Promise<RuntimeCheck> {
  const listeners = await tcpListeners(port)
  if (listeners.includes('0.0.0.0')) {
    return ['p2p-listener', 'fail', `something listens on every interface on port ${port} (MultiChain P2P), the underlay address included: bind it to ${overlayIp} or publish it there only`]
  }
  if (listeners.includes(overlayIp)) return ['p2p-listener', 'pass', `MultiChain P2P listens on ${overlayIp}:${port} only`]
  if (local && (await accepts(overlayIp, port))) return ['p2p-listener', 'pass', `${overlayIp}:${port} accepts connections (MultiChain P2P, published by Docker)`]
  return ['p2p-listener', 'warn', `nothing answers on ${overlayIp}:${port}: TruBudget's blockchain is not running${local ? '' : ', nor is Nebula'}`]
}

/** Runs the docker CLI (10 s limit); stdout, or the reason it failed. */
async function docker(bin: string, args: string[]): Promise<{ok: true; out: string} | {ok: false; why: string}> {
  const r = await runChild(bin, args, {timeoutMs: 10_000})
  if (r.exitCode === 0) return {ok: true, out: r.stdout}
  const why = lastLine(r.output || (r.failure ?? 'failed'))
  return {ok: false, why}
}

/** `compose-version`: `docker compose version --short` is at least {@link MIN_COMPOSE_VERSION} (the `!override` tag). */
export async function checkComposeVersion(bin: string): Promise<RuntimeCheck> {
  const r = await docker(bin, ['compose', 'version', '--short'])
  if (!r.ok) return ['compose-version', 'fail', `\`docker compose version\` failed (${r.why}): install Docker Compose v2, ${MIN_COMPOSE_VERSION} or later`]
  const version = /v?(\d+\.\d+\.\d+)/.exec(r.out)?.[1]
  if (!version) return ['compose-version', 'warn', `cannot read the Compose version from ${JSON.stringify(r.out.trim())}`]
  if (compareVersions(version, MIN_COMPOSE_VERSION) < 0) {
    return ['compose-version', 'fail', `Docker Compose ${version} is older than ${MIN_COMPOSE_VERSION}: it ignores the !override tag, so TruBudget's ports stay published on every interface; upgrade it`]
  }
  return ['compose-version', 'pass', `Docker Compose ${version} (${MIN_COMPOSE_VERSION} or later reads the !override tag)`]
}

/** `boot-order`: the sysctls of host/tbmesh-sysctl.conf are in effect (read from /proc/sys). */
export async function checkBootOrder(procSys = '/proc/sys'): Promise<RuntimeCheck> {
  const wrong: string[] = []
  for (const [key, value] of Object.entries(HOST_SYSCTLS)) {
    const have = (await readFile(`${procSys}/${key.replaceAll('.', '/')}`, 'utf8').catch(() => '?')).trim()
    if (have !== value) wrong.push(`${key} is ${have}`)
  }
  if (wrong.length > 0) {
    return ['boot-order', 'fail', `${wrong.join(', ')}: after a reboot Docker may start TruBudget before Nebula's overlay IP exists and not retry; install host/tbmesh-sysctl.conf into /etc/sysctl.d`]
  }
  return ['boot-order', 'pass', `${Object.keys(HOST_SYSCTLS).join(', ')} set: Docker can publish on the overlay IP before Nebula brings it up`]
}

/** The ids of the node's containers of `service` (`running`: only running ones). */
export async function nodeContainers(bin: string, node: string, service: LabelledService, running = false): Promise<{ok: true; ids: string[]} | {ok: false; why: string}> {
  const filters = [`label=${LABEL_NODE}=${node}`, `label=${LABEL_SERVICE}=${service}`, ...(running ? ['status=running'] : [])].flatMap((f) => ['--filter', f])
  const r = await docker(bin, ['ps', '-a', '--no-trunc', '--format', '{{.ID}}', ...filters])
  return r.ok ? {ok: true, ids: r.out.split('\n').map((l) => l.trim()).filter(Boolean)} : r
}

/** The part of `docker inspect`'s output doctor reads (Docker Engine API, ContainerInspect). */
interface Inspected {
  Name?: string
  Config?: {Env?: string[]}
  HostConfig?: {PortBindings?: Record<string, Array<{HostIp?: string; HostPort?: string}> | null>; RestartPolicy?: {Name?: string}}
  Mounts?: Array<{Type?: string; Name?: string; Destination?: string}>
}

/**
 * The checks of the node's blockchain container as Docker runs it (`docker inspect`):
 * - `container-environment`: ORGANIZATION, EXTERNAL_IP and P2P_HOST as the installation says (P2P_HOST unset on the
 *   origin), EXPOSE_MC not true, and the RPC password the node's own (node.env), never one of TruBudget's examples;
 * - `container-ports`: the P2P port published on the overlay IP only, anything else on 127.0.0.1 only;
 * - `container-volume`: a volume mounted at MULTICHAIN_DIR (the chain and wallet survive a recreated container);
 * - `container-restart`: a restart policy that brings it back after a reboot.
 * One `container` warning instead when Docker cannot be asked or runs no such container.
 */
export async function checkBlockchainContainer(bin: string, want: ExpectedBlockchain): Promise<RuntimeCheck[]> {
  const found = await nodeContainers(bin, want.node, 'blockchain')
  if (!found.ok) return [['container', 'warn', `cannot ask Docker for the blockchain container (${found.why})`]]
  if (found.ids.length === 0) return [['container', 'warn', `Docker runs no blockchain container of ${want.node} started with tbmesh's compose files yet`]]
  const r = await docker(bin, ['inspect', found.ids[0]])
  let c: Inspected | undefined
  try {
    c = r.ok ? (JSON.parse(r.out) as Inspected[])[0] : undefined
  } catch {}
  if (!c) return [['container', 'warn', `cannot inspect container ${found.ids[0].slice(0, 12)}${r.ok ? '' : ` (${r.why})`}`]]
  const name = (c.Name ?? found.ids[0].slice(0, 12)).replace(/^\//, '')
  const env = new Map((c.Config?.Env ?? []).map((e) => [e.slice(0, Math.max(0, e.indexOf('='))), e.slice(e.indexOf('=') + 1)]))
  const checks: RuntimeCheck[] = []

  const wrong: string[] = []
  const expect = (key: string, value: string | undefined) => {
    const have = env.get(key) || undefined
    if (have !== value) wrong.push(`${key}=${have ?? '(unset)'} (want ${value ?? '(unset)'})`)
  }
  expect('ORGANIZATION', want.organization)
  expect('EXTERNAL_IP', want.overlayIp)
  expect('P2P_HOST', want.p2pHost)
  if (env.get('EXPOSE_MC') === 'true') wrong.push('EXPOSE_MC=true (replaces EXTERNAL_IP)')
  const password = env.get('MULTICHAIN_RPC_PASSWORD')
  if (want.rpcPassword !== undefined && password !== want.rpcPassword) wrong.push("MULTICHAIN_RPC_PASSWORD is not this node's own (node.env must be the last --env-file)")
  checks.push(
    wrong.length > 0
      ? ['container-environment', 'fail', `container ${name} runs with ${wrong.join(', ')}`]
      : ['container-environment', 'pass', `container ${name} runs as ${want.organization} at ${want.overlayIp}${want.p2pHost ? `, joining at ${want.p2pHost}` : ''}, with this node's RPC password`],
  )

  const exposed: string[] = []
  let onOverlay = false
  for (const [port, bindings] of Object.entries(c.HostConfig?.PortBindings ?? {})) {
    for (const b of bindings ?? []) {
      const ip = b.HostIp || '0.0.0.0'
      const p2p = port === `${want.p2pPort}/tcp`
      if (p2p && ip === want.overlayIp) onOverlay = true
      else if (p2p || ip !== '127.0.0.1') exposed.push(`${port} on ${ip}:${b.HostPort ?? '?'}`)
    }
  }
  if (exposed.length > 0) checks.push(['container-ports', 'fail', `container ${name} publishes ${exposed.join(', ')}: only P2P on the overlay IP ${want.overlayIp} may leave this host`])
  else if (onOverlay) checks.push(['container-ports', 'pass', `container ${name} publishes P2P ${want.p2pPort} on ${want.overlayIp} only`])
  else checks.push(['container-ports', 'fail', `container ${name} does not publish P2P ${want.p2pPort} on ${want.overlayIp}: other nodes cannot reach it`])

  const dir = env.get('MULTICHAIN_DIR') || MULTICHAIN_DIR
  const volume = (c.Mounts ?? []).find((m) => m.Destination === dir && m.Type === 'volume')
  checks.push(
    volume
      ? ['container-volume', 'pass', `the chain (${dir}) is on volume ${volume.Name ?? '?'}`]
      : ['container-volume', 'fail', `container ${name} keeps the chain (${dir}) inside the container: recreating it loses the chain and wallet; put it on a volume (tbmesh's compose files do)`],
  )
  const restart = c.HostConfig?.RestartPolicy?.Name ?? ''
  checks.push(
    ['unless-stopped', 'always'].includes(restart)
      ? ['container-restart', 'pass', `container ${name} restarts ${restart}`]
      : ['container-restart', 'fail', `container ${name} has restart policy ${JSON.stringify(restart || 'no')}: it stays down after a reboot`],
  )
  return checks
}

/** Whether `text` is a dotted IPv4 address (for values read from env files). */
export function ipOrUndefined(text: string | undefined): string | undefined {
  return text !== undefined && isIpv4(text) ? text : undefined
}
