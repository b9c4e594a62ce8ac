/**
 * Bundles out of the CA's home: a node's join bundle (everything it needs) and update bundles (what changed), rendered
 * from the state, signed by the active CA, written in a transaction that advances the node's bundle sequence number.
 * Apart from ca.ts so that commands which only change the state do not load the renderers and tar.
 */

import {mkdir, rm} from 'node:fs/promises'
import {join, resolve} from 'node:path'

import {writeBundle} from '../bundle/archive.js'
import type {BundleKind, BundleManifest} from '../bundle/layout.js'
import {UsageError, UserError} from '../errors.js'
import type {Home, Transaction} from '../home/home.js'
import {currentCertificate, findNode, trustedCas, trustedMembers} from '../home/queries.js'
import {syncFiles} from '../lib/files.js'
import {ed25519Sign} from '../nebula/index.js'
import {renderBlockchainEnv} from '../render/blockchain-env.js'
import {renderBundleReadme} from '../render/bundle-readme.js'
import {renderNebulaCompose} from '../render/docker-compose-nebula.js'
import {renderTrubudgetOverride} from '../render/docker-compose-trubudget.js'
import {renderMembersJson} from '../render/members-json.js'
import {renderMultichainConf} from '../render/multichain-conf.js'
import {renderNebulaConfig} from '../render/nebula-config.js'
import {renderNebulaService} from '../render/nebula-service.js'
import {nodeProfile} from './node-profile.js'

/** What `tbmesh export-bundle` reports. No secret is in it. */
export interface ExportBundleResult {
  /** Absolute path of the written bundle. */
  path: string
  /** Size in bytes. */
  bytes: number
  /** Whether the file is encrypted (age format, passphrase). */
  encrypted: boolean
  /** Whether the bundle carries the host private key (false when the joiner holds it). */
  containsPrivateKey: boolean
  manifest: BundleManifest
}

/** Options of {@link exportBundle}. */
export interface ExportBundleOptions {
  /** The active CA's private key (64 bytes): signs the manifest. */
  caKey: Buffer
  /** Encrypts the bundle (age format, scrypt) with this passphrase; null writes it in the clear. */
  passphrase: Buffer | null
  /** How long the bundle may be installed, in seconds; default 14 days. */
  expiresInSeconds?: number
  force?: boolean
  /** age scrypt work factor (log2 N), default 18; tests use less. */
  scryptWorkFactor?: number
  /** false: leave flushing the file to the caller, who flushes a batch with `syncFiles` before committing. */
  sync?: boolean
}

/** Default lifetime of a bundle: 14 days. */
export const BUNDLE_LIFETIME_SECONDS = 14 * 86_400

/**
 * Renders a node's files and writes its join bundle (tar.gz) to `out`. Refuses to overwrite `out` without `force`.
 * Throws UserError for an unknown node, a node whose key is not held here, or a network without an origin node.
 */
export async function exportBundle(home: Home, nodeName: string, out: string, opts: ExportBundleOptions): Promise<ExportBundleResult> {
  return home.transaction((tx) => writeNodeBundle(home, tx, nodeName, 'join', () => out, opts))
}

/**
 * Renders one node's files and writes its bundle of `kind` (join: everything the node needs; update: certificate, trust
 * bundle and config.yml only) to `out(node, sequence)`, signed by the active CA, inside transaction `tx`: the node's
 * bundle sequence number goes up by one and its pending-update mark is cleared. Throws UserError for an unknown or
 * revoked node, a network without lighthouse or origin, or an existing output file without `force`.
 */
