/**
 * The networks certificates carry, as the certificate formats need them, failing through the caller's `fail` (a format
 * error) rather than the CLI's errors: parse `a.b.c.d/n` (both formats) and IPv6 `x:…:x/n` (v2 only) keeping the host
 * bits, print them as Go's `netip.Prefix.String` does, containment, and the order nebula-cert sorts v2 networks in.
 */

import type {Fail} from './pem.js'

/** One network of a certificate: the address as stored (4 bytes IPv4, 16 bytes IPv6, host bits kept) and its prefix length. */
export interface CertPrefix {
  address: Buffer
  bits: number
}

const IPV4 = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/
const HEXTET = /^[0-9a-fA-F]{1,4}$/

/**
 * `a.b.c.d/n`, or with `ipv6` also an IPv6 `x:…:x/n` (`::` allowed; no zone, no embedded IPv4), into bytes and prefix
 * length; `fail`s otherwise.
 */
export function parseCertPrefix(cidr: string, what: string, fail: Fail, opts: {ipv6?: boolean} = {}): CertPrefix {
  const slash = cidr.lastIndexOf('/')
  const bitsText = cidr.slice(slash + 1)
  const address = slash > 0 && /^(0|[1-9]\d{0,2})$/.test(bitsText) ? parseAddress(cidr.slice(0, slash), opts.ipv6 ?? false) : undefined
  const bits = Number(bitsText)
  if (!address || bits > address.length * 8) {
    return fail(`${what} ${JSON.stringify(cidr)} is not ${opts.ipv6 ? 'a CIDR such as 10.42.1.5/16 or fd42::5/64' : 'an IPv4 CIDR such as 10.42.1.5/16'}`)
  }
  return {address, bits}
}

function parseAddress(text: string, ipv6: boolean): Buffer | undefined {
  const v4 = IPV4.exec(text)
  if (v4) {
    const octets = v4.slice(1).map(Number)
    return octets.every((o) => o <= 255) ? Buffer.from(octets) : undefined
  }
  if (!ipv6 || !text.includes(':')) return undefined
  const halves = text.split('::')
  if (halves.length > 2) return undefined
  const words = (half: string): string[] | undefined => {
    if (half === '') return []
    const parts = half.split(':')
    return parts.every((p) => HEXTET.test(p)) ? parts : undefined
  }
  const head = words(halves[0]!)
  const tail = halves.length === 2 ? words(halves[1]!) : []
  if (!head || !tail) return undefined
  const missing = 8 - head.length - tail.length
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined
  const all = [...head, ...Array.from({length: missing}, () => '0'), ...tail]
  const bytes = Buffer.alloc(16)
  for (const [i, word] of all.entries()) bytes.writeUInt16BE(Number.parseInt(word, 16), i * 2)
  return bytes
}

/**
 * A network as Go's `netip.Prefix.String` prints it: dotted IPv4; IPv6 in lowercase hex without leading zeros, the
 * longest run of two or more zero groups (the first of equal runs) written `::`.
 */
export function formatCertPrefix(prefix: CertPrefix): string {
  const {address, bits} = prefix
  if (address.length === 4) return `${[...address].join('.')}/${bits}`
  const groups = Array.from({length: 8}, (_, i) => address.readUInt16BE(i * 2))
  let best = -1
  let bestLength = 1
  for (let i = 0; i < 8;) {
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) [best, bestLength] = [i, j - i]
    i = j === i ? i + 1 : j
  }
  const hex = (list: number[]): string => list.map((g) => g.toString(16)).join(':')
  const text = best < 0 ? hex(groups) : `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLength))}`
  return `${text}/${bits}`
}

/** Whether `inner` lies inside `outer`: same family, a prefix at least as long, the same first `outer.bits` bits. */
export function prefixContains(outer: CertPrefix, inner: CertPrefix): boolean {
  if (outer.address.length !== inner.address.length || inner.bits < outer.bits) return false
  return sameBits(outer.address, inner.address, outer.bits)
}

/** The order nebula-cert sorts v2 networks in (`comparePrefix`): IPv4 before IPv6, then by address, then prefix length. */
export function comparePrefixes(a: CertPrefix, b: CertPrefix): number {
  return a.address.length - b.address.length || Buffer.compare(a.address, b.address) || a.bits - b.bits
}

/** Whether every byte of the address is zero (`0.0.0.0`, `::`): Nebula refuses such a network in a v2 certificate. */
export function isUnspecified(prefix: CertPrefix): boolean {
  return prefix.address.every((b) => b === 0)
}

/** Whether an IPv6 address is IPv4-mapped (`::ffff:a.b.c.d`): Nebula refuses it in a v2 certificate. */
export function isIpv4Mapped(prefix: CertPrefix): boolean {
  return prefix.address.length === 16 && prefix.address.subarray(0, 10).every((b) => b === 0) && prefix.address.readUInt16BE(10) === 0xffff
}

/** The netmask of an IPv4 prefix length, as an unsigned 32-bit number (v1 stores IPv4 networks as address, mask). */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
}

function sameBits(a: Buffer, b: Buffer, bits: number): boolean {
  const whole = bits >> 3
  if (!a.subarray(0, whole).equals(b.subarray(0, whole))) return false
  const rest = bits & 7
  if (rest === 0) return true
  const mask = (0xff << (8 - rest)) & 0xff
  return (a[whole]! & mask) === (b[whole]! & mask)
}
