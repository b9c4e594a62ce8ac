/**
 * The CA's work on a network: create it, add nodes (allocate overlay IPs, sign host certificates), describe a node for
 * the renderers, and export its join bundle. Commands call these functions; tests call them directly.
 */
import {randomBytes} from 'node:crypto'
import {resolve} from 'node:path'

import {formatDuration} from './duration.js'
import {UsageError, UserError} from './errors.js'
import {checkEndpoint, checkRequestedIp, formatCidr, formatIp, nextFreeBlock, nextFreeIp, parseCidr, parseIp, specialRangeOverlap, type Ipv4Network} from './ip.js'
import {
  certificateFromPem,
  caPrivateKeyToPem,
  certificateToPem,
  encryptCaKey,
  fingerprint,
  generateCaKeyPair,
  generateHostKeyPair,
  hostPrivateKeyToPem,
  readCaPrivateKey,
  signCertificate,
  WrongPassphraseError,
  type Argon2Parameters,
  type NebulaCertificate,
} from './nebula/index.js'
import type {NodeProfile} from './render/profile.js'
import {approvalsNeeded, approve, nextVersion, type Member} from './descriptor.js'
import {Home, SCHEMA_VERSION, isMember, type AccessLevel, type CaRecord, type CertificateRecord, type NetworkSecrets, type NetworkState, type NodeRecord, type Transaction} from './state.js'

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

const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

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
 * CIDRs) and `groups` (empty: no constraint), valid from `now` (Unix seconds, backdated) for `durationSeconds`.
 */
