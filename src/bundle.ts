/**
 * The join package ("bundle") a network's operator hands to an organization's admin: a gzip-compressed tar archive
 * (ustar, written and read with node-tar) holding everything one node needs to join the Nebula overlay, plus a
 * `manifest.json` naming the node and giving the SHA-256 of every other file.
 *
 * - {@link writeBundle} builds it in memory (deterministic: fixed entry order, mtime = the manifest's `createdAt`, no
 *   owner ids or names) and writes it atomically with mode 0600.
 * - {@link readBundle} stream-parses it without extracting anything to disk and refuses anything but the exact
 *   {@link BUNDLE_LAYOUT}: odd paths, links, devices, duplicates, oversize members, unlisted or tampered files.
 * - {@link installBundle} verifies it, stages the files beside the target directory, points `nebula/config.yml` at the
 *   installed certificate files, swaps the directory into place, and runs `nebula -test` when nebula is installed.
 *
 * Rendering the files is not this module's business (see `src/render/`).
 */

import {createHash, randomBytes} from 'node:crypto'
import {constants as fsConstants} from 'node:fs'
import {access, chmod, lstat, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {Readable} from 'node:stream'
import zlib from 'node:zlib'

import {execa} from 'execa'
import yaml from 'js-yaml'
import {Header, Parser, type ReadEntry} from 'tar'

import {UserError} from './errors.js'
import {fsUserError, writeNewFile} from './files.js'
import {endorsementMessage} from './state.js'
import {placeInstallDir, type InstallDirSyntax} from './render/install-dir.js'
import {
  CertificateVerifyError,
  NebulaFormatError,
  certificateFromPem,
  certificatesFromPem,
  checkSignature,
  ed25519Verify,
  fingerprint,
  hostKeyMatchesCertificate,
  hostPrivateKeyFromPem,
  verifyCertificate,
  type NebulaCertificate,
} from './nebula/index.js'

// ---------------------------------------------------------------------------------------------------------------------
// Layout and manifest

/** One entry a bundle may hold: a regular file, or a directory (which holds files and is written before them). */
export interface BundleEntrySpec {
  /** Path inside the archive, `/`-separated, relative; a directory's ends with `/`. */
  readonly path: string
  readonly type: 'file' | 'directory'
  /**
   * Whether `manifest.files` lists it with its SHA-256. False for directories and for the manifest itself (and,
   * later, for a detached signature of the manifest).
   */
  readonly listed: boolean
  /** Permission bits recorded in the archive. */
  readonly archiveMode: number
  /** Permission bits the file or directory gets when installed. */
  readonly installMode: number
  /** What it is, for humans. */
  readonly description: string
  /**
   * How `install` adapts the file to the directory it is installed into ({@link rewriteForInstall}): `nebula-pki`
   * points config.yml's `pki` paths at the installed files; `systemd` and `compose` replace the placeholder directory
   * the deployment files name (`/etc/tbmesh`, see `src/render/install-dir.ts`) with the real one, escaped for that
   * syntax.
   */
  readonly installRewrite?: 'nebula-pki' | InstallDirSyntax
}

const fileEntry = <P extends string>(p: P, modes: [archive: number, install: number], description: string, listed = true) =>
  ({path: p, type: 'file', listed, archiveMode: modes[0], installMode: modes[1], description}) as const
const dirEntry = <P extends `${string}/`>(p: P, installMode: number, description: string) =>
  ({path: p, type: 'directory', listed: false, archiveMode: 0o755, installMode, description}) as const

/**
 * Everything a bundle may hold, in archive order; anything else in an archive is refused. A directory entry is
 * written (and created on install) when a file below it is present. To add entries, add them here, directories
 * before their files, and to {@link REQUIRED} or {@link OPTIONAL}.
 */
export const BUNDLE_LAYOUT = [
  fileEntry('manifest.json', [0o644, 0o644], 'node, overlay IP, CA fingerprint, expiry and the SHA-256 of every other file', false),
  fileEntry('manifest.sig', [0o644, 0o644], "the CA's Ed25519 signature of manifest.json (base64)", false),
  dirEntry('nebula/', 0o700, 'Nebula certificates, key and configuration'),
  fileEntry('nebula/ca.crt', [0o644, 0o644], "the network's CA certificate (PEM)"),
  fileEntry('nebula/host.crt', [0o644, 0o644], "the node's Nebula certificate (PEM)"),
  // Optional: a node whose key the joining organization generated itself gets a bundle without it.
  fileEntry('nebula/host.key', [0o600, 0o600], "the node's private key (PEM)"),
  {...fileEntry('nebula/config.yml', [0o644, 0o644], 'Nebula configuration'), installRewrite: 'nebula-pki'},
  dirEntry('multichain/', 0o700, 'MultiChain settings'),
  fileEntry('multichain/multichain.conf', [0o644, 0o600], 'MultiChain settings (holds the RPC password)'),
  dirEntry('trubudget/', 0o700, 'TruBudget settings'),
  fileEntry('trubudget/blockchain.env', [0o644, 0o600], "TruBudget blockchain container's environment (holds the RPC password)"),
  dirEntry('systemd/', 0o755, 'systemd unit'),
  {...fileEntry('systemd/nebula.service', [0o644, 0o644], 'systemd unit running nebula with the installed config.yml'), installRewrite: 'systemd'},
  dirEntry('docker/', 0o755, 'docker compose files'),
  {...fileEntry('docker/docker-compose.nebula.yml', [0o644, 0o644], 'nebula as a container (docker compose)'), installRewrite: 'compose'},
  {
    ...fileEntry('docker/docker-compose.trubudget.override.yml', [0o644, 0o644], "override for TruBudget's compose files: environment, P2P on the overlay IP only"),
    installRewrite: 'compose',
  },
  fileEntry('README.md', [0o644, 0o644], "what the package holds and what the organization's admin does"),
] as const satisfies readonly BundleEntrySpec[]

/** The path of a file (not a directory) in {@link BUNDLE_LAYOUT}. */
export type BundlePath = Extract<(typeof BUNDLE_LAYOUT)[number], {type: 'file'}>['path']

/** Mode of the installed directory itself (its secrets live in 0700 subdirectories or 0600 files). */
const INSTALL_ROOT_MODE = 0o755

/** Default upper limit for one archive member, in bytes (1 MiB). Rendered files are a few KiB. */
export const DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024

/** The only `schemaVersion` this tbmesh reads and writes. */
export const BUNDLE_SCHEMA_VERSION = 1

/**
 * `manifest.json`, the first entry of every bundle (JSON, UTF-8, two-space indent, keys in this order).
 *
 * Readers refuse unknown fields (fail closed): fields planned for later versions — `signature` (or a detached
 * `manifest.sig`), `expiresAt`, `nonce`, `sequence` — come with a reader that understands them, and where old readers
 * must not accept such bundles, with a new `schemaVersion`.
 */
export interface BundleManifest {
  /** Format version, {@link BUNDLE_SCHEMA_VERSION}. */
  schemaVersion: 1
  /**
   * What the bundle is for: `join` brings a node into the network (everything it needs); `update` carries changes to
   * an installed node (its current certificate, the CA trust bundle, a freshly rendered config.yml) and nothing secret.
   */
  kind: BundleKind
  /**
   * The node's bundle sequence number, increasing with every bundle exported for it; `install` refuses an update
   * that is not newer than what is installed (replay or rollback).
   */
  sequence: number
  /**
   * When the signing CA is new (a rotation): the previous CA's vouching for it, `{by: previous CA fingerprint,
   * signature: base64 Ed25519 over "tbmesh-ca-endorsement:v1:<caFingerprint>"}`, so that nodes trusting only the
   * previous CA accept this update.
   */
  caEndorsement?: {by: string; signature: string}
  /** Network (and CA) name. */
  network: string
  /** Node name. */
  node: string
  /** Organization running the node (TruBudget's `ORGANIZATION`). */
  organization: string
  /** The node's overlay IP, dotted IPv4. */
  overlayIp: string
  /** Fingerprint of the network's CA certificate: lowercase hex SHA-256, as `nebula-cert print` shows it. */
  caFingerprint: string
  /** When the bundle was made, ISO 8601 with a time zone (e.g. `2025-01-31T12:00:00.000Z`). */
  createdAt: string
  /** After this time (ISO 8601) `install` refuses the bundle. */
  expiresAt: string
  /** Nonce (32 hex digits) of the join request this bundle answers; the joiner's key is looked up by it. */
  nonce?: string
  /** Every listed file of the bundle (all but the manifest) → lowercase hex SHA-256 of its bytes. */
  files: Record<string, string>
}

/** What the caller of {@link writeBundle} supplies: the manifest without what tbmesh fills in itself. */
export type BundleMeta = Omit<BundleManifest, 'files' | 'schemaVersion'>

/** The kinds of bundle. */
export type BundleKind = 'join' | 'update'

/** The files each kind of bundle must hold; a join bundle may also hold `nebula/host.key`, an update nothing else. */
export const REQUIRED: Record<BundleKind, readonly string[]> = {
  join: [
    'manifest.json',
    'manifest.sig',
    'nebula/ca.crt',
    'nebula/host.crt',
    'nebula/config.yml',
    'multichain/multichain.conf',
    'trubudget/blockchain.env',
    'systemd/nebula.service',
    'docker/docker-compose.nebula.yml',
    'docker/docker-compose.trubudget.override.yml',
    'README.md',
  ],
  update: ['manifest.json', 'manifest.sig', 'nebula/ca.crt', 'nebula/host.crt', 'nebula/config.yml'],
}
const OPTIONAL: Record<BundleKind, readonly string[]> = {join: ['nebula/host.key'], update: []}

const MANIFEST = 'manifest.json'
const SIGNATURE = 'manifest.sig'
/** The first line of every file in the age format (age-encryption.org/v1). */
const AGE_HEADER = 'age-encryption.org/v1\n'
/** Largest bundle file read, in bytes (encrypted or not). */
const MAX_BUNDLE_BYTES = 32 * 1024 * 1024
const LAYOUT: ReadonlyMap<string, BundleEntrySpec> = new Map(BUNDLE_LAYOUT.map((e) => [e.path, e]))
const FILES: readonly BundleEntrySpec[] = BUNDLE_LAYOUT.filter((e) => e.type === 'file')
const MANIFEST_KEYS = ['schemaVersion', 'kind', 'network', 'node', 'organization', 'overlayIp', 'caFingerprint', 'createdAt', 'expiresAt', 'nonce', 'sequence', 'caEndorsement', 'files']
const HEX256 = /^[0-9a-f]{64}$/
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/
const ISO8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/

const allowed = (kind: BundleKind, p: string): boolean => REQUIRED[kind].includes(p) || OPTIONAL[kind].includes(p)
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex')
/** Whether any of `paths` lies below the directory `dir` (which ends with `/`). */
const holdsAny = (dir: string, paths: Iterable<string>): boolean => [...paths].some((p) => p.startsWith(dir))
/** A name safe to show on one line: JSON-quoted, control characters escaped, long names cut. */
const show = (name: string): string => {
  const q = JSON.stringify(name.length > 120 ? `${name.slice(0, 117)}...` : name)
  return q.replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** The reason `value` is not a valid manifest, or undefined. Version problems are reported by the caller. */
function manifestProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object'
  const m = value as Record<string, unknown>
  for (const key of Object.keys(m)) if (!MANIFEST_KEYS.includes(key)) return `unknown field ${show(key)}`
  if (m.kind !== 'join' && m.kind !== 'update') return 'kind is not "join" or "update"'
  if (typeof m.sequence !== 'number' || !Number.isSafeInteger(m.sequence) || m.sequence < 0) return 'sequence is not a whole number'
  if (m.caEndorsement !== undefined) {
    const e = m.caEndorsement as Record<string, unknown> | null
    if (typeof e !== 'object' || e === null || typeof e.by !== 'string' || !HEX256.test(e.by) || typeof e.signature !== 'string') {
      return 'caEndorsement is not {by, signature}'
    }
  }
  for (const key of ['network', 'node', 'organization'] as const) {
    const v = m[key]
    if (typeof v !== 'string' || v === '' || v.length > 256 || /[\u0000-\u001f\u007f]/.test(v)) return `${key} is not a name`
  }
  if (typeof m.overlayIp !== 'string' || !IPV4.test(m.overlayIp)) return 'overlayIp is not an IPv4 address'
  if (typeof m.caFingerprint !== 'string' || !HEX256.test(m.caFingerprint)) return 'caFingerprint is not a hex SHA-256'
  if (typeof m.createdAt !== 'string' || !ISO8601.test(m.createdAt) || Number.isNaN(Date.parse(m.createdAt))) {
    return 'createdAt is not an ISO 8601 time'
  }
  if (typeof m.expiresAt !== 'string' || !ISO8601.test(m.expiresAt) || Number.isNaN(Date.parse(m.expiresAt))) {
    return 'expiresAt is not an ISO 8601 time'
  }
  if (m.nonce !== undefined && (typeof m.nonce !== 'string' || !/^[0-9a-f]{32}$/.test(m.nonce))) return 'nonce is not 32 hex digits'
  if (typeof m.files !== 'object' || m.files === null || Array.isArray(m.files)) return 'files is not an object'
  for (const [file, hash] of Object.entries(m.files)) {
    if (typeof hash !== 'string' || !HEX256.test(hash)) return `files[${show(file)}] is not a hex SHA-256`
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------------------------------
// Writing

/** What {@link writeBundle} returns. */
export interface WriteBundleResult {
  /** Absolute path of the written bundle. */
  path: string
  /** The manifest stored in it. */
  manifest: BundleManifest
  /** Size of the bundle file in bytes. */
  bytes: number
  /** Whether the file is encrypted (age format, passphrase). */
  encrypted: boolean
}

/** Options of {@link writeBundle}. */
export interface WriteBundleOptions {
  /** Replace an existing file. */
  force?: boolean
  /** Signs the exact bytes of manifest.json with the CA key: returns the 64-byte Ed25519 signature. */
  sign: (manifest: Buffer) => Buffer
  /** Encrypt the whole file in the age format (scrypt recipient) with this passphrase; null or absent: plain tar.gz. */
  passphrase?: Buffer | null
  /** age scrypt work factor (log2 N); default 18, as the age CLI uses. */
  scryptWorkFactor?: number
  /** false: do not flush the file to disk yet; the caller flushes a whole batch with `syncFiles` (src/files.ts). */
  sync?: boolean
}

/** The age format (age-encryption.org/v1) with a passphrase (scrypt recipient), readable by `age -d`. */
async function encryptWithPassphrase(data: Buffer, passphrase: Buffer, workFactor = 18): Promise<Buffer> {
  const {Encrypter} = await import('age-encryption')
  const encrypter = new Encrypter()
  encrypter.setPassphrase(passphrase.toString('utf8'))
  encrypter.setScryptWorkFactor(workFactor)
  return Buffer.from(await encrypter.encrypt(data))
}

/**
 * Build the bundle for one node and write it to `outFile`.
 *
 * @param outFile where to write (conventionally `*.tar.gz`); its directory must exist.
 * @param meta the manifest's facts; `schemaVersion`, `kind` and `files` are filled in here.
 * @param files the content of every listed {@link BUNDLE_LAYOUT} entry (all but `manifest.json`), by path; strings are
 *   written as UTF-8. `nebula/host.key` may be left out.
 * @param opts.force replace an existing `outFile`.
 *
 * The archive is gzip-compressed ustar with `manifest.json` first, then the layout's order with each directory before
 * its first file; files have mtime `meta.createdAt` (directories none), modes from the layout, no uid/gid/owner names. The file is
 * written to a temporary file in the same directory with mode 0600 (it holds a private key), flushed, and then linked
 * (without `force`, so an existing file is never replaced) or renamed (with `force`) into place.
 *
 * @throws UserError when `outFile` exists and `force` is not set, is a directory, or its directory is missing or not
 *   writable.
 * @throws Error (a bug in the caller) when `files` lacks a required entry, holds one outside the layout or larger
 *   than {@link DEFAULT_MAX_ENTRY_BYTES}, or `meta` is not a valid manifest.
 */
export async function writeBundle(
  outFile: string,
  meta: BundleMeta,
  files: Readonly<Record<string, Buffer | string>>,
  opts: WriteBundleOptions,
): Promise<WriteBundleResult> {
  const contents = new Map<string, Buffer>()
  for (const [file, data] of Object.entries(files)) {
    const spec = LAYOUT.get(file)
    if (!spec || spec.type !== 'file' || !spec.listed) throw new Error(`writeBundle: ${show(file)} is not a listed entry of the bundle layout`)
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data
    if (buf.length > DEFAULT_MAX_ENTRY_BYTES) throw new Error(`writeBundle: ${file} is larger than ${DEFAULT_MAX_ENTRY_BYTES} bytes`)
    contents.set(file, buf)
  }
  for (const spec of FILES) {
    if (spec.listed && REQUIRED[meta.kind].includes(spec.path) && !contents.has(spec.path)) throw new Error(`writeBundle: required entry ${spec.path} is missing`)
    if (contents.has(spec.path) && !allowed(meta.kind, spec.path)) throw new Error(`writeBundle: ${spec.path} does not belong in a ${meta.kind} bundle`)
  }

  const hashes: Record<string, string> = {}
  for (const spec of FILES) {
    const buf = contents.get(spec.path)
    if (buf) hashes[spec.path] = sha256(buf)
  }
  const manifest: BundleManifest = {
    schemaVersion: BUNDLE_SCHEMA_VERSION,
    kind: meta.kind,
    sequence: meta.sequence,
    network: meta.network,
    node: meta.node,
    organization: meta.organization,
    overlayIp: meta.overlayIp,
    caFingerprint: meta.caFingerprint,
    createdAt: meta.createdAt,
    expiresAt: meta.expiresAt,
    ...(meta.nonce ? {nonce: meta.nonce} : {}),
    ...(meta.caEndorsement ? {caEndorsement: meta.caEndorsement} : {}),
    files: hashes,
  }
  const problem = manifestProblem(manifest)
  if (problem) throw new Error(`writeBundle: invalid manifest: ${problem}`)
  const manifestBytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, 'utf8')
  contents.set(MANIFEST, manifestBytes)
  contents.set(SIGNATURE, Buffer.from(`${opts.sign(manifestBytes).toString('base64')}\n`, 'utf8'))

  let archive = await packArchive(contents, new Date(manifest.createdAt))
  if (opts.passphrase) archive = await encryptWithPassphrase(archive, opts.passphrase, opts.scryptWorkFactor)
  const target = path.resolve(outFile)
  await writeNewFile(target, archive, {force: opts.force, mode: 0o600, what: 'the bundle', sync: opts.sync})
  return {path: target, manifest, bytes: archive.length, encrypted: Boolean(opts.passphrase)}
}

/** The gzip-compressed tar of `contents` (layout paths → bytes), in layout order, built in memory with node-tar. */
async function packArchive(contents: ReadonlyMap<string, Buffer>, mtime: Date): Promise<Buffer> {
  // The archive is assembled in memory from node-tar's ustar headers, without its streaming Pack: a bundle is a few
  // small files, and the stream machinery cost more than everything else when writing a thousand bundles.
  const blocks: Buffer[] = []
  const add = (header: Header, data?: Buffer): void => {
    const block = Buffer.alloc(512)
    if (header.encode(block)) throw new Error(`packArchive: ${header.path} needs a PAX header`)
    blocks.push(block)
    if (data && data.length > 0) blocks.push(data, Buffer.alloc((512 - (data.length % 512)) % 512))
  }
  for (const spec of BUNDLE_LAYOUT) {
    if (spec.type === 'directory') {
      if (holdsAny(spec.path, contents.keys())) add(new Header({path: spec.path, type: 'Directory', mode: spec.archiveMode, size: 0, mtime}))
      continue
    }
    const data = contents.get(spec.path)
    if (data) add(new Header({path: spec.path, type: 'File', mode: spec.archiveMode, size: data.length, mtime}), data)
  }
  blocks.push(Buffer.alloc(1024)) // end-of-archive: two zero blocks
  return zlib.gzipSync(Buffer.concat(blocks))
}

// ---------------------------------------------------------------------------------------------------------------------
// Reading

/** Options of {@link readBundle}. */
export interface ReadBundleOptions {
  /** Largest accepted archive member in bytes; default {@link DEFAULT_MAX_ENTRY_BYTES} (1 MiB). */
  maxEntryBytes?: number
  /** Called only when the file is encrypted (age format): returns the bundle passphrase. */
  passphrase?: () => Promise<Buffer>
}

/** What {@link readBundle} returns. */
export interface ReadBundleResult {
  /** The parsed, validated manifest. */
  manifest: BundleManifest
  /** Every file of the archive (including `manifest.json`'s raw bytes), by layout path, in archive order. */
  files: Map<string, Buffer>
  /** Whether the file was encrypted (age format). */
  encrypted: boolean
}

/**
 * Read and verify a bundle without writing anything to disk.
 *
 * The archive is gunzipped and stream-parsed with node-tar's `Parser`; every member is checked as it arrives.
 * Accepted: regular files and directories at their {@link BUNDLE_LAYOUT} paths (a directory with or without its
 * trailing `/`), each once.
 * Then `manifest.json` must be a valid {@link BundleManifest}, every required entry present, and the listed files
 * exactly the present ones, each matching its SHA-256.
 *
 * @throws UserError — one line that names the offending entry — for: a missing or unreadable file; something that is
 *   not gzip/tar or is truncated; an absolute path, a `..` segment, a name outside the layout; a symbolic link, hard
 *   link, device, FIFO or other special entry; a duplicate; a member over `maxEntryBytes`; a missing required entry;
 *   a manifest that is not JSON of the right shape or has another `schemaVersion`; a file not listed in the manifest,
 *   listed but absent, or whose SHA-256 differs.
 */
export async function readBundle(file: string, opts: ReadBundleOptions = {}): Promise<ReadBundleResult> {
  const maxEntryBytes = opts.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES
  const st = await stat(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') throw new UserError(`Bundle ${file} does not exist`, {fix: 'check the path'})
    throw fsUserError(error, `Cannot read bundle ${file}`, 'check its permissions')
  })
  if (!st.isFile()) throw new UserError(`Bundle ${file} is not a file`, {fix: 'give the path of the .tar.gz package'})
  if (st.size > MAX_BUNDLE_BYTES) throw refusal(file, `it is larger than a bundle can be (${st.size} bytes)`)
  let data: Buffer = await readFile(file).catch((error: unknown) => {
    throw fsUserError(error, `Cannot read bundle ${file}`, 'check its permissions')
  })
  const encrypted = data.subarray(0, AGE_HEADER.length).toString('latin1') === AGE_HEADER
  if (encrypted) {
    if (!opts.passphrase) throw new UserError(`Bundle ${path.basename(file)} is encrypted`, {fix: 'give its passphrase'})
    data = await decryptWithPassphrase(file, data, await opts.passphrase())
  }
  const files = await parseArchive(file, data, maxEntryBytes)
  return {manifest: verifyContents(file, files), files, encrypted}
}

async function decryptWithPassphrase(file: string, data: Buffer, passphrase: Buffer): Promise<Buffer> {
  const {Decrypter} = await import('age-encryption')
  const decrypter = new Decrypter()
  decrypter.addPassphrase(passphrase.toString('utf8'))
  try {
    return Buffer.from(await decrypter.decrypt(data))
  } catch (error) {
    const message = (error as Error).message
    if (/incorrect passphrase|no identity matched|failed to decrypt file key/i.test(message)) {
      throw new UserError(`wrong passphrase for bundle ${path.basename(file)}`, {fix: 'check --bundle-passphrase-file / TBMESH_BUNDLE_PASSPHRASE'})
    }
    throw refusal(file, `it is not a valid age file (${message.replace(/\s+/g, ' ')})`)
  }
}

function refusal(file: string, what: string): UserError {
  return new UserError(`Refusing bundle ${path.basename(file)}: ${what}`, {
    fix: "ask the network's operator for a new bundle",
  })
}

/** Why an archive entry is not acceptable, or undefined. */
function entryProblem(entry: ReadEntry): string | undefined {
  const name = entry.path
  if (name === '' || /[\u0000-\u001f\u007f]/.test(name)) return 'has an invalid name'
  if (name.startsWith('/') || name.startsWith('\\') || /^[A-Za-z]:/.test(name)) return 'has an absolute path'
  if (name.split(/[/\\]/).includes('..')) return 'has a ".." path segment'
  switch (entry.type) {
    case 'File':
    case 'OldFile':
      return LAYOUT.get(name)?.type === 'file' ? undefined : 'is not part of the bundle layout'
    case 'Directory':
      return LAYOUT.get(name.endsWith('/') ? name : `${name}/`)?.type === 'directory' ? undefined : 'is not part of the bundle layout'
    case 'SymbolicLink':
      return 'is a symbolic link'
    case 'Link':
      return 'is a hard link'
    case 'CharacterDevice':
    case 'BlockDevice':
      return 'is a device file'
    case 'FIFO':
      return 'is a FIFO'
    default:
      return `has unsupported type ${entry.type}`
  }
}

/** Gunzip and parse `data` (the bytes of `file`), returning its files; rejects with a refusal on the first problem. */
function parseArchive(file: string, data: Buffer, maxEntryBytes: number): Promise<Map<string, Buffer>> {
  // Hard cap on the uncompressed size: every layout entry at the limit plus generous room for headers.
  const maxTotal = BUNDLE_LAYOUT.length * (maxEntryBytes + 4096) + 65_536
  return new Promise((resolve, reject) => {
    const files = new Map<string, Buffer>()
    const seen = new Set<string>()
    let failed = false
    let sawEof = false
    let total = 0

    const input = Readable.from([data])
    const gunzip = zlib.createGunzip()
    const parser = new Parser({strict: true, maxMetaEntrySize: 64 * 1024})

    const fail = (error: Error): void => {
      if (failed) return
      failed = true
      input.destroy()
      gunzip.destroy()
      reject(error)
    }
    const corrupt = (why: string): void =>
      fail(refusal(file, `not a tbmesh bundle, or truncated (${why.replace(/\s+/g, ' ').trim()})`))

    input.on('error', (error) => fail(fsUserError(error, `Cannot read bundle ${file}`, 'check its permissions')))
    gunzip.on('error', (error) => corrupt(`gzip: ${error.message}`))
    gunzip.on('data', (chunk: Buffer) => {
      if (failed) return
      total += chunk.length
      if (total > maxTotal) return fail(refusal(file, `it is larger than a bundle can be (over ${maxTotal} bytes uncompressed)`))
      // Past the end-of-archive marker tar ignores the rest; keep reading only to let gzip check its trailer.
      if (!sawEof) parser.write(chunk)
    })
    gunzip.on('end', () => {
      if (!failed) parser.end()
    })
    parser.on('error', (error: Error) => corrupt(`tar: ${error.message}`))
    parser.on('eof', () => {
      sawEof = true
    })
    parser.on('ignoredEntry', (entry: ReadEntry) => {
      if (!failed) fail(refusal(file, `entry ${show(entry.path)} has unsupported type ${entry.type}`))
    })
    parser.on('entry', (entry: ReadEntry) => {
      if (failed) return void entry.resume()
      const name = entry.path
      const problem = entryProblem(entry)
      if (problem) {
        entry.resume()
        return fail(refusal(file, `entry ${show(name)} ${problem}`))
      }
      const key = entry.type === 'Directory' && !name.endsWith('/') ? `${name}/` : name
      if (seen.has(key)) {
        entry.resume()
        return fail(refusal(file, `entry ${show(name)} appears more than once`))
      }
      seen.add(key)
      if (entry.type === 'Directory') return void entry.resume()
      if (entry.size > maxEntryBytes) {
        entry.resume()
        return fail(refusal(file, `entry ${show(name)} is larger than ${maxEntryBytes} bytes`))
      }
      const chunks: Buffer[] = []
      let size = 0
      entry.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size <= maxEntryBytes) chunks.push(chunk)
      })
      entry.on('end', () => {
        if (failed) return
        if (size > maxEntryBytes) return fail(refusal(file, `entry ${show(name)} is larger than ${maxEntryBytes} bytes`))
        files.set(name, Buffer.concat(chunks))
      })
    })
    parser.on('end', () => {
      if (failed) return
      if (!sawEof) return corrupt('tar: no end-of-archive marker')
      resolve(files)
    })
    input.pipe(gunzip)
  })
}

