/**
 * Bundles out of the CA's home: a node's join bundle (everything it needs) and update bundles (what changed), rendered
 * from the state and signed by the active CA in a transaction that advances the node's bundle sequence number. Join
 * bundles are written (and encrypted, which takes a second) after that transaction commits, outside the home's lock:
 * no bundle file exists whose sequence number was not committed, and no other tbmesh process waits for age's scrypt.
 * Apart from ca.ts so that commands which only change the state do not load the renderers and tar.
 */

import {mkdir, rm} from 'node:fs/promises'
import {join, resolve} from 'node:path'

import {packBundle, type PackedBundle, writeBundleFile} from '../bundle/archive.js'
import {type BundleKind, type BundleManifest, SECRET_ENTRIES} from '../bundle/layout.js'
import {UsageError, UserError} from '../errors.js'
import type {Home, Transaction} from '../home/home.js'
import {currentCertificate, findNode, memberCas, presentedCertificates, trustedCas, trustedMembers} from '../home/queries.js'
import {checkNewFile, syncFiles} from '../lib/files.js'
import {caSign} from '../nebula/index.js'
import {renderBundleReadme} from '../render/bundle-readme.js'
import {renderAdoptionOverride, renderDocumentsOverride, renderTrubudgetEnv} from '../render/compose-adoption.js'
import {renderComposeStack} from '../render/compose-stack.js'
import {renderNebulaCompose} from '../render/docker-compose-nebula.js'
import {renderHostEnv} from '../render/host-env.js'
import {renderHostSysctl} from '../render/host-sysctl.js'
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
  /**
   * The secrets the bundle holds, as `SECRET_ENTRIES` (`bundle/layout.ts`) names them: the node's private key, a
   * federated organization's ORGANIZATION_VAULT_SECRET; empty when it holds none (the node makes its own at install).
   */
  secrets: string[]
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
 * The secrets node `name`'s join bundle will hold (see {@link ExportBundleResult.secrets}): its private key when this home
 * generated it, and in a federated home the organization's ORGANIZATION_VAULT_SECRET. Read before asking for a bundle
 * passphrase: a bundle without secrets needs none. Throws UserError for an unknown node.
 */
export async function joinBundleSecrets(home: Home, name: string): Promise<string[]> {
  const node = findNode(home.state, name)
  const held: string[] = []
  if (currentCertificate(home.state, node.name)?.keyInHome) held.push(SECRET_ENTRIES['nebula/host.key'])
  if ((await home.readSecrets()).organizationVaultSecret !== undefined) held.push(SECRET_ENTRIES['trubudget/vault-secret.env'])
  return held
}

/**
 * Renders a node's files and writes its join bundle (tar.gz, age-encrypted with `opts.passphrase`) to `out`: packed
 * and signed in a transaction that advances the node's sequence number, then written after the commit, outside the
 * home's lock ({@link writeNodeBundle}). Refuses to overwrite `out` without `force`, before anything is done. Throws
 * UserError for an unknown node, a node whose key is not held here, or a network without an origin node.
 */
export async function exportBundle(home: Home, nodeName: string, out: string, opts: ExportBundleOptions): Promise<ExportBundleResult> {
  checkNewFile(resolve(out), {force: opts.force, what: 'the bundle'})
  const packed = await home.transaction((tx) => packNodeBundle(home, tx, nodeName, 'join', opts))
  return writeNodeBundle(out, packed, opts)
}

/** A node's bundle packed and signed in a transaction ({@link packNodeBundle}), to be written once it committed. */
export interface PackedNodeBundle {
  bundle: PackedBundle
  /** Whether it carries the node's private key. */
  containsPrivateKey: boolean
  /** The secrets it holds (see {@link ExportBundleResult.secrets}). */
  secrets: string[]
}

/**
 * Writes a bundle packed by {@link packNodeBundle} to `out`, encrypted with `opts.passphrase` when given (age, scrypt):
 * call it after the transaction that packed it committed, never under the home's lock.
 * Throws UserError when `out` exists and `opts.force` is not set, or cannot be written.
 */
export async function writeNodeBundle(out: string, packed: PackedNodeBundle, opts: Omit<ExportBundleOptions, 'caKey'>): Promise<ExportBundleResult> {
  const written = await writeBundleFile(out, packed.bundle, {force: opts.force, passphrase: opts.passphrase, scryptWorkFactor: opts.scryptWorkFactor, sync: opts.sync})
  return {path: written.path, bytes: written.bytes, encrypted: written.encrypted, containsPrivateKey: packed.containsPrivateKey, secrets: packed.secrets, manifest: written.manifest}
}

