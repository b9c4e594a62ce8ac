/**
 * Installing a bundle on a node: {@link installBundle} verifies it (`archive.ts`, `trust.ts`), adapts its files to the
 * target directory ({@link rewriteForInstall}), renders what belongs to this host (the underlay guard and its unit,
 * {@link INSTALLATION_LAYOUT}), stages everything beside the target, swaps the directory into place, and runs
 * `nebula -test` when nebula is installed. An update is merged over the installation it updates. It replaces only a
 * tbmesh installation, and never with an older bundle of the same node unless told to roll back.
 */

import {randomBytes} from 'node:crypto'
import {chmod, copyFile, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'

import {isMap, parseDocument} from 'yaml'

import {UserError} from '../errors.js'
import {fileError} from '../lib/files.js'
import {TUN_DEVICE} from '../lib/names.js'
import {compareVersions} from '../lib/version.js'
import {certificatesFromPem, type NebulaCertificate, nebulaRequirement} from '../nebula/index.js'
import {hasSdNotify, nebulaTest, type NebulaTestResult, type NebulaVersion, nebulaVersion} from '../node/nebula.js'
import {adaptNebulaCompose} from '../render/docker-compose-nebula.js'
import {renderGuardService} from '../render/guard-service.js'
import {type DeploymentExtra, placeInstallDir} from '../render/install-dir.js'
import {multichainPasswordLine} from '../render/multichain-conf.js'
import {adaptNebulaService} from '../render/nebula-service.js'
import {renderUnderlayGuard} from '../render/underlay-guard.js'
import {readBundle} from './archive.js'
import {
  type BundleEntrySpec,
  type BundleManifest,
  FILES,
  GUARD_SERVICE,
  holdsAny,
  INSTALL_ROOT_MODE,
  INSTALLATION_LAYOUT,
  MANIFEST,
  manifestProblem,
  NODE_ENV_FILE,
  NODE_LOCAL_DIRS,
  refusal,
  UNDERLAY_GUARD,
} from './layout.js'
import {checkMembersFile, MEMBERS_PATH} from './members.js'
import {makeNodeEnv, type NodeEnv, parseNodeEnv, renderNodeEnv} from './node-env.js'
import {type TrustedBundle, type TrustOptions, verifyBundleTrust} from './trust.js'

/** Mode of the directories install creates above DIR: at most this, whatever the umask. */
const PARENT_MODE = 0o755

/** Options of {@link installBundle}. */
export interface InstallOptions extends TrustOptions {
  /** Replace an existing tbmesh installation (a DIR holding tbmesh's manifest.json; anything else is refused). */
  force?: boolean
  /**
   * Install a bundle older (by sequence number) than the installation of the same node in DIR: a rollback, which brings
   * back the certificates and the blocklist of that older bundle. Refused without it, even with `force`.
   */
  allowRollback?: boolean
  /** Called only for an encrypted bundle: returns its passphrase. */
  passphrase?: () => Promise<Buffer>
  /** The organization's ORGANIZATION_VAULT_SECRET (`--vault-secret-file`), for a bundle that does not carry it. */
  vaultSecret?: string
  /** Run TruBudget's storage service (documents): recorded in node.env. Undefined keeps the installed choice. */
  documents?: boolean
  /** TruBudget's image tag for the complete stack, recorded in node.env. Undefined keeps the installed choice. */
  trubudgetTag?: string
  /** The image `docker/docker-compose.nebula.yml` runs (join bundles only); default `NEBULA_IMAGE`. */
  nebulaImage?: string
}

/** What {@link installBundle} returns. */
export interface InstallResult {
  /** Absolute path of the installed directory. */
  dir: string
  /** The verified manifest. */
  manifest: BundleManifest
  /** Installed files (not directories), relative to `dir`, in layout order. */
  files: string[]
  /** Whether `nebula -test` ran on the installed config and what it said. */
  nebulaTest: NebulaTestResult
  /** The nebula found on PATH and the version it reports (absent when there is none, e.g. Nebula runs in Docker). */
  nebula?: {path: string; version?: string}
  /** The systemd unit's `Type` as installed (join bundles): `notify` when that nebula notifies systemd (≥ 1.8). */
  systemdType?: 'simple' | 'notify'
  /** Whether the bundle was encrypted. */
  encrypted: boolean
  /** True when the host key came from this machine's join request rather than from the bundle. */
  keyFromJoiner: boolean
  /** For an update: the sequence number of the bundle it replaced. */
  previousSequence?: number
  /** Set when the bundle is older than the installation of the same node it replaced (`allowRollback`). */
  rollback?: {installed: number; sequence: number}
  /** Absolute path of the underlay guard rendered for this host (`nft -f` loads it). */
  guard: string
  /**
   * What the node's admin reports to the network operator, who records it with `tbmesh confirm-install RECEIPT`:
   * `<node>@<sequence>` (a CA rotation's next round waits for every node's).
   */
  receipt: string
  /**
   * The node's own values (`trubudget/node.env`, see `node-env.ts`): its path, the secrets made by this installation
   * (names; none when an installation of the same node was kept), and where ORGANIZATION_VAULT_SECRET came from.
   */
  nodeEnv: {path: string; generated: string[]; vault: NodeEnv['vault']}
}

/**
 * Verify a bundle ({@link readBundle}) and install its files into `dir`:
 *
 * - every entry of {@link INSTALLATION_LAYOUT} the bundle (or, for an update, the installation it updates) holds, but
 *   `trubudget/vault-secret.env`, which goes into node.env;
 * - `dir/trubudget/node.env` (0600): the node's own secrets, made here or kept from an installation of the same node
 *   of the same network (`makeNodeEnv` in `node-env.ts`, with `opts.vaultSecret`, `documents`, `trubudgetTag`);
 * - every file the bundle brings adapted to `dir` by {@link rewriteForInstall}: `nebula/config.yml`'s `pki.ca`,
 *   `pki.cert`, `pki.key` rewritten to the absolute paths of those files in `dir` (so
 *   `nebula -config DIR/nebula/config.yml` works from any working directory; `pki.key` points at `nebula/host.key`
 *   even when the bundle has none, for the key its owner holds), and the systemd unit and compose files naming `dir`
 *   where they were rendered with the placeholder `/etc/tbmesh`, and `multichain.conf` given node.env's RPC password;
 *   the unit `Type=notify` when the nebula on PATH notifies systemd (1.8 and later), and the compose file running
 *   `opts.nebulaImage` when given;
 * - rendered here, from the installed host certificate's overlay IPs and config.yml's `tun.dev`: the underlay guard
 *   `dir/host/underlay-guard.nft` and `dir/systemd/tbmesh-guard.service`, which loads it;
 * - modes, whatever the umask: `dir` 0700, the modes of {@link INSTALLATION_LAYOUT} below it (the key,
 *   `multichain.conf` and node.env 0600), directories it creates above `dir` 0755 at most.
 *
 * A federated bundle's `nebula/members.json` must fit its trust bundle and the host certificate (`members.ts`). The
 * node-local directories of an installation of the same network being replaced (`evidence/`, see
 * {@link NODE_LOCAL_DIRS}) are carried over.
 *
 * Files are staged in a fresh directory beside `dir` (same parent, created when missing) and renamed into place;
 * with `force`, an existing installation is first moved aside, and restored if the rename fails, else removed. Any
 * failure before the rename leaves `dir` as it was and removes the staging directory.
 *
 * Afterwards, when `nebula` is on PATH, runs `nebula -test -config DIR/nebula/config.yml` (30 s limit) and reports
 * the verdict; a failing test does not undo the installation.
 *
 * @throws UserError for every refusal of {@link readBundle} and `verifyBundleTrust`; when `dir` exists and is not
 *   empty and `force` is not set; when it is not empty and holds no tbmesh installation (no valid `manifest.json`),
 *   even with `force` (nothing is deleted); when the bundle (join or update) is older than the installation of the
 *   same node in `dir` and `allowRollback` is not set; for an update with the installed sequence number (a replay),
 *   always; when `dir` is not a directory or is a symbolic link; when `nebula/config.yml` is not a YAML mapping with a
 *   `pki` mapping, or names no usable `tun.dev`; when the vault secret given differs from the bundle's or the installed
 *   one; when the parent directory is not writable.
 */
export async function installBundle(file: string, dir: string, opts: InstallOptions = {}): Promise<InstallResult> {
  const read = await readBundle(file, {passphrase: opts.passphrase})
  const {manifest} = read
  if (manifest.kind === 'update' && opts.nebulaImage !== undefined) {
    throw new UserError('--nebula-image applies to a join bundle: an update carries no compose file', {exit: 2, fix: 'drop --nebula-image, or edit the image in docker/docker-compose.nebula.yml'})
  }
  if (opts.nebulaImage !== undefined && !read.files.has('docker/docker-compose.nebula.yml')) {
    throw new UserError('--nebula-image applies to a bundle with docker/docker-compose.nebula.yml, and this federated one has none: its Nebula runs under tbmesh up', {
      exit: 2,
      fix: 'drop --nebula-image, and give the image to tbmesh up instead (tbmesh up --docker IMAGE, see the bundle README)',
    })
  }
  const target = path.resolve(dir)
  const parent = path.dirname(target)
  const base = path.basename(target)
  let files: Map<string, Buffer>
  let trusted: TrustedBundle
  let previousSequence: number | undefined
  let rollback: InstallResult['rollback']
  let replace = false
  let carryOver = false
  const existing = await inspectTarget(target)
  if (manifest.kind === 'update') {
    const current = await readInstallation(target)
    carryOver = true
    if (current.manifest.network !== manifest.network || current.manifest.node !== manifest.node) {
      throw refusal(file, `it is for ${manifest.node} of network ${manifest.network}, but ${target} holds ${current.manifest.node} of ${current.manifest.network}`)
    }
    if (manifest.sequence === current.manifest.sequence) {
      throw new UserError(`update ${path.basename(file)} has sequence ${manifest.sequence}, the one installed (a replay)`, {fix: 'install the newest update from the network operator'})
    }
    if (manifest.sequence < current.manifest.sequence) {
      if (!opts.allowRollback) throw rollbackRefusal(file, manifest.sequence, current.manifest.sequence)
      rollback = {installed: current.manifest.sequence, sequence: manifest.sequence}
    }
    let cas: NebulaCertificate[]
    try {
      cas = certificatesFromPem(current.files.get('nebula/ca.crt')!)
    } catch {
      throw new UserError(`${target}/nebula/ca.crt does not parse`, {fix: 'reinstall the join bundle with --force'})
    }
    trusted = await verifyBundleTrust(file, read, {...opts, installed: {cas, signer: current.manifest.caFingerprint, hostKeyPem: current.files.get('nebula/host.key')!.toString('utf8')}})
    files = new Map([...current.files, ...read.files])
    previousSequence = current.manifest.sequence
    replace = true
  } else {
    trusted = await verifyBundleTrust(file, read, opts)
    files = new Map(read.files)
    files.set('nebula/host.key', Buffer.from(trusted.hostKeyPem, 'utf8'))
  }
  const members = files.get(MEMBERS_PATH)
  if (members) {
    const cas = certificatesFromPem(files.get('nebula/ca.crt')!)
    const checked = checkMembersFile(members.toString('utf8'), {network: manifest.network, cas, hosts: trusted.hosts, signer: manifest.caFingerprint})
    if (typeof checked === 'string') throw refusal(file, checked)
  }
  // The node's own secrets: made here, or kept from an installation of the same node (an update carries none).
  const installedEnv = await readInstalledNodeEnv(target, manifest)
  const bundleVault = read.files.get('trubudget/vault-secret.env')
  const nodeEnv = makeNodeEnv(manifest.node, {
    installed: installedEnv,
    bundleVault: bundleVault === undefined ? undefined : parseNodeEnv(bundleVault.toString('utf8')).ORGANIZATION_VAULT_SECRET ?? '',
    fileVault: opts.vaultSecret,
    documents: opts.documents,
    trubudgetTag: opts.trubudgetTag,
  })
  files.set(NODE_ENV_FILE, Buffer.from(renderNodeEnv(manifest.node, nodeEnv.values), 'utf8'))

  const found = await nebulaVersion()
  await requireNebulaFor(file, manifest.kind, [...certificatesFromPem(files.get('nebula/ca.crt')!), ...trusted.hosts], found)
  const deployment: DeploymentExtra & {installDir: string} = {installDir: target, sdNotify: found?.version !== undefined && hasSdNotify(found.version), nebulaImage: opts.nebulaImage}

  // The bundle's files adapted to DIR (only those it brings: those an update carries over are adapted already), and
  // what this host's own files are rendered from: refused here, before DIR is looked at, when the bundle is unfit.
  for (const spec of FILES) {
    const data = read.files.get(spec.path)
    if (data && spec.installRewrite) files.set(spec.path, rewriteForInstall(file, spec, data, deployment, nodeEnv.values))
  }
  for (const [p, data] of nodeFiles(file, files, manifest, target)) files.set(p, data)

  if (manifest.kind === 'join' && existing === 'non-empty') {
    if (!opts.force) throw new UserError(`${target} already exists and is not empty`, {fix: 'pass --force to replace the tbmesh installation in it'})
    const installed = await installedManifest(target)
    if (!installed) {
      throw new UserError(`${target} is not empty and holds no tbmesh installation (no valid manifest.json), so tbmesh will not replace it`, {
        fix: 'choose another --dir, or empty it yourself',
      })
    }
    if (installed.network === manifest.network && installed.node === manifest.node && manifest.sequence < installed.sequence) {
      if (!opts.allowRollback) throw rollbackRefusal(file, manifest.sequence, installed.sequence)
      rollback = {installed: installed.sequence, sequence: manifest.sequence}
    }
    replace = true
    carryOver = installed.network === manifest.network
  }

  try {
    await mkdir(parent, {recursive: true, mode: PARENT_MODE})
  } catch (error) {
    throw fileError(error, `Cannot create ${parent}`, {denied: 'run as a user who may write there, or choose another --dir'})
  }
  let staging: string
  try {
    staging = await mkdtemp(path.join(parent, `.${base}.tbmesh-staging-`))
  } catch (error) {
    throw fileError(error, `Cannot write to ${parent}`, {denied: 'run as a user who may write there, or choose another --dir'})
  }

  const installed: string[] = []
  try {
    for (const spec of INSTALLATION_LAYOUT) {
      const dest = path.join(staging, ...spec.path.split('/'))
      if (spec.type === 'directory') {
        if (!holdsAny(spec.path, files.keys())) continue
        await mkdir(dest, {mode: spec.installMode})
        await chmod(dest, spec.installMode)
        continue
      }
      const data = files.get(spec.path)
      if (!data) continue
      await writeFile(dest, data, {mode: spec.installMode, flag: 'wx'})
      await chmod(dest, spec.installMode)
      installed.push(spec.path)
    }
    if (carryOver) await carryOverNodeLocal(target, staging)
    await chmod(staging, INSTALL_ROOT_MODE)
    await swapIntoPlace(staging, target, replace)
  } catch (error) {
    await rm(staging, {recursive: true, force: true}).catch(() => {})
    if (error instanceof UserError) throw error
    throw fileError(error, `Cannot install into ${target}`, {denied: 'check permissions and free space'})
  }

  return {
    dir: target,
    manifest,
    files: installed,
    nebulaTest: await nebulaTest(path.join(target, 'nebula', 'config.yml'), found?.path),
    ...(found ? {nebula: {path: found.path, ...(found.version ? {version: found.version} : {})}} : {}),
    ...(read.files.has('systemd/nebula.service') ? {systemdType: deployment.sdNotify ? 'notify' as const : 'simple' as const} : {}),
    encrypted: read.encrypted,
    keyFromJoiner: trusted.keyFromJoiner,
    ...(previousSequence === undefined ? {} : {previousSequence}),
    ...(rollback ? {rollback} : {}),
    guard: path.join(target, ...UNDERLAY_GUARD.split('/')),
    receipt: `${manifest.node}@${manifest.sequence}`,
    nodeEnv: {path: path.join(target, ...NODE_ENV_FILE.split('/')), generated: nodeEnv.generated, vault: nodeEnv.vault},
  }
}

/** The refusal of a bundle with sequence `sequence` over an installation of the same node at `installed`. */
function rollbackRefusal(file: string, sequence: number, installed: number): UserError {
  return new UserError(
    `${path.basename(file)} has sequence ${sequence}, older than the installed ${installed}: installing it would roll back the node's certificates and blocklist`,
    {fix: 'install the newest bundle from the network operator, or pass --allow-rollback if you mean to go back'},
  )
}

/** What is at `target`: nothing (or an empty directory) or a non-empty directory. @throws UserError for anything else. */
async function inspectTarget(target: string): Promise<'absent' | 'empty' | 'non-empty'> {
  const existing = await lstat(target).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw fileError(error, `Cannot inspect ${target}`, {denied: 'check its permissions'})
  })
  if (!existing) return 'absent'
  if (existing.isSymbolicLink()) throw new UserError(`${target} is a symbolic link`, {fix: 'pass the real directory as --dir'})
  if (!existing.isDirectory()) throw new UserError(`${target} exists and is not a directory`, {fix: 'choose another --dir'})
  return (await readdir(target)).length > 0 ? 'non-empty' : 'empty'
}