export async function createCa(opts: {
  name: string
  ips: string[]
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
      subnets: [],
      groups: opts.groups,
      notBefore: opts.now - BACKDATE_SECONDS,
      notAfter: opts.now + opts.durationSeconds,
      publicKey: keys.publicKey,
      isCA: true,
      issuer: '',
      curve: 'CURVE25519',
    },
    keys.privateKey,
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
  /** Public underlay `host:port`; required for a lighthouse. */
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
 */
export async function addNodes(home: Home, caKey: Buffer, list: AddNodeOptions[]): Promise<AddNodeResult[]> {
  const ca = {record: home.activeCa(), cert: certificateFromPem(await home.readCaCertificate(home.activeCa()))}
  const prepared = list.map((opts) => prepareNode(opts, ca.cert))
  return home.transaction(async (tx) => {
    const results: AddNodeResult[] = []
    for (const node of prepared) results.push(await addPreparedNode(tx, ca.record, caKey, node))
    return results
  })
}

/** A node's options checked against the CA, before any state is read: what {@link addPreparedNode} needs. */
export interface PreparedNode {
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
export function prepareNode(opts: AddNodeOptions, caCert: NebulaCertificate): PreparedNode {
  const orgName = checkOrganizationName(opts.org)
  const slug = slugify(orgName)
  if (opts.name !== undefined) checkNodeName(opts.name)
  if (opts.lighthouse && !opts.endpoint) {
    throw new UsageError('--lighthouse needs --endpoint', {fix: 'give the public underlay address, e.g. --endpoint 203.0.113.7:4242'})
  }
  const endpoint = opts.endpoint === undefined ? undefined : checkEndpoint(opts.endpoint)
  const extraGroups = checkGroups(opts.groups ?? [])
  const requestedIp = opts.ip === undefined ? undefined : parseIp(opts.ip, '--ip')
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const notBefore = Math.max(now - BACKDATE_SECONDS, caCert.details.notBefore)
  const caLeft = caCert.details.notAfter - now
  if (caLeft <= 1) throw new UserError(`the CA expired on ${iso(caCert.details.notAfter)}`, {fix: 'rotate the CA'})
  if (opts.durationSeconds !== undefined && now + opts.durationSeconds > caCert.details.notAfter) {
    throw new UsageError(`--duration ${formatDuration(opts.durationSeconds)} goes past the CA's expiry (${iso(caCert.details.notAfter)})`, {
      fix: `use at most ${formatDuration(caLeft - 1)}`,
    })
  }
  const notAfter = Math.min(now + (opts.durationSeconds ?? DEFAULTS.hostDurationSeconds), caCert.details.notAfter - 1)
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
export async function addPreparedNode(tx: Transaction, caRecord: CaRecord, caKey: Buffer, p: PreparedNode): Promise<AddNodeResult> {
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
  const cert = signCertificate(
    {
      name,
      ips: [`${overlayIp}/${net.prefix}`],
      subnets: [],
      groups,
      notBefore,
      notAfter,
      publicKey: keys?.publicKey ?? opts.publicKey!,
      isCA: false,
      issuer: caRecord.id,
      curve: 'CURVE25519',
    },
    caKey,
  )
  const fp = fingerprint(cert)
  const node: NodeRecord = {
    name,
    organization: slug,
    overlayIp,
    lighthouse: Boolean(opts.lighthouse),
    origin: Boolean(opts.origin),
    ...(endpoint ? {endpoint} : {}),
    groups: extraGroups,
    access,
    createdAt: iso(now),
  }
  const row: CertificateRecord = {
    fingerprint: fp,
    name,
    organization: slug,
    overlayIp,
    groups,
    roles: roles(node),
    notBefore: iso(notBefore),
    notAfter: iso(notAfter),
    issuer: caRecord.id,
    issuedAt: new Date().toISOString(),
    keyInHome: keys !== undefined,
    ...(opts.requestNonce ? {requestNonce: opts.requestNonce} : {}),
  }
  if (fed && (node.lighthouse || node.origin)) publishRoleNode(state, caRecord, caKey, node)
  if (keys) await tx.writeHostKey(name, hostPrivateKeyToPem(keys.privateKey))
  state.nodes.push(node)
  used.add(ip)
  state.certificates.push(row)
  tx.addCertificate(fp, certificateToPem(cert))
  return {
    name,
    organization: org.name,
    overlayIp,
    groups,
    fingerprint: fp,
    notBefore: row.notBefore,
    notAfter: row.notAfter,
    lighthouse: node.lighthouse,
    origin: node.origin,
    access,
    keyInHome: row.keyInHome,
    ...(endpoint ? {endpoint} : {}),
  }
}

/**
 * Records a federated network's new lighthouse or origin node in a new descriptor version, approved by this
 * organization alone. Possible only while that is enough (the founder, before other organizations join): the
 * descriptor lists lighthouses and the origin for every member. Throws UserError otherwise.
 */
function publishRoleNode(state: NetworkState, caRecord: CaRecord, caKey: Buffer, node: NodeRecord): void {
  const fed = state.federation!
  const role = node.lighthouse ? 'lighthouse' : 'origin node'
  if (!isMember(fed)) throw new UserError(`${fed.self.organization} is not a member of the federated network yet`, {fix: `add the ${role} once the membership is approved`})
  const needed = approvalsNeeded(fed.current.descriptor.requiredApprovals, fed.current.descriptor.members.length)
  if (needed > 1) {
    throw new UserError(`a new ${role} changes the network descriptor, which now takes ${needed} organizations' approvals`, {
      fix: 'lighthouses and the origin are added by the founder before other organizations join',
    })
  }
  if (node.origin && fed.current.descriptor.origin) {
    throw new UserError(`the network already has an origin node (${fed.current.descriptor.origin.overlayIp})`, {fix: 'drop --origin'})
  }
  const organization = fed.self.slug
  const {overlayIp, lighthouse, origin} = node
  // One version for both roles: members import versions one by one, so every version made must be the one they get.
  const d = nextVersion(fed.current.descriptor, {kind: 'add-role-node', organization, overlayIp, lighthouse, origin}, (next) => {
    if (lighthouse) next.lighthouses.push({organization, overlayIp, endpoint: node.endpoint!})
    if (origin) next.origin = {organization, overlayIp}
  })
  fed.current = {descriptor: d, approvals: [approve(d, organization, caRecord.id, caKey)]}
}

/**
 * The organizations whose CAs a node of a federated network trusts: the descriptor's members and, while this
 * organization's membership is pending, this organization. Undefined in single-CA mode.
 */
export function trustedMembers(state: NetworkState): Member[] | undefined {
  const fed = state.federation
  if (!fed) return undefined
  const members = fed.current.descriptor.members
  return isMember(fed) ? members : [...members, fed.self]
}

/** Where the rendered config.yml expects the PKI files (Debian's and Nebula's customary /etc/nebula). */
export const BUNDLE_PKI = {ca: '/etc/nebula/ca.crt', cert: '/etc/nebula/host.crt', key: '/etc/nebula/host.key'} as const

/**
 * Describes a node for the renderers. Throws UserError for an unknown node.
 */
export function nodeProfile(state: NetworkState, nodeName: string, rpc: {user: string; password: string}, pki: NodeProfile['pki'] = BUNDLE_PKI): NodeProfile {
  const node = findNode(state, nodeName)
  const org = state.organizations.find((o) => o.slug === node.organization)!
  const descriptor = state.federation?.current.descriptor
  const origin = descriptor ? descriptor.origin ?? undefined : state.nodes.find((n) => n.origin)
  const revoked = new Set(state.nodes.filter((n) => n.revoked).map((n) => n.overlayIp))
  const lighthouses = descriptor
    ? descriptor.lighthouses.filter((l) => !(l.organization === state.federation!.self.slug && revoked.has(l.overlayIp))).map((l) => ({overlayIp: l.overlayIp, endpoint: l.endpoint}))
    : state.nodes.filter((n) => n.lighthouse && n.endpoint && !n.revoked).map((n) => ({overlayIp: n.overlayIp, endpoint: n.endpoint!}))
  const members = trustedMembers(state)
  return {
    network: {name: state.network.name, cidr: state.network.cidr},
    node: {
      name: node.name,
      organization: org.name,
      overlayIp: node.overlayIp,
      lighthouse: node.lighthouse,
      origin: node.origin,
      ...(node.endpoint ? {endpoint: node.endpoint} : {}),
    },
    ports: {...state.network.ports},
    lighthouses,
    ...(origin ? {originOverlayIp: origin.overlayIp} : {}),
    ...(members ? {members: members.map((m) => ({organization: m.slug, block: m.block, caFingerprint: m.caFingerprint}))} : {}),
    rpc,
    tun: {...state.network.tun},
    pki,
    blocklist: blocklist(state),
  }
}

/**
 * The network's blocklist, sorted: every certificate fingerprint ever issued to a revoked node and, in a federated
 * network, those of the revocation lists imported from other members.
 */
export function blocklist(state: NetworkState): string[] {
  const revoked = new Set(state.nodes.filter((n) => n.revoked).map((n) => n.name))
  const own = state.certificates.filter((c) => revoked.has(c.name)).map((c) => c.fingerprint)
  const imported = Object.values(state.federation?.revocations ?? {}).flatMap((r) => r.fingerprints)
  return [...new Set([...own, ...imported])].sort()
}

/** The node named `name`; throws UserError naming the known nodes when there is none. */
export function findNode(state: NetworkState, name: string): NodeRecord {
  const node = state.nodes.find((n) => n.name === name)
  if (!node) {
    const known = state.nodes.map((n) => n.name)
    throw new UserError(`no node named ${name}`, {
      fix: known.length > 0 ? `known nodes: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', …' : ''}` : 'add one with `tbmesh add-node`',
    })
  }
  return node
}

/** The DNS-label form of an organization name: `ACME Corp.` → `acme-corp`. */
export function slugify(name: string): string {
  return name
    .normalize('NFKD')
    .replaceAll(/[\u0300-\u036F]/g, '')
    .toLowerCase()
    .replaceAll(/[^a-z0-9]+/g, '-')
    .replaceAll(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '')
}

function defaultNodeName(state: NetworkState, slug: string): string {
  const taken = new Set(state.nodes.map((n) => n.name))
  for (let i = 1; ; i++) {
    const name = `${slug}-${i}`.length > 63 ? `${slug.slice(0, 63 - String(i).length - 1)}-${i}` : `${slug}-${i}`
    if (!taken.has(name)) return name
  }
}

function roles(node: NodeRecord): string[] {
  return [...(node.lighthouse ? ['lighthouse'] : []), ...(node.origin ? ['origin'] : [])]
}

function checkNetworkName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/.test(name)) {
    throw new UsageError(`--network "${name}" is not a valid network name`, {fix: 'use 1-64 letters, digits, spaces, dots, dashes or underscores'})
  }
  return name
}

/** Checks an organization name (1-100 characters, at least one letter or digit) and returns it trimmed. Throws UsageError. */
export function checkOrganizationName(name: string): string {
  const trimmed = name.trim()
  if (trimmed.length === 0 || trimmed.length > 100 || /[\u0000-\u001F\u007F"\\]/.test(trimmed) || slugify(trimmed) === '') {
    throw new UsageError(`--org "${name}" is not a valid organization name`, {fix: 'use 1-100 characters with at least one letter or digit, no quotes or control characters'})
  }
  return trimmed
}

/** Throws UsageError unless `name` is a lowercase DNS label. */
export function checkNodeName(name: string): void {
  if (!DNS_LABEL.test(name)) {
    throw new UsageError(`--name "${name}" is not a lowercase DNS label`, {fix: 'use a-z, 0-9 and inner dashes, at most 63 characters, e.g. acme-1'})
  }
}

const RESERVED_GROUP_PREFIXES = ['org:', 'role:', 'access:']

function checkGroups(groups: string[]): string[] {
  const out: string[] = []
  for (const group of groups) {
    if (!/^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$/.test(group)) {
      throw new UsageError(`--groups "${group}" is not a valid group name`, {fix: 'use letters, digits, ":", ".", "_" and "-"'})
    }
    if (RESERVED_GROUP_PREFIXES.some((p) => group.startsWith(p))) {
      throw new UsageError(`--groups "${group}" uses a prefix tbmesh sets itself`, {fix: 'org:, role: and access: groups come from --org, --lighthouse, --origin'})
    }
    if (!out.includes(group)) out.push(group)
  }
  return out
}

/** Unix seconds as ISO 8601 without milliseconds, e.g. `2026-11-21T05:00:00Z`. */
export function iso(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString().replace('.000Z', 'Z')
}