/** Check the manifest against the files; returns the manifest. */
function verifyContents(file: string, files: ReadonlyMap<string, Buffer>): BundleManifest {
  const raw = files.get(MANIFEST)
  if (!raw) throw refusal(file, `required entry ${show(MANIFEST)} is missing`)
  let parsed: unknown
  try {
    parsed = JSON.parse(raw.toString('utf8'))
  } catch {
    throw refusal(file, `entry ${show(MANIFEST)} is not valid JSON`)
  }
  const version = (parsed as {schemaVersion?: unknown} | null)?.schemaVersion
  if (typeof parsed === 'object' && parsed !== null && version !== BUNDLE_SCHEMA_VERSION) {
    if (typeof version === 'number' && Number.isInteger(version) && version > BUNDLE_SCHEMA_VERSION) {
      throw new UserError(
        `Refusing bundle ${path.basename(file)}: entry ${show(MANIFEST)} has schemaVersion ${version}, this tbmesh reads ${BUNDLE_SCHEMA_VERSION}`,
        {fix: 'upgrade tbmesh'},
      )
    }
    throw refusal(file, `entry ${show(MANIFEST)} has no valid schemaVersion`)
  }
  const problem = manifestProblem(parsed)
  if (problem) throw refusal(file, `entry ${show(MANIFEST)} is not a tbmesh join manifest (${problem})`)
  const manifest = parsed as BundleManifest

  for (const spec of FILES) {
    if (REQUIRED[manifest.kind].includes(spec.path) && !files.has(spec.path)) throw refusal(file, `required entry ${show(spec.path)} is missing`)
    if (files.has(spec.path) && !allowed(manifest.kind, spec.path)) throw refusal(file, `entry ${show(spec.path)} does not belong in a ${manifest.kind} bundle`)
  }
  for (const listed of Object.keys(manifest.files)) {
    if (!LAYOUT.get(listed)?.listed) throw refusal(file, `${MANIFEST} lists ${show(listed)}, which is not part of the bundle layout`)
  }
  for (const [name, data] of files) {
    if (!LAYOUT.get(name)!.listed) continue
    const expected = manifest.files[name]
    if (expected === undefined) throw refusal(file, `entry ${show(name)} is not listed in ${MANIFEST}`)
    if (sha256(data) !== expected) throw refusal(file, `entry ${show(name)} does not match its SHA-256 in ${MANIFEST}`)
  }
  for (const listed of Object.keys(manifest.files)) {
    if (!files.has(listed)) throw refusal(file, `entry ${show(listed)} is listed in ${MANIFEST} but missing`)
  }
  return manifest
}

