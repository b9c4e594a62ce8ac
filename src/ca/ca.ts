/**
 * The CA's operations on a network: create it (and its CA), unlock the CA key, and issue host certificates within the
 * CA's limits, recorded in the ledger. Adding a node (its overlay IP, key and certificate) is `add-node.ts`; what a
 * node's files are rendered from is `node-profile.ts`. Commands call these functions; tests call them directly.
 */

import {resolve} from 'node:path'

import {UsageError, UserError} from '../errors.js'
import {Home, type Transaction} from '../home/home.js'
import {type CaRecord, type CertificateRecord, type NetworkPorts, type NetworkSecrets, type NetworkState, SCHEMA_VERSION} from '../home/types.js'
import {formatDuration, iso} from '../lib/duration.js'
import {checkPort, dockerPoolOverlap, formatCidr, type Ipv4Network, parseCidr, specialRangeOverlap} from '../lib/ip.js'
import {checkNetworkName} from '../lib/names.js'
import {newSecret} from '../lib/text.js'
import {
  type Argon2Parameters,
  blocklistFingerprints,
  caPrivateKeyToPem,
  type CertificateDetails,
  certificateFromPem,
  certificateToPem,
  type CertificateVersion,
  type Curve,
  encryptCaKey,
  fingerprint,
  generateCaKeyPair,
  type NebulaCertificate,
  readCaPrivateKey,
  signCertificate,
  SigningError,
  type SigningReason,
  WrongPassphraseError,
} from '../nebula/index.js'
import {BLOCKCHAIN_API_PORT} from '../render/trubudget.js'

/** Default ports and device settings of a new network. */
export const DEFAULTS = {
  caDurationSeconds: 10 * 365 * 86_400,
  hostDurationSeconds: 365 * 86_400,
  orgPrefix: 24,
  ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080, storage: 8090},
  tun: {dev: 'nebula1', mtu: 1300},
  rpcUser: 'multichainrpc',
} as const

/** Certificates are backdated this many seconds to tolerate clock skew between organizations' machines. */
export const BACKDATE_SECONDS = 60

/** The ports an operator may choose at `init-ca` (TCP; defaults in {@link DEFAULTS}). */
export interface PortChoice {
  /** MultiChain peer-to-peer. */
  p2p?: number
  /** TruBudget API, where joining nodes register at registrars. */
  api?: number
  /** TruBudget storage service (documents between organizations). */
  storage?: number
}

/** Options of {@link initCa}. Durations in seconds. */
export interface InitCaOptions {
  /** Network name; also the CA certificate's name. */
  network: string
  /** Overlay network, IPv4 CIDR, e.g. `10.42.0.0/16`. */
  cidr: string
  durationSeconds?: number
  /** Prefix length of each organization's block. */
  orgPrefix?: number
  /** Ports of the network; each defaults to {@link DEFAULTS}' port. */
  ports?: PortChoice
  /** Accept an overlay CIDR that overlaps Docker's default address pools. */
  allowDockerOverlap?: boolean
  /** Passphrase for the CA key; null stores it unencrypted. */
  passphrase: Buffer | null
  force?: boolean
  /** Argon2id parameters for the CA key (defaults: 64 MiB, 3 iterations, parallelism 4). */
  argon2?: Argon2Parameters
  /** Certificate format of the CA and its hosts: 1 (default, every Nebula) or 2 (Nebula 1.10+ on every node). */
  certVersion?: CertificateVersion
  /** Curve of the CA and host keys: CURVE25519 (default) or P256 (Nebula 1.7+ on every node). */
  curve?: Curve
  /** Current time, Unix seconds (tests). */
  now?: number
}

/** What `tbmesh init-ca` reports. Times ISO 8601. */
export interface InitCaResult {
  home: string
  network: string
  cidr: string
  orgPrefix: number
  /** The network's ports (see `NetworkPorts` in `home/types.ts`). */
  ports: Required<NetworkPorts>
  caFingerprint: string
  caNotBefore: string
  caNotAfter: string
  /** The CA lifetime in people's units, e.g. `3650d`. */
  caLifetime: string
  keyEncrypted: boolean
  /** Certificate format of the CA (and of the host certificates it issues). */
  caVersion: CertificateVersion
  caCurve: Curve
}

/**
 * Checks a new network's name, overlay CIDR (IPv4, not a special range, /30 or larger, and clear of Docker's default
 * address pools unless `allowDockerOverlap`), organization prefix and ports (1–65535, P2P, API and storage distinct from
 * each other, from MultiChain RPC and from the blockchain container's API {@link BLOCKCHAIN_API_PORT}).
 * Returns them with the ports filled in. Throws UsageError; callers check these before asking for a passphrase.
 */
