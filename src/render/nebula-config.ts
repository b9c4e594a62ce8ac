/**
 * Renders a node's Nebula `config.yml` from `templates/nebula-config.yml` (keys every Nebula from 1.6.1 to 1.11 reads
 * alike; `docs/config` of slackhq/nebula and its `examples/config.yml`).
 *
 * The template is parsed once (with `yaml`), a copy gets its "filled" values from the {@link NodeProfile}, and it is
 * written out again in the template's key order (so output is stable) under a header comment naming the node.
 */

import {parse, stringify} from 'yaml'

import {TUN_DEVICE} from '../lib/names.js'
import {safeLine} from '../lib/text.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, assertPort, readTemplate} from './template.js'

/**
 * One Nebula firewall rule as rendered: `host: any` in single-CA mode; in a federated network `cidr` (IPv4 CIDR) and
 * `ca_sha` (hex SHA-256 of the issuing CA) instead, which Nebula requires both to match. (Nebula also accepts
 * `group(s)` and `ca_name`; it ORs group, host and cidr within a rule, so tbmesh never mixes them.)
 */
export type NebulaFirewallRule = {port: number | 'any'; proto: 'any' | 'tcp' | 'udp' | 'icmp'} & ({host: 'any'} | {cidr: string; ca_sha: string})

/** Which peers a rule admits: any host (single-CA), or one rule per member, scoped to its CA and block. */
function scoped(p: NodeProfile, rule: Pick<NebulaFirewallRule, 'port' | 'proto'>): NebulaFirewallRule[] {
  if (!p.members) return [{...rule, host: 'any'}]
  return p.members.map((m) => ({...rule, cidr: m.block, ca_sha: m.caFingerprint}))
}

/**
 * The inbound firewall rules of a node (see the policy comment in the template): ICMP (with `port: any`, which Nebula
 * before 1.11 requires and 1.11 ignores with a warning), TCP `ports.p2p` and TCP `ports.storage` from any node, plus TCP
 * `ports.api` on registrars (the origin included). Nothing else; in particular never `ports.rpc` nor the blockchain
 * container's API (8085). In a federated network each rule is repeated per member organization, scoped to its CA and
 * block.
 */
export function inboundRules(p: NodeProfile): NebulaFirewallRule[] {
  return [
    ...scoped(p, {port: 'any', proto: 'icmp'}),
    ...scoped(p, {port: assertPort(p.ports.p2p, 'ports.p2p'), proto: 'tcp'}),
    ...scoped(p, {port: assertPort(p.ports.storage, 'ports.storage'), proto: 'tcp'}),
    ...(p.node.registrar ? scoped(p, {port: assertPort(p.ports.api, 'ports.api'), proto: 'tcp'}) : []),
  ]
}

/**
 * The outbound firewall rules: anything to any node (the peer's inbound rules decide) — in a federated network, only
 * to a peer whose certificate comes from the CA of the block its overlay IP lies in, so that nothing is sent to a host
 * impersonating another organization's address.
 */
export function outboundRules(p: NodeProfile): NebulaFirewallRule[] {
  return scoped(p, {port: 'any', proto: 'any'})
}

/**
 * The text of the node's Nebula `config.yml`.
 *
 * - `pki`: `ca`/`cert`/`key` from `p.pki` (written as given; relative paths resolve against nebula's working
 *   directory), `blocklist` from `p.blocklist`, and `initiating_version` only when `p.initiatingVersion` is set.
 * - `static_host_map`: every lighthouse's and relay's overlay IP → `[endpoint]`.
 * - `lighthouse`: `am_lighthouse` = `p.node.lighthouse`, `interval: 10`, `hosts` = every lighthouse's overlay IP, or
 *   `[]` on a lighthouse.
 * - `listen`: `0.0.0.0`, port `p.ports.nebula` on a lighthouse or relay, else 0 (random).
 * - `relay`: `am_relay` = `p.node.relay`; `relays` = every relay's overlay IP but the node's own, or `[]` on a relay;
 *   `use_relays: true`.
 * - `punchy`, `tun`, `logging`, `firewall` as in the template; rules from {@link inboundRules} and {@link outboundRules}.
 *
 * Pure apart from the (cached) template read.
 * @throws Error when the profile is malformed (a non-IPv4 overlay IP, a lighthouse or relay without a port, a `tun.dev`
 *   that is not an interface name) or the template
 *   lost one of the keys this renderer fills.
 */
