/**
 * Everything tbmesh signs, and the codes people compare by phone. Each message starts with a domain prefix of its own
 * (`tbmesh-<purpose>:v<n>:`), so that a signature made for one purpose can never be replayed as another: a CA key signs
 * certificates (Nebula's format, no prefix), bundle manifests, CA endorsements, descriptor approvals, membership
 * requests, revocation lists and violation reports, each below.
 *
 * JSON payloads are signed in canonical form ({@link canonicalJson}): object keys sorted, no white space.
 */

import {sha256Hex} from './text.js'

/** JSON with object keys sorted and no white space (`undefined` members left out): the bytes digests and signatures cover. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined)
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

/** Hex SHA-256 of a value's canonical JSON (a descriptor version's digest). */
export function jsonDigest(value: unknown): string {
  return sha256Hex(canonicalJson(value))
}

/** `prefix ‖ payload` as bytes. */
function message(prefix: string, payload: string | Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(prefix, 'utf8'), typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload])
}

/** What a CA signs to vouch for its successor `caFingerprint` (hex) during a rotation. */
export function endorsementMessage(caFingerprint: string): Buffer {
  return message('tbmesh-ca-endorsement:v1:', caFingerprint)
}

/** What a member's CA signs to approve a descriptor version, given the version's digest ({@link jsonDigest}). */
export function approvalMessage(descriptorDigest: string): Buffer {
  return message('tbmesh-network-descriptor:v1:', descriptorDigest)
}

/** What a joining organization's CA signs in its membership request (`MembershipRequest` in `home/types.ts`). */
export function requestMessage(request: object): Buffer {
  return message('tbmesh-membership-request:v1:', canonicalJson(request))
}

/** What a member's CA signs in its revocation list (`RevocationList` in `home/types.ts`). */
export function revocationMessage(list: object): Buffer {
  return message('tbmesh-revocation-list:v1:', canonicalJson(list))
}

/** What a member's CA signs in a violation report (`ViolationReport` in `home/types.ts`). */
export function violationReportMessage(report: object): Buffer {
  return message('tbmesh-violation-report:v1:', canonicalJson(report))
}

/**
 * What a CA signs in a bundle (`manifest.sig`): the exact bytes of `manifest.json`. Manifests of schema version 2 and
 * later are signed under the domain prefix; schema version 1 manifests were signed bare, and are still read.
 */
export function manifestMessage(manifestBytes: Uint8Array, schemaVersion: number): Buffer {
  return schemaVersion === 1 ? Buffer.from(manifestBytes) : message('tbmesh-bundle-manifest:v2:', manifestBytes)
}

/** Crockford base32: no I, L, O, U (nothing to misread aloud). */
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'

/**
 * A code people read aloud to compare what two sides hold: the first 60 bits of SHA-256(`tbmesh-code:<purpose>:v1:` ‖
 * payload) in Crockford base32, as three groups of four (`XXXX-XXXX-XXXX`). `purpose` keeps codes of different
 * things apart: `join-request` (the request file's bytes), `membership` (a member entry and the version it extends).
 */
export function verificationCode(purpose: 'join-request' | 'membership', payload: string | Uint8Array): string {
  const digest = Buffer.from(sha256Hex(message(`tbmesh-code:${purpose}:v1:`, payload)), 'hex')
  let bits = 0n
  for (const byte of digest.subarray(0, 8)) bits = (bits << 8n) | BigInt(byte)
  bits >>= 4n // keep 60 bits
  let code = ''
  for (let i = 11; i >= 0; i--) code += CROCKFORD[Number((bits >> BigInt(i * 5)) & 31n)]
  return `${code.slice(0, 4)}-${code.slice(4, 8)}-${code.slice(8)}`
}