/** The manifest of the tbmesh installation in `dir` (its `manifest.json`, valid), or undefined when there is none. */
async function installedManifest(dir: string): Promise<BundleManifest | undefined> {
  const st = await lstat(path.join(dir, MANIFEST)).catch(() => undefined)
  if (!st?.isFile()) return undefined
  try {
    const value: unknown = JSON.parse(await readFile(path.join(dir, MANIFEST), 'utf8'))
    return manifestProblem(value) === undefined ? (value as BundleManifest) : undefined
  } catch {
    return undefined
  }
}

/**
 * The files `tbmesh install` renders for this host (the `node` entries of {@link INSTALLATION_LAYOUT}), from `files`
 * (the installation as it will be): the underlay guard from the host certificate's overlay IPs and config.yml's
 * `tun.dev`, and the unit that loads it, both for `target`.
 * @throws UserError (a refusal of `file`) when config.yml names no `tun.dev` or one that is not an interface name.
 */
function nodeFiles(file: string, files: ReadonlyMap<string, Buffer>, manifest: BundleManifest, target: string): Map<string, Buffer> {
  const hosts = certificatesFromPem(files.get('nebula/host.crt')!)
  const overlayIps = [...new Set(hosts.flatMap((host) => host.details.ips.map((ip) => ip.split('/')[0])))]
  const config = parseDocument(files.get('nebula/config.yml')!.toString('utf8'))
  const tunDev: unknown = config.getIn(['tun', 'dev'])
  if (typeof tunDev !== 'string') throw refusal(file, 'entry "nebula/config.yml" names no tun.dev, which the underlay guard needs')
  if (!TUN_DEVICE.test(tunDev)) throw refusal(file, `entry "nebula/config.yml" names the tun device ${JSON.stringify(tunDev)}, which is not an interface name (1-15 of A-Z a-z 0-9 _ . -)`)
  const who = {node: manifest.node, network: manifest.network, overlayIps}
  return new Map([
    [GUARD_SERVICE, Buffer.from(renderGuardService(who, {installDir: target}), 'utf8')],
    [UNDERLAY_GUARD, Buffer.from(renderUnderlayGuard({...who, tunDev, installDir: target}), 'utf8')],
  ])
}