export function checkNetworkOptions(opts: {network: string; cidr: string; orgPrefix?: number; ports?: PortChoice; allowDockerOverlap?: boolean}): {
  name: string
  net: Ipv4Network
  orgPrefix: number
  ports: Required<NetworkPorts>
} {
  const name = checkNetworkName(opts.network)
  const net = parseCidr(opts.cidr, '--cidr')
  const special = specialRangeOverlap(net)
  if (special) throw new UsageError(`--cidr ${opts.cidr} overlaps the ${special}`, {fix: 'use a private range, e.g. 10.42.0.0/16'})
  if (net.prefix > 30) throw new UsageError(`--cidr ${opts.cidr} is too small for a network`, {fix: 'use a /30 or larger, e.g. 10.42.0.0/16'})
  const docker = dockerPoolOverlap(net)
  if (docker && !opts.allowDockerOverlap) {
    throw new UsageError(`--cidr ${opts.cidr} overlaps Docker's default address pool ${docker}, where Docker creates the networks of TruBudget's containers`, {
      fix: 'use another range, e.g. 10.42.0.0/16, or pass --allow-docker-overlap if no node runs Docker with its default pools',
    })
  }
  const orgPrefix = opts.orgPrefix ?? DEFAULTS.orgPrefix
  if (Number.isInteger(orgPrefix) && orgPrefix < net.prefix) {
    throw new UsageError(`--cidr ${opts.cidr} is too small for /${orgPrefix} organization blocks`, {
      fix: `use a /${orgPrefix} or larger --cidr, or an --org-prefix between ${net.prefix} and 30`,
    })
  }
  if (!Number.isInteger(orgPrefix) || orgPrefix > 30) {
    throw new UsageError(`--org-prefix ${orgPrefix} leaves no room for nodes`, {fix: `use a prefix between ${net.prefix} and 30`})
  }
  const ports = {
    ...DEFAULTS.ports,
    p2p: checkPort(opts.ports?.p2p ?? DEFAULTS.ports.p2p, '--p2p-port'),
    api: checkPort(opts.ports?.api ?? DEFAULTS.ports.api, '--api-port'),
    storage: checkPort(opts.ports?.storage ?? DEFAULTS.ports.storage, '--storage-port'),
  }
  const taken = new Map<number, string>([[BLOCKCHAIN_API_PORT, "the blockchain container's API"], [ports.rpc, 'MultiChain RPC']])
  const chosen = [['--p2p-port', ports.p2p, 'MultiChain P2P'], ['--api-port', ports.api, 'the TruBudget API'], ['--storage-port', ports.storage, 'the storage service']] as const
  for (const [flag, port, what] of chosen) {
    const holder = taken.get(port)
    if (holder) throw new UsageError(`${flag} ${port} is already the port of ${holder}`, {fix: 'give every service its own port'})
    taken.set(port, what)
  }
  return {name, net, orgPrefix, ports}
}

/**
 * Creates a network in `homeDir`: a CA (v1 Curve25519 unless `certVersion`/`curve` say otherwise) constrained to the
 * overlay CIDR, and the state (with the ports chosen).
 * Throws UsageError for a bad name, CIDR, prefix or port; UserError when the home exists and `force` is not set.
 */
export async function initCa(homeDir: string, opts: InitCaOptions): Promise<InitCaResult> {
  const {name, net, orgPrefix, ports} = checkNetworkOptions(opts)
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const duration = opts.durationSeconds ?? DEFAULTS.caDurationSeconds
  const ca = await createCa({name, ips: [formatCidr(net)], groups: [], organization: null, durationSeconds: duration, passphrase: opts.passphrase, argon2: opts.argon2, version: opts.certVersion, curve: opts.curve, now})
  const state: NetworkState = {
    schemaVersion: SCHEMA_VERSION,
    network: {name, cidr: formatCidr(net), orgPrefix, createdAt: iso(now), ports, tun: {...DEFAULTS.tun}},
    cas: [ca.record],
    organizations: [],
    nodes: [],
    certificates: [],
  }
  const home = await Home.create(homeDir, {state, secrets: newSecrets(), caCertificatePem: ca.pem, caKeyPem: ca.keyPem}, {force: opts.force})
  return {
    home: resolve(home.dir),
    network: name,
    cidr: state.network.cidr,
    orgPrefix,
    ports,
    caFingerprint: ca.record.id,
    caNotBefore: ca.record.notBefore,
    caNotAfter: ca.record.notAfter,
    caLifetime: formatDuration(duration),
    keyEncrypted: opts.passphrase !== null,
    caVersion: ca.certificate.version,
    caCurve: ca.certificate.details.curve,
  }
}

