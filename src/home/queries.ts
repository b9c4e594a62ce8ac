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

/** The CAs nodes must trust now: the active one and, during a rotation, the retiring one. */
export function trustedCas(state: NetworkState): CaRecord[] {
  return state.cas.filter((c) => c.status !== 'retired')
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
 * The network's blocklist, sorted: every certificate fingerprint ever issued to a revoked node and, in a federated
 * network, those of the revocation lists imported from other members.
 */
export function blocklist(state: NetworkState): string[] {
  const revoked = new Set(state.nodes.filter((n) => n.revoked).map((n) => n.name))
  const own = state.certificates.filter((c) => revoked.has(c.name)).map((c) => c.fingerprint)
  const imported = Object.values(state.federation?.revocations ?? {}).flatMap((r) => r.fingerprints)
  return [...new Set([...own, ...imported])].sort()
}

/**
 * The organizations whose CAs a node of a federated network trusts: the descriptor's members and, while this
 * organization's membership is pending, this organization. Undefined in single-CA mode.
 */
export function trustedMembers(state: NetworkState): Member[] | undefined {
  const fed = state.federation
  if (!fed) return undefined
  const members = fed.current.descriptor.members
  return isMember(fed) ? members : [...members, fed.self]
}