/**
 * Refuses (before anything is written) a bundle whose certificates the `nebula` on PATH (`found`) cannot load: a v2 certificate
 * needs Nebula 1.10 (1.6.1 and 1.9.3 refuse to start with a v2 CA in `pki.ca`), P256 needs 1.7 (1.6.1 crashes). Checks
 * nothing when nebula is not on PATH or does not say its version (install then warns that it could not test).
 * @throws UserError, one line saying which certificate needs which version
 */
async function requireNebulaFor(file: string, kind: string, certificates: NebulaCertificate[], found: NebulaVersion | undefined): Promise<void> {
  const need = nebulaRequirement(certificates)
  if (!need.why) return
  if (found?.version === undefined || compareVersions(found.version, need.version) >= 0) return
  throw new UserError(`Refusing ${kind} bundle ${path.basename(file)}: it holds ${need.why}, which nebula ${found.version} (${found.path}) cannot load (${need.version} or newer can)`, {
    fix: `upgrade nebula on this node to ${need.version} or newer, then install it again`,
  })
}

/**
 * The node.env of the installation in `dir` when it is one of the same node of the same network as `manifest`, else
 * undefined (no installation, another node, or an installation made before node.env existed).
 */
async function readInstalledNodeEnv(dir: string, manifest: BundleManifest): Promise<Record<string, string> | undefined> {
  const installed = await installedManifest(dir)
  if (installed?.node !== manifest.node || installed.network !== manifest.network) return undefined
  const text = await readFile(path.join(dir, ...NODE_ENV_FILE.split('/')), 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return undefined
    throw fileError(error, `Cannot read ${dir}/${NODE_ENV_FILE}`, {denied: "run as the installation's owner"})
  })
  return text === undefined ? undefined : parseNodeEnv(text)
}

