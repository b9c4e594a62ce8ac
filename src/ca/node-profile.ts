/**
 * What a node's files are rendered from: the {@link NodeProfile} of a node, resolved from the network state (its
 * organization, lighthouses, origin, trusted members, blocklist, ports) and the node's secrets.
 */

import {descriptorRelays} from '../federation/descriptor.js'
import {blocklist, findNode, isRelay, trustedMembers} from '../home/queries.js'
import type {NetworkState} from '../home/types.js'
import type {NodeProfile} from '../render/profile.js'

/** Where the rendered config.yml expects the PKI files (Debian's and Nebula's customary /etc/nebula). */
export const BUNDLE_PKI = {ca: '/etc/nebula/ca.crt', cert: '/etc/nebula/host.crt', key: '/etc/nebula/host.key'} as const

/**
 * Describes a node for the renderers. Throws UserError for an unknown node.
 */
export function nodeProfile(state: NetworkState, nodeName: string, rpc: {user: string; password: string}, pki: NodeProfile['pki'] = BUNDLE_PKI): NodeProfile {
  const node = findNode(state, nodeName)
  const org = state.organizations.find((o) => o.slug === node.organization)!
  const descriptor = state.federation?.current.descriptor
  const origin = descriptor ? descriptor.origin ?? undefined : state.nodes.find((n) => n.origin)
  const revoked = new Set(state.nodes.filter((n) => n.revoked).map((n) => n.overlayIp))
  // A federated network's role nodes come from the descriptor, less this organization's own revoked ones.
  const listed = (list: Array<{organization: string; overlayIp: string; endpoint: string}>) =>
    list.filter((l) => !(l.organization === state.federation!.self.slug && revoked.has(l.overlayIp))).map((l) => ({overlayIp: l.overlayIp, endpoint: l.endpoint}))
  const own = (role: (n: (typeof state.nodes)[number]) => boolean) =>
    state.nodes.filter((n) => role(n) && n.endpoint && !n.revoked).map((n) => ({overlayIp: n.overlayIp, endpoint: n.endpoint!}))
  const lighthouses = descriptor ? listed(descriptor.lighthouses) : own((n) => n.lighthouse)
  const relays = descriptor ? listed(descriptorRelays(descriptor)) : own(isRelay)
  const members = trustedMembers(state)
  return {
    network: {name: state.network.name, cidr: state.network.cidr},
    node: {
      name: node.name,
      organization: org.name,
      overlayIp: node.overlayIp,
      lighthouse: node.lighthouse,
      relay: isRelay(node),
      origin: node.origin,
      ...(node.endpoint ? {endpoint: node.endpoint} : {}),
    },
    ports: {...state.network.ports},
    lighthouses,
    relays,
    ...(origin ? {originOverlayIp: origin.overlayIp} : {}),
    ...(members ? {members: members.map((m) => ({organization: m.slug, block: m.block, caFingerprint: m.caFingerprint}))} : {}),
    rpc,
    tun: {...state.network.tun},
    pki,
    blocklist: blocklist(state),
  }
}