export function renderNebulaConfig(p: NodeProfile): string {
  const doc = structuredClone(template())
  const set = (keys: string[], value: unknown): void => {
    let node = doc as Record<string, unknown>
    for (const key of keys.slice(0, -1)) node = node?.[key] as Record<string, unknown>
    const last = keys.at(-1)!
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, last)) {
      throw new Error(`templates/nebula-config.yml has no ${keys.join('.')}`)
    }
    node[last] = value
  }

  const lighthouses = p.lighthouses.map((l) => ({overlayIp: assertIPv4(l.overlayIp, 'lighthouse IP'), endpoint: l.endpoint}))
  const relays = p.relays.map((r) => ({overlayIp: assertIPv4(r.overlayIp, 'relay IP'), endpoint: r.endpoint}))
  const fixedPort = p.node.lighthouse || p.node.relay
  const ownPort = fixedPort ? assertPort(p.ports.nebula, 'ports.nebula') : 0
  if (fixedPort && ownPort === 0) throw new Error('profile of a lighthouse or relay has ports.nebula 0')
  // One entry per overlay IP: a lighthouse that relays is listed once.
  const hostMap = new Map([...lighthouses, ...relays].map((h) => [h.overlayIp, [h.endpoint]]))

  set(['pki', 'ca'], p.pki.ca)
  set(['pki', 'cert'], p.pki.cert)
  set(['pki', 'key'], p.pki.key)
  set(['pki', 'blocklist'], [...p.blocklist])
  if (p.initiatingVersion !== undefined) (doc as {pki: Record<string, unknown>}).pki.initiating_version = p.initiatingVersion
  set(['static_host_map'], Object.fromEntries(hostMap))
  set(['lighthouse', 'am_lighthouse'], p.node.lighthouse)
  set(['lighthouse', 'hosts'], p.node.lighthouse ? [] : lighthouses.map((l) => l.overlayIp))
  set(['listen', 'port'], ownPort)
  set(['relay', 'am_relay'], p.node.relay)
  set(['relay', 'relays'], p.node.relay ? [] : relays.map((r) => r.overlayIp).filter((ip) => ip !== p.node.overlayIp))
  // Written into a quoted string of the underlay guard's nftables rule on the node: an interface name, nothing else.
  if (!TUN_DEVICE.test(p.tun.dev)) throw new Error(`profile tun.dev is not an interface name: ${JSON.stringify(p.tun.dev)}`)
  set(['tun', 'dev'], p.tun.dev)
  set(['tun', 'mtu'], p.tun.mtu)
  set(['firewall', 'outbound'], outboundRules(p))
  set(['firewall', 'inbound'], inboundRules(p))

  const role = [p.node.lighthouse && 'lighthouse', p.node.relay && 'relay', p.node.origin && 'TruBudget origin', p.node.registrar && !p.node.origin && 'registrar'].filter(Boolean).join(', ')
  const allowed = [...new Set(inboundRules(p).map((r) => (r.proto === 'icmp' ? 'ICMP' : `TCP ${r.port}`)))].join(', ')
  const from = p.members
    ? `from the nodes of ${new Set(p.members.map((m) => m.organization)).size} member organization(s), each only from its own block and CA (cidr + ca_sha)`
    : 'from any node of the network'
  const header = [
    `# Nebula config.yml for node ${safeLine(p.node.name)} (${assertIPv4(p.node.overlayIp, 'node.overlayIp')}` +
      `${role ? `, ${role}` : ''}) of organization ${safeLine(JSON.stringify(p.node.organization))}, ` +
      `network ${safeLine(JSON.stringify(p.network.name))}.`,
    '# Generated by tbmesh; edits are lost when tbmesh renders it again.',
    `# Firewall: inbound ${allowed} ${from}; everything else inbound is dropped.`,
  ]
  return `${header.join('\n')}\n${stringify(doc, {lineWidth: 0, aliasDuplicateObjects: false})}`
}

let parsedTemplate: unknown
/** `templates/nebula-config.yml` as data, parsed once per process. */
function template(): unknown {
  parsedTemplate ??= parse(readTemplate('nebula-config.yml'))
  return parsedTemplate
}
