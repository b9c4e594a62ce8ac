/**
 * The CA's operations on a network: create it (and its CA), unlock the CA key, and issue host certificates — allocate
 * overlay IPs, sign within the CA's limits, record them in the ledger. Commands call these functions; tests call them
 * directly. What a node's files are rendered from is `node-profile.ts`.
 */

import {randomBytes} from 'node:crypto'
import {resolve} from 'node:path'

import {UsageError, UserError} from '../errors.js'
import {approvalsNeeded, approve, descriptorRelays, nextVersion} from '../federation/descriptor.js'
import {Home, type Transaction} from '../home/home.js'
import {isMember, isRelay} from '../home/queries.js'
import {type AccessLevel, type CaRecord, type CertificateRecord, type NetworkSecrets, type NetworkState, type NodeRecord, SCHEMA_VERSION} from '../home/types.js'
import {formatDuration, iso} from '../lib/duration.js'
import {checkEndpoint, checkRequestedIp, formatCidr, formatIp, type Ipv4Network, nextFreeBlock, nextFreeIp, parseCidr, parseIp, specialRangeOverlap} from '../lib/ip.js'
import {checkGroups, checkNetworkName, checkNodeName, checkOrganizationName, slugify} from '../lib/names.js'
import {
  type Argon2Parameters,
  caPrivateKeyToPem,
  type CertificateDetails,
  certificateFromPem,
  certificateToPem,
  encryptCaKey,
  fingerprint,
  generateCaKeyPair,
  generateHostKeyPair,
  hostPrivateKeyToPem,
  type NebulaCertificate,
  readCaPrivateKey,
  signCertificate,
  SigningError,
  type SigningReason,
  WrongPassphraseError,
} from '../nebula/index.js'

/** Default ports and device settings of a new network. */
export const DEFAULTS = {
  caDurationSeconds: 10 * 365 * 86_400,
  hostDurationSeconds: 365 * 86_400,
  orgPrefix: 24,
  ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080},
  tun: {dev: 'nebula1', mtu: 1300},
  rpcUser: 'multichainrpc',
} as const

/** Certificates are backdated this many seconds to tolerate clock skew between organizations' machines. */
export const BACKDATE_SECONDS = 60

/** Options of {@link initCa}. Durations in seconds. */
export interface InitCaOptions {
  /** Network name; also the CA certificate's name. */
  network: string
  /** Overlay network, IPv4 CIDR, e.g. `10.42.0.0/16`. */
  cidr: string
  durationSeconds?: number
  /** Prefix length of each organization's block. */
  orgPrefix?: number
  /** Passphrase for the CA key; null stores it unencrypted. */
  passphrase: Buffer | null
  force?: boolean
  /** Argon2id parameters for the CA key (defaults: 64 MiB, 3 iterations, parallelism 4). */
  argon2?: Argon2Parameters
  /** Current time, Unix seconds (tests). */
  now?: number
}

/** What `tbmesh init-ca` reports. Times ISO 8601. */
export interface InitCaResult {
  home: string
  network: string
  cidr: string
  orgPrefix: number
  caFingerprint: string
  caNotBefore: string
  caNotAfter: string
  /** The CA lifetime in people's units, e.g. `3650d`. */
  caLifetime: string
  keyEncrypted: boolean
}

/**
 * Checks a new network's name, overlay CIDR (IPv4, not a special range, /30 or larger) and organization prefix.
 * Throws UsageError; callers check these before asking for a passphrase.
 */
export function checkNetworkOptions(opts: {network: string; cidr: string; orgPrefix?: number}): {name: string; net: Ipv4Network; orgPrefix: number} {
  const name = checkNetworkName(opts.network)
  const net = parseCidr(opts.cidr, '--cidr')
  const special = specialRangeOverlap(net)
  if (special) throw new UsageError(`--cidr ${opts.cidr} overlaps the ${special}`, {fix: 'use a private range, e.g. 10.42.0.0/16'})
  if (net.prefix > 30) throw new UsageError(`--cidr ${opts.cidr} is too small for a network`, {fix: 'use a /30 or larger, e.g. 10.42.0.0/16'})
  const orgPrefix = opts.orgPrefix ?? DEFAULTS.orgPrefix
  if (Number.isInteger(orgPrefix) && orgPrefix < net.prefix) {
    throw new UsageError(`--cidr ${opts.cidr} is too small for /${orgPrefix} organization blocks`, {
      fix: `use a /${orgPrefix} or larger --cidr, or an --org-prefix between ${net.prefix} and 30`,
    })
  }
  if (!Number.isInteger(orgPrefix) || orgPrefix > 30) {
    throw new UsageError(`--org-prefix ${orgPrefix} leaves no room for nodes`, {fix: `use a prefix between ${net.prefix} and 30`})
  }
  return {name, net, orgPrefix}
}

