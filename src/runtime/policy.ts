/**
 * The rule `tbmesh up` enforces and Nebula cannot: a peer may hold only addresses of the block of the member whose CA
 * signed its certificate. The policy comes from the installation: `nebula/members.json` in a federated network; in
 * single-CA mode each trusted CA may issue its own constraint (the overlay), so the rule holds trivially. Pure.
 */

import {outsideBlock} from '../lib/ip.js'
import type {NebulaCertificate} from '../nebula/index.js'
import {fingerprint} from '../nebula/index.js'
import type {MembersFile} from '../render/members-json.js'
import type {Tunnel} from './hostmap.js'

/** Who may issue which addresses: one entry per trusted CA. */
export interface PeerPolicy {
  network: string
  /** True in a federated network (the entries come from `nebula/members.json`). */
  federated: boolean
  members: Array<{
    caFingerprint: string
    /** Organization name (federated), or the CA's name (single-CA). */
    organization: string
    /** Member slug (federated only). */
    slug?: string
    /** Where the CA's certificates may hold addresses: the member's block, or the CA's own constraint. */
    blocks: string[]
  }>
}

/** A peer whose certificate holds something outside its issuer's block. */
export interface PeerViolation {
  fingerprint: string
  /** The issuing CA, and the member it belongs to when it is a known one. */
  issuer: {caFingerprint: string; organization?: string; slug?: string; blocks?: string[]}
  /** The overlay addresses and networks outside the issuer's block (all of them for an unknown issuer). */
  outside: string[]
}

/** The policy of a federated installation (its members file). */
export function federatedPolicy(members: MembersFile): PeerPolicy {
  return {
    network: members.network,
    federated: true,
    members: members.members.map((m) => ({caFingerprint: m.caFingerprint, organization: m.organization, slug: m.slug, blocks: [m.block]})),
  }
}

/** The policy of a single-CA installation: each CA of the trust bundle may issue within its own IP constraint (or anywhere, without one). */
export function singleCaPolicy(network: string, cas: readonly NebulaCertificate[]): PeerPolicy {
  return {
    network,
    federated: false,
    members: cas.map((ca) => ({caFingerprint: fingerprint(ca), organization: ca.details.name, blocks: ca.details.ips.length > 0 ? [...ca.details.ips] : ['0.0.0.0/0']})),
  }
}

/**
 * Checks one tunnel: every overlay address it serves and every network and unsafe network of its certificate must lie
 * in a block of the member whose CA issued the certificate. Returns the violation, or undefined when it holds (and for
 * a tunnel without a certificate yet).
 */
export function checkTunnel(policy: PeerPolicy, tunnel: Tunnel): PeerViolation | undefined {
  const cert = tunnel.certificate
  if (!cert) return undefined
  // The addresses the tunnel serves, and any other network of the certificate (`a.b.c.d/n`, the host address kept).
  const addresses = [...tunnel.addresses, ...cert.networks.filter((n) => !tunnel.addresses.includes(n.split('/')[0]))]
  const member = policy.members.find((m) => m.caFingerprint === cert.issuer)
  if (!member) return {fingerprint: cert.fingerprint, issuer: {caFingerprint: cert.issuer}, outside: [...addresses, ...cert.unsafeNetworks]}
  // Outside the member's blocks = outside every one of them.
  const perBlock = member.blocks.map((block) => new Set(outsideBlock(block, addresses, cert.unsafeNetworks)))
  const outside = [...addresses, ...cert.unsafeNetworks].filter((x) => perBlock.every((s) => s.has(x)))
  if (outside.length === 0) return undefined
  return {
    fingerprint: cert.fingerprint,
    issuer: {caFingerprint: member.caFingerprint, organization: member.organization, ...(member.slug ? {slug: member.slug} : {}), blocks: member.blocks},
    outside: [...new Set(outside)],
  }
}
