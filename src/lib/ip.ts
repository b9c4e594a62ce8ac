/**
 * IPv4 arithmetic for the overlay: CIDR parsing, organization blocks and overlay-IP allocation; underlay endpoints.
 * Addresses are handled as unsigned 32-bit numbers; CIDRs as `a.b.c.d/n` strings.
 */

import {UsageError, UserError} from '../errors.js'

/** A parsed IPv4 network: `base` is the network address (host bits cleared), `prefix` 0..32. */
export interface Ipv4Network {
  base: number
  prefix: number
}

const DOTTED = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/

/** A dotted-quad IPv4 address, each part 0-255 without leading zeros, e.g. `10.42.1.5`. */
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/

/** True when `value` is a dotted-quad IPv4 address as {@link formatIp} writes it. */
export function isIpv4(value: unknown): value is string {
  return typeof value === 'string' && IPV4.test(value)
}

/** Parses a dotted IPv4 address into an unsigned 32-bit number. Throws UsageError (naming `what`) otherwise. */
export function parseIp(text: string, what = 'IP address'): number {
  if (text.includes(':')) throw new UsageError(`${what} "${text}" is IPv6`, {fix: 'tbmesh needs an IPv4 address'})
  const m = DOTTED.exec(text)
  if (!m) throw new UsageError(`${what} "${text}" is not an IPv4 address`, {fix: 'write it as a.b.c.d'})
  const parts = m.slice(1).map(Number)
  if (parts.some((p, i) => p > 255 || (m[i + 1].length > 1 && m[i + 1].startsWith('0')))) {
    throw new UsageError(`${what} "${text}" is not an IPv4 address`, {fix: 'each part is 0-255, without leading zeros'})
  }
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0
}

/** Formats an unsigned 32-bit number as a dotted IPv4 address. */
export function formatIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.')
}

/** The netmask of a prefix length, as an unsigned 32-bit number. */
export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
}

/**
 * Parses a CIDR `a.b.c.d/n`. With `strict` (the default), host bits must be zero (`10.42.0.0/16`, not `10.42.1.0/16`).
 * Throws UsageError naming `what` for IPv6, a missing or bad prefix, or host bits set.
 */
export function parseCidr(text: string, what = 'CIDR', strict = true): Ipv4Network {
  const [addr, len, ...rest] = text.split('/')
  if (addr.includes(':')) throw new UsageError(`${what} "${text}" is IPv6`, {fix: 'tbmesh overlays are IPv4 (what every Nebula from 1.6 on carries): use e.g. 10.42.0.0/16'})
  if (len === undefined || rest.length > 0 || !/^\d{1,2}$/.test(len) || Number(len) > 32) {
    throw new UsageError(`${what} "${text}" is not a CIDR`, {fix: 'write it as a.b.c.d/n, e.g. 10.42.0.0/16'})
  }
  const ip = parseIp(addr, what)
  const prefix = Number(len)
  const base = (ip & maskOf(prefix)) >>> 0
  if (strict && base !== ip) {
    throw new UsageError(`${what} "${text}" has host bits set`, {fix: `did you mean ${formatIp(base)}/${prefix}?`})
  }
  return {base, prefix}
}

/** Formats a network as `a.b.c.d/n`. */
export function formatCidr(net: Ipv4Network): string {
  return `${formatIp(net.base)}/${net.prefix}`
}

/** Number of addresses in a network (2^(32-prefix)). */
export function sizeOf(net: Ipv4Network): number {
  return 2 ** (32 - net.prefix)
}

/** True when `ip` lies inside `net`. */
export function contains(net: Ipv4Network, ip: number): boolean {
  return ((ip & maskOf(net.prefix)) >>> 0) === net.base
}

/** True when the two networks share at least one address. */
export function overlaps(a: Ipv4Network, b: Ipv4Network): boolean {
  const prefix = Math.min(a.prefix, b.prefix)
  return ((a.base & maskOf(prefix)) >>> 0) === ((b.base & maskOf(prefix)) >>> 0)
}

/**
 * The first block of length `prefix` inside `network` that overlaps none of `taken`.
 * Throws UserError when the network is full.
 */
export function nextFreeBlock(network: Ipv4Network, prefix: number, taken: Ipv4Network[]): Ipv4Network {
  const step = 2 ** (32 - prefix)
  const count = sizeOf(network) / step
  for (let i = 0; i < count; i++) {
    const candidate = {base: (network.base + i * step) >>> 0, prefix}
    if (!taken.some((t) => overlaps(t, candidate))) return candidate
  }
  throw new UserError(`the overlay network ${formatCidr(network)} has no free /${prefix} block left`, {
    fix: 'create a network with a larger --cidr or a longer --org-prefix',
  })
}

/**
 * The host addresses of a block that may be handed out: every address but the block's first (network) and last
 * (broadcast). A /31 or /32 block has none.
 */
export function usableRange(block: Ipv4Network): {first: number; last: number} | undefined {
  const size = sizeOf(block)
  if (size < 4) return undefined
  return {first: block.base + 1, last: block.base + size - 2}
}

/**
 * The lowest usable address of `block` not in `used`. Runs in O(|used|) plus the scan; `used` holds unsigned 32-bit
 * addresses. Throws UserError when the block is full.
 */
export function nextFreeIp(block: Ipv4Network, used: ReadonlySet<number>, blockOwner: string): number {
  const range = usableRange(block)
  if (range) {
    for (let ip = range.first; ip <= range.last; ip++) if (!used.has(ip)) return ip
  }
  throw new UserError(`the block ${formatCidr(block)} of ${blockOwner} is full`, {
    fix: 'revoke unused nodes, or create the network with a shorter --org-prefix',
  })
}

