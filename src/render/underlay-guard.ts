/**
 * Renders a node's underlay guard `host/underlay-guard.nft` from `templates/underlay-guard.nft` (`{{name}}`
 * placeholders): an nftables table of tbmesh's own that drops every packet for the node's overlay address(es) that
 * did not arrive on the Nebula tun device or loopback. `tbmesh install` renders it on the node, from the installed
 * host certificate (the overlay IPs) and config.yml (`tun.dev`); `nft -f FILE` loads it.
 *
 * nftables syntax (nftables 0.9+, Debian 11 and later): `table inet` holds IPv4 and IPv6 rules; the hook `prerouting`
 * at priority `raw` (-300) runs before connection tracking (-200) and DNAT (-100). `iifname` compares the incoming
 * interface's name when the packet arrives, so the rule loads before Nebula has created the device and keeps working
 * when Nebula restarts (`iif` would store an interface index: refused while the device is missing, stale after).
 * `table … {}` followed by `delete table …` makes a load idempotent (the first creates it when missing); the file is
 * applied as one transaction, so a load that fails leaves the previous guard as it was.
 */

import {isIPv6} from 'node:net'

import {isIpv4} from '../lib/ip.js'
import {TUN_DEVICE} from '../lib/names.js'
import {safeLine} from '../lib/text.js'
import {INSTALL_DIR_PLACEHOLDER} from './install-dir.js'
import {fillPlaceholders, readTemplate} from './template.js'

/** The nftables family and name of the guard's table: `inet tbmesh_guard`. */
export const GUARD_TABLE = {family: 'inet', name: 'tbmesh_guard'} as const

/** The chain of {@link GUARD_TABLE} that drops, and the comment on its rules. */
export const GUARD_CHAIN = 'prerouting'
export const GUARD_RULE_COMMENT = 'tbmesh underlay guard'

/** What the guard is rendered from. */
export interface UnderlayGuardProfile {
  /** Node and network names, for the header comment (untrusted text: written through `safeLine`). */
  node: string
  network: string
  /** The node's own overlay addresses (IPv4 dotted, or IPv6), without prefix length; at least one. */
  overlayIps: string[]
  /** Nebula's `tun.dev`: the one interface (besides `lo`) packets for the overlay IPs may arrive on. */
  tunDev: string
  /** The installation directory, for the commands in the header comment; default `/etc/tbmesh`. */
  installDir?: string
}

/**
 * The text of the guard: a `table inet tbmesh_guard` with one chain, `prerouting` (filter, hook prerouting, priority
 * raw, policy accept), holding `ip daddr { <IPv4s> } iifname != { "<tunDev>", "lo" } counter drop` and, when the node
 * has IPv6 overlay addresses, the same with `ip6 daddr`. Only the node's own addresses are guarded, never the overlay
 * CIDR: packets a container sends to other nodes' overlay IPs, and the replies to a DNAT, pass through this host.
 *
 * @throws Error when `tunDev` is not a {@link TUN_DEVICE} name, or an overlay IP is neither IPv4 nor IPv6, or there
 *   is none (install checks both first, so this is a bug).
 */
export function renderUnderlayGuard(p: UnderlayGuardProfile): string {
  if (!TUN_DEVICE.test(p.tunDev)) throw new Error(`tun device ${JSON.stringify(p.tunDev)} is not an interface name`)
  const v4 = p.overlayIps.filter((ip) => isIpv4(ip))
  const v6 = p.overlayIps.filter((ip) => !isIpv4(ip))
  if (p.overlayIps.length === 0) throw new Error('the underlay guard needs at least one overlay IP')
  for (const ip of v6) if (!isIPv6(ip)) throw new Error(`overlay IP ${JSON.stringify(ip)} is neither IPv4 nor IPv6`)
  // `ip daddr { }` is a syntax error: a family's line only when it has addresses.
  const rule = (family: 'ip' | 'ip6', ips: string[]): string =>
    `\t\t${family} daddr { ${ips.join(', ')} } iifname != { "${p.tunDev}", "lo" } counter drop comment "${GUARD_RULE_COMMENT}"`
  const rules = [...(v4.length > 0 ? [rule('ip', v4)] : []), ...(v6.length > 0 ? [rule('ip6', v6)] : [])]
  return fillPlaceholders(readTemplate('underlay-guard.nft'), {
    node: safeLine(p.node),
    network: safeLine(JSON.stringify(p.network)),
    overlayIps: p.overlayIps.join(', '),
    tunDev: p.tunDev,
    installDir: safeLine(p.installDir ?? INSTALL_DIR_PLACEHOLDER),
    rules: rules.join('\n'),
  })
}
