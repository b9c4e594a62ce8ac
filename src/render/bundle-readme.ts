/**
 * Renders the `README.md` of a node's join package from `templates/bundle-README.md` (`{{name}}` placeholders): what
 * the package holds and what the organization's admin does with it, in the three ways a node runs (the complete compose
 * stack, TruBudget's own compose files with tbmesh's overrides, a host without Docker), with the exact commands.
 */

import {safeLine} from '../lib/text.js'
import {chainVolume} from './compose-adoption.js'
import {adoptionCommand, operationServices, stackCommand} from './compose-commands.js'
import {FRONTEND_PORT} from './compose-stack.js'
import {NEBULA_IMAGE} from './docker-compose-nebula.js'
import {INSTALL_DIR_PLACEHOLDER} from './install-dir.js'
import {inboundRules} from './nebula-config.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, assertPort, fillPlaceholders, originIp, readTemplate, registrarIp} from './template.js'
import {composeSubnet, MIN_COMPOSE_VERSION, TRUBUDGET_IMAGE_TAG} from './trubudget.js'

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
  /** The secrets the package holds (see `ExportBundleResult.secrets`); default: the node's private key. */
  secrets?: string[]
  /** True when the package carries the organization's ORGANIZATION_VAULT_SECRET (a federated organization's own). */
  vaultSecret?: boolean
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
    'In a federated network Nebula must run under `tbmesh up` (above), also when it comes from the Nebula project\'s',
    'image: `tbmesh up --docker nebulaoss/nebula:<version>` runs it with `docker run` on the host network, with',
    '`NET_ADMIN` and `/dev/net/tun`, and watches it as it watches a local binary. Install the unit as above, then give it',
    'the image and order it after Docker with a drop-in (`sudo systemctl edit nebula`):',
    '',
    '    [Unit]',
    '    After=docker.service',
    '    Requires=docker.service',
    '    [Service]',
    '    Type=simple',
    '    ExecStart=',
    `    ExecStart=/usr/bin/env tbmesh up --dir "${d}" --docker ${NEBULA_IMAGE}`,
    '',
    'and remove `Before=docker.service` from the unit itself.',
  ].join('\n')
}

/** 2A's first step in a single-CA network: the unit that loads the underlay guard before Docker (compose runs Nebula). */
function singleStackNebula(d: string): string {
  return [
    'First the unit that loads the underlay guard before Docker starts (Docker does not start if it fails):',
    '',
    `    sudo cp ${d}/systemd/tbmesh-guard.service /etc/systemd/system/tbmesh-guard.service`,
    '    sudo systemctl daemon-reload && sudo systemctl enable --now tbmesh-guard',
  ].join('\n')
}

/** 2A's first step in a federated network: Nebula under `tbmesh up` (section 3), which also loads the underlay guard. */
function federatedStackNebula(d: string): string {
  return [
    'First Nebula under `tbmesh up`, which loads the underlay guard and holds every peer to its organization\'s block (a',
    'federated network needs it; section 3 says more):',
    '',
    `    sudo cp ${d}/systemd/nebula.service /etc/systemd/system/nebula.service`,
    '    sudo systemctl daemon-reload && sudo systemctl enable --now nebula',
  ].join('\n')
}

/** Running Nebula's image in a single-CA network: its compose file. */
function composeNebula(dir: string): string {
  const d = safeLine(dir)
  return [
    'After the unit that loads the underlay guard before Docker (2A):',
    '',
    `    docker compose -f ${d}/docker/docker-compose.nebula.yml up -d`,
    '',
    `It runs the Nebula project's image (\`${NEBULA_IMAGE}\`, or the one \`tbmesh install --nebula-image\` chose) with host networking, \`NET_ADMIN\` and \`/dev/net/tun\`, and`,
    `mounts \`${d}/nebula\` read-only at the same path, where \`config.yml\` expects its certificates. After installing an`,
    `update bundle, restart it (\`docker compose -f ${d}/docker/docker-compose.nebula.yml restart\`): the container keeps`,
    'seeing the replaced directory until then, so a reload is not enough. (With a single CA every certificate may hold',
    'any address, so Nebula needs no watching; `tbmesh up --docker nebulaoss/nebula:<version>` also runs the image.)',
  ].join('\n')
}

/**
 * The text of the package's `README.md`: what it holds (and whether it holds a secret), `tbmesh install` and
 * `tbmesh doctor`, the three ways to run the node with their exact commands for this node's role, the Nebula unit, and
 * a summary of its inbound firewall rules.
 *
 * @throws NoOriginError for a node other than the origin while the network has neither origin nor registrar for it.
 * @throws Error when the profile is malformed.
 */