/**
 * Renders one node's files and packs its bundle of `kind` (join: everything the node needs; update: certificate, trust
 * bundle and config.yml only), signed by the active CA, inside transaction `tx`: the node's bundle sequence number goes
 * up by one and its pending-update mark is cleared. Nothing is written: see {@link writeNodeBundle}. Throws UserError
 * for an unknown or revoked node, or a network without lighthouse or origin.
 */
export async function packNodeBundle(home: Home, tx: Transaction, nodeName: string, kind: BundleKind, opts: Pick<ExportBundleOptions, 'caKey' | 'expiresInSeconds'>): Promise<PackedNodeBundle> {
  const {state} = tx
  const node = findNode(state, nodeName)
  if (node.revoked) throw new UserError(`node ${node.name} was revoked on ${node.revoked.at}`, {fix: 'add a new node instead'})
  const presented = presentedCertificates(state, node.name)
  const cert = presented.at(-1)
  if (!cert) throw new UserError(`node ${node.name} has no certificate`, {fix: 'add it again with `tbmesh add-node`'})
  const now = Date.now()
  const profile = nodeProfile(state, node.name)
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
  // The trust bundle: the network's CAs, or in a federated network every member's CA(s) (PEMs from the descriptor).
  const members = trustedMembers(state)
  const caPems = members ? members.flatMap((m) => memberCas(m).map((ca) => ca.caCertificate)) : await Promise.all(trustedCas(state).map((ca) => home.readCaCertificate(ca)))
  const hostPems = await Promise.all(presented.map((c) => tx.readCertificate(c.fingerprint)))
  const files: Record<string, string> = {
    'nebula/ca.crt': caPems.join(''),
    // One certificate, or in round 2 of a rotation that changes the format, a v1 and a v2 one for the same key.
    'nebula/host.crt': hostPems.join(''),
    'nebula/config.yml': renderNebulaConfig(profile),
  }
  const membersJson = renderMembersJson(profile)
  if (membersJson !== undefined) files['nebula/members.json'] = membersJson
  if (kind === 'join') {
    if (cert.keyInHome) files['nebula/host.key'] = await tx.readHostKey(node.name)
    // A federated organization's own vault secret, to its own nodes; a single CA never holds one (it may be another's).
    const vaultSecret = (await home.readSecrets()).organizationVaultSecret
    if (vaultSecret !== undefined) files['trubudget/vault-secret.env'] = `ORGANIZATION_VAULT_SECRET=${vaultSecret}\n`
    files['multichain/multichain.conf'] = renderMultichainConf(profile)
    files['trubudget/blockchain.env'] = renderHostEnv(profile, 'blockchain')
    files['trubudget/api.env'] = renderHostEnv(profile, 'api')
    // Rendered for the placeholder directory /etc/tbmesh; `tbmesh install` writes in the real one.
    files['systemd/nebula.service'] = renderNebulaService(profile)
    // A federated node's Nebula runs under `tbmesh up` (the unit, with `--docker` for the image), never bare in compose.
    if (!profile.members) files['docker/docker-compose.nebula.yml'] = renderNebulaCompose(profile)
    files['docker/compose.yml'] = renderComposeStack(profile)
    files['docker/trubudget.env'] = renderTrubudgetEnv(profile)
    files['docker/trubudget-operation.override.yml'] = renderAdoptionOverride(profile, 'operation')
    files['docker/trubudget-services.override.yml'] = renderAdoptionOverride(profile, 'services')
    files['docker/trubudget-services-documents.override.yml'] = renderDocumentsOverride(profile)
    files['host/tbmesh-sysctl.conf'] = renderHostSysctl(profile)
    const secrets = Object.entries(SECRET_ENTRIES).filter(([entry]) => entry in files).map(([, what]) => what)
    files['README.md'] = renderBundleReadme(profile, {secrets, vaultSecret: vaultSecret !== undefined})
  }
  node.sequence = (node.sequence ?? 0) + 1
  node.updatePending = false
  const bundle = packBundle(
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
    (manifest) => caSign(opts.caKey, manifest),
  )
  return {bundle, containsPrivateKey: kind === 'join' && cert.keyInHome, secrets: Object.entries(SECRET_ENTRIES).filter(([entry]) => entry in files).map(([, what]) => what)}
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
        // Update bundles are small and not encrypted: written under the lock, removed again if the commit fails.
        const packed = await packNodeBundle(home, tx, name, 'update', {caKey, expiresInSeconds: opts.expiresInSeconds})
        const out = join(opts.outDir, `${packed.bundle.manifest.node}.update-${packed.bundle.manifest.sequence}.tbmesh.tar.gz`)
        bundles.push(await writeNodeBundle(out, packed, {passphrase: null, force: opts.force, sync: false}))
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
