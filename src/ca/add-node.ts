/**
 * Adding nodes to a network: allocate the overlay IP in the organization's block, make or take the key, issue the host
 * certificate with the active CA (`issueHostCertificate` in `ca.ts`), and record the node, in one transaction. In a
 * federated network a lighthouse or origin is published in the descriptor.
 */

import {UsageError, UserError} from '../errors.js'
import {approvalsNeeded, approve, descriptorRelays, nextVersion} from '../federation/descriptor.js'
import {Home, type Transaction} from '../home/home.js'
import {isMember, isRelay} from '../home/queries.js'
import {type AccessLevel, type CertificateRecord, type NetworkState, type NodeRecord} from '../home/types.js'
import {iso} from '../lib/duration.js'
import {checkEndpoint, checkRequestedIp, formatCidr, formatIp, nextFreeBlock, nextFreeIp, parseCidr, parseIp} from '../lib/ip.js'
import {checkGroups, checkNodeName, checkOrganizationName, organizationConflict, slugify, slugTwin} from '../lib/names.js'
import {
  generateHostKeyPair,
  hostPrivateKeyToPem,
  type NebulaCertificate,
} from '../nebula/index.js'
import {activeIssuer, hostValidity, issueHostCertificate, type Issuer} from './ca.js'
import {isRegistrar, registrarIp} from './registrar.js'

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
  /** Make the node a registrar: joining nodes may register at its TruBudget API (opened on the overlay). Needs access `trusted`. */
  registrar?: boolean
  /**
   * Where the node joins the chain and registers (`P2P_HOST`, `API_HOST`): a registrar's name or overlay IP (a node of
   * another organization's home in a federated network); default the origin.
   */
  registerAt?: string
  /** Extra certificate groups. */
  groups?: string[]
  /** Certificate lifetime in seconds; default one year, capped at the CA's expiry. */
  durationSeconds?: number
  /** TruBudget access level (group `access:<level>`); default `trusted` for the origin, `managed` otherwise. */
  access?: AccessLevel
  /**
   * The joiner's public key (X25519, 32 bytes; P256, 65 bytes: the CA's curve) when the joiner holds the private key
   * (join request or --pubkey); otherwise tbmesh generates the key pair and keeps the private key in the home.
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
  /** True for a registrar (the origin is one too). */
  registrar: boolean
  /** Overlay IP of the registrar the node joins and registers at (the origin's unless --register-at). */
  registerAt?: string
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
  const access: AccessLevel = opts.access ?? (opts.origin || opts.registrar ? 'trusted' : 'managed')
  if (opts.registrar && access !== 'trusted') {
    throw new UsageError('a registrar must be a trusted node: joining nodes register at it', {fix: 'drop --access managed, or --registrar'})
  }
  if (opts.origin && opts.registerAt !== undefined) throw new UsageError('the origin creates the chain and registers nowhere', {fix: 'drop --register-at'})
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
  const curve = issuer.certificate.details.curve
  const keys = opts.publicKey ? undefined : generateHostKeyPair(curve)
  const {state} = tx
  const net = parseCidr(state.network.cidr)
  const fed = state.federation
  if (fed && slug !== fed.self.slug) {
    throw new UserError(`this home's CA belongs to ${fed.self.organization} and cannot issue certificates for ${orgName}`, {
      fix: `${orgName}'s admin adds its nodes in its own tbmesh home`,
    })
  }
  const twin = slugTwin(state.organizations, orgName)
  if (twin) throw organizationConflict(orgName, twin.name)
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
  const registerAt = opts.registerAt === undefined ? undefined : registrarIp(state, opts.registerAt, overlayIp)
  const groups = [`org:${slug}`, `access:${access}`, ...(opts.lighthouse ? ['role:lighthouse'] : []), ...(opts.origin ? ['role:origin'] : []), ...extraGroups]
  const node: NodeRecord = {
    name,
    organization: slug,
    overlayIp,
    lighthouse: Boolean(opts.lighthouse),
    origin: Boolean(opts.origin),
    ...(opts.registrar ? {registrar: true} : {}),
    ...(registerAt ? {registerAt} : {}),
    // Recorded only where it differs from the default (a lighthouse relays), so that isRelay has one rule.
    ...(opts.relay !== undefined && opts.relay !== Boolean(opts.lighthouse) ? {relay: opts.relay} : {}),
    ...(endpoint ? {endpoint} : {}),
    groups: extraGroups,
    access,
    createdAt: iso(now),
  }
  // A federated role node changes the descriptor: refused (before anything is signed) unless this home may do that alone.
  if (fed && (node.lighthouse || node.origin || isRelay(node))) publishRoleNode(state, issuer, node)
  const {fingerprint: fp, format} = issueHostCertificate(tx, issuer, {
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
    ...format,
    issuedAt: new Date().toISOString(),
    keyInHome: keys !== undefined,
    ...(opts.requestNonce ? {requestNonce: opts.requestNonce} : {}),
  }
  if (keys) await tx.writeHostKey(name, hostPrivateKeyToPem(keys.privateKey, curve))
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
    registrar: isRegistrar(node),
    ...(registerAt ? {registerAt} : {}),
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