/**
 * The files of an installation made by {@link installBundle} in `dir` (layout paths that exist there) and its
 * manifest. Throws UserError when `dir` holds no installation.
 */
async function readInstallation(dir: string): Promise<{manifest: BundleManifest; files: Map<string, Buffer>}> {
  const files = new Map<string, Buffer>()
  for (const spec of FILES) {
    const data = await readFile(path.join(dir, ...spec.path.split('/'))).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return undefined
      throw fileError(error, `Cannot read ${dir}/${spec.path}`, {denied: "run as the installation's owner"})
    })
    if (data) files.set(spec.path, data)
  }
  const raw = files.get(MANIFEST)
  let manifest: unknown
  try {
    manifest = raw ? JSON.parse(raw.toString('utf8')) : undefined
  } catch {}
  if (!manifest || manifestProblem(manifest) || !files.has('nebula/ca.crt') || !files.has('nebula/host.key')) {
    throw new UserError(`${dir} holds no tbmesh installation to update`, {fix: 'install the node\'s join bundle there first'})
  }
  return {manifest: manifest as BundleManifest, files}
}

/**
 * Copies the node-local directories ({@link NODE_LOCAL_DIRS}: files made on the node, never by a bundle) of the
 * installation in `from` into `to`, regular files only, one level deep (directories 0755, files 0644).
 */
