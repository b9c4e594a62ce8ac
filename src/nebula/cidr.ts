/**
 * IPv4 CIDR arithmetic as the certificate formats need it, failing through the caller's `fail` (a format error) rather
 * than the CLI's errors: parse `a.b.c.d/n` keeping the host bits, masks, containment.
 */

import type {Fail} from './pem.js'

const CIDR = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\/(0|[1-9]\d?)$/

/** `a.b.c.d/n` → [address as unsigned 32-bit number (host bits kept), prefix length]; `fail`s otherwise. */
export function parseCertCidr(cidr: string, what: string, fail: Fail): [number, number] {
  const match = CIDR.exec(cidr)
  const parts = match ? match.slice(1).map(Number) : []
  if (!match || parts.slice(0, 4).some((octet) => octet > 255) || parts[4]! > 32) {
    fail(`${what} ${JSON.stringify(cidr)} is not an IPv4 CIDR such as 10.42.1.5/16`)
  }
  const [a, b, c, d, prefix] = parts as [number, number, number, number, number]
  return [((a << 24) | (b << 16) | (c << 8) | d) >>> 0, prefix]
}

/** The netmask of a prefix length, as an unsigned 32-bit number. */
export function prefixMask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
}

/** Whether addresses `a` and `b` share their first `prefix` bits. */
export function sameNetwork(a: number, b: number, prefix: number): boolean {
  const mask = prefixMask(prefix)
  return ((a & mask) >>> 0) === ((b & mask) >>> 0)
}
