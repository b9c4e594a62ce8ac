/**
 * The node's own values, `trubudget/node.env` in an installation: the secrets TruBudget needs, which `tbmesh install`
 * makes on the node (never the CA, never in a bundle), and the node's local choices. One file for every way a node
 * runs: `--env-file` for Docker Compose, `EnvironmentFile=` for systemd. Format: `NAME=value` lines, values unquoted
 * (every value is checked to read back the same in both).
 *
 * - per node: `MULTICHAIN_RPC_PASSWORD` (between the node's api and its blockchain), `ROOT_SECRET`, `JWT_SECRET`,
 *   `MINIO_ACCESS_KEY`, `MINIO_SECRET_KEY` — 44 random characters each ({@link newSecret});
 * - per organization: `ORGANIZATION_VAULT_SECRET`, the same on all its nodes: from a federated organization's bundle,
 *   else from `--vault-secret-file`, else the installation's own, else new;
 * - `TBMESH_NODE` (the node's name: tbmesh's compose files require it, so a command without node.env fails);
 * - with `--documents`: `DOCUMENT_FEATURE_ENABLED=true`, `COMPOSE_PROFILES=documents`; with `--trubudget-tag`:
 *   `TRUBUDGET_TAG`.
 *
 * A reinstallation of the same node keeps every secret: a new ROOT_SECRET locks out root's password, and a new
 * ORGANIZATION_VAULT_SECRET makes the organization's vault unreadable on the node.
 */

import {readFile} from 'node:fs/promises'

import {UserError} from '../errors.js'
import {fileError} from '../lib/files.js'
import {newSecret} from '../lib/text.js'
import {DOCUMENTS_PROFILE} from '../render/compose-stack.js'
import {envValue, NODE_ENV_GUARD, NODE_ENV_SECRETS, type NodeSecretName} from '../render/trubudget.js'
import {NODE_ENV_FILE} from './layout.js'

/** Shortest ORGANIZATION_VAULT_SECRET accepted from a file (TruBudget's example `secret` is public). */
export const MIN_VAULT_SECRET_LENGTH = 16

/** Where the node's ORGANIZATION_VAULT_SECRET came from. */
export type VaultSource = 'bundle' | 'file' | 'installed' | 'generated'

/** What {@link makeNodeEnv} decided. */
export interface NodeEnv {
  /** The file's values, in writing order. */
  values: Record<string, string>
  /** The secrets made now (names), in {@link NODE_ENV_SECRETS} order; empty when every one was kept. */
  generated: NodeSecretName[]
  vault: VaultSource
}

/** `NAME=value` lines of node.env (comments and blank lines skipped; the last of a name wins). */
export function parseNodeEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const eq = line.indexOf('=')
    if (eq > 0) out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim()
  }
  return out
}

/** The text of node.env for `values` (see {@link makeNodeEnv}), under a header saying what it is. */
export function renderNodeEnv(node: string, values: Record<string, string>): string {
  const lines = [
    `# This node's own values (node ${node}), made by tbmesh install on this machine: never in a bundle, never on the CA.`,
    '# Keep it 0600. Docker Compose: --env-file (last); systemd: EnvironmentFile=. Reinstalling the node keeps it;',
    '# a new ROOT_SECRET or ORGANIZATION_VAULT_SECRET would lock root out and make the organization\'s vault unreadable.',
    ...Object.entries(values).map(([k, v]) => `${k}=${envValue(k, v)}`),
  ]
  return `${lines.join('\n')}\n`
}

/**
 * An ORGANIZATION_VAULT_SECRET read from `--vault-secret-file` (the file's text without its line end, or a
 * `ORGANIZATION_VAULT_SECRET=…` line as node.env and bundles write it).
 * @throws UserError when the file cannot be read, or the secret is shorter than {@link MIN_VAULT_SECRET_LENGTH} or
 *   holds characters an environment file cannot carry.
 */
