/**
 * A bundle as a file: {@link writeBundle} builds it in memory (deterministic: fixed entry order, mtime = the manifest's
 * `createdAt`, no owner ids or names), signs its manifest and writes it atomically with mode 0600; {@link readBundle}
 * stream-parses it (gzip-compressed ustar, node-tar) without extracting anything to disk and refuses anything but the
 * exact layout (`layout.ts`): odd paths, links, devices, duplicates, oversize members, unlisted or tampered files.
 * Who signed it and whether to trust it is `trust.ts`.
 */

import {readFile, stat} from 'node:fs/promises'
import path from 'node:path'
import {Readable} from 'node:stream'
import zlib from 'node:zlib'

import {Header, Parser, type ReadEntry} from 'tar'

import {UserError} from '../errors.js'
import {fileError, writeNewFile} from '../lib/files.js'
import {manifestMessage} from '../lib/messages.js'
import {quoted, sha256Hex} from '../lib/text.js'
import {decryptWithPassphrase, encryptWithPassphrase, isAgeEncrypted} from './age.js'
import {
  allowed,
  BUNDLE_LAYOUT,
  BUNDLE_SCHEMA_VERSION,
  type BundleManifest,
  type BundleMeta,
  DEFAULT_MAX_ENTRY_BYTES,
  FILES,
  holdsAny,
  LAYOUT,
  MANIFEST,
  manifestProblem,
  READABLE_SCHEMA_VERSIONS,
  refusal,
  REQUIRED,
  SIGNATURE,
} from './layout.js'

/** Largest bundle file read, in bytes (encrypted or not). */
const MAX_BUNDLE_BYTES = 32 * 1024 * 1024

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
  /** Signs a message with the CA key (the manifest under its domain prefix, `manifestMessage`): returns its signature (Ed25519, or ECDSA P256 DER). */
  sign: (manifest: Buffer) => Buffer
  /** Encrypt the whole file in the age format (scrypt recipient) with this passphrase; null or absent: plain tar.gz. */
  passphrase?: Buffer | null
  /** age scrypt work factor (log2 N); default 18, as the age CLI uses. */
  scryptWorkFactor?: number
  /** false: do not flush the file to disk yet; the caller flushes a whole batch with `syncFiles` (src/files.ts). */
  sync?: boolean
}

/** A bundle built in memory by {@link packBundle}: its manifest and the (unencrypted) gzip-compressed tar. */
export interface PackedBundle {
  manifest: BundleManifest
  archive: Buffer
}

/**
 * Build the bundle for one node in memory: the manifest, its signature and the archive. Cheap (no I/O, no
 * encryption): callers holding the home's lock pack under it and write with {@link writeBundleFile} after it.
 *
 * @param meta the manifest's facts; `schemaVersion`, `kind` and `files` are filled in here.
 * @param files the content of every listed {@link BUNDLE_LAYOUT} entry (all but `manifest.json`), by path; strings are
 *   written as UTF-8. `nebula/host.key` may be left out.
 * @param sign signs a message with the CA key (the manifest under its domain prefix, `manifestMessage`): returns the
 *   64-byte Ed25519 signature.
 *
 * The archive is gzip-compressed ustar with `manifest.json` first, then the layout's order with each directory before
 * its first file; files have mtime `meta.createdAt` (directories none), modes from the layout, no uid/gid/owner names.
 *
 * @throws Error (a bug in the caller) when `files` lacks a required entry, holds one outside the layout or larger
 *   than {@link DEFAULT_MAX_ENTRY_BYTES}, or `meta` is not a valid manifest.
 */
