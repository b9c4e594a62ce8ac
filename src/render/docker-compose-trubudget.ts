/**
 * Renders a node's `docker-compose.trubudget.override.yml` from `templates/docker-compose.trubudget.override.yml`
 * (`{{name}}` placeholders): an override for TruBudget's compose files that gives the `blockchain` service the node's
 * environment and publishes MultiChain P2P on the overlay IP only.
 *
 * TruBudget's per-node files (`docker-compose/blockchain/docker-compose.alphanode.yml`, `docker-compose.betanode.yml`
 * in openkfw/TruBudget) name the service `blockchain`, set its variables in `environment:` from TruBudget's `.env`,
 * and publish `"${P2P_PORT}:${P2P_PORT}"` on every interface. Compose gives `environment:` precedence over
 * `env_file:` and merges `ports:` lists, so the override repeats the overlay settings in `environment:` and replaces
 * the port list with `!override` (Compose 2.24.4 or later).
 */

import {safeLine} from '../lib/text.js'
import {type DeploymentExtra, INSTALL_DIR_PLACEHOLDER, placeInstallDir} from './install-dir.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, assertPort, fillPlaceholders, originIp, readTemplate} from './template.js'

/** The service the override configures, as TruBudget's per-node compose files name it. */
export const TRUBUDGET_BLOCKCHAIN_SERVICE = 'blockchain'

/**
 * Who may use MultiChain RPC in the compose setup: TruBudget's api service connects over the compose network, from
 * an address in Docker's default address pools (172.17.0.0/16 … 172.31.0.0/16), never from 127.0.0.1. RPC stays
 * unpublished beyond 127.0.0.1, and Nebula's firewall drops it on the overlay.
 */
export const COMPOSE_RPC_ALLOW_IP = '172.16.0.0/12'

/** TruBudget's compose file for the node's role, in its `docker-compose/blockchain/` folder. */
export function trubudgetBlockchainCompose(p: NodeProfile): string {
  return p.node.origin ? 'docker-compose.alphanode.yml' : 'docker-compose.betanode.yml'
}

/**
 * The text of the node's `docker-compose.trubudget.override.yml`: service `blockchain` with
 * `env_file: ["DIR/trubudget/blockchain.env"]`; `environment:` `EXTERNAL_IP` (the overlay IP), `P2P_PORT`, on every
 * node but the origin `P2P_HOST`, `API_PROTOCOL`, `API_HOST`, `API_PORT` (the origin), and `RPC_ALLOW_IP`
 * ({@link COMPOSE_RPC_ALLOW_IP}); `ports: !override` publishing `"<overlay IP>:7447:7447"` and RPC and the blockchain
 * API on 127.0.0.1.
 *
 * @throws NoOriginError for a non-origin node while the network has no origin yet.
 * @throws UserError when `extra.installDir` contains a control character or line break.
 * @throws Error when the profile is malformed.
 */
export function renderTrubudgetOverride(p: NodeProfile, extra: DeploymentExtra = {}): string {
  const origin = assertIPv4(originIp(p), p.node.origin ? 'node.overlayIp' : 'originOverlayIp')
  const joinEnvironment = p.node.origin
    ? '      # Origin (alpha) node: it creates the chain, so P2P_HOST and API_* stay unset.'
    : [
        '      # Joins the chain at the origin node and registers at its TruBudget API, both over the overlay.',
        `      P2P_HOST: "${origin}"`,
        '      API_PROTOCOL: "http"',
        `      API_HOST: "${origin}"`,
        `      API_PORT: "${assertPort(p.ports.api, 'ports.api')}"`,
      ].join('\n')
  const text = fillPlaceholders(readTemplate('docker-compose.trubudget.override.yml'), {
    node: safeLine(p.node.name),
    network: safeLine(JSON.stringify(p.network.name)),
    overlayIp: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    p2pPort: assertPort(p.ports.p2p, 'ports.p2p'),
    rpcPort: assertPort(p.ports.rpc, 'ports.rpc'),
    blockchainCompose: trubudgetBlockchainCompose(p),
    joinEnvironment,
    rpcAllowIp: COMPOSE_RPC_ALLOW_IP,
    installDir: INSTALL_DIR_PLACEHOLDER,
  })
  return placeInstallDir(text, 'compose', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
}
