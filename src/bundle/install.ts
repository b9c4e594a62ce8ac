/**
 * Installing a bundle on a node: {@link installBundle} verifies it (`archive.ts`, `trust.ts`), stages its files beside
 * the target directory, adapts them to it ({@link rewriteForInstall}), swaps the directory into place, and runs
 * `nebula -test` when nebula is installed. An update is merged over the installation it updates.
 */

import {randomBytes} from 'node:crypto'
import {chmod, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'

import {isMap, parseDocument} from 'yaml'

import {UserError} from '../errors.js'
import {fileError} from '../lib/files.js'
import {certificatesFromPem, type NebulaCertificate} from '../nebula/index.js'
import {hasSdNotify, nebulaTest, type NebulaTestResult, nebulaVersion} from '../node/nebula.js'
import {adaptNebulaCompose} from '../render/docker-compose-nebula.js'
import {type DeploymentExtra, placeInstallDir} from '../render/install-dir.js'
import {adaptNebulaService} from '../render/nebula-service.js'
import {readBundle} from './archive.js'
import {BUNDLE_LAYOUT, type BundleEntrySpec, type BundleManifest, FILES, holdsAny, MANIFEST, manifestProblem, refusal} from './layout.js'
import {type TrustedBundle, type TrustOptions, verifyBundleTrust} from './trust.js'

/** Mode of the installed directory itself (its secrets live in 0700 subdirectories or 0600 files). */
const INSTALL_ROOT_MODE = 0o755

/** Options of {@link installBundle}. */
export interface InstallOptions extends TrustOptions {
  /** Replace an existing, non-empty installation. */
  force?: boolean
  /** Called only for an encrypted bundle: returns its passphrase. */
  passphrase?: () => Promise<Buffer>
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
}

/**
 * Verify a bundle ({@link readBundle}) and install its files into `dir`:
 *
 * - `dir/nebula/{ca.crt,host.crt,host.key,config.yml}`, `dir/multichain/multichain.conf`,
 *   `dir/trubudget/blockchain.env`, `dir/systemd/nebula.service`,
 *   `dir/docker/{docker-compose.nebula.yml,docker-compose.trubudget.override.yml}`, `dir/manifest.json`,
 *   `dir/README.md`;
 * - every file the bundle brings adapted to `dir` by {@link rewriteForInstall}: `nebula/config.yml`'s `pki.ca`,
 *   `pki.cert`, `pki.key` rewritten to the absolute paths of those files in `dir` (so
 *   `nebula -config DIR/nebula/config.yml` works from any working directory; `pki.key` points at `nebula/host.key`
 *   even when the bundle has none, for the key its owner holds), and the systemd unit and compose files naming `dir`
 *   where they were rendered with the placeholder `/etc/tbmesh`; the unit `Type=notify` when the nebula on PATH
 *   notifies systemd (1.8 and later), and the compose file running `opts.nebulaImage` when given;
 * - modes: the key, `multichain.conf` and `blockchain.env` 0600, other files 0644, subdirectories holding secrets
 *   0700, `systemd/` and `docker/` 0755, `dir` 0755.
 *
 * Files are staged in a fresh directory beside `dir` (same parent, created when missing) and renamed into place;
 * with `force`, an existing `dir` is first moved aside, and restored if the rename fails, else removed. Any failure
 * before the rename leaves `dir` as it was and removes the staging directory.
 *
 * Afterwards, when `nebula` is on PATH, runs `nebula -test -config DIR/nebula/config.yml` (30 s limit) and reports
 * the verdict; a failing test does not undo the installation.
 *
 * @throws UserError for every refusal of {@link readBundle}; when `dir` exists and is not empty and `force` is not
 *   set; when `dir` is not a directory or is a symbolic link; when `nebula/config.yml` is not a YAML mapping with a
 *   `pki` mapping; when the parent directory is not writable.
 */
export async function installBundle(file: string, dir: string, opts: InstallOptions = {}): Promise<InstallResult> {
  const read = await readBundle(file, {passphrase: opts.passphrase})
  const {manifest} = read
  if (manifest.kind === 'update' && opts.nebulaImage !== undefined) {
    throw new UserError('--nebula-image applies to a join bundle: an update carries no compose file', {exit: 2, fix: 'drop --nebula-image, or edit the image in docker/docker-compose.nebula.yml'})
  }
  const target = path.resolve(dir)
  const parent = path.dirname(target)
  const base = path.basename(target)
  let files: Map<string, Buffer>
  let trusted: TrustedBundle
  let previousSequence: number | undefined
  if (manifest.kind === 'update') {
    const current = await readInstallation(target)
    if (current.manifest.network !== manifest.network || current.manifest.node !== manifest.node) {
      throw refusal(file, `it is for ${manifest.node} of network ${manifest.network}, but ${target} holds ${current.manifest.node} of ${current.manifest.network}`)
    }
    if (manifest.sequence <= current.manifest.sequence) {
      throw new UserError(
        `update ${path.basename(file)} has sequence ${manifest.sequence}, not newer than the installed ${current.manifest.sequence} (a replay or a rollback)`,
        {fix: 'install the newest update from the network operator'},
      )
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
    opts = {...opts, force: true}
  } else {
    trusted = await verifyBundleTrust(file, read, opts)
    files = new Map(read.files)
    files.set('nebula/host.key', Buffer.from(trusted.hostKeyPem, 'utf8'))
  }

  const existing = await lstat(target).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw fileError(error, `Cannot inspect ${target}`, {denied: 'check its permissions'})
  })
  if (existing?.isSymbolicLink()) throw new UserError(`${target} is a symbolic link`, {fix: 'pass the real directory as --dir'})
  if (existing && !existing.isDirectory()) throw new UserError(`${target} exists and is not a directory`, {fix: 'choose another --dir'})
  const nonEmpty = existing ? (await readdir(target)).length > 0 : false
  if (nonEmpty && !opts.force) {
    throw new UserError(`${target} already exists and is not empty`, {fix: 'pass --force to replace it'})
  }

  // Only the files this bundle brings: those an update carries over are already rewritten.
  const probe = await nebulaVersion()
  const nebula = probe.found ? {path: probe.path, ...(probe.version ? {version: probe.version} : {})} : undefined
  const deployment: DeploymentExtra & {installDir: string} = {installDir: target, sdNotify: nebula?.version !== undefined && hasSdNotify(nebula.version), nebulaImage: opts.nebulaImage}
  const rewritten = new Map<string, Buffer>()
  for (const spec of FILES) {
    const data = read.files.get(spec.path)
    if (data && spec.installRewrite) rewritten.set(spec.path, rewriteForInstall(file, spec, data, deployment))
  }

  try {
    await mkdir(parent, {recursive: true})
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
    for (const spec of BUNDLE_LAYOUT) {
      const dest = path.join(staging, ...spec.path.split('/'))
      if (spec.type === 'directory') {
        if (!holdsAny(spec.path, files.keys())) continue
        await mkdir(dest, {mode: spec.installMode})
        await chmod(dest, spec.installMode)
        continue
      }
      const data = rewritten.get(spec.path) ?? files.get(spec.path)
      if (!data) continue
      await writeFile(dest, data, {mode: spec.installMode, flag: 'wx'})
      await chmod(dest, spec.installMode)
      installed.push(spec.path)
    }
    await chmod(staging, INSTALL_ROOT_MODE)
    await swapIntoPlace(staging, target, nonEmpty)
  } catch (error) {
    await rm(staging, {recursive: true, force: true}).catch(() => {})
    if (error instanceof UserError) throw error
    throw fileError(error, `Cannot install into ${target}`, {denied: 'check permissions and free space'})
  }

  return {
    dir: target,
    manifest,
    files: installed,
    nebulaTest: await nebulaTest(path.join(target, 'nebula', 'config.yml'), nebula?.path),
    ...(nebula ? {nebula} : {}),
    ...(read.files.has('systemd/nebula.service') ? {systemdType: deployment.sdNotify ? 'notify' as const : 'simple' as const} : {}),
    encrypted: read.encrypted,
    keyFromJoiner: trusted.keyFromJoiner,
    ...(previousSequence === undefined ? {} : {previousSequence}),
  }
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
 * `data`, the content of the bundle entry `spec`, adapted to the node as `spec.installRewrite` says: to the
 * installation directory `deployment.installDir` (absolute) and, for the deployment files, to what else `deployment`
 * holds. Renderers adapt their output with the same functions, so an installed file equals the file rendered for it.
 * @throws UserError when config.yml has no pki section, the directory cannot be written into a deployment file, or the
 *   image is not an image reference.
 */
export function rewriteForInstall(file: string, spec: BundleEntrySpec, data: Buffer, deployment: DeploymentExtra & {installDir: string}): Buffer {
  const text = (): string => data.toString('utf8')
  switch (spec.installRewrite) {
    case undefined:
      return data
    case 'nebula-pki':
      return rewriteConfig(file, data, deployment.installDir)
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
