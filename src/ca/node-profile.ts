/**
 * What a node's files are rendered from: the {@link NodeProfile} of a node, resolved from the network state (its
 * organization, lighthouses, origin, trusted members, blocklist, ports) and the node's secrets.
 */

import {descriptorRelays} from '../federation/descriptor.js'
import {blocklist, findNode, isRelay, memberCas, presentedCertificates, trustedCas, trustedMembers} from '../home/queries.js'
import type {NetworkPorts, NetworkState} from '../home/types.js'
import {type CertificateFormatFacts, certificateFromPem, nebulaRequirement} from '../nebula/index.js'
import type {NodeProfile} from '../render/profile.js'
import {DEFAULTS} from './ca.js'
import {isRegistrar} from './registrar.js'

/** Where the rendered config.yml expects the PKI files (Debian's and Nebula's customary /etc/nebula). */
export const BUNDLE_PKI = {ca: '/etc/nebula/ca.crt', cert: '/etc/nebula/host.crt', key: '/etc/nebula/host.key'} as const

/** A network's ports with the storage port filled in (states and descriptors made before it was chosen lack it). */
export function networkPorts(ports: NetworkPorts): Required<NetworkPorts> {
  return {...ports, storage: ports.storage ?? DEFAULTS.ports.storage}
}

/**
 * Describes a node for the renderers. Throws UserError for an unknown node.
 */
export function nodeProfile(state: NetworkState, nodeName: string, pki: NodeProfile['pki'] = BUNDLE_PKI): NodeProfile {
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
  const presented = presentedCertificates(state, node.name)
  // What the node's nebula must load: the trust bundle (the members' CAs, or the network's) and its certificates.
  const facts: CertificateFormatFacts[] = [
    ...(members ? members.flatMap((m) => memberCas(m).map((ca) => certificateFromPem(ca.caCertificate))) : trustedCas(state).map((ca) => ({version: ca.version ?? 1, details: {curve: ca.curve ?? 'CURVE25519', isCA: true}}))),
    ...presented.map((c) => ({version: c.version ?? 1, details: {curve: c.curve ?? 'CURVE25519', isCA: false}})),
  ]
  return {
    network: {name: state.network.name, cidr: state.network.cidr},
    node: {
      name: node.name,
      organization: org.name,
      overlayIp: node.overlayIp,
      lighthouse: node.lighthouse,
      relay: isRelay(node),
      origin: node.origin,
      registrar: isRegistrar(node),
      ...(node.endpoint ? {endpoint: node.endpoint} : {}),
    },
    ports: networkPorts(state.network.ports),
    lighthouses,
    relays,
    ...(origin ? {originOverlayIp: origin.overlayIp} : {}),
    ...(node.registerAt ? {registrarOverlayIp: node.registerAt} : {}),
    ...(members ? {members: members.flatMap((m) => memberCas(m).map((ca) => ({organization: m.slug, name: m.organization, block: m.block, caFingerprint: ca.caFingerprint})))} : {}),
    rpc: {user: DEFAULTS.rpcUser},
    tun: {...state.network.tun},
    pki,
    ...(presented.length > 1 ? {initiatingVersion: presented.at(-1)!.version ?? 1} : {}),
    blocklist: blocklist(state),
    minNebulaVersion: nebulaRequirement(facts).version,
  }
}

