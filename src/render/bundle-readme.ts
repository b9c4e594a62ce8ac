/**
 * Renders the `README.md` of a node's join package from `templates/bundle-README.md` (`{{name}}` placeholders): what
 * the package holds and what the organization's admin does with it.
 */

import {safeLine} from '../lib/text.js'
import {trubudgetBlockchainCompose} from './docker-compose-trubudget.js'
import {INSTALL_DIR_PLACEHOLDER} from './install-dir.js'
import {inboundRules} from './nebula-config.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, assertPort, fillPlaceholders, originIp, readTemplate} from './template.js'

/** Optional facts about the package itself that the README mentions. */
export interface BundleReadmeExtra {
  /** File name of the package as handed to the admin; default `<node>.tbmesh.tar.gz`. */
  bundleFile?: string
  /** The directory the README tells the admin to install into; default `/etc/tbmesh`. */
  installDir?: string
  /** Creation time (ISO 8601), as in the manifest. */
  createdAt?: string
  /** Fingerprint (hex SHA-256) of the network's CA certificate, as in the manifest. */
  caFingerprint?: string
}

/** Markdown inline code for `s`, on one line, using a backtick fence longer than any run of backticks in `s`. */
function code(s: string): string {
  const text = safeLine(s)
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((run) => run.length))
  const fence = '`'.repeat(longest + 1)
  return longest > 0 || text.startsWith(' ') || text.endsWith(' ') ? `${fence} ${text} ${fence}` : `${fence}${text}${fence}`
}

/** `s` on one line with Markdown's emphasis, link and HTML characters escaped. */
function prose(s: string): string {
  return safeLine(s).replaceAll(/[\\`*_{}[\]()<>#|!~]/g, (c) => `\\${c}`)
}

/**
 * The text of the package's `README.md`: contents, the admin's steps (`tbmesh install BUNDLE --dir DIR`,
 * `tbmesh doctor --dir DIR`, `sudo nebula -config DIR/nebula/config.yml`), running Nebula with the systemd unit or the
 * compose file, the node's overlay IP, a summary of its inbound firewall rules, where `multichain.conf` and
 * `blockchain.env` go (TruBudget's compose files with the override, or host networking), and the origin's overlay IP.
 *
 * @throws NoOriginError for a non-origin node while the network has no origin yet.
 * @throws Error when the profile is malformed.
 */
export function renderBundleReadme(p: NodeProfile, extra: BundleReadmeExtra = {}): string {
  const origin = assertIPv4(originIp(p), p.node.origin ? 'node.overlayIp' : 'originOverlayIp')
  const overlayIp = assertIPv4(p.node.overlayIp, 'node.overlayIp')
  const firewallSummary = inboundRules(p)
    .map((r) => {
      if (r.proto === 'icmp') return '- ICMP (ping)'
      if (r.port === p.ports.p2p) return `- TCP ${r.port}: MultiChain peer-to-peer`
      return `- TCP ${r.port}: the TruBudget API, where joining nodes register (this is the origin node)`
    })
    .join('\n')
  const roleText = p.node.origin
    ? 'This is the origin node: its container creates the chain, so `P2P_HOST` and `API_*` are unset. Other nodes ' +
      `register at its TruBudget API on port ${assertPort(p.ports.api, 'ports.api')}, which must listen on the overlay IP.`
    : `It also sets \`P2P_HOST=${origin}\` (the origin node, where the chain is joined) and ` +
      `\`API_HOST=${origin}\`, \`API_PORT=${assertPort(p.ports.api, 'ports.api')}\` (the origin's TruBudget API, where ` +
      'this node registers and the existing organizations approve it).'
  const issued = [
    extra.createdAt && `created ${code(extra.createdAt)}`,
    extra.caFingerprint && `CA fingerprint ${code(extra.caFingerprint)}`,
  ]
    .filter(Boolean)
    .join(', ')
  return fillPlaceholders(readTemplate('bundle-README.md'), {
    node: prose(p.node.name),
    organization: prose(p.node.organization),
    network: prose(p.network.name),
    issued: issued ? ` (${issued})` : '',
    overlayIp,
    originOverlayIp: origin,
    bundleFile: safeLine(extra.bundleFile ?? `${p.node.name}.tbmesh.tar.gz`),
    installDir: safeLine(extra.installDir ?? INSTALL_DIR_PLACEHOLDER),
    tunDev: safeLine(p.tun.dev),
    minNebula: safeLine(p.minNebulaVersion),
    firewallSummary,
    rpcPort: assertPort(p.ports.rpc, 'ports.rpc'),
    p2pPort: assertPort(p.ports.p2p, 'ports.p2p'),
    roleText,
    blockchainCompose: trubudgetBlockchainCompose(p),
  })
}
