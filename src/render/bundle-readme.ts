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

/** Running Nebula's image in a federated network: under `tbmesh up`, through the systemd unit. */
function dockerUnderUp(dir: string): string {
  const d = safeLine(dir)
  return [
    'In a federated network Nebula must run under `tbmesh up` (see A), also when it comes from the Nebula project\'s',
    'image: `tbmesh up --docker nebulaoss/nebula:<version>` runs it with `docker run` on the host network, with',
    '`NET_ADMIN` and `/dev/net/tun`, and watches it as it watches a local binary. Install the unit as in A, then give it',
    'the image and order it after Docker with a drop-in (`sudo systemctl edit nebula`):',
    '',
    '    [Unit]',
    '    After=docker.service',
    '    Requires=docker.service',
    '    [Service]',
    '    ExecStart=',
    `    ExecStart=/usr/bin/env tbmesh up --dir "${d}" --docker nebulaoss/nebula:1.11.1`,
    '',
    'and remove `Before=docker.service` from the unit itself.',
  ].join('\n')
}

/** Running Nebula's image in a single-CA network: its compose file. */
function composeNebula(dir: string): string {
  const d = safeLine(dir)
  return [
    `    docker compose -f ${d}/docker/docker-compose.nebula.yml up -d`,
    '',
    'It runs the Nebula project\'s image (`nebulaoss/nebula`) with host networking, `NET_ADMIN` and `/dev/net/tun`, and',
    `mounts \`${d}/nebula\` read-only at the same path, where \`config.yml\` expects its certificates. After installing an`,
    `update bundle, restart it (\`docker compose -f ${d}/docker/docker-compose.nebula.yml restart\`): the container keeps`,
    'seeing the replaced directory until then, so a reload is not enough. (With a single CA every certificate may hold',
    'any address, so Nebula needs no watching; `tbmesh up --docker nebulaoss/nebula:<version>` also runs the image.)',
  ].join('\n')
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
    firewallSummary,
    rpcPort: assertPort(p.ports.rpc, 'ports.rpc'),
    p2pPort: assertPort(p.ports.p2p, 'ports.p2p'),
    roleText,
    blockchainCompose: trubudgetBlockchainCompose(p),
    composeRow: p.members ? '' : '| `docker/docker-compose.nebula.yml` | Nebula as a Docker container, for hosts that run everything with Docker Compose |\n',
    dockerSection: p.members ? dockerUnderUp(extra.installDir ?? INSTALL_DIR_PLACEHOLDER) : composeNebula(extra.installDir ?? INSTALL_DIR_PLACEHOLDER),
  })
}