/**
 * Creates a network in `homeDir`: an Ed25519 CA constrained to the overlay CIDR, the RPC password, and the state.
 * Throws UsageError for a bad name, CIDR or prefix; UserError when the home exists and `force` is not set.
 */
export async function initCa(homeDir: string, opts: InitCaOptions): Promise<InitCaResult> {
  const {name, net, orgPrefix} = checkNetworkOptions(opts)
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const duration = opts.durationSeconds ?? DEFAULTS.caDurationSeconds
  const ca = await createCa({name, ips: [formatCidr(net)], groups: [], organization: null, durationSeconds: duration, passphrase: opts.passphrase, argon2: opts.argon2, now})
  const state: NetworkState = {
    schemaVersion: SCHEMA_VERSION,
    network: {name, cidr: formatCidr(net), orgPrefix, createdAt: iso(now), ports: {...DEFAULTS.ports}, tun: {...DEFAULTS.tun}},
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
    caFingerprint: ca.record.id,
    caNotBefore: ca.record.notBefore,
    caNotAfter: ca.record.notAfter,
    caLifetime: formatDuration(duration),
    keyEncrypted: opts.passphrase !== null,
  }
}

/** A new CA: its certificate (PEM), its private key (64 bytes, and as PEM, encrypted unless `passphrase` is null), its state record. */
export interface NewCa {
  certificate: NebulaCertificate
  pem: string
  privateKey: Buffer
  keyPem: string
  record: CaRecord
}

/**
 * Generates an Ed25519 CA key pair and its self-signed Nebula certificate named `name`, constrained to `ips` (IPv4
 * CIDRs), `subnets` (default none) and `groups` (empty: no constraint), valid from `now` (Unix seconds, backdated by
 * {@link BACKDATE_SECONDS}) for `durationSeconds`; the key PEM is encrypted with `passphrase` unless it is null. The
 * record is `active`; the caller files it (a new home, or a rotation that also records an endorsement).
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
  now: number
}): Promise<NewCa> {
  const keys = generateCaKeyPair()
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
      curve: 'CURVE25519',
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

/** The active CA's record and certificate, and its private key: what signs. */
export interface Issuer {
  record: CaRecord
  certificate: NebulaCertificate
  /** 64-byte Nebula Ed25519 key. */
  key: Buffer
}

/** The active CA of `home` as an {@link Issuer} with `caKey` (its 64-byte private key, from {@link unlockCaKey}). */
export async function activeIssuer(home: Home, caKey: Buffer): Promise<Issuer> {
  const record = home.activeCa()
  return {record, certificate: certificateFromPem(await home.readCaCertificate(record)), key: caKey}
}

/**
 * Signs a host certificate as `issuer` (see `signCertificate` in `nebula/sign.ts`: the issuer is derived, and anything
 * outside the CA's limits is refused) and files it in `tx` as pending. Returns it and its fingerprint.
 */
export function issueHostCertificate(tx: Transaction, issuer: Issuer, details: Omit<CertificateDetails, 'issuer' | 'isCA' | 'curve'>): {certificate: NebulaCertificate; fingerprint: string} {
  let certificate: NebulaCertificate
  try {
    certificate = signCertificate({...details, isCA: false, curve: 'CURVE25519'}, {certificate: issuer.certificate, key: issuer.key})
  } catch (error) {
    if (!(error instanceof SigningError)) throw error
    throw new UserError(`the CA ${JSON.stringify(issuer.record.name)} may not sign ${details.name}: the certificate ${error.message}`, {fix: SIGNING_FIXES[error.reason] ?? 'check the node\'s options against the CA'})
  }
  const fp = fingerprint(certificate)
  tx.addCertificate(fp, certificateToPem(certificate))
  return {certificate, fingerprint: fp}
}

