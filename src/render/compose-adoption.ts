/**
 * Adopting an existing TruBudget deployment: the overrides that go over the operators' own compose files, in TruBudget's
 * two layouts, and `docker/trubudget.env`, the node's values under the names of TruBudget's `.env`. Merged after
 * TruBudget's files (`docker compose -f theirs… -f override --env-file .env --env-file trubudget.env --env-file
 * node.env`), an override gives what the complete stack (`compose-stack.ts`) gives in everything that matters:
 * environment, published ports (`!override`), the chain volume, restart policy, the compose subnet.
 *
 * The layouts (facts in the README's TruBudget section; tbmesh's own stand-ins are in test/fixtures/trubudget/):
 * - `scripts/operation/docker-compose.yml`: one file, project `trubudget-operation`, services `alpha-node`, `alpha-api`,
 *   `frontend` (the origin) and `beta-node`, `beta-api`, `beta-frontend` (a joining organization), `storage-service`,
 *   `minio`, on the network `mynetwork` (172.21.0.0/24) with fixed addresses; chain volumes `alphaVolume`, `beta1Volume`.
 * - `docker-compose/` (per-service files): services `blockchain`, `api`, `frontend` and, from
 *   `storage-service/docker-compose.yml`, `storage-service` and `minio`; the default network; chain volume
 *   `alpha-volume`. An override may not name a service no file before it defines, so the storage services have their
 *   own override for this layout.
 */

import {safeLine} from '../lib/text.js'
import {adoptionCommand, type OperatorLayout, OVERRIDE_FILES} from './compose-commands.js'
import {roleText} from './compose-stack.js'
import {composeYaml, type LabelledService, labels, publish, Tagged, variable} from './compose.js'
import {type DeploymentExtra, INSTALL_DIR_PLACEHOLDER, placeInstallDir} from './install-dir.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, assertPort, fillPlaceholders, readTemplate, registrarIp} from './template.js'
import {
  apiEnvironment,
  blockchainEnvironment,
  composeSubnet,
  envValue,
  MIN_COMPOSE_VERSION,
  minioEnvironment,
  MULTICHAIN_DIR,
  storageEnvironment,
  storageUrl,
  subnetAddress,
} from './trubudget.js'

/** MULTICHAIN_DIR as the operator's `.env` sets it, TruBudget's default otherwise: the mount point of the chain volume. */
const OPERATOR_MULTICHAIN_DIR = variable('MULTICHAIN_DIR', MULTICHAIN_DIR)

/**
 * The fixed addresses (last octet) TruBudget's `scripts/operation` file gives its services on `mynetwork`; the override
 * moves every one into the pinned subnet (compose does not check that an address fits its network's subnet).
 */
export const OPERATION_ADDRESSES: Readonly<Record<string, number>> = {
  'alpha-node': 11,
  'alpha-api': 4,
  frontend: 91,
  minio: 3,
  'storage-service': 8,
  'beta-node': 12,
  'beta-api': 44,
  'beta-frontend': 92,
}

/** The chain volume each layout and role already names, so that an existing chain on it is kept. */
export function chainVolume(layout: OperatorLayout, origin: boolean): string {
  if (layout === 'services') return 'alpha-volume'
  return origin ? 'alphaVolume' : 'beta1Volume'
}

/** What the per-role services of an operator layout are called, and where the frontend is published. */
interface Roles {
  blockchain: string
  api: string
  frontend: string
  frontendPort: string
}

function roles(layout: OperatorLayout, origin: boolean): Roles {
  if (layout === 'services') return {blockchain: 'blockchain', api: 'api', frontend: 'frontend', frontendPort: variable('FRONTEND_PORT', '3000')}
  return origin
    ? {blockchain: 'alpha-node', api: 'alpha-api', frontend: 'frontend', frontendPort: '3000'}
    : {blockchain: 'beta-node', api: 'beta-api', frontend: 'beta-frontend', frontendPort: '3005'}
}

/** The storage service and MinIO as every layout's override sets them. */
function documentServices(p: NodeProfile, extra: (service: string) => Record<string, unknown>): Record<string, unknown> {
  const overlayIp = assertIPv4(p.node.overlayIp, 'node.overlayIp')
  const common = (service: LabelledService) => ({restart: 'unless-stopped', labels: labels(p.node.name, service)})
  return {
    'storage-service': {environment: storageEnvironment(p, {target: 'compose', minioHost: 'minio'}), ports: new Tagged('!override', [publish(overlayIp, p.ports.storage)]), ...common('storage-service'), ...extra('storage-service')},
    minio: {environment: minioEnvironment(), ports: new Tagged('!reset', []), ...common('minio'), ...extra('minio')},
  }
}