// ---------------------------------------------------------------------------------------------------------------------
// Trust: signature, pinned CA, certificate, key, expiry

/** How {@link verifyBundleTrust} decides whom to trust and where the joiner's key is. */
export interface TrustOptions {
  /** The CA fingerprint the installer expects (hex SHA-256; `:` separators and case are ignored). */
  pin?: string
  /** Called when no pin is given: show the bundle's CA fingerprint and return whether the user trusts it. */
  confirmCa?: (caFingerprint: string, manifest: BundleManifest) => Promise<boolean>
  /** The joiner's host private key (PEM) for a request it made, by the request's nonce; undefined when unknown. */
  joinerKey?: (nonce: string) => Promise<string | undefined>
  /** A host private key (PEM) the installer holds, for a bundle that carries none (a node added with --pubkey). */
  hostKey?: string
  /**
   * For an update bundle: the installation it updates. Its signer replaces the pin: the update must be signed by the CA
   * that signed the installed bundle (`signer`, a fingerprint), or by a CA that one vouched for (a rotation). Another
   * CA of the trust bundle is not enough: in a federated network that is another organization's. The key must match
   * the new certificate.
   */
  installed?: {cas: NebulaCertificate[]; signer: string; hostKeyPem: string}
  /** Current time in ms since the epoch (tests). */
  now?: number
}


