/**
 * What TruBudget's blockchain, api, frontend and storage service are told on a node, in one place for every file that
 * tells them: the complete compose stack, the overrides of the operators' own compose files, `trubudget.env`, and the
 * environment files of a host without Docker. Names and meanings are TruBudget's (`blockchain/src/envVarsSchema.js`,
 * `api/src/envVarsSchema.ts` in openkfw/TruBudget v2.18; see the facts in the README's TruBudget section).
 *
 * The node's secrets (MultiChain RPC password, ROOT_SECRET, JWT_SECRET, ORGANIZATION_VAULT_SECRET, the MinIO keys) are
 * not values of a profile: `tbmesh install` makes them on the node, in `trubudget/node.env` ({@link NODE_ENV_SECRETS}).
 * Compose files name them as `${NAME:?…}` (filled from that file with `--env-file`); the environment files of a host
 * without Docker leave them out (systemd reads node.env as a second `EnvironmentFile=`).
 */

import {firstDisjoint, parseCidr} from '../lib/ip.js'
import {ENV_FILE_UNSAFE} from '../lib/names.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, assertPort, registrarIp, UnsafeValueError} from './template.js'

/** TruBudget's images the complete stack runs by default (`trubudget/blockchain`, `api`, `frontend`, `storage-service`). */
export const TRUBUDGET_IMAGE_TAG = 'v2.18.0'

/** The MinIO image behind the storage service (the release TruBudget v2.18's compose files pin). */
export const MINIO_IMAGE = 'minio/minio:RELEASE.2023-09-04T19-57-37Z'

/** The port the blockchain container serves its own HTTP API on (`PORT` of trubudget/blockchain); never published. */
export const BLOCKCHAIN_API_PORT = 8085

/** Where the blockchain container keeps the chain and its wallet (`MULTICHAIN_DIR`, TruBudget's default). */
export const MULTICHAIN_DIR = '/root'

/** The oldest Docker Compose that reads the `!override` and `!reset` tags tbmesh's overrides use. */
export const MIN_COMPOSE_VERSION = '2.24.4'

/**
 * The variables of `trubudget/node.env`, under TruBudget's own names, that `tbmesh install` makes on the node and no
 * bundle carries: per node `MULTICHAIN_RPC_PASSWORD` (between its api and its blockchain), `ROOT_SECRET`, `JWT_SECRET`,
 * `MINIO_ACCESS_KEY`, `MINIO_SECRET_KEY`; per organization `ORGANIZATION_VAULT_SECRET` (the same on all its nodes).
 */
export const NODE_ENV_SECRETS = [
  'MULTICHAIN_RPC_PASSWORD',
  'ROOT_SECRET',
  'JWT_SECRET',
  'ORGANIZATION_VAULT_SECRET',
  'MINIO_ACCESS_KEY',
  'MINIO_SECRET_KEY',
] as const

/** One of {@link NODE_ENV_SECRETS}. */
export type NodeSecretName = (typeof NODE_ENV_SECRETS)[number]

/**
 * The variable of node.env holding the node's name. tbmesh's compose files require it in the blockchain service's
 * environment, so that a command without node.env fails at once instead of running on TruBudget's example secrets.
 */
export const NODE_ENV_GUARD = 'TBMESH_NODE'

/** Candidates for the compose network's subnet; {@link composeSubnet} takes the first clear of the overlay. */
const COMPOSE_SUBNETS = ['172.31.247.0/24', '192.168.247.0/24', '10.247.247.0/24'] as const

/**
 * The subnet tbmesh pins TruBudget's compose network to (and names exactly in `RPC_ALLOW_IP`): the first of
 * 172.31.247.0/24, 192.168.247.0/24, 10.247.247.0/24 that does not overlap the overlay `cidr`. One always qualifies: an
 * IPv4 network overlapping the first two also holds 128.0.0.0/1, hence the multicast range, which init-ca refuses.
 */
export function composeSubnet(cidr: string): string {
  return firstDisjoint(COMPOSE_SUBNETS, [parseCidr(cidr)])
}

/** The compose network's address ending in `host` (1–254), e.g. `.11` of 172.31.247.0/24 → 172.31.247.11. */
export function subnetAddress(subnet: string, host: number): string {
  return `${subnet.split('.').slice(0, 3).join('.')}.${host}`
}

/** The URL other organizations download this node's documents from (`STORAGE_SERVICE_EXTERNAL_URL`): over the overlay. */
export function storageUrl(p: NodeProfile): string {
  return `http://${assertIPv4(p.node.overlayIp, 'node.overlayIp')}:${assertPort(p.ports.storage, 'ports.storage')}`
}

/**
 * A compose reference to a node.env variable: `${NAME:?…}`, which makes `docker compose` stop with that message when
 * the variable is unset (node.env was not given).
 */
export function nodeEnvRef(name: NodeSecretName | typeof NODE_ENV_GUARD): string {
  return `\${${name}:?is made by tbmesh install: pass its trubudget/node.env with --env-file}`
}

/**
 * `value` unchanged when `docker run --env-file`, docker compose (`env_file:` and `--env-file`, dotenv rules) and systemd's
 * `EnvironmentFile=` all read it back as exactly `value`, and it needs no escaping in YAML or compose interpolation.
 * @throws UnsafeValueError for line breaks and other control characters, quotes, `` ` ``, `$`, `#`, `\`, and leading
 *   or trailing blanks.
 */