/** The header of an override: what it is for, the exact commands, what it changes. */
function header(p: NodeProfile, layout: OperatorLayout | 'documents', volume: string): string {
  const origin = p.node.origin
  const base = layout === 'documents' ? 'services' : layout
  const names: Record<OperatorLayout | 'documents', string> = {
    operation: 'scripts/operation/docker-compose.yml',
    services: 'docker-compose/ per-service files',
    documents: 'docker-compose/storage-service/docker-compose.yml (documents)',
  }
  return fillPlaceholders(readTemplate('compose-adoption.txt'), {
    layoutName: names[layout],
    node: safeLine(p.node.name),
    overlayIp: p.node.overlayIp,
    role: roleText(p),
    network: safeLine(JSON.stringify(p.network.name)),
    where: base === 'operation' ? "in TruBudget's scripts/operation folder" : "in TruBudget's docker-compose folder",
    upCommand: adoptionCommand(base, INSTALL_DIR_PLACEHOLDER, {origin, documents: false}),
    documentsNote: base === 'services' ? `: add storage-service/docker-compose.yml and ${OVERRIDE_FILES.documents}` : ' and MinIO',
    documentsCommand: adoptionCommand(base, INSTALL_DIR_PLACEHOLDER, {origin, documents: true}),
    minCompose: MIN_COMPOSE_VERSION,
    installDir: INSTALL_DIR_PLACEHOLDER,
    p2pPort: p.ports.p2p,
    storagePort: p.ports.storage,
    apiPort: p.ports.api,
    apiOnOverlay: p.node.registrar ? `and, as joining nodes register here, on ${p.node.overlayIp}` : 'only',
    subnet: composeSubnet(p.network.cidr),
    volume,
  })
}

/**
 * The text of the override of `layout` for the node: for its blockchain, api and frontend services (the operation
 * layout's `alpha-*` on the origin, `beta-*` on other nodes) the node's values in `environment:` and the node.env
 * references of its secrets, `!override` port lists (P2P on the overlay IP; the api on 127.0.0.1 and, on a registrar,
 * the overlay IP; the frontend on 127.0.0.1), the chain volume of {@link chainVolume} at `${MULTICHAIN_DIR:-/root}`,
 * `restart: unless-stopped`, tbmesh's labels; the compose network pinned to {@link composeSubnet}; in the operation
 * layout also the storage service and MinIO, every fixed address moved into the subnet ({@link OPERATION_ADDRESSES}),
 * and on a joining node the dependencies on the alpha services removed (`!reset`/`!override`).
 *
 * @throws NoOriginError for a node other than the origin while the network has neither origin nor registrar for it.
 * @throws UnsafeValueError for an organization name that cannot be written into an environment.
 * @throws UserError when `extra.installDir` contains a control character or line break.
 */