/** What {@link verifyBundleTrust} established. */
export interface TrustedBundle {
  ca: NebulaCertificate
  host: NebulaCertificate
  /** The host private key PEM: from the bundle, or from the joiner's home. */
  hostKeyPem: string
  /** True when the key came from the joiner's home (the bundle carried none). */
  keyFromJoiner: boolean
}

/**
 * Checks that a bundle (already read by {@link readBundle}: layout and hashes verified) comes from the pinned CA and is
 * fit to install: the manifest's Ed25519 signature by the CA in `nebula/ca.crt` whose fingerprint the manifest names;
 * that fingerprint equals the pin (or the user confirmed it); the CA certificate is self-signed and valid; the host
 * certificate passes every Nebula rule against the bundle's CAs and names the manifest's node and overlay IP; the
 * private key (the bundle's, or the joiner's own for the request whose nonce the manifest carries) matches the
 * certificate; and the bundle has not expired.
 * @throws UserError, one line naming what failed.
 */
export async function verifyBundleTrust(file: string, read: ReadBundleResult, opts: TrustOptions): Promise<TrustedBundle> {
  const {manifest, files} = read
  const now = opts.now ?? Date.now()
  let cas: NebulaCertificate[]
  let host: NebulaCertificate
  try {
    cas = certificatesFromPem(files.get('nebula/ca.crt')!)
    host = certificateFromPem(files.get('nebula/host.crt')!)
  } catch (error) {
    if (error instanceof NebulaFormatError) throw refusal(file, `a certificate does not parse (${error.message})`)
    throw error
  }
  const ca = cas.find((c) => fingerprint(c) === manifest.caFingerprint)
  if (!ca) throw refusal(file, `nebula/ca.crt does not hold the CA ${manifest.caFingerprint} named in ${MANIFEST}`)
  const signature = Buffer.from(files.get(SIGNATURE)!.toString('utf8').trim(), 'base64')
  if (signature.length !== 64 || !ed25519Verify(ca.details.publicKey, files.get(MANIFEST)!, signature)) {
    throw refusal(file, `${SIGNATURE} is not a valid signature of ${MANIFEST} by its CA`)
  }

  if (manifest.kind === 'update') {
    const installed = opts.installed
    if (!installed) throw new Error('verifyBundleTrust: an update needs the installation it updates')
    const endorsement = manifest.caEndorsement
    const endorser = endorsement?.by === installed.signer ? installed.cas.find((c) => fingerprint(c) === endorsement.by) : undefined
    const trusted =
      manifest.caFingerprint === installed.signer ||
      (endorser !== undefined &&
        ed25519Verify(endorser.details.publicKey, endorsementMessage(manifest.caFingerprint), Buffer.from(endorsement!.signature, 'base64')))
    if (!trusted) {
      throw new UserError(`update ${path.basename(file)} is signed by CA ${manifest.caFingerprint}, which did not sign this installation`, {
        fix: 'install the earlier updates first, or ask the network operator for a new join bundle',
      })
    }
  } else if (opts.pin === undefined) {
    if (!opts.confirmCa || !(await opts.confirmCa(manifest.caFingerprint, manifest))) {
      throw new UserError(`bundle ${path.basename(file)} is signed by CA ${manifest.caFingerprint}, which you have not confirmed`, {
        fix: 'check the fingerprint with the network operator and pass --ca-fingerprint HEX',
      })
    }
  } else if (normalizeFingerprint(opts.pin) !== manifest.caFingerprint) {
    throw new UserError(`bundle ${path.basename(file)} is signed by CA ${manifest.caFingerprint}, not the pinned ${normalizeFingerprint(opts.pin)}`, {
      fix: 'do not install it; ask the network operator for a bundle from the right CA',
    })
  }

  const nowSeconds = Math.floor(now / 1000)
  if (!ca.details.isCA || !checkSignature(ca, ca.details.publicKey)) throw refusal(file, `the CA certificate ${manifest.caFingerprint} is not a valid self-signed CA`)
  if (nowSeconds > ca.details.notAfter) throw refusal(file, `the CA certificate expired on ${new Date(ca.details.notAfter * 1000).toISOString()}`)
  try {
    verifyCertificate(host, {trusted: cas, now: nowSeconds})
  } catch (error) {
    if (error instanceof CertificateVerifyError) throw refusal(file, `the host certificate is not valid (${error.message})`)
    throw error
  }
  if (host.details.name !== manifest.node || !host.details.ips.some((ip) => ip.split('/')[0] === manifest.overlayIp)) {
    throw refusal(file, `the host certificate is for ${host.details.name} (${host.details.ips.join(', ')}), not ${manifest.node} (${manifest.overlayIp})`)
  }

  let hostKeyPem = opts.installed?.hostKeyPem ?? files.get('nebula/host.key')?.toString('utf8')
  const keyFromJoiner = hostKeyPem === undefined
  if (hostKeyPem === undefined && opts.hostKey !== undefined) hostKeyPem = opts.hostKey
  else if (hostKeyPem === undefined) {
    if (!manifest.nonce) {
      throw new UserError(`bundle ${path.basename(file)} carries no host key and answers no join request`, {fix: 'give the node\'s private key with --key FILE'})
    }
    hostKeyPem = await opts.joinerKey?.(manifest.nonce)
    if (hostKeyPem === undefined) {
      throw new UserError(`bundle ${path.basename(file)} answers join request ${manifest.nonce}, which this machine did not make`, {
        fix: 'install it with the --home of the machine that ran `tbmesh join-request`',
      })
    }
  }
  let key: Buffer
  try {
    key = hostPrivateKeyFromPem(hostKeyPem)
  } catch (error) {
    if (error instanceof NebulaFormatError) throw refusal(file, `the host key does not parse (${error.message})`)
    throw error
  }
  if (!hostKeyMatchesCertificate(key, host)) {
    const whose = opts.installed ? "installed private key" : keyFromJoiner ? "join request's private key" : "bundle's private key"
    throw refusal(file, `the host certificate does not match the ${whose}`)
  }
  if (now > Date.parse(manifest.expiresAt)) {
    throw new UserError(`bundle ${path.basename(file)} expired on ${manifest.expiresAt}`, {fix: 'ask the network operator to export a new one'})
  }
  return {ca, host, hostKeyPem, keyFromJoiner}
}

