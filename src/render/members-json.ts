/**
 * Renders a federated node's `nebula/members.json`: which member organization's CA may issue which overlay addresses.
 * Nebula cannot be told this (see the README's federation section); `tbmesh up` enforces it on every peer, and
 * `tbmesh install` checks the file against the trust bundle (`bundle/members.ts`).
 */

import type {NodeProfile} from './profile.js'

/** `type` of the members file. */
export const MEMBERS_FILE_TYPE = 'tbmesh-members'

/**
 * `nebula/members.json` (JSON, UTF-8, two-space indent, keys in this order). Every CA of the trust bundle
 * (`nebula/ca.crt`) is one member's, and every member's CA is in the trust bundle.
 */
export interface MembersFile {
  type: typeof MEMBERS_FILE_TYPE
  formatVersion: 1
  /** Network name. */
  network: string
  /** Overlay network, IPv4 CIDR. */
  cidr: string
  /** The member organizations whose CAs the node trusts, in the descriptor's order: one entry per CA (a member rotating its CA has two). */
  members: Array<{
    /** Organization name, e.g. `Umbrella Bank`. */
    organization: string
    /** DNS-label form of the name (`org:<slug>`). */
    slug: string
    /** The only addresses its CA's certificates may hold, IPv4 CIDR. */
    block: string
    /** Hex SHA-256 of its CA certificate. */
    caFingerprint: string
  }>
}

/** The text of `nebula/members.json` for a federated node, or undefined in single-CA mode (no members). */
export function renderMembersJson(p: NodeProfile): string | undefined {
  if (!p.members) return undefined
  const file: MembersFile = {
    type: MEMBERS_FILE_TYPE,
    formatVersion: 1,
    network: p.network.name,
    cidr: p.network.cidr,
    members: p.members.map((m) => ({organization: m.name, slug: m.organization, block: m.block, caFingerprint: m.caFingerprint})),
  }
  return `${JSON.stringify(file, null, 2)}\n`
}