export function packBundle(meta: BundleMeta, files: Readonly<Record<string, Buffer | string>>, sign: (manifest: Buffer) => Buffer): PackedBundle {
  const contents = new Map<string, Buffer>()
  for (const [file, data] of Object.entries(files)) {
    const spec = LAYOUT.get(file)
    if (!spec || spec.type !== 'file' || !spec.listed) throw new Error(`writeBundle: ${quoted(file)} is not a listed entry of the bundle layout`)
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
    if (buf) hashes[spec.path] = sha256Hex(buf)
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
  contents.set(SIGNATURE, Buffer.from(`${sign(manifestMessage(manifestBytes, manifest.schemaVersion)).toString('base64')}\n`, 'utf8'))
  return {manifest, archive: packArchive(contents, new Date(manifest.createdAt))}
}

/**
 * Write a packed bundle to `outFile`, encrypted in the age format when `opts.passphrase` is given (scrypt: about a
 * second at the default work factor, so never while holding the home's lock). The file is written to a temporary file
 * in the same directory with mode 0600 (it may hold a private key), flushed, and then linked (without `force`, so an
 * existing file is never replaced) or renamed (with `force`) into place.
 *
 * @throws UserError when `outFile` exists and `force` is not set, is a directory, or its directory is missing or not
 *   writable.
 */
export async function writeBundleFile(outFile: string, packed: PackedBundle, opts: Omit<WriteBundleOptions, 'sign'> = {}): Promise<WriteBundleResult> {
  const archive = opts.passphrase ? await encryptWithPassphrase(packed.archive, opts.passphrase, opts.scryptWorkFactor) : packed.archive
  const target = path.resolve(outFile)
  await writeNewFile(target, archive, {force: opts.force, mode: 0o600, what: 'the bundle', sync: opts.sync})
  return {path: target, manifest: packed.manifest, bytes: archive.length, encrypted: Boolean(opts.passphrase)}
}

/**
 * Build the bundle for one node ({@link packBundle}) and write it to `outFile` ({@link writeBundleFile}); its directory
 * must exist.
 */
export async function writeBundle(
  outFile: string,
  meta: BundleMeta,
  files: Readonly<Record<string, Buffer | string>>,
  opts: WriteBundleOptions,
): Promise<WriteBundleResult> {
  return writeBundleFile(outFile, packBundle(meta, files, opts.sign), opts)
}

/** The gzip-compressed tar of `contents` (layout paths → bytes), in layout order, built in memory with node-tar. */
function packArchive(contents: ReadonlyMap<string, Buffer>, mtime: Date): Buffer {
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
    throw fileError(error, `Cannot read bundle ${file}`, {denied: 'check its permissions'})
  })
  if (!st.isFile()) throw new UserError(`Bundle ${file} is not a file`, {fix: 'give the path of the .tar.gz package'})
  if (st.size > MAX_BUNDLE_BYTES) throw refusal(file, `it is larger than a bundle can be (${st.size} bytes)`)
  let data: Buffer = await readFile(file).catch((error: unknown) => {
    throw fileError(error, `Cannot read bundle ${file}`, {denied: 'check its permissions'})
  })
  const encrypted = isAgeEncrypted(data)
  if (encrypted) {
    if (!opts.passphrase) throw new UserError(`Bundle ${path.basename(file)} is encrypted`, {fix: 'give its passphrase'})
    data = await decryptWithPassphrase(file, data, await opts.passphrase())
  }
  const files = await parseArchive(file, data, maxEntryBytes)
  return {manifest: verifyContents(file, files), files, encrypted}
}

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
      fail(refusal(file, `not a tbmesh bundle, or truncated (${why.replaceAll(/\s+/g, ' ').trim()})`))

    input.on('error', (error) => fail(fileError(error, `Cannot read bundle ${file}`, {denied: 'check its permissions'})))
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
      if (!failed) fail(refusal(file, `entry ${quoted(entry.path)} has unsupported type ${entry.type}`))
    })
    parser.on('entry', (entry: ReadEntry) => {
      if (failed) {
        entry.resume()
        return
      }
      const name = entry.path
      const problem = entryProblem(entry)
      if (problem) {
        entry.resume()
        return fail(refusal(file, `entry ${quoted(name)} ${problem}`))
      }
      const key = entry.type === 'Directory' && !name.endsWith('/') ? `${name}/` : name
      if (seen.has(key)) {
        entry.resume()
        return fail(refusal(file, `entry ${quoted(name)} appears more than once`))
      }
      seen.add(key)
      if (entry.type === 'Directory') {
        entry.resume()
        return
      }
      if (entry.size > maxEntryBytes) {
        entry.resume()
        return fail(refusal(file, `entry ${quoted(name)} is larger than ${maxEntryBytes} bytes`))
      }
      const chunks: Buffer[] = []
      let size = 0
      entry.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size <= maxEntryBytes) chunks.push(chunk)
      })
      entry.on('end', () => {
        if (failed) return
        if (size > maxEntryBytes) return fail(refusal(file, `entry ${quoted(name)} is larger than ${maxEntryBytes} bytes`))
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
  if (!raw) throw refusal(file, `required entry ${quoted(MANIFEST)} is missing`)
  let parsed: unknown
  try {
    parsed = JSON.parse(raw.toString('utf8'))
  } catch {
    throw refusal(file, `entry ${quoted(MANIFEST)} is not valid JSON`)
  }
  const version = (parsed as {schemaVersion?: unknown} | null)?.schemaVersion
  if (typeof parsed === 'object' && parsed !== null && !READABLE_SCHEMA_VERSIONS.includes(version as number)) {
    if (typeof version === 'number' && Number.isInteger(version) && version > BUNDLE_SCHEMA_VERSION) {
      throw new UserError(
        `Refusing bundle ${path.basename(file)}: entry ${quoted(MANIFEST)} has schemaVersion ${version}, this tbmesh reads ${READABLE_SCHEMA_VERSIONS.join(' and ')}`,
        {fix: 'upgrade tbmesh'},
      )
    }
    throw refusal(file, `entry ${quoted(MANIFEST)} has no valid schemaVersion`)
  }
  const problem = manifestProblem(parsed)
  if (problem) throw refusal(file, `entry ${quoted(MANIFEST)} is not a tbmesh join manifest (${problem})`)
  const manifest = parsed as BundleManifest

  for (const spec of FILES) {
    if (REQUIRED[manifest.kind].includes(spec.path) && !files.has(spec.path)) throw refusal(file, `required entry ${quoted(spec.path)} is missing`)
    if (files.has(spec.path) && !allowed(manifest.kind, spec.path)) throw refusal(file, `entry ${quoted(spec.path)} does not belong in a ${manifest.kind} bundle`)
  }
  for (const listed of Object.keys(manifest.files)) {
    if (!LAYOUT.get(listed)?.listed) throw refusal(file, `${MANIFEST} lists ${quoted(listed)}, which is not part of the bundle layout`)
  }
  for (const [name, data] of files) {
    if (!LAYOUT.get(name)!.listed) continue
    const expected = manifest.files[name]
    if (expected === undefined) throw refusal(file, `entry ${quoted(name)} is not listed in ${MANIFEST}`)
    if (sha256Hex(data) !== expected) throw refusal(file, `entry ${quoted(name)} does not match its SHA-256 in ${MANIFEST}`)
  }
  for (const listed of Object.keys(manifest.files)) {
    if (!files.has(listed)) throw refusal(file, `entry ${quoted(listed)} is listed in ${MANIFEST} but missing`)
  }
  return manifest
}