/** A fingerprint as tbmesh compares it: lowercase hex without separators. */
export function normalizeFingerprint(text: string): string {
  return text.trim().toLowerCase().replaceAll(':', '')
}

// ---------------------------------------------------------------------------------------------------------------------
// Installing

/** Verdict of `nebula -test` on the installed configuration. */
export interface NebulaTestResult {
  /** False when `nebula` is not on PATH (nothing was checked). */
  ran: boolean
  /** Exit code 0. */
  ok?: boolean
  /** Combined stdout and stderr, at most the last 8 KiB. */
  output?: string
}

/** Options of {@link installBundle}. */
export interface InstallOptions extends TrustOptions {
  /** Replace an existing, non-empty installation. */
  force?: boolean
  /** Called only for an encrypted bundle: returns its passphrase. */
  passphrase?: () => Promise<Buffer>
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
 *   where they were rendered with the placeholder `/etc/tbmesh`;
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
    throw fsUserError(error, `Cannot inspect ${target}`, 'check its permissions')
  })
  if (existing?.isSymbolicLink()) throw new UserError(`${target} is a symbolic link`, {fix: 'pass the real directory as --dir'})
  if (existing && !existing.isDirectory()) throw new UserError(`${target} exists and is not a directory`, {fix: 'choose another --dir'})
  const nonEmpty = existing ? (await readdir(target)).length > 0 : false
  if (nonEmpty && !opts.force) {
    throw new UserError(`${target} already exists and is not empty`, {fix: 'pass --force to replace it'})
  }

  // Only the files this bundle brings: those an update carries over are already rewritten.
  const rewritten = new Map<string, Buffer>()
  for (const spec of FILES) {
    const data = read.files.get(spec.path)
    if (data && spec.installRewrite) rewritten.set(spec.path, rewriteForInstall(file, spec, data, target))
  }

  try {
    await mkdir(parent, {recursive: true})
  } catch (error) {
    throw fsUserError(error, `Cannot create ${parent}`, 'run as a user who may write there, or choose another --dir')
  }
  let staging: string
  try {
    staging = await mkdtemp(path.join(parent, `.${base}.tbmesh-staging-`))
  } catch (error) {
    throw fsUserError(error, `Cannot write to ${parent}`, 'run as a user who may write there, or choose another --dir')
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
    throw fsUserError(error, `Cannot install into ${target}`, 'check permissions and free space')
  }

  return {
    dir: target,
    manifest,
    files: installed,
    nebulaTest: await nebulaTest(path.join(target, 'nebula', 'config.yml')),
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
      throw fsUserError(error, `Cannot read ${dir}/${spec.path}`, 'run as the installation\'s owner')
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
 * `data`, the content of the bundle entry `spec`, adapted to the installation directory `target` as
 * `spec.installRewrite` says. Renderers put a directory into the deployment files with the same function
 * ({@link placeInstallDir}), so an installed file equals the file rendered for `target`.
 * @throws UserError when config.yml has no pki section, or `target` cannot be written into a deployment file.
 */
export function rewriteForInstall(file: string, spec: BundleEntrySpec, data: Buffer, target: string): Buffer {
  switch (spec.installRewrite) {
    case undefined:
      return data
    case 'nebula-pki':
      return rewriteConfig(file, data, target)
    default:
      return Buffer.from(placeInstallDir(data.toString('utf8'), spec.installRewrite, target), 'utf8')
  }
}

/** `config.yml` with `pki.ca/cert/key` pointing into `target`, keeping its leading comment and saying so. */
function rewriteConfig(file: string, raw: Buffer, target: string): Buffer {
  const text = raw.toString('utf8')
  let doc: unknown
  try {
    doc = yaml.load(text)
  } catch {
    throw refusal(file, 'entry "nebula/config.yml" is not valid YAML')
  }
  const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
  if (!isMap(doc) || !isMap(doc.pki)) throw refusal(file, 'entry "nebula/config.yml" has no pki section')
  doc.pki.ca = path.join(target, 'nebula', 'ca.crt')
  doc.pki.cert = path.join(target, 'nebula', 'host.crt')
  doc.pki.key = path.join(target, 'nebula', 'host.key')
  const lines = text.split('\n')
  const header = lines.slice(0, Math.max(0, lines.findIndex((line) => !line.startsWith('#'))))
  header.push('# Installed by tbmesh install: pki paths point at the files installed beside this one.')
  return Buffer.from(`${header.join('\n')}\n${yaml.dump(doc, {lineWidth: -1, noRefs: true, quotingType: '"'})}`, 'utf8')
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

/** The first executable `name` on PATH, or undefined. */
export async function onPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue
    const candidate = path.join(dir, name)
    try {
      await access(candidate, fsConstants.X_OK)
      if ((await stat(candidate)).isFile()) return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

/** Runs `nebula -test -config CONFIG` (30 s limit) when nebula is on PATH. */
export async function nebulaTest(config: string): Promise<NebulaTestResult> {
  const nebula = await onPath('nebula')
  if (!nebula) return {ran: false}
  const result = await execa(nebula, ['-test', '-config', config], {reject: false, all: true, stdin: 'ignore', timeout: 30_000})
  const all = typeof result.all === 'string' ? result.all : ''
  const output = result.timedOut ? `${all}\nnebula -test timed out after 30 s` : all || (result.failed ? (result.message ?? '') : '')
  return {ran: true, ok: result.exitCode === 0, output: output.length > 8192 ? output.slice(-8192) : output}
}