/**
 * Checks that `ip` may be given to a node of `block`: inside it, not its first or last address, not in `used`.
 * Throws UsageError naming the problem.
 */
export function checkRequestedIp(block: Ipv4Network, ip: number, used: ReadonlySet<number>, blockOwner: string): void {
  const text = formatIp(ip)
  if (!contains(block, ip)) {
    throw new UsageError(`--ip ${text} is outside ${blockOwner}'s block ${formatCidr(block)}`, {fix: 'pick an address inside the block, or omit --ip'})
  }
  const range = usableRange(block)
  if (!range || ip < range.first || ip > range.last) {
    throw new UsageError(`--ip ${text} is the first or last address of ${formatCidr(block)}`, {fix: 'pick another address, or omit --ip'})
  }
  if (used.has(ip)) throw new UsageError(`--ip ${text} is already used`, {fix: 'pick another address, or omit --ip'})
}

/** Special-purpose IPv4 ranges (RFC 6890) an overlay cannot use: its addresses never reach a tun device. */
const SPECIAL_RANGES: ReadonlyArray<readonly [string, string]> = [
  ['0.0.0.0/8', '"this network"'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
]

/** The special-purpose range `net` overlaps, as `loopback range 127.0.0.0/8`, or undefined. */
export function specialRangeOverlap(net: Ipv4Network): string | undefined {
  for (const [cidr, name] of SPECIAL_RANGES) if (overlaps(net, parseCidr(cidr))) return `${name} range ${cidr}`
  return undefined
}

/**
 * Docker's default address pools (`default-address-pools` when dockerd is not told otherwise): the bridge network
 * 172.17.0.0/16, then one /16 per network from 172.18.0.0/16 to 172.31.0.0/16, then /20s of 192.168.0.0/16. An overlay
 * overlapping them collides with the networks Docker creates on every node that runs TruBudget with Docker.
 */
export const DOCKER_DEFAULT_POOLS: readonly string[] = [
  '172.17.0.0/16', '172.18.0.0/15', '172.20.0.0/14', '172.24.0.0/13', '192.168.0.0/16',
]

/** The first of {@link DOCKER_DEFAULT_POOLS} that `net` overlaps (a CIDR), or undefined. */
export function dockerPoolOverlap(net: Ipv4Network): string | undefined {
  return DOCKER_DEFAULT_POOLS.find((cidr) => overlaps(net, parseCidr(cidr)))
}

/**
 * The first of `candidates` (IPv4 CIDRs) that overlaps none of `avoid`. Throws Error when every candidate does (the
 * caller's candidates are chosen so that one never can).
 */
export function firstDisjoint(candidates: readonly string[], avoid: Ipv4Network[]): string {
  const found = candidates.find((c) => !avoid.some((a) => overlaps(a, parseCidr(c))))
  if (!found) throw new Error(`every candidate network overlaps ${avoid.map((a) => formatCidr(a)).join(', ')}`)
  return found
}

/** Checks a TCP or UDP port given on the command line (1–65535) and returns it. Throws UsageError naming `flag`. */
export function checkPort(port: number, flag: string): number {
  if (!Number.isInteger(port) || port < 1 || port > 65_535) throw new UsageError(`${flag} ${port} is not a port`, {fix: 'give a number from 1 to 65535'})
  return port
}

/**
 * Checks an underlay endpoint `host:port` (IPv4, DNS name or `[IPv6]`; port 1-65535) and returns it.
 * Throws UsageError.
 */
export function checkEndpoint(text: string): string {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text)
  const fix = 'write HOST:PORT with a port from 1 to 65535, e.g. 203.0.113.7:4242'
  if (!m) throw new UsageError(`--endpoint "${text}" is not HOST:PORT`, {fix})
  const port = Number(m[2])
  if (port < 1 || port > 65_535) throw new UsageError(`--endpoint "${text}" has port ${port}`, {fix})
  const host = m[1]
  if (!host.startsWith('[') && !/^\d+(\.\d+){3}$/.test(host) && !host.split('.').every((l) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(l))) {
    throw new UsageError(`--endpoint "${text}" has an invalid host name`, {fix})
  }
  if (/^\d+(\.\d+){3}$/.test(host)) parseIp(host, '--endpoint host')
  return text
}

/**
 * What of a certificate lies outside `block` (IPv4 CIDR): each of `addresses` (dotted IPv4, or a certificate network
 * `a.b.c.d/n` whose address part is the host's address, as Nebula writes `ips`/`networks`) whose address is not in the
 * block, and each of `networks` (unsafe networks / subnets, `a.b.c.d/n`) not wholly inside it. An IPv6 or unparsable
 * entry is always outside. Returns them as given, in order; empty when everything lies inside.
 */
export function outsideBlock(block: string, addresses: readonly string[], networks: readonly string[] = []): string[] {
  const net = parseCidr(block, 'block')
  const address = (text: string): number | undefined => {
    try {
      return parseIp(text.split('/')[0])
    } catch {
      return undefined
    }
  }
  const outside: string[] = []
  for (const a of addresses) {
    const ip = address(a)
    if (ip === undefined || !contains(net, ip)) outside.push(a)
  }
  for (const n of networks) {
    let inner: Ipv4Network | undefined
    try {
      inner = parseCidr(n, 'network', false)
    } catch {}
    if (!inner || inner.prefix < net.prefix || !contains(net, inner.base)) outside.push(n)
  }
  return outside
}
