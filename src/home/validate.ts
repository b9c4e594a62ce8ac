/**
 * The invariants of a state (`state.json`), checked on every load and before every commit: whatever a file holds, a
 * state that breaks one is refused with one line naming the file and the problem. The federation's part is checked
 * beside the descriptor (`federation/descriptor.ts`).
 */

import {UserError} from '../errors.js'
import {checkFederationState} from '../federation/descriptor.js'
import {contains, formatCidr, overlaps, parseCidr, parseIp} from '../lib/ip.js'
import {DNS_LABEL, guard, SHA256_HEX} from '../lib/text.js'
import {type NetworkState, SCHEMA_VERSION} from './types.js'

/**
 * Checks the shape and the invariants of a state: schema version, one IP per node, every node inside its
 * organization's block, blocks inside the network and disjoint, unique names (DNS labels, as they name key files),
 * fingerprints that are SHA-256 hex (they name certificate files), at most one origin.
 * Throws UserError naming `file` and the first problem found, and nothing else, whatever `state` holds.
 */
export function validateState(state: NetworkState, file: string): void {
  const bad = (problem: string): never => {
    throw new UserError(`${file}: ${problem}`, {fix: 'restore it from a backup or undo the hand edit'})
  }
  if (typeof state !== 'object' || state === null || Array.isArray(state)) bad('not a tbmesh state')
  if (state.schemaVersion !== SCHEMA_VERSION) {
    const newer = typeof state.schemaVersion === 'number' && state.schemaVersion > SCHEMA_VERSION
    throw new UserError(`${file}: schema version ${JSON.stringify(state.schemaVersion) ?? 'missing'} is not supported (this tbmesh reads ${SCHEMA_VERSION})`, {
      fix: newer ? 'a newer tbmesh wrote it: upgrade tbmesh' : 'restore it from a backup or undo the hand edit',
    })
  }
  const {network} = state
  if (typeof network !== 'object' || network === null || typeof network.name !== 'string') bad('"network" is missing')
  if (typeof network.cidr !== 'string') bad('"network.cidr" is not a string')
  for (const key of ['cas', 'organizations', 'nodes', 'certificates'] as const) if (!Array.isArray(state[key])) bad(`"${key}" is not a list`)
  const net = guard(() => parseCidr(network.cidr, 'network.cidr'), bad)
  if (!Number.isInteger(network.orgPrefix) || network.orgPrefix < net.prefix || network.orgPrefix > 30) bad(`"network.orgPrefix" does not fit ${network.cidr}`)
  const fingerprints = new Set<string>()
  for (const ca of state.cas) {
    if (typeof ca?.id !== 'string' || !SHA256_HEX.test(ca.id)) bad('a CA has no valid id (SHA-256 hex)')
    if (fingerprints.has(ca.id)) bad(`CA ${ca.id} is listed twice`)
    fingerprints.add(ca.id)
  }
  const blocks = new Map<string, ReturnType<typeof parseCidr>>()
  for (const org of state.organizations) {
    if (typeof org?.slug !== 'string' || !DNS_LABEL.test(org.slug)) bad('an organization has no valid slug')
    if (typeof org.block !== 'string') bad(`the block of ${org.slug} is not a string`)
    const block = guard(() => parseCidr(org.block, `block of ${org.slug}`), bad)
    if (!contains(net, block.base) || block.prefix < net.prefix) bad(`block ${org.block} of ${org.slug} lies outside ${network.cidr}`)
    for (const [other, b] of blocks) if (overlaps(b, block)) bad(`blocks of ${other} and ${org.slug} overlap`)
    if (blocks.has(org.slug)) bad(`organization ${org.slug} is listed twice`)
    blocks.set(org.slug, block)
  }
  const names = new Set<string>()
  const ips = new Map<number, string>()
  let origins = 0
  for (const node of state.nodes) {
    if (typeof node?.name !== 'string' || !DNS_LABEL.test(node.name)) bad('a node has no valid name (a DNS label)')
    if (names.has(node.name)) bad(`node ${node.name} is listed twice`)
    names.add(node.name)
    const block = blocks.get(node.organization)
    if (!block) bad(`node ${node.name} belongs to unknown organization ${JSON.stringify(node.organization)}`)
    if (typeof node.overlayIp !== 'string') bad(`the overlay IP of ${node.name} is not a string`)
    const ip = guard(() => parseIp(node.overlayIp, `overlay IP of ${node.name}`), bad)
    if (!contains(block!, ip)) bad(`node ${node.name} (${node.overlayIp}) lies outside its organization's block ${formatCidr(block!)}`)
    const holder = ips.get(ip)
    if (holder) bad(`nodes ${holder} and ${node.name} share the overlay IP ${node.overlayIp}`)
    ips.set(ip, node.name)
    if (node.origin) origins++
    if (node.relay !== undefined && typeof node.relay !== 'boolean') bad(`"relay" of ${node.name} is not true or false`)
    if (node.relay === true && typeof node.endpoint !== 'string') bad(`node ${node.name} is a relay without an endpoint`)
  }
  if (origins > 1) bad('more than one origin node')
  if (state.federation !== undefined) checkFederationState(state, bad)
  for (const cert of state.certificates) {
    if (typeof cert?.fingerprint !== 'string' || !SHA256_HEX.test(cert.fingerprint)) bad('a ledger row has no valid fingerprint (SHA-256 hex)')
    if (fingerprints.has(cert.fingerprint)) bad(`fingerprint ${cert.fingerprint} is listed twice`)
    fingerprints.add(cert.fingerprint)
    if (typeof cert.name !== 'string' || !names.has(cert.name)) bad(`ledger row ${cert.fingerprint} names no known node`)
  }
}
