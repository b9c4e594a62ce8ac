/**
 * What a bundle is: the one layout table that the writer, the reader and the installer share ({@link BUNDLE_LAYOUT}),
 * the manifest and its checks, and the one-line refusal every bundle check throws.
 *
 * A bundle is the join package (or update) a network's operator hands to an organization's admin: a gzip-compressed
 * tar archive (`archive.ts`) holding everything one node needs, plus a `manifest.json` naming the node and giving the
 * SHA-256 of every other file, and `manifest.sig`, the CA's signature of the manifest (`trust.ts`); optionally
 * encrypted with a passphrase (`age.ts`); installed by `install.ts`. Rendering the files is `src/render/`'s business.
 */

import path from 'node:path'

import {UserError} from '../errors.js'
import {isIpv4} from '../lib/ip.js'
import {isIsoTime, NONCE_HEX, quoted, SHA256_HEX} from '../lib/text.js'

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
   * How `install` adapts the file to the node (`rewriteForInstall` in `install.ts`): `nebula-pki` points config.yml's
   * `pki` paths at the installed files; `rpc-password` appends the node's own MultiChain RPC password (from
   * `trubudget/node.env`); the others replace the placeholder directory the deployment files name (`/etc/tbmesh`, see
   * `src/render/install-dir.ts`) with the real one, escaped for the file's syntax, and `nebula-service` also sets the
   * unit's `Type` for the installed nebula, `nebula-compose` the chosen image.
   */
  readonly installRewrite?: 'nebula-pki' | 'rpc-password' | 'nebula-service' | 'nebula-compose' | 'compose'
  /** False for an entry `install` reads into `trubudget/node.env` instead of writing it as a file of its own. */
  readonly installed?: false
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
  fileEntry('manifest.sig', [0o644, 0o644], "the CA's signature of manifest.json (base64; Ed25519, or ECDSA P256 for a P256 CA)", false),
  dirEntry('nebula/', 0o700, 'Nebula certificates, key and configuration'),
  fileEntry('nebula/ca.crt', [0o644, 0o644], "the network's CA certificate (PEM)"),
  fileEntry('nebula/host.crt', [0o644, 0o644], "the node's Nebula certificate (PEM)"),
  // Optional: a node whose key the joining organization generated itself gets a bundle without it.
  fileEntry('nebula/host.key', [0o600, 0o600], "the node's private key (PEM)"),
  {...fileEntry('nebula/config.yml', [0o644, 0o644], 'Nebula configuration'), installRewrite: 'nebula-pki'},
  // Federated networks only: which member's CA may issue which addresses (`tbmesh up` checks every peer against it).
  fileEntry('nebula/members.json', [0o644, 0o644], "the federated network's members: each one's block and CA"),
  dirEntry('multichain/', 0o700, 'MultiChain settings'),
  {...fileEntry('multichain/multichain.conf', [0o644, 0o600], 'MultiChain settings for a host without Docker (install adds the RPC password)'), installRewrite: 'rpc-password'},
  dirEntry('trubudget/', 0o700, "TruBudget settings and, once installed, the node's secrets (trubudget/node.env)"),
  fileEntry('trubudget/blockchain.env', [0o644, 0o644], "TruBudget blockchain's environment on a host without Docker"),
  fileEntry('trubudget/api.env', [0o644, 0o644], "TruBudget api's environment on a host without Docker"),
  // Optional: a federated organization's own ORGANIZATION_VAULT_SECRET, from its own home; install moves it into node.env.
  {...fileEntry('trubudget/vault-secret.env', [0o600, 0o600], "the organization's ORGANIZATION_VAULT_SECRET (a federated organization's own)"), installed: false},
  dirEntry('systemd/', 0o755, 'systemd unit'),
  {...fileEntry('systemd/nebula.service', [0o644, 0o644], 'systemd unit running Nebula under tbmesh up (install sets its Type for the installed nebula)'), installRewrite: 'nebula-service'},
  dirEntry('docker/', 0o755, 'docker compose files'),
  {...fileEntry('docker/docker-compose.nebula.yml', [0o644, 0o644], 'nebula as a container (docker compose)'), installRewrite: 'nebula-compose'},
  {...fileEntry('docker/compose.yml', [0o644, 0o644], 'the complete node: Nebula, TruBudget blockchain, api, frontend, optional storage'), installRewrite: 'compose'},
  fileEntry('docker/trubudget.env', [0o644, 0o644], "the node's values under the names of TruBudget's .env"),
  {...fileEntry('docker/trubudget-operation.override.yml', [0o644, 0o644], "override for TruBudget's scripts/operation compose file"), installRewrite: 'compose'},
  {...fileEntry('docker/trubudget-services.override.yml', [0o644, 0o644], "override for TruBudget's docker-compose/ per-service files"), installRewrite: 'compose'},
  {
    ...fileEntry('docker/trubudget-services-documents.override.yml', [0o644, 0o644], "override for TruBudget's storage-service compose file (per-service layout)"),
    installRewrite: 'compose',
  },
  dirEntry('host/', 0o755, 'host settings'),
  fileEntry('host/tbmesh-sysctl.conf', [0o644, 0o644], 'sysctl.d file: Docker may publish on the overlay IP before it exists (boot order)'),
  fileEntry('README.md', [0o644, 0o644], "what the package holds and what the organization's admin does"),
] as const satisfies readonly BundleEntrySpec[]