/** New network secrets: the MultiChain RPC user and a random password (44 characters). */
export function newSecrets(): NetworkSecrets {
  // base64url of 33 random bytes: 44 characters, no characters that need quoting in env or conf files
  return {schemaVersion: SCHEMA_VERSION, rpcUser: DEFAULTS.rpcUser, rpcPassword: randomBytes(33).toString('base64url')}
}

/**
 * Loads the active CA's private key (64 bytes, Nebula Ed25519), decrypting it with `passphrase` when it is encrypted.
 * Throws UserError for a wrong or missing passphrase.
 */
export async function unlockCaKey(home: Home, passphrase: Buffer | null): Promise<Buffer> {
  const ca = home.activeCa()
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

/** Options of {@link addNode}. */
export interface AddNodeOptions {
  /** Organization name as TruBudget knows it, e.g. `ACME`. */
  org: string
  /** Node name (DNS label); default `<org-slug>-<n>`. */
  name?: string
  /** Requested overlay IP (dotted IPv4) inside the organization's block. */
  ip?: string
  lighthouse?: boolean
  /**
   * Whether the node relays for nodes that cannot reach each other directly (NAT): default true for a lighthouse,
   * false otherwise. A relay needs an endpoint.
   */
  relay?: boolean
  /** Public underlay `host:port`; required for a lighthouse and a relay. */
  endpoint?: string
  origin?: boolean
  /** Extra certificate groups. */
  groups?: string[]
  /** Certificate lifetime in seconds; default one year, capped at the CA's expiry. */
  durationSeconds?: number
  /** TruBudget access level (group `access:<level>`); default `trusted` for the origin, `managed` otherwise. */
  access?: AccessLevel
  /**
   * The joiner's X25519 public key (32 bytes) when the joiner holds the private key (join request or --pubkey);
   * otherwise tbmesh generates the key pair and keeps the private key in the home.
   */
  publicKey?: Buffer
  /** Nonce of the join request being answered (hex), recorded in the ledger and the bundle manifest. */
  requestNonce?: string
  now?: number
}

/** What `tbmesh add-node` reports. Times ISO 8601. */
export interface AddNodeResult {
  name: string
  organization: string
  overlayIp: string
  groups: string[]
  fingerprint: string
  notBefore: string
  notAfter: string
  lighthouse: boolean
  /** Whether the node relays for others (`relay.am_relay`). */
  relay: boolean
  origin: boolean
  access: AccessLevel
  /** False when the joiner holds the private key: its bundle carries none. */
  keyInHome: boolean
  endpoint?: string
}

/**
 * Adds a node: gives a new organization the next free block, allocates an overlay IP, generates the host key pair and
 * signs its certificate with the active CA (`caKey`, 64 bytes). The key is written before, the certificate after the
 * ledger commit. Throws UsageError for bad values and UserError for conflicts (name taken, full block, second origin).
 */
export async function addNode(home: Home, caKey: Buffer, opts: AddNodeOptions): Promise<AddNodeResult> {
  const [result] = await addNodes(home, caKey, [opts])
  return result
}

/**
 * Adds several nodes in one transaction (one lock, one commit): all of them or, if any is refused, none. Each is
 * checked and allocated as by {@link addNode}, in order, so later ones see the earlier ones' blocks and addresses.
 * `progress` is told each node as it is added; `finish` runs in the same transaction afterwards (e.g. to write the new
 * nodes' bundles), so that its work commits or fails with theirs.
 */
export async function addNodes(
  home: Home,
  caKey: Buffer,
  list: AddNodeOptions[],
  opts: {progress?: (done: number, total: number) => void; finish?: (tx: Transaction, added: AddNodeResult[]) => Promise<void>} = {},
): Promise<AddNodeResult[]> {
  const issuer = await activeIssuer(home, caKey)
  const prepared = list.map((o) => prepareNode(o, issuer.certificate))
  return home.transaction(async (tx) => {
    const added: AddNodeResult[] = []
    for (const node of prepared) {
      added.push(await addPreparedNode(tx, issuer, node))
      opts.progress?.(added.length, prepared.length)
    }
    await opts.finish?.(tx, added)
    return added
  })
}

/** A node's options checked against the CA, before any state is read: what {@link addPreparedNode} needs. */
interface PreparedNode {
  opts: AddNodeOptions
  orgName: string
  slug: string
  endpoint?: string
  extraGroups: string[]
  requestedIp?: number
  access: AccessLevel
  now: number
  notBefore: number
  notAfter: number
}

/** Checks a node's options (names, endpoint, groups, IP syntax, lifetime against the CA). Throws UsageError/UserError. */
function prepareNode(opts: AddNodeOptions, caCert: NebulaCertificate): PreparedNode {
  const orgName = checkOrganizationName(opts.org)
  const slug = slugify(orgName)
  if (opts.name !== undefined) checkNodeName(opts.name)
  if (opts.lighthouse && !opts.endpoint) {
    throw new UsageError('--lighthouse needs --endpoint', {fix: 'give the public underlay address, e.g. --endpoint 203.0.113.7:4242'})
  }
  if (opts.relay && !opts.endpoint) {
    throw new UsageError('--relay needs --endpoint', {fix: 'give the public underlay address the nodes behind NAT reach it at, e.g. --endpoint 203.0.113.8:4242'})
  }
  const endpoint = opts.endpoint === undefined ? undefined : checkEndpoint(opts.endpoint)
  const extraGroups = checkGroups(opts.groups ?? [])
  const requestedIp = opts.ip === undefined ? undefined : parseIp(opts.ip, '--ip')
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const {notBefore, notAfter} = hostValidity(caCert, now, opts.durationSeconds)
  const access: AccessLevel = opts.access ?? (opts.origin ? 'trusted' : 'managed')
  return {opts, orgName, slug, endpoint, extraGroups, requestedIp, access, now, notBefore, notAfter}
}

/**
 * The overlay IPs (unsigned 32-bit) held by the nodes of `state`, revoked ones included (they are never reused).
 * Computed once per state object and kept up to date by {@link addPreparedNode}, so adding n nodes costs O(n), not O(n²).
 */
function usedIps(state: NetworkState): Set<number> {
  let used = usedIpCache.get(state)
  if (!used || used.size !== state.nodes.length) {
    used = new Set(state.nodes.map((n) => parseIp(n.overlayIp)))
    usedIpCache.set(state, used)
  }
  return used
}

const usedIpCache = new WeakMap<NetworkState, Set<number>>()

/** Allocates, signs and records one prepared node inside `tx` (see {@link addNode}). */
async function addPreparedNode(tx: Transaction, issuer: Issuer, p: PreparedNode): Promise<AddNodeResult> {
  const {opts, orgName, slug, endpoint, extraGroups, requestedIp, access, now, notBefore, notAfter} = p
  const keys = opts.publicKey ? undefined : generateHostKeyPair()
  const {state} = tx
  const net = parseCidr(state.network.cidr)
  const fed = state.federation
  if (fed && slug !== fed.self.slug) {
    throw new UserError(`this home's CA belongs to ${fed.self.organization} and cannot issue certificates for ${orgName}`, {
      fix: `${orgName}'s admin adds its nodes in its own tbmesh home`,
    })
  }
  let org = state.organizations.find((o) => o.slug === slug)
  if (!org) {
    const block = nextFreeBlock(net, state.network.orgPrefix, state.organizations.map((o) => parseCidr(o.block)))
    org = {name: orgName, slug, block: formatCidr(block), createdAt: iso(now)}
    state.organizations.push(org)
  }
  const name = opts.name ?? defaultNodeName(state, slug)
  if (state.nodes.some((n) => n.name === name)) throw new UserError(`node name ${name} is taken`, {fix: 'choose another --name'})
  if (opts.origin) {
    const origin = state.nodes.find((n) => n.origin)
    if (origin) throw new UserError(`the network already has an origin node (${origin.name})`, {fix: 'drop --origin'})
  }
  const block = parseCidr(org.block)
  const used = usedIps(state)
  const owner = `organization ${org.name}`
  let ip: number
  if (requestedIp === undefined) ip = nextFreeIp(block, used, owner)
  else {
    checkRequestedIp(block, requestedIp, used, owner)
    ip = requestedIp
  }
  const overlayIp = formatIp(ip)
  const groups = [`org:${slug}`, `access:${access}`, ...(opts.lighthouse ? ['role:lighthouse'] : []), ...(opts.origin ? ['role:origin'] : []), ...extraGroups]
  const node: NodeRecord = {
    name,
    organization: slug,
    overlayIp,
    lighthouse: Boolean(opts.lighthouse),
    origin: Boolean(opts.origin),
    // Recorded only where it differs from the default (a lighthouse relays), so that isRelay has one rule.
    ...(opts.relay !== undefined && opts.relay !== Boolean(opts.lighthouse) ? {relay: opts.relay} : {}),
    ...(endpoint ? {endpoint} : {}),
    groups: extraGroups,
    access,
    createdAt: iso(now),
  }
  // A federated role node changes the descriptor: refused (before anything is signed) unless this home may do that alone.
  if (fed && (node.lighthouse || node.origin || isRelay(node))) publishRoleNode(state, issuer, node)
  const {fingerprint: fp} = issueHostCertificate(tx, issuer, {
    name,
    ips: [`${overlayIp}/${net.prefix}`],
    subnets: [],
    groups,
    notBefore,
    notAfter,
    publicKey: keys?.publicKey ?? opts.publicKey!,
  })
  const row: CertificateRecord = {
    fingerprint: fp,
    name,
    organization: slug,
    overlayIp,
    groups,
    roles: roles(node),
    notBefore: iso(notBefore),
    notAfter: iso(notAfter),
    issuer: issuer.record.id,
    issuedAt: new Date().toISOString(),
    keyInHome: keys !== undefined,
    ...(opts.requestNonce ? {requestNonce: opts.requestNonce} : {}),
  }
  if (keys) await tx.writeHostKey(name, hostPrivateKeyToPem(keys.privateKey))
  state.nodes.push(node)
  used.add(ip)
  state.certificates.push(row)
  return {
    name,
    organization: org.name,
    overlayIp,
    groups,
    fingerprint: fp,
    notBefore: row.notBefore,
    notAfter: row.notAfter,
    lighthouse: node.lighthouse,
    relay: isRelay(node),
    origin: node.origin,
    access,
    keyInHome: row.keyInHome,
    ...(endpoint ? {endpoint} : {}),
  }
}

/**
 * Records a federated network's new lighthouse, relay or origin node in a new descriptor version, approved by this
 * organization alone. Possible only while that is enough (the founder, before other organizations join): the
 * descriptor lists lighthouses, relays and the origin for every member. Throws UserError otherwise.
 */
function publishRoleNode(state: NetworkState, issuer: Issuer, node: NodeRecord): void {
  const fed = state.federation!
  const role = node.lighthouse ? 'lighthouse' : node.origin ? 'origin node' : 'relay'
  if (!isMember(fed)) throw new UserError(`${fed.self.organization} is not a member of the federated network yet`, {fix: `add the ${role} once the membership is approved`})
  const needed = approvalsNeeded(fed.current.descriptor.requiredApprovals, fed.current.descriptor.members.length)
  if (needed > 1) {
    throw new UserError(`a new ${role} changes the network descriptor, which now takes ${needed} organizations' approvals`, {
      fix: 'lighthouses, relays and the origin are added by the founder before other organizations join',
    })
  }
  if (node.origin && fed.current.descriptor.origin) {
    throw new UserError(`the network already has an origin node (${fed.current.descriptor.origin.overlayIp})`, {fix: 'drop --origin'})
  }
  const organization = fed.self.slug
  const {overlayIp, lighthouse, origin} = node
  const relay = isRelay(node)
  // One version for every role: members import versions one by one, so every version made must be the one they get.
  const d = nextVersion(fed.current.descriptor, {kind: 'add-role-node', organization, overlayIp, lighthouse, origin, relay}, (next) => {
    // Relays are listed explicitly from now on (a version made before lists none: its lighthouses relay).
    next.relays = [...descriptorRelays(next)]
    if (lighthouse) next.lighthouses.push({organization, overlayIp, endpoint: node.endpoint!})
    if (relay) next.relays.push({organization, overlayIp, endpoint: node.endpoint!})
    if (origin) next.origin = {organization, overlayIp}
  })
  fed.current = {descriptor: d, approvals: [approve(d, organization, issuer.record.id, issuer.key)]}
}

function defaultNodeName(state: NetworkState, slug: string): string {
  const taken = new Set(state.nodes.map((n) => n.name))
  for (let i = 1; ; i++) {
    const name = `${slug}-${i}`.length > 63 ? `${slug.slice(0, 63 - String(i).length - 1)}-${i}` : `${slug}-${i}`
    if (!taken.has(name)) return name
  }
}

/** The roles a certificate carries as groups (`role:<role>`); relaying is configuration only, not a group. */
function roles(node: NodeRecord): string[] {
  return [...(node.lighthouse ? ['lighthouse'] : []), ...(node.origin ? ['origin'] : [])]
}