export function renderAdoptionOverride(p: NodeProfile, layout: OperatorLayout, extra: DeploymentExtra = {}): string {
  const overlayIp = assertIPv4(p.node.overlayIp, 'node.overlayIp')
  const subnet = composeSubnet(p.network.cidr)
  const origin = p.node.origin
  const r = roles(layout, origin)
  const volume = chainVolume(layout, origin)
  const address = (service: string) => (layout === 'operation' ? {networks: {mynetwork: {ipv4_address: subnetAddress(subnet, OPERATION_ADDRESSES[service])}}} : {})
  const joining = layout === 'operation' && !origin
  const common = (service: string, what: LabelledService) => ({restart: 'unless-stopped', labels: labels(p.node.name, what), ...address(service)})
  const services: Record<string, unknown> = {
    [r.blockchain]: {
      environment: blockchainEnvironment(p, {target: 'compose', rpcAllowIp: subnet, multichainDir: OPERATOR_MULTICHAIN_DIR}),
      volumes: [`${volume}:${OPERATOR_MULTICHAIN_DIR}`],
      ports: new Tagged('!override', [publish(overlayIp, p.ports.p2p)]),
      ...(joining ? {depends_on: new Tagged('!reset', [])} : {}),
      ...common(r.blockchain, 'blockchain'),
    },
    [r.api]: {
      environment: apiEnvironment(p, {target: 'compose', rpcHost: r.blockchain, storageHost: 'storage-service'}),
      ports: new Tagged('!override', [publish('127.0.0.1', p.ports.api), ...(p.node.registrar ? [publish(overlayIp, p.ports.api)] : [])]),
      ...(joining ? {depends_on: new Tagged('!override', [r.blockchain])} : {}),
      ...common(r.api, 'api'),
    },
    [r.frontend]: {
      environment: {API_PORT: String(assertPort(p.ports.api, 'ports.api')), STORAGE_SERVICE_HOST: 'storage-service', STORAGE_SERVICE_PORT: String(assertPort(p.ports.storage, 'ports.storage'))},
      ports: new Tagged('!override', [`127.0.0.1:${r.frontendPort}:80`]),
      ...(joining ? {depends_on: new Tagged('!override', [r.api])} : {}),
      ...common(r.frontend, 'frontend'),
    },
  }
  if (layout === 'operation') {
    Object.assign(services, documentServices(p, (service) => ({...address(service), ...(service === 'storage-service' ? {depends_on: new Tagged('!override', ['minio'])} : {})})))
    for (const service of Object.keys(OPERATION_ADDRESSES)) services[service] ??= address(service)
  }
  const body = {
    services,
    networks: {[layout === 'operation' ? 'mynetwork' : 'default']: {ipam: {config: [{subnet}]}}},
    volumes: {[volume]: {}},
  }
  return placeInstallDir(composeYaml(header(p, layout, volume), body), 'compose', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
}

/**
 * The text of the per-service layout's documents override (after `storage-service/docker-compose.yml` and the main
 * override): the storage service published on the overlay IP only and MinIO not at all, their keys from node.env,
 * restart and labels.
 * @throws UserError when `extra.installDir` contains a control character or line break.
 */
export function renderDocumentsOverride(p: NodeProfile, extra: DeploymentExtra = {}): string {
  const body = {services: documentServices(p, () => ({}))}
  return placeInstallDir(composeYaml(header(p, 'documents', chainVolume('services', p.node.origin)), body), 'compose', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
}

/**
 * The text of `docker/trubudget.env`: the node's values under the names of TruBudget's `.env`, for `--env-file` after
 * it (so that TruBudget's own `${…}` references get them too): ORGANIZATION, EXTERNAL_IP, P2P_PORT; on a joining node
 * P2P_HOST and EXTERNAL_ALPHA_API_HOST/PORT/PROTOCOL (its registrar) and the operation layout's BETA_ORGANIZATION,
 * BETA_API_PORT, BETA_MULTICHAIN_RPC_PORT; API_PORT, MULTICHAIN_RPC_PORT/USER, RPC_ALLOW_IP (the pinned subnet),
 * EXPOSE_MC=false, STORAGE_SERVICE_PORT and STORAGE_SERVICE_EXTERNAL_URL. No secret: those are in node.env.
 *
 * @throws NoOriginError, UnsafeValueError as {@link renderAdoptionOverride}.
 */
export function renderTrubudgetEnv(p: NodeProfile): string {
  const registrar = registrarIp(p)
  const values: Record<string, string | number> = {
    ORGANIZATION: envValue('ORGANIZATION', p.node.organization),
    EXTERNAL_IP: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    P2P_PORT: p.ports.p2p,
    ...(registrar
      ? {
          P2P_HOST: registrar,
          EXTERNAL_ALPHA_API_HOST: registrar,
          EXTERNAL_ALPHA_API_PORT: p.ports.api,
          EXTERNAL_ALPHA_API_PROTOCOL: 'http',
          BETA_ORGANIZATION: envValue('ORGANIZATION', p.node.organization),
          BETA_API_PORT: p.ports.api,
          BETA_MULTICHAIN_RPC_PORT: p.ports.rpc,
        }
      : {}),
    API_PORT: p.ports.api,
    MULTICHAIN_RPC_PORT: p.ports.rpc,
    MULTICHAIN_RPC_USER: envValue('MULTICHAIN_RPC_USER', p.rpc.user),
    RPC_ALLOW_IP: composeSubnet(p.network.cidr),
    EXPOSE_MC: 'false',
    STORAGE_SERVICE_PORT: p.ports.storage,
    STORAGE_SERVICE_EXTERNAL_URL: storageUrl(p),
  }
  const lines = [
    `# Node ${safeLine(p.node.name)} (overlay IP ${p.node.overlayIp}) of network ${safeLine(JSON.stringify(p.network.name))}, generated by tbmesh:`,
    "# its values under the names of TruBudget's .env. Give it with --env-file after TruBudget's .env and before",
    '# trubudget/node.env (the last --env-file wins); the overrides in this folder set the same values in environment:.',
    '# No secret is in it: tbmesh install makes them on the node, in trubudget/node.env.',
    ...Object.entries(values).map(([k, v]) => `${k}=${v}`),
  ]
  return `${lines.join('\n')}\n`
}
