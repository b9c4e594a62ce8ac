/**
 * Renders a node's `docker/compose.yml`: the complete node as one Compose project — Nebula (the included
 * `docker-compose.nebula.yml`), TruBudget's blockchain, api and frontend, and, under the profile `documents`, the
 * storage service and MinIO — right for the node's role. Header prose from `templates/compose-stack.txt`.
 */

import {safeLine} from '../lib/text.js'
import {stackCommand} from './compose-commands.js'
import {composeYaml, labels, Noted, publish, variable} from './compose.js'
import {type DeploymentExtra, INSTALL_DIR_PLACEHOLDER, placeInstallDir} from './install-dir.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, fillPlaceholders, readTemplate, registrarIp} from './template.js'
import {
  apiEnvironment,
  BLOCKCHAIN_API_PORT,
  blockchainEnvironment,
  composeSubnet,
  MIN_COMPOSE_VERSION,
  MINIO_IMAGE,
  minioEnvironment,
  MULTICHAIN_DIR,
  storageEnvironment,
  TRUBUDGET_IMAGE_TAG,
} from './trubudget.js'

/** Where the complete stack publishes TruBudget's frontend (on 127.0.0.1). */
export const FRONTEND_PORT = 3000

/** The Compose profile that adds the storage service and MinIO (documents between organizations). */
export const DOCUMENTS_PROFILE = 'documents'

/** A TruBudget image at the tag node.env's `TRUBUDGET_TAG` names, by default {@link TRUBUDGET_IMAGE_TAG}. */
const image = (name: string): string => `trubudget/${name}:${variable('TRUBUDGET_TAG', TRUBUDGET_IMAGE_TAG)}`

/** A word for the node's role in file headers. */
export function roleText(p: NodeProfile): string {
  if (p.node.origin) return 'the origin, which creates the chain and admits joining nodes'
  const at = `joins and registers at ${registrarIp(p)}`
  return p.node.registrar ? `a registrar, which admits joining nodes, and ${at}` : `a node that ${at}`
}

/**
 * The text of `docker/compose.yml` (project `tbmesh-<node>`):
 *
 * - Nebula: `docker-compose.nebula.yml` included (single CA); none in a federated network, where it runs under
 *   `tbmesh up`;
 * - `blockchain`: the node's values in `environment:` ({@link blockchainEnvironment}, `RPC_ALLOW_IP` = the pinned subnet),
 *   the chain on volume `chain` at `/root`, P2P published on the overlay IP only;
 * - `api`: {@link apiEnvironment}, `DOCUMENT_FEATURE_ENABLED` from node.env (default false), published on 127.0.0.1 and,
 *   on a registrar, on the overlay IP;
 * - `frontend` on 127.0.0.1:3000; `storage-service` (overlay IP) and `minio` (not published) under profile `documents`;
 * - every service `restart: unless-stopped`, labelled with the node and what it is (doctor finds them so), on the network
 *   `trubudget` pinned to {@link composeSubnet}; images `trubudget/*:${TRUBUDGET_TAG:-v2.18.0}`.
 *
 * @throws NoOriginError for a node other than the origin while the network has neither origin nor registrar for it.
 * @throws UnsafeValueError for an organization name that cannot be written into an environment.
 * @throws UserError when `extra.installDir` contains a control character or line break.
 */
export function renderComposeStack(p: NodeProfile, extra: DeploymentExtra = {}): string {
  const overlayIp = assertIPv4(p.node.overlayIp, 'node.overlayIp')
  const subnet = composeSubnet(p.network.cidr)
  const node = p.node.name
  const common = (service: Parameters<typeof labels>[1]) => ({restart: 'unless-stopped', networks: ['trubudget'], labels: labels(node, service)})
  // A federated node's Nebula runs under `tbmesh up` (systemd/nebula.service, or `tbmesh up --docker IMAGE`), which
  // enforces each member's block on its peers: never bare in this project.
  const bareNebula = !p.members
  const body = {
    name: `tbmesh-${node}`,
    ...(bareNebula ? {include: new Noted('Nebula, on the host network (it brings up the overlay IP the ports below are published on).', ['docker-compose.nebula.yml'])} : {}),
    services: {
      blockchain: {
        image: image('blockchain'),
        ...common('blockchain'),
        ...(bareNebula ? {depends_on: ['nebula']} : {}),
        environment: {PORT: String(BLOCKCHAIN_API_PORT), ...blockchainEnvironment(p, {target: 'compose', rpcAllowIp: subnet, multichainDir: MULTICHAIN_DIR})},
        volumes: [`chain:${MULTICHAIN_DIR}`],
        ports: [publish(overlayIp, p.ports.p2p)],
      },
      api: {
        image: image('api'),
        ...common('api'),
        depends_on: ['blockchain'],
        environment: {...apiEnvironment(p, {target: 'compose', rpcHost: 'blockchain', storageHost: 'storage-service'}), DOCUMENT_FEATURE_ENABLED: variable('DOCUMENT_FEATURE_ENABLED', 'false')},
        ports: [publish('127.0.0.1', p.ports.api), ...(p.node.registrar ? [publish(overlayIp, p.ports.api)] : [])],
      },
      frontend: {
        image: image('frontend'),
        ...common('frontend'),
        depends_on: ['api'],
        environment: {API_HOST: 'api', API_PORT: String(p.ports.api), STORAGE_SERVICE_HOST: 'storage-service', STORAGE_SERVICE_PORT: String(p.ports.storage)},
        ports: [publish('127.0.0.1', FRONTEND_PORT, 80)],
      },
      'storage-service': {
        profiles: [DOCUMENTS_PROFILE],
        image: image('storage-service'),
        ...common('storage-service'),
        depends_on: ['minio'],
        environment: storageEnvironment(p, {target: 'compose', minioHost: 'minio'}),
        ports: [publish(overlayIp, p.ports.storage)],
      },
      minio: {
        profiles: [DOCUMENTS_PROFILE],
        image: MINIO_IMAGE,
        ...common('minio'),
        command: ['server', '/data'],
        environment: minioEnvironment(),
        volumes: ['documents:/data'],
      },
    },
    networks: {trubudget: {ipam: {config: [{subnet}]}}},
    volumes: {chain: {}, documents: {}},
  }
  const header = fillPlaceholders(readTemplate('compose-stack.txt'), {
    node: safeLine(node),
    overlayIp,
    nebula: bareNebula
      ? 'Nebula (docker-compose.nebula.yml, included)'
      : 'Nebula runs outside this project, under `tbmesh up` (systemd/nebula.service, started first)',
    role: roleText(p),
    network: safeLine(JSON.stringify(p.network.name)),
    installDir: INSTALL_DIR_PLACEHOLDER,
    upCommand: stackCommand(INSTALL_DIR_PLACEHOLDER),
    minCompose: MIN_COMPOSE_VERSION,
    p2pPort: p.ports.p2p,
    storagePort: p.ports.storage,
    apiPort: p.ports.api,
    apiOnOverlay: p.node.registrar ? ` and, as joining nodes register here, on ${overlayIp}` : '',
    frontendPort: FRONTEND_PORT,
    subnet,
    multichainDir: MULTICHAIN_DIR,
  })
  return placeInstallDir(composeYaml(header, body), 'compose', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
}