export function renderBundleReadme(p: NodeProfile, extra: BundleReadmeExtra = {}): string {
  const overlayIp = assertIPv4(p.node.overlayIp, 'node.overlayIp')
  const registrar = registrarIp(p)
  const dir = safeLine(extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
  const api = assertPort(p.ports.api, 'ports.api')
  const firewallSummary = inboundRules(p)
    .map((r) => {
      if (r.proto === 'icmp') return '- ICMP (ping)'
      if (r.port === p.ports.p2p) return `- TCP ${r.port}: MultiChain peer-to-peer`
      if (r.port === p.ports.storage) return `- TCP ${r.port}: the storage service, where other organizations download this organization's documents`
      return `- TCP ${r.port}: the TruBudget API, where joining nodes register (this node is a registrar)`
    })
    .filter((line, i, all) => all.indexOf(line) === i)
    .join('\n')
  const roleText = p.node.origin
    ? 'the **origin**, whose blockchain creates the chain (`P2P_HOST` unset); joining nodes register at its TruBudget API.'
    : `its blockchain joins the chain at \`${registrar}\` (\`P2P_HOST\`) and registers at the TruBudget API there (\`API_HOST\`, port ${api}), ` +
      `${p.registrarOverlayIp ? 'a registrar' : 'the origin'}; the existing organizations then approve it.` +
      (p.node.registrar ? ' This node is a registrar too: joining nodes may register at its API.' : '')
  const secrets = extra.secrets ?? ["the node's private key"]
  const secretsNote =
    secrets.length > 0
      ? `**It holds ${secrets.join(' and ')}.** Copy it only over a channel you trust, keep it readable by root only, and delete it once it is installed.`
      : '**It holds no secret**: this machine made the node\'s private key itself, and `tbmesh install` makes the node\'s TruBudget secrets here. It still proves, by the CA\'s signature, what the operator gave this node.'
  const vaultText = extra.vaultSecret
    ? "This package carries your organization's `ORGANIZATION_VAULT_SECRET` (from its own tbmesh home): install puts it into `node.env` too."
    : "`ORGANIZATION_VAULT_SECRET` belongs to your organization (the same on all its nodes, unknown to any other): give it with `--vault-secret-file FILE` when your organization already has a node; otherwise install makes one, and you give that to your organization's next nodes."
  const issued = [extra.createdAt && `created ${code(extra.createdAt)}`, extra.caFingerprint && `CA fingerprint ${code(extra.caFingerprint)}`].filter(Boolean).join(', ')
  return fillPlaceholders(readTemplate('bundle-README.md'), {
    node: prose(p.node.name),
    organization: prose(p.node.organization),
    network: prose(p.network.name),
    issued: issued ? ` (${issued})` : '',
    overlayIp,
    roleText,
    secretsNote,
    vaultText,
    vaultFlag: extra.vaultSecret ? '' : ' [--vault-secret-file FILE]',
    bundleFile: safeLine(extra.bundleFile ?? `${p.node.name}.tbmesh.tar.gz`),
    installDir: dir,
    minCompose: MIN_COMPOSE_VERSION,
    trubudgetTag: TRUBUDGET_IMAGE_TAG,
    stackCommand: stackCommand(dir),
    p2pPort: assertPort(p.ports.p2p, 'ports.p2p'),
    storagePort: assertPort(p.ports.storage, 'ports.storage'),
    apiPort: api,
    apiOnOverlay: p.node.registrar ? ` and on \`${overlayIp}\` (joining nodes register here)` : '',
    frontendPort: FRONTEND_PORT,
    operationServices: operationServices(p.node.origin, false).map((s) => `\`${s}\``).join(', '),
    operationCommand: adoptionCommand('operation', dir, {origin: p.node.origin, documents: false}),
    servicesCommand: adoptionCommand('services', dir, {origin: p.node.origin, documents: false}),
    subnet: composeSubnet(p.network.cidr),
    operationVolume: chainVolume('operation', p.node.origin),
    operationBlockchain: p.node.origin ? 'alpha-node' : 'beta-node',
    tunDev: safeLine(p.tun.dev),
    minNebula: safeLine(p.minNebulaVersion),
    pingTarget: registrar ?? p.lighthouses.find((l) => l.overlayIp !== overlayIp)?.overlayIp ?? originIp(p),
    firewallSummary,
    rpcPort: assertPort(p.ports.rpc, 'ports.rpc'),
    composeRow: p.members ? '' : '| `docker/docker-compose.nebula.yml` | Nebula alone as a container (included by `compose.yml`) |\n',
    membersRow: p.members ? "| `nebula/members.json` | the network's members: each one's block and CA, which `tbmesh up` holds every peer to |\n" : '',
    stackNebula: p.members ? federatedStackNebula(dir) : singleStackNebula(dir),
    stackRuns: p.members ? '' : `Nebula (${dir}/docker/docker-compose.nebula.yml) and `,
    adoptionNebula: p.members
      ? `Run Nebula first, under \`tbmesh up\` with the systemd unit (section 3), and the sysctl:\n\n    sudo cp ${dir}/host/tbmesh-sysctl.conf /etc/sysctl.d/60-tbmesh.conf && sudo sysctl --system`
      : 'Run Nebula first, with the systemd unit (section 3), or as a container after the guard unit (as in 2A), and the sysctl:\n\n' +
        `    sudo cp ${dir}/host/tbmesh-sysctl.conf /etc/sysctl.d/60-tbmesh.conf && sudo sysctl --system\n    docker compose -f ${dir}/docker/docker-compose.nebula.yml up -d`,
    dockerSection: p.members ? dockerUnderUp(dir) : composeNebula(dir),
  })
}
