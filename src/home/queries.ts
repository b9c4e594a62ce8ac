/**
 * Questions every part of the CA side asks of a loaded state: the current certificate of each node, the CAs nodes must
 * trust, the blocklist, a node by name, whether a federated home's organization is a member yet. Pure functions of the state.
 */

import {UserError} from '../errors.js'
import type {CaRecord, CertificateRecord, FederationState, Member, NetworkState, NodeRecord} from './types.js'

/** The newest ledger row of every node, by node name, in one pass over the ledger. */
export function currentCertificates(state: NetworkState): Map<string, CertificateRecord> {
  const newest = new Map<string, CertificateRecord>()
  for (const c of state.certificates) {
    const seen = newest.get(c.name)
    if (!seen || c.issuedAt >= seen.issuedAt) newest.set(c.name, c)
  }
  return newest
}

/** The newest ledger row of node `name`, or undefined. */
export function currentCertificate(state: NetworkState, name: string): CertificateRecord | undefined {
  let newest: CertificateRecord | undefined
  for (const c of state.certificates) if (c.name === name && (!newest || c.issuedAt >= newest.issuedAt)) newest = c
  return newest
}

/** The CAs nodes must trust now: the active one and, during a rotation, the incoming (round 1) or retiring (round 2) one. */
export function trustedCas(state: NetworkState): CaRecord[] {
  return state.cas.filter((c) => c.status !== 'retired')
}

/**
 * The certificates node `name` presents (its `pki.cert`), oldest format first: its current one and, in round 2 of a
 * rotation that changes the certificate version (v1 → v2, or back), also its newest certificate of the retiring CA
 * while that is unexpired at `now` (Unix seconds), since Nebula 1.10+ holds a v1 and a v2 certificate for one key.
 * Empty for a node without a certificate.
 */
export function presentedCertificates(state: NetworkState, name: string, now = Date.now() / 1000): CertificateRecord[] {
  const current = currentCertificate(state, name)
  if (!current) return []
  const retiring = state.cas.find((c) => c.status === 'retiring')
  if (!retiring || current.issuer === retiring.id) return [current]
  let previous: CertificateRecord | undefined
  for (const c of state.certificates) {
    if (c.name === name && c.issuer === retiring.id && (!previous || c.issuedAt >= previous.issuedAt)) previous = c
  }
  if (!previous || (previous.version ?? 1) === (current.version ?? 1) || Date.parse(previous.notAfter) / 1000 <= now) return [current]
  return [previous, current].sort((a, b) => (a.version ?? 1) - (b.version ?? 1))
}

/** Whether this organization is a member: the adopted descriptor version lists it (false while its membership is pending). */
export function isMember(f: FederationState): boolean {
  return f.current.descriptor.members.some((m) => m.slug === f.self.slug)
}

/** Whether `node` relays for others (`relay.am_relay`): as recorded, else when it is a lighthouse (the default). */
export function isRelay(node: Pick<NodeRecord, 'lighthouse' | 'relay'>): boolean {
  return node.relay ?? node.lighthouse
}

/** The node named `name`; throws UserError naming the known nodes when there is none. */
export function findNode(state: NetworkState, name: string): NodeRecord {
  const node = state.nodes.find((n) => n.name === name)
  if (!node) {
    const known = state.nodes.map((n) => n.name)
    throw new UserError(`no node named ${name}`, {
      fix: known.length > 0 ? `known nodes: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', …' : ''}` : 'add one with `tbmesh add-node`',
    })
  }
  return node
}

/**
 * The network's blocklist, sorted: every certificate fingerprint ever issued to a revoked node (its v1 and its v2
 * certificates alike, and for P256 both forms of each signature) and, in a federated network, those of the revocation
 * lists imported from other members and of the violations reported.
 */
export function blocklist(state: NetworkState): string[] {
  const revoked = new Set(state.nodes.filter((n) => n.revoked).map((n) => n.name))
  const own = state.certificates.filter((c) => revoked.has(c.name)).flatMap((c) => (c.otherFingerprint ? [c.fingerprint, c.otherFingerprint] : [c.fingerprint]))
  const imported = Object.values(state.federation?.revocations ?? {}).flatMap((r) => r.fingerprints)
  const violations = Object.keys(state.federation?.violations ?? {})
  return [...new Set([...own, ...imported, ...violations])].sort()
}

/**
 * The organizations whose CAs a node of a federated network trusts (each member's CA and, while it rotates, its
 * incoming CA): the descriptor's members and, while this organization's membership is pending, this organization.
 * Undefined in single-CA mode.
 */
export function trustedMembers(state: NetworkState): Member[] | undefined {
  const fed = state.federation
  if (!fed) return undefined
  const members = fed.current.descriptor.members
  return isMember(fed) ? members : [...members, fed.self]
}

/** The CAs of a member: its CA and, while it rotates, its incoming CA. */
export function memberCas(member: Member): Array<{caCertificate: string; caFingerprint: string}> {
  return [{caCertificate: member.caCertificate, caFingerprint: member.caFingerprint}, ...(member.incomingCa ? [member.incomingCa] : [])]
}