export async function readVaultSecretFile(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch((error: unknown) => {
    throw fileError(error, `Cannot read --vault-secret-file ${file}`, {denied: 'run as a user who may read it'})
  })
  const line = text.split(/\r?\n/).find((l) => l.trim() !== '' && !l.trim().startsWith('#')) ?? ''
  return checkVaultSecret(line.startsWith('ORGANIZATION_VAULT_SECRET=') ? line.slice('ORGANIZATION_VAULT_SECRET='.length) : line, `--vault-secret-file ${file}`)
}

/** `secret` when it may be an ORGANIZATION_VAULT_SECRET; UserError naming `source` otherwise. */
function checkVaultSecret(secret: string, source: string): string {
  if (secret.length < MIN_VAULT_SECRET_LENGTH) {
    throw new UserError(`${source}: the ORGANIZATION_VAULT_SECRET has ${secret.length} characters`, {fix: `use at least ${MIN_VAULT_SECRET_LENGTH} random characters (TruBudget's examples are public)`})
  }
  try {
    return envValue('ORGANIZATION_VAULT_SECRET', secret)
  } catch (error) {
    throw new UserError(`${source}: ${(error as Error).message}`, {fix: (error as UserError).fix})
  }
}

/**
 * Decides the node.env of node `node`: the installed values (`installed`, a node.env of the same node and network)
 * kept, what is missing made new, the vault secret from the bundle (`bundleVault`), else `fileVault`, else the installed
 * one, else new; `documents` and `trubudgetTag` set the local choices (kept from `installed` when not given).
 *
 * @throws UserError when `bundleVault` and `fileVault` differ, or either differs from the installed one (changing it
 *   makes the organization's vault unreadable on this node).
 */
export function makeNodeEnv(node: string, o: {installed?: Record<string, string>; bundleVault?: string; fileVault?: string; documents?: boolean; trubudgetTag?: string}): NodeEnv {
  const installed = o.installed ?? {}
  const bundleVault = o.bundleVault === undefined ? undefined : checkVaultSecret(o.bundleVault, 'the bundle')
  if (bundleVault !== undefined && o.fileVault !== undefined && bundleVault !== o.fileVault) {
    throw new UserError("--vault-secret-file differs from the organization's ORGANIZATION_VAULT_SECRET the bundle carries", {fix: 'drop --vault-secret-file'})
  }
  const given = bundleVault ?? o.fileVault
  const held = installed.ORGANIZATION_VAULT_SECRET
  if (given !== undefined && held !== undefined && given !== held) {
    throw new UserError(`this installation already holds another ORGANIZATION_VAULT_SECRET (${NODE_ENV_FILE}); changing it makes the organization's vault unreadable on this node`, {
      fix: `install with the same one, or remove ${NODE_ENV_FILE} first if you really mean to change it`,
    })
  }
  const vault: VaultSource = bundleVault === undefined ? (o.fileVault === undefined ? (held === undefined ? 'generated' : 'installed') : 'file') : 'bundle'
  const generated: NodeSecretName[] = []
  const values: Record<string, string> = {[NODE_ENV_GUARD]: node}
  for (const name of NODE_ENV_SECRETS) {
    let value = name === 'ORGANIZATION_VAULT_SECRET' ? (given ?? held) : installed[name]
    if (value === undefined) {
      value = newSecret()
      generated.push(name)
    }
    values[name] = value
  }
  const documents = o.documents ?? installed.DOCUMENT_FEATURE_ENABLED === 'true'
  if (documents) Object.assign(values, {DOCUMENT_FEATURE_ENABLED: 'true', COMPOSE_PROFILES: DOCUMENTS_PROFILE})
  const tag = o.trubudgetTag ?? installed.TRUBUDGET_TAG
  if (tag !== undefined) values.TRUBUDGET_TAG = envValue('--trubudget-tag', tag)
  return {values, generated, vault}
}