/**
 * A new CA: its certificate (PEM), its private key (64 bytes Ed25519 or 32 bytes P256, and as PEM, encrypted unless
 * `passphrase` is null), its state record.
 */
export interface NewCa {
  certificate: NebulaCertificate
  pem: string
  privateKey: Buffer
  keyPem: string
  record: CaRecord
}

/**
 * Generates a CA key pair of `curve` (default CURVE25519: Ed25519; P256: ECDSA) and its self-signed Nebula certificate
 * in format `version` (default 1) named `name`, constrained to `ips` (IPv4 CIDRs), `subnets` (default none) and
 * `groups` (empty: no constraint), valid from `now` (Unix seconds, backdated by {@link BACKDATE_SECONDS}) for
 * `durationSeconds`; the key PEM is encrypted with `passphrase` unless it is null. The record is `active`; the caller
 * files it (a new home, or a rotation that makes it `incoming` and records an endorsement).
 */
export async function createCa(opts: {
  name: string
  ips: string[]
  subnets?: string[]
  groups: string[]
  organization: string | null
  durationSeconds: number
  passphrase: Buffer | null
  argon2?: Argon2Parameters
  version?: CertificateVersion
  curve?: Curve
  now: number
}): Promise<NewCa> {
  const curve = opts.curve ?? 'CURVE25519'
  const keys = generateCaKeyPair(curve)
  const certificate = signCertificate(
    {
      name: opts.name,
      ips: opts.ips,
      subnets: opts.subnets ?? [],
      groups: opts.groups,
      notBefore: opts.now - BACKDATE_SECONDS,
      notAfter: opts.now + opts.durationSeconds,
      publicKey: keys.publicKey,
      isCA: true,
      curve,
      version: opts.version ?? 1,
    },
    {key: keys.privateKey},
  )
  const keyPem = opts.passphrase ? await encryptCaKey(keys.privateKey, opts.passphrase, opts.argon2) : caPrivateKeyToPem(keys.privateKey)
  const record: CaRecord = {
    id: fingerprint(certificate),
    name: opts.name,
    notBefore: iso(certificate.details.notBefore),
    notAfter: iso(certificate.details.notAfter),
    encrypted: opts.passphrase !== null,
    version: certificate.version,
    curve,
    organization: opts.organization,
    status: 'active',
  }
  return {certificate, pem: certificateToPem(certificate), privateKey: keys.privateKey, keyPem, record}
}

/**
 * The validity of a host certificate `ca` issues at `now` (Unix seconds): from `now` backdated by
 * {@link BACKDATE_SECONDS} (never before the CA) for `durationSeconds` (default one year), never past the CA (one
 * second before it, as nebula-cert does). The one place a host certificate's lifetime is decided.
 * @throws UserError when the CA has expired; UsageError when `durationSeconds` goes past the CA's expiry.
 */
export function hostValidity(ca: NebulaCertificate, now: number, durationSeconds?: number): {notBefore: number; notAfter: number} {
  const {notBefore: caNotBefore, notAfter: caNotAfter} = ca.details
  if (caNotAfter - now <= 1) throw new UserError(`the CA expired on ${iso(caNotAfter)}`, {fix: 'rotate the CA'})
  if (durationSeconds !== undefined && now + durationSeconds > caNotAfter) {
    throw new UsageError(`--duration ${formatDuration(durationSeconds)} goes past the CA's expiry (${iso(caNotAfter)})`, {
      fix: `use at most ${formatDuration(caNotAfter - now - 1)}`,
    })
  }
  return {
    notBefore: Math.max(now - BACKDATE_SECONDS, caNotBefore),
    notAfter: Math.min(now + (durationSeconds ?? DEFAULTS.hostDurationSeconds), caNotAfter - 1),
  }
}

/** What to do when the CA refuses to sign a host certificate, by the reason it gives. */
const SIGNING_FIXES: Partial<Record<SigningReason, string>> = {
  'validity-outside-ca': 'use a shorter --duration, or rotate the CA',
  'group-not-allowed': 'use only the groups and access level the CA allows (a federated organization issues its own access level only)',
  'ip-not-allowed': "use an overlay IP inside the CA's range",
}