export async function writeNodeBundle(
  home: Home,
  tx: Transaction,
  nodeName: string,
  kind: BundleKind,
  out: (node: string, sequence: number) => string,
  opts: ExportBundleOptions,
): Promise<ExportBundleResult> {
  const {state} = tx
  const node = findNode(state, nodeName)
  if (node.revoked) throw new UserError(`node ${node.name} was revoked on ${node.revoked.at}`, {fix: 'add a new node instead'})
  const cert = currentCertificate(state, node.name)
  if (!cert) throw new UserError(`node ${node.name} has no certificate`, {fix: 'add it again with `tbmesh add-node`'})
  const secrets = await home.readSecrets()
  const now = Date.now()
  const profile = nodeProfile(state, node.name, {user: secrets.rpcUser, password: secrets.rpcPassword})
  if (profile.lighthouses.length === 0) {
    throw new UserError('the network has no lighthouse yet', {
      fix: state.federation ? 'the founding organization adds one; then `tbmesh federation import` the descriptor it sends' : 'add one with `tbmesh add-node --lighthouse --endpoint HOST:PORT`',
    })
  }
  if (!node.origin && profile.originOverlayIp === undefined) {
    throw new UserError('the network has no origin node yet', {
      fix: state.federation ? 'the founding organization adds it; then `tbmesh federation import` the descriptor it sends' : 'add one with `tbmesh add-node --origin`',
    })
  }
  const signer = state.cas.find((ca) => ca.status === 'active')!
  // The trust bundle: the network's CAs, or in a federated network every member's CA (PEMs from the descriptor).
  const members = trustedMembers(state)
  const caPems = members ? members.map((m) => m.caCertificate) : await Promise.all(trustedCas(state).map((ca) => home.readCaCertificate(ca)))
  const files: Record<string, string> = {
    'nebula/ca.crt': caPems.join(''),
    'nebula/host.crt': await tx.readCertificate(cert.fingerprint),
    'nebula/config.yml': renderNebulaConfig(profile),
  }
  const membersJson = renderMembersJson(profile)
  if (membersJson !== undefined) files['nebula/members.json'] = membersJson
  if (kind === 'join') {
    if (cert.keyInHome) files['nebula/host.key'] = await tx.readHostKey(node.name)
    files['multichain/multichain.conf'] = renderMultichainConf(profile)
    files['trubudget/blockchain.env'] = renderBlockchainEnv(profile)
    // Rendered for the placeholder directory /etc/tbmesh; `tbmesh install` writes in the real one.
    files['systemd/nebula.service'] = renderNebulaService(profile)
    // A federated node's Nebula runs under `tbmesh up` (the unit, with `--docker` for the image), never bare in compose.
    if (!profile.members) files['docker/docker-compose.nebula.yml'] = renderNebulaCompose(profile)
    files['docker/docker-compose.trubudget.override.yml'] = renderTrubudgetOverride(profile)
    files['README.md'] = renderBundleReadme(profile)
  }
  node.sequence = (node.sequence ?? 0) + 1
  node.updatePending = false
  const written = await writeBundle(
    out(node.name, node.sequence),
    {
      kind,
      network: state.network.name,
      node: node.name,
      organization: profile.node.organization,
      overlayIp: node.overlayIp,
      caFingerprint: signer.id,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + (opts.expiresInSeconds ?? BUNDLE_LIFETIME_SECONDS) * 1000).toISOString(),
      sequence: node.sequence,
      ...(kind === 'join' && cert.requestNonce ? {nonce: cert.requestNonce} : {}),
      ...(kind === 'update' && signer.endorsement ? {caEndorsement: signer.endorsement} : {}),
    },
    files,
    {force: opts.force, sign: (manifest) => ed25519Sign(opts.caKey, manifest), passphrase: opts.passphrase, scryptWorkFactor: opts.scryptWorkFactor, sync: opts.sync},
  )
  return {
    path: resolve(written.path),
    bytes: written.bytes,
    encrypted: written.encrypted,
    containsPrivateKey: kind === 'join' && cert.keyInHome,
    manifest: written.manifest,
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Update bundles

/** What `tbmesh export-update` reports: one update bundle per node. */
export interface ExportUpdateResult {
  outDir: string
  bundles: ExportBundleResult[]
}

/**
 * Writes one signed update bundle per node (`names`, or with `all` every node not revoked) into `outDir` (created when
 * missing) as `<node>.update-<sequence>.tbmesh.tar.gz`: the node's current certificate, the CA trust bundle and a
 * freshly rendered config.yml (blocklist, lighthouses, static host map). Update bundles hold no secret, so they are not
 * encrypted. All in one transaction: either every bundle is written and every sequence number advanced, or none is.
 * Throws UserError for unknown or revoked nodes, UsageError when neither names nor `all` are given.
 */
export async function exportUpdates(
  home: Home,
  caKey: Buffer,
  opts: {names?: string[]; all?: boolean; outDir: string; expiresInSeconds?: number; force?: boolean},
): Promise<ExportUpdateResult> {
  if (!opts.all && (!opts.names || opts.names.length === 0)) throw new UsageError('name the nodes to update, or pass --all', {fix: 'e.g. tbmesh export-update acme-1 --out updates/'})
  await mkdir(opts.outDir, {recursive: true}).catch((error: NodeJS.ErrnoException) => {
    throw new UserError(`cannot create ${opts.outDir} (${error.code ?? 'error'})`, {fix: 'choose a writable --out directory'})
  })
  // Bundles are written as the transaction goes: if it fails (a later node refused, the commit failed), remove them, so
  // that no bundle exists whose sequence number was not committed (the next export would reuse it).
  const written: string[] = []
  try {
    return await home.transaction(async (tx) => {
      const names = opts.all ? tx.state.nodes.filter((n) => !n.revoked).map((n) => n.name) : opts.names!
      const bundles: ExportBundleResult[] = []
      for (const name of names) {
        const out = (node: string, sequence: number) => join(opts.outDir, `${node}.update-${sequence}.tbmesh.tar.gz`)
        bundles.push(await writeNodeBundle(home, tx, name, 'update', out, {caKey, passphrase: null, expiresInSeconds: opts.expiresInSeconds, force: opts.force, sync: false}))
        written.push(bundles.at(-1)!.path)
      }
      await syncFiles(written)
      return {outDir: resolve(opts.outDir), bundles}
    })
  } catch (error) {
    for (const file of written) await rm(file, {force: true}).catch(() => {})
    throw error
  }
}