export function envValue(name: string, value: string): string {
  const fix = 'leave out quotes, ` $ # \\ % and control characters'
  if (value === '') throw new UnsafeValueError(name, 'is empty', 'set a value')
  if (/[\r\n\u2028\u2029]/.test(value)) throw new UnsafeValueError(name, 'contains a line break', fix)
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new UnsafeValueError(name, 'contains a control character', fix)
  const bad = ENV_FILE_UNSAFE.exec(value)
  if (bad) throw new UnsafeValueError(name, `contains ${JSON.stringify(bad[0])}`, fix)
  if (value.trim() !== value) throw new UnsafeValueError(name, 'starts or ends with a blank', fix)
  return value
}

/** Where a file's values go: a compose project (secrets as `${…}` references), or a host without Docker (no secrets). */
export type Target = 'compose' | 'host'

/** An ordered environment: variable → value (strings, as compose and env files hold them). */
export type Environment = Record<string, string>

/** The secrets among `names`, as compose references for `target` `compose`, left out for `host`. */
function secrets(target: Target, names: NodeSecretName[]): Environment {
  return target === 'compose' ? Object.fromEntries(names.map((n) => [n, nodeEnvRef(n)])) : {}
}

/**
 * The environment of TruBudget's blockchain (container or program): `ORGANIZATION`, `EXTERNAL_IP` (the overlay IP),
 * `P2P_PORT`; on a node other than the origin `P2P_HOST` and `API_HOST` (its registrar), `API_PORT`, `API_PROTOCOL`;
 * MultiChain RPC port, user and `RPC_ALLOW_IP` (`rpcAllowIp`); `EXPOSE_MC=false` (true would replace EXTERNAL_IP with a
 * Kubernetes service's address); with `multichainDir`, `MULTICHAIN_DIR`; for `compose`, the RPC password and the
 * {@link NODE_ENV_GUARD} as node.env references.
 *
 * @throws NoOriginError for a node other than the origin in a network without origin (and no registrar given).
 * @throws UnsafeValueError for an organization name {@link envValue} refuses.
 */
export function blockchainEnvironment(p: NodeProfile, o: {target: Target; rpcAllowIp: string; multichainDir?: string}): Environment {
  const registrar = registrarIp(p)
  return {
    ORGANIZATION: envValue('ORGANIZATION', p.node.organization),
    EXTERNAL_IP: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    P2P_PORT: String(assertPort(p.ports.p2p, 'ports.p2p')),
    ...(registrar ? {P2P_HOST: registrar, API_PROTOCOL: 'http', API_HOST: registrar, API_PORT: String(assertPort(p.ports.api, 'ports.api'))} : {}),
    MULTICHAIN_RPC_PORT: String(assertPort(p.ports.rpc, 'ports.rpc')),
    MULTICHAIN_RPC_USER: envValue('MULTICHAIN_RPC_USER', p.rpc.user),
    ...secrets(o.target, ['MULTICHAIN_RPC_PASSWORD']),
    RPC_ALLOW_IP: o.rpcAllowIp,
    EXPOSE_MC: 'false',
    ...(o.multichainDir ? {MULTICHAIN_DIR: o.multichainDir} : {}),
    ...(o.target === 'compose' ? {[NODE_ENV_GUARD]: nodeEnvRef(NODE_ENV_GUARD)} : {}),
  }
}

/**
 * The environment of TruBudget's api: `ORGANIZATION`, `PORT` (the network's API port), its blockchain's RPC
 * (`MULTICHAIN_RPC_HOST` = `rpcHost`, port, user) and HTTP API (`BLOCKCHAIN_HOST`, `BLOCKCHAIN_PORT`), the storage
 * service (`STORAGE_SERVICE_HOST` = `storageHost`, port) and the URL other organizations download documents from
 * (`STORAGE_SERVICE_EXTERNAL_URL`, over the overlay); for `compose`, the RPC password, ORGANIZATION_VAULT_SECRET,
 * ROOT_SECRET and JWT_SECRET as node.env references.
 * @throws UnsafeValueError for an organization name {@link envValue} refuses.
 */
export function apiEnvironment(p: NodeProfile, o: {target: Target; rpcHost: string; storageHost: string}): Environment {
  return {
    ORGANIZATION: envValue('ORGANIZATION', p.node.organization),
    PORT: String(assertPort(p.ports.api, 'ports.api')),
    MULTICHAIN_RPC_HOST: o.rpcHost,
    MULTICHAIN_RPC_PORT: String(assertPort(p.ports.rpc, 'ports.rpc')),
    MULTICHAIN_RPC_USER: envValue('MULTICHAIN_RPC_USER', p.rpc.user),
    ...secrets(o.target, ['MULTICHAIN_RPC_PASSWORD', 'ORGANIZATION_VAULT_SECRET', 'ROOT_SECRET', 'JWT_SECRET']),
    BLOCKCHAIN_HOST: o.rpcHost,
    BLOCKCHAIN_PORT: String(BLOCKCHAIN_API_PORT),
    STORAGE_SERVICE_HOST: o.storageHost,
    STORAGE_SERVICE_PORT: String(assertPort(p.ports.storage, 'ports.storage')),
    STORAGE_SERVICE_EXTERNAL_URL: storageUrl(p),
  }
}

/**
 * The environment of TruBudget's storage service: `PORT` (the network's storage port), MinIO's host and port; for
 * `compose`, the MinIO keys as node.env references.
 */
export function storageEnvironment(p: NodeProfile, o: {target: Target; minioHost: string}): Environment {
  return {
    PORT: String(assertPort(p.ports.storage, 'ports.storage')),
    MINIO_HOST: o.minioHost,
    MINIO_PORT: '9000',
    ...secrets(o.target, ['MINIO_ACCESS_KEY', 'MINIO_SECRET_KEY']),
  }
}

/** MinIO's own environment (the names TruBudget's files use): its keys are the storage service's (node.env references). */
export function minioEnvironment(): Environment {
  return secrets('compose', ['MINIO_ACCESS_KEY', 'MINIO_SECRET_KEY'])
}