/** A CA's record and certificate, and its private key: what signs. */
export interface Issuer {
  record: CaRecord
  certificate: NebulaCertificate
  /** The CA key: 64-byte Nebula Ed25519 key, or 32-byte P-256 scalar. */
  key: Buffer
}

/**
 * The active CA of `home` (or the CA `record`) as an {@link Issuer} with `caKey` (its private key, from
 * {@link unlockCaKey}).
 */
export async function activeIssuer(home: Home, caKey: Buffer, record: CaRecord = home.activeCa()): Promise<Issuer> {
  return {record, certificate: certificateFromPem(await home.readCaCertificate(record)), key: caKey}
}

/** What a ledger row records of an issued certificate besides its details: format, curve, and both P256 fingerprints. */
export type IssuedFormat = Pick<CertificateRecord, 'version' | 'curve' | 'otherFingerprint'>

/**
 * Signs a host certificate as `issuer`, in the CA's format version and curve (see `signCertificate` in
 * `nebula/sign.ts`: the issuer is derived, and anything outside the CA's limits is refused), and files it in `tx` as
 * pending. Returns it, its fingerprint, and what its ledger row records of its format.
 * @throws UserError when the CA may not sign it, or the public key is not of the CA's curve
 */
export function issueHostCertificate(
  tx: Transaction,
  issuer: Issuer,
  details: Omit<CertificateDetails, 'issuer' | 'isCA' | 'curve'>,
): {certificate: NebulaCertificate; fingerprint: string; format: IssuedFormat} {
  const {curve} = issuer.certificate.details
  requireKeyCurve(curve, details.publicKey, details.name)
  let certificate: NebulaCertificate
  try {
    certificate = signCertificate({...details, isCA: false, curve}, {certificate: issuer.certificate, key: issuer.key})
  } catch (error) {
    if (!(error instanceof SigningError)) throw error
    throw new UserError(`the CA ${JSON.stringify(issuer.record.name)} may not sign ${details.name}: the certificate ${error.message}`, {fix: SIGNING_FIXES[error.reason] ?? 'check the node\'s options against the CA'})
  }
  const [fp, other] = blocklistFingerprints(certificate)
  tx.addCertificate(fp!, certificateToPem(certificate))
  return {certificate, fingerprint: fp!, format: {version: certificate.version, curve, ...(other ? {otherFingerprint: other} : {})}}
}

/**
 * Refuses a host public key of another curve than the CA's `curve` (32 bytes X25519, 65 bytes P256), naming `name`.
 * @throws UserError with the fix (the key to make instead)
 */
export function requireKeyCurve(curve: Curve, publicKey: Buffer, name: string): void {
  const p256 = curve === 'P256'
  if (publicKey.length === (p256 ? 65 : 32)) return
  const flag = p256 ? 'P256' : '25519'
  throw new UserError(`the public key of ${name} is not a ${p256 ? 'P256' : 'X25519'} key, the curve of this network's CA`, {
    fix: `make the key with \`tbmesh join-request --curve ${flag}\` or \`nebula-cert keygen -curve ${flag}\``,
  })
}

/**
 * A new home's `secrets.json`: empty for a single CA, whose home may be another organization's (node secrets are made on
 * the nodes); with `organizationVault`, a federated organization's own ORGANIZATION_VAULT_SECRET ({@link newSecret}).
 */
export function newSecrets(organizationVault = false): NetworkSecrets {
  return {schemaVersion: SCHEMA_VERSION, ...(organizationVault ? {organizationVaultSecret: newSecret()} : {})}
}

/**
 * Loads the private key of the active CA (or of `ca`): 64 bytes (Nebula Ed25519) or 32 bytes (P256), decrypting it with
 * `passphrase` when it is encrypted. Throws UserError for a wrong or missing passphrase.
 */
export async function unlockCaKey(home: Home, passphrase: Buffer | null, ca: CaRecord = home.activeCa()): Promise<Buffer> {
  const pem = await home.readCaKey(ca)
  if (ca.encrypted && !passphrase) {
    throw new UserError('the CA key is encrypted and no passphrase was given', {
      fix: 'pass --passphrase-file FILE or set TBMESH_CA_PASSPHRASE',
    })
  }
  try {
    return await readCaPrivateKey(pem, passphrase ?? undefined)
  } catch (error) {
    if (error instanceof WrongPassphraseError) {
      throw new UserError('wrong CA passphrase', {fix: 'check --passphrase-file / TBMESH_CA_PASSPHRASE'})
    }
    throw error
  }
}