async function carryOverNodeLocal(from: string, to: string): Promise<void> {
  for (const dir of NODE_LOCAL_DIRS) {
    const source = path.join(from, dir)
    const entries = await readdir(source, {withFileTypes: true}).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'ENOTDIR') return []
      throw error
    })
    const regular = entries.filter((e) => e.isFile())
    if (regular.length === 0) continue
    const dest = path.join(to, dir)
    await mkdir(dest, {mode: 0o755})
    for (const entry of regular) {
      await copyFile(path.join(source, entry.name), path.join(dest, entry.name))
      await chmod(path.join(dest, entry.name), 0o644)
    }
  }
}

/**
 * `data`, the content of the bundle entry `spec`, adapted to the node as `spec.installRewrite` says: to the
 * installation directory `deployment.installDir` (absolute) and, for the deployment files, to what else `deployment`
 * holds (`rpc-password`: the RPC password of `nodeEnv`, the node's node.env values, appended). Renderers adapt their
 * output with the same functions, so an installed file equals the file rendered for it.
 * @throws UserError when config.yml has no pki section, the directory cannot be written into a deployment file, or the
 *   image is not an image reference.
 */
export function rewriteForInstall(file: string, spec: BundleEntrySpec, data: Buffer, deployment: DeploymentExtra & {installDir: string}, nodeEnv: Record<string, string>): Buffer {
  const text = (): string => data.toString('utf8')
  switch (spec.installRewrite) {
    case undefined:
      return data
    case 'nebula-pki':
      return rewriteConfig(file, data, deployment.installDir)
    case 'rpc-password':
      return Buffer.concat([data, Buffer.from(multichainPasswordLine(nodeEnv.MULTICHAIN_RPC_PASSWORD), 'utf8')])
    case 'nebula-service':
      return Buffer.from(adaptNebulaService(text(), deployment), 'utf8')
    case 'nebula-compose':
      return Buffer.from(adaptNebulaCompose(text(), deployment), 'utf8')
    case 'compose':
      return Buffer.from(placeInstallDir(text(), 'compose', deployment.installDir), 'utf8')
  }
}