/** The node's own values and secrets, which `tbmesh install` makes on the node (`node-env.ts`). */
export const NODE_ENV_FILE = 'trubudget/node.env'
/** The underlay guard `tbmesh install` renders into an installation (see {@link INSTALLATION_LAYOUT}). */
export const UNDERLAY_GUARD = 'host/underlay-guard.nft'
/** The oneshot unit loading {@link UNDERLAY_GUARD} before Docker, rendered by `tbmesh install`. */
export const GUARD_SERVICE = 'systemd/tbmesh-guard.service'

/** One file or directory of an installation (`tbmesh install BUNDLE --dir DIR`). */
export interface InstallationEntrySpec {
  /** Path inside DIR, `/`-separated; a directory's ends with `/`. */
  readonly path: string
  readonly type: 'file' | 'directory'
  /** Permission bits it gets, whatever the umask. */
  readonly installMode: number
  /** What it is, for humans. */
  readonly description: string
  /** `bundle`: a bundle brings it ({@link BUNDLE_LAYOUT}); `node`: `tbmesh install` renders it on the node. */
  readonly source: 'bundle' | 'node'
}

/**
 * Everything an installation in DIR may hold, directories before their files: every {@link BUNDLE_LAYOUT} entry (but
 * those install moves into node.env), then
 * what `tbmesh install` renders on the node from the installed files (never carried by a bundle, so bundles and the
 * tbmesh versions that read them are unchanged). DIR itself is 0700. Install creates a directory when a file below it
 * is installed.
 */
export const INSTALLATION_LAYOUT: readonly InstallationEntrySpec[] = [
  ...(BUNDLE_LAYOUT as readonly BundleEntrySpec[])
    .filter((spec) => spec.installed !== false)
    .map(({path: p, type, installMode, description}) => ({path: p, type, installMode, description, source: 'bundle' as const})),
  {path: NODE_ENV_FILE, type: 'file', installMode: 0o600, description: "the node's own secrets and local choices (made by tbmesh install, kept by a reinstallation)", source: 'node'},
  {
    path: UNDERLAY_GUARD,
    type: 'file',
    installMode: 0o644,
    description: "the underlay guard: an nftables table dropping every packet for the node's overlay IP that did not come through Nebula's tun device",
    source: 'node',
  },
  {path: GUARD_SERVICE, type: 'file', installMode: 0o644, description: 'systemd oneshot unit loading the underlay guard before Docker (for Nebula run with Docker Compose)', source: 'node'},
]

/** Mode of an installation's directory itself (DIR): only root reads the key and the RPC password below it. */
export const INSTALL_ROOT_MODE = 0o700

/** Default upper limit for one archive member, in bytes (1 MiB). Rendered files are a few KiB. */
export const DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024

/**
 * The manifest `schemaVersion` this tbmesh writes. Version 2 signs the manifest under its own domain prefix
 * (`manifestMessage` in `lib/messages.ts`); version 1 manifests, signed bare, are still read.
 */
export const BUNDLE_SCHEMA_VERSION = 2

/** Every manifest `schemaVersion` this tbmesh reads. */
export const READABLE_SCHEMA_VERSIONS: readonly number[] = [1, 2]

/**
 * `manifest.json`, the first entry of every bundle (JSON, UTF-8, two-space indent, keys in this order).
 *
 * Readers refuse unknown fields (fail closed): fields planned for later versions — `signature` (or a detached
 * `manifest.sig`), `expiresAt`, `nonce`, `sequence` — come with a reader that understands them, and where old readers
 * must not accept such bundles, with a new `schemaVersion`.
 */
