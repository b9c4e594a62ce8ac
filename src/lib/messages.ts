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

/** Bits of a {@link verificationCode}: 20 Crockford base32 characters of 5 bits. */
export const VERIFICATION_CODE_BITS = 100

/**
 * A code people read aloud to compare what two sides hold: the first 100 bits of SHA-256(`tbmesh-code:<purpose>:v2:` ‖
 * payload) in Crockford base32, as five groups of four (`XXXX-XXXX-XXXX-XXXX-XXXX`). `purpose` keeps codes of different
 * things apart: `join-request` (the request file's bytes), `membership` (a member entry and the version it extends).
 *
 * Why 100 bits: whoever intercepts a request can make their own (their key, their CA) and vary what they control (the
 * nonce, the creation time, the CA itself) until its code matches the one the real requester will read aloud — a
 * search for a second preimage of the truncated hash, about 2^bits tries. At 60 bits that is within reach of a funded
 * attacker (GPUs do billions of SHA-256 per second each); at 100 bits it is not (2^100 tries). Twenty characters in
 * groups of four are still read and compared on the phone in well under a minute. (A memory-hard derivation would
 * keep the code short but make every display wait, and its margin shrinks with every faster machine.)
 */
export function verificationCode(purpose: 'join-request' | 'membership', payload: string | Uint8Array): string {
  const digest = Buffer.from(sha256Hex(message(`tbmesh-code:${purpose}:v2:`, payload)), 'hex')
  let bits = 0n
  for (const byte of digest.subarray(0, 13)) bits = (bits << 8n) | BigInt(byte)
  bits >>= 4n // 104 bits read, keep the first 100
  let code = ''
  for (let i = VERIFICATION_CODE_BITS / 5 - 1; i >= 0; i--) code += CROCKFORD[Number((bits >> BigInt(i * 5)) & 31n)]
  return code.match(/.{4}/g)!.join('-')
}