/**
 * `config.yml` with `pki.ca`, `pki.cert` and `pki.key` pointing into `target`, everything else (comments included) as
 * it was, and a header line saying so.
 */
function rewriteConfig(file: string, raw: Buffer, target: string): Buffer {
  const doc = parseDocument(raw.toString('utf8'), {uniqueKeys: true})
  if (doc.errors.length > 0) throw refusal(file, 'entry "nebula/config.yml" is not valid YAML')
  if (!isMap(doc.contents) || !isMap(doc.get('pki'))) throw refusal(file, 'entry "nebula/config.yml" has no pki section')
  for (const [key, name] of [['ca', 'ca.crt'], ['cert', 'host.crt'], ['key', 'host.key']] as const) doc.setIn(['pki', key], path.join(target, 'nebula', name))
  const lines = doc.toString({lineWidth: 0}).split('\n')
  const header = Math.max(0, lines.findIndex((line) => !line.startsWith('#')))
  lines.splice(header, 0, '# Installed by tbmesh install: pki paths point at the files installed beside this one.')
  return Buffer.from(lines.join('\n'), 'utf8')
}

/** Rename `staging` to `target`; with `replace`, move the old `target` aside first and restore it on failure. */
async function swapIntoPlace(staging: string, target: string, replace: boolean): Promise<void> {
  if (!replace) {
    try {
      await rename(staging, target) // also replaces an empty directory
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code
      if (code === 'ENOTEMPTY' || code === 'EEXIST') {
        throw new UserError(`${target} already exists and is not empty`, {fix: 'pass --force to replace it'})
      }
      throw error
    }
    return
  }
  const aside = path.join(path.dirname(target), `.${path.basename(target)}.tbmesh-old-${randomBytes(6).toString('hex')}`)
  await rename(target, aside)
  try {
    await rename(staging, target)
  } catch (error) {
    await rename(aside, target)
    throw error
  }
  await rm(aside, {recursive: true, force: true}).catch(() => {})
}