export interface BundleManifest {
  /** Format version: {@link BUNDLE_SCHEMA_VERSION} when written, any of {@link READABLE_SCHEMA_VERSIONS} when read. */
  schemaVersion: 1 | 2
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
   * signature: base64 CA signature over "tbmesh-ca-endorsement:v1:<caFingerprint>"}`, so that nodes trusting only the
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

/** What the caller of `writeBundle` (`archive.ts`) supplies: the manifest without what tbmesh fills in itself. */
export type BundleMeta = Omit<BundleManifest, 'files' | 'schemaVersion'>

/** The kinds of bundle. */
export type BundleKind = 'join' | 'update'

/**
 * The files each kind of bundle must hold; a join bundle may also hold `nebula/host.key` and `trubudget/vault-secret.env`
 * (the only secrets a bundle can carry); both kinds hold `nebula/members.json` in a federated network, and a single-CA
 * network's join bundle holds the compose file for Nebula (in a federated network Nebula runs under `tbmesh up` only).
 */
export const REQUIRED: Record<BundleKind, readonly string[]> = {
  join: [
    'manifest.json',
    'manifest.sig',
    'nebula/ca.crt',
    'nebula/host.crt',
    'nebula/config.yml',
    'multichain/multichain.conf',
    'trubudget/blockchain.env',
    'trubudget/api.env',
    'systemd/nebula.service',
    'docker/compose.yml',
    'docker/trubudget.env',
    'docker/trubudget-operation.override.yml',
    'docker/trubudget-services.override.yml',
    'docker/trubudget-services-documents.override.yml',
    'host/tbmesh-sysctl.conf',
    'README.md',
  ],
  update: ['manifest.json', 'manifest.sig', 'nebula/ca.crt', 'nebula/host.crt', 'nebula/config.yml'],
}
const OPTIONAL: Record<BundleKind, readonly string[]> = {
  join: ['nebula/host.key', 'trubudget/vault-secret.env', 'nebula/members.json', 'docker/docker-compose.nebula.yml'],
  update: ['nebula/members.json'],
}

/** The entries that are secrets, with what they are for messages: a bundle holding none has nothing to protect. */
export const SECRET_ENTRIES: Readonly<Record<string, string>> = {
  'nebula/host.key': "the node's private key",
  'trubudget/vault-secret.env': "the organization's ORGANIZATION_VAULT_SECRET",
}

/**
 * Directories of an installation that no bundle brings: made on the node itself and carried over by `install` when it
 * replaces the installation of the same network (an update, or a join bundle with `--force`). `evidence/`: the
 * violation records of `tbmesh up`, which are also the node's local blocklist (`runtime/evidence.ts`).
 */
export const NODE_LOCAL_DIRS = ['evidence/'] as const

export const MANIFEST = 'manifest.json'
export const SIGNATURE = 'manifest.sig'
export const LAYOUT: ReadonlyMap<string, BundleEntrySpec> = new Map(BUNDLE_LAYOUT.map((e) => [e.path, e]))
export const FILES: readonly BundleEntrySpec[] = BUNDLE_LAYOUT.filter((e) => e.type === 'file')
const MANIFEST_KEYS = new Set(['schemaVersion', 'kind', 'network', 'node', 'organization', 'overlayIp', 'caFingerprint', 'createdAt', 'expiresAt', 'nonce', 'sequence', 'caEndorsement', 'files'])

export const allowed = (kind: BundleKind, p: string): boolean => REQUIRED[kind].includes(p) || OPTIONAL[kind].includes(p)
/** Whether any of `paths` lies below the directory `dir` (which ends with `/`). */
export const holdsAny = (dir: string, paths: Iterable<string>): boolean => [...paths].some((p) => p.startsWith(dir))
/** The reason `value` is not a valid manifest, or undefined. Version problems are reported by the caller. */
export function manifestProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object'
  const m = value as Record<string, unknown>
  for (const key of Object.keys(m)) if (!MANIFEST_KEYS.has(key)) return `unknown field ${quoted(key)}`
  if (m.kind !== 'join' && m.kind !== 'update') return 'kind is not "join" or "update"'
  if (typeof m.sequence !== 'number' || !Number.isSafeInteger(m.sequence) || m.sequence < 0) return 'sequence is not a whole number'
  if (m.caEndorsement !== undefined) {
    const e = m.caEndorsement as Record<string, unknown> | null
    if (typeof e !== 'object' || e === null || typeof e.by !== 'string' || !SHA256_HEX.test(e.by) || typeof e.signature !== 'string') {
      return 'caEndorsement is not {by, signature}'
    }
  }
  for (const key of ['network', 'node', 'organization'] as const) {
    const v = m[key]
    if (typeof v !== 'string' || v === '' || v.length > 256 || /[\u0000-\u001f\u007f]/.test(v)) return `${key} is not a name`
  }
  if (typeof m.overlayIp !== 'string' || !isIpv4(m.overlayIp)) return 'overlayIp is not an IPv4 address'
  if (typeof m.caFingerprint !== 'string' || !SHA256_HEX.test(m.caFingerprint)) return 'caFingerprint is not a hex SHA-256'
  if (!isIsoTime(m.createdAt)) return 'createdAt is not an ISO 8601 time'
  if (!isIsoTime(m.expiresAt)) return 'expiresAt is not an ISO 8601 time'
  if (m.nonce !== undefined && (typeof m.nonce !== 'string' || !NONCE_HEX.test(m.nonce))) return 'nonce is not 32 hex digits'
  if (typeof m.files !== 'object' || m.files === null || Array.isArray(m.files)) return 'files is not an object'
  for (const [file, hash] of Object.entries(m.files)) {
    if (typeof hash !== 'string' || !SHA256_HEX.test(hash)) return `files[${quoted(file)}] is not a hex SHA-256`
  }
  return undefined
}

/** The one-line refusal of a bundle: what is wrong with `file`, and to ask for a new one. */
export function refusal(file: string, what: string): UserError {
  return new UserError(`Refusing bundle ${path.basename(file)}: ${what}`, {
    fix: "ask the network's operator for a new bundle",
  })
}

/** Why an archive entry is not acceptable, or undefined. */
