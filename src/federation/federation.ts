/**
 * Federated networks, one CA per organization: found a network, join one against a received descriptor, request
 * membership, approve a request or a proposed version, import an approved version, and show where the network stands.
 * The descriptor's checks are in descriptor.ts, its types in home/types.ts, revocation lists in revocations.ts.
 * Commands call these functions; tests call them directly.
 */

import {rm} from 'node:fs/promises'
import {resolve} from 'node:path'

import {checkNetworkOptions, createCa, DEFAULTS, newSecrets, type PortChoice} from '../ca/ca.js'
import {markForUpdate, startRound} from '../ca/rounds.js'
import {UsageError, UserError} from '../errors.js'
import {Home} from '../home/home.js'
import {isMember} from '../home/queries.js'
import {
  type AccessLevel,
  type DescriptorChange,
  type FederationState,
  type Member,
  type MembershipRequest,
  type NetworkDescriptor,
  type NetworkState,
  SCHEMA_VERSION,
  type SignedDescriptor,
} from '../home/types.js'
import {formatDuration, iso} from '../lib/duration.js'
import {writeNewFile} from '../lib/files.js'
import {contains, formatCidr, nextFreeBlock, overlaps, parseCidr} from '../lib/ip.js'
import {requestMessage} from '../lib/messages.js'
import {checkOrganizationName, organizationConflict, slugify, slugTwin} from '../lib/names.js'
import {type Argon2Parameters, caSign, certificateFromPem, type CertificateVersion, type Curve, fingerprint, type NebulaCertificate} from '../nebula/index.js'
import type {ChangeSummary} from './change-summary.js'
import {
  allowedCaGroups,
  approvalsNeeded,
  approve,
  changeAddsRelay,
  checkApprovals,
  checkDescriptor,
  checkMemberCa,
  checkMembershipRequest,
  checkSuccessor,
  DESCRIPTOR_TYPE,
  descriptorDigest,
  descriptorRelays,
  FORMAT_VERSION,
  MEMBERSHIP_REQUEST_TYPE,
  membershipCode,
  nextVersion,
} from './descriptor.js'
import {readJson, requireFederation, requireMember} from './guards.js'
import {ownRotationRound, rotationCode} from './member-ca.js'
import {importRevocations, type ImportRevocationsResult} from './revocations.js'
import {importViolationReport, type ImportViolationReportResult} from './violations.js'

/** The smallest `--approvals` that can ask for more than a majority (see {@link approvalsNeeded}). */
export const MIN_FIXED_APPROVALS = 3

/** Options shared by {@link foundFederation} and {@link joinFederation}. Durations in seconds. */
export interface FederatedCaOptions {
  /** This organization's name as TruBudget knows it. */
  org: string
  /** Passphrase for the CA key; null stores it unencrypted. */
  passphrase: Buffer | null
  durationSeconds?: number
  force?: boolean
  argon2?: Argon2Parameters
  /** Current time, Unix seconds (tests). */
  now?: number
}

/** The certificate version and curve of a member's new CA. */
interface CaFormat {
  version?: CertificateVersion
  curve?: Curve
}

/** What `init-ca --federated` reports. Times ISO 8601. */
export interface FederatedInitResult {
  home: string
  network: string
  cidr: string
  organization: string
  /** This organization's block, IPv4 CIDR. */
  block: string
  access: AccessLevel
  caFingerprint: string
  caNotAfter: string
  caLifetime: string
  keyEncrypted: boolean
  /** Descriptor version held: 1 for a founder; for a joiner, the version its request will extend. */
  version: number
  /** True for a founder; false for a joiner until its membership is approved and imported. */
  member: boolean
  /** Hex SHA-256 of the descriptor version held; a joiner compares it with the member who sent the file. */
  descriptorDigest: string
}

/**
 * Founds a federated network in `homeDir`: this organization's CA (constrained to the overlay and its own groups), the
 * first block of the overlay, and descriptor version 1 signed by it. Every later change needs the approvals of more than
 * half of the members; `requiredApprovals` (at least {@link MIN_FIXED_APPROVALS}) raises that to a fixed number.
 * Throws UsageError/UserError as `initCa` (`ca/ca.ts`), and UsageError for `requiredApprovals` below
 * {@link MIN_FIXED_APPROVALS}.
 */
export async function foundFederation(
  homeDir: string,
  opts: FederatedCaOptions & CaFormat & {network: string; cidr: string; orgPrefix?: number; requiredApprovals?: number; ports?: PortChoice; allowDockerOverlap?: boolean},
): Promise<FederatedInitResult> {
  const {name, net, orgPrefix, ports} = checkNetworkOptions(opts)
  // A change always needs more than half of the members (approvalsNeeded); a fixed number only raises that. 1 or 2
  // never does (with two or more members a majority is at least 2), so they would promise a bar that is not kept.
  if (opts.requiredApprovals !== undefined && (!Number.isInteger(opts.requiredApprovals) || opts.requiredApprovals < MIN_FIXED_APPROVALS)) {
    throw new UsageError(`--approvals ${opts.requiredApprovals} is below a majority: every change needs the approval of more than half of the members`, {
      fix: `leave --approvals out (a majority), or give ${MIN_FIXED_APPROVALS} or more to require more than a majority`,
    })
  }
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const block = formatCidr(nextFreeBlock(net, orgPrefix, []))
  const settings = {name, cidr: formatCidr(net), orgPrefix, createdAt: iso(now), ports, tun: {...DEFAULTS.tun}}
  return createMemberHome(homeDir, opts, {version: opts.version, curve: opts.curve}, settings, block, 'trusted', now, (self, caKey) => {
    const descriptor: NetworkDescriptor = {
      type: DESCRIPTOR_TYPE,
      formatVersion: FORMAT_VERSION,
      network: name,
      cidr: settings.cidr,
      orgPrefix,
      ports: {...settings.ports},
      version: 1,
      previous: null,
      requiredApprovals: opts.requiredApprovals ?? 'majority',
      createdAt: new Date(now * 1000).toISOString(),
      change: {kind: 'found', organization: self.slug},
      members: [self],
      lighthouses: [],
      relays: [],
      origin: null,
    }
    return {self, current: {descriptor, approvals: [approve(descriptor, self.slug, self.caFingerprint, caKey)]}}
  })
}

/**
 * Creates this organization's home against a descriptor version received from a member (`descriptorFile`): its CA,
 * its block (`block`, or the first free one) and a pending membership, to be requested with
 * {@link createMembershipRequest}. The file must hold a complete version (enough valid approvals); it is trusted as
 * received, so get it from a member you know. Throws UserError/UsageError.
 */
export async function joinFederation(homeDir: string, opts: FederatedCaOptions & {descriptorFile: string; block?: string; access?: AccessLevel}): Promise<FederatedInitResult> {
  const received = await readDescriptorFile(opts.descriptorFile)
  const status = checkApprovals(received, opts.descriptorFile)
  if (!status.complete) throw incomplete(opts.descriptorFile, received.descriptor, status.approvedBy.length, status.needed)
  const d = received.descriptor
  const orgName = checkOrganizationName(opts.org)
  const slug = slugify(orgName)
  const twin = slugTwin(d.members.map((m) => ({name: m.organization, slug: m.slug})), orgName)
  if (twin) throw organizationConflict(orgName, twin.name)
  const taken = d.members.find((m) => m.slug === slug)
  if (taken) throw new UserError(`${taken.organization} is already a member of ${d.network}`, {fix: 'use your own organization name with --org'})
  const net = parseCidr(d.cidr)
  const blocks = d.members.map((m) => parseCidr(m.block))
  let block: string
  if (opts.block === undefined) block = formatCidr(nextFreeBlock(net, d.orgPrefix, blocks))
  else {
    const wanted = parseCidr(opts.block, '--block')
    if (wanted.prefix !== d.orgPrefix || !contains(net, wanted.base)) {
      throw new UsageError(`--block ${opts.block} is not a /${d.orgPrefix} inside the overlay ${d.cidr}`, {fix: `choose a /${d.orgPrefix} inside ${d.cidr}`})
    }
    const holder = d.members.find((m) => overlaps(parseCidr(m.block), wanted))
    if (holder) throw new UserError(`--block ${opts.block} overlaps the block ${holder.block} of ${holder.organization}`, {fix: 'choose a free block, or leave --block out'})
    block = formatCidr(wanted)
  }
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const settings = {name: d.network, cidr: d.cidr, orgPrefix: d.orgPrefix, createdAt: iso(now), ports: {...d.ports}, tun: {...DEFAULTS.tun}}
  const access = opts.access ?? 'managed'
  // The founder's CA sets the network's curve (one curve per network) and the joiner's certificate version.
  const founder = certificateFromPem(d.members[0]!.caCertificate)
  const format = {version: founder.version, curve: founder.details.curve}
  return createMemberHome(homeDir, {...opts, org: orgName}, format, settings, block, access, now, (self) => ({self, current: received}))
}

async function createMemberHome(
  homeDir: string,
  opts: FederatedCaOptions,
  format: CaFormat,
  network: NetworkState['network'],
  block: string,
  access: AccessLevel,
  now: number,
  federation: (self: Member, caKey: Buffer) => FederationState,
): Promise<FederatedInitResult> {
  const organization = checkOrganizationName(opts.org)
  const slug = slugify(organization)
  const duration = opts.durationSeconds ?? DEFAULTS.caDurationSeconds
  const ca = await createCa({
    name: `${organization} CA (${network.name})`,
    ips: [network.cidr],
    groups: allowedCaGroups(slug, access),
    organization: slug,
    durationSeconds: duration,
    passphrase: opts.passphrase,
    argon2: opts.argon2,
    ...format,
    now,
  })
  const self: Member = {organization, slug, block, access, caCertificate: ca.pem, caFingerprint: ca.record.id}
  const state: NetworkState = {
    schemaVersion: SCHEMA_VERSION,
    network,
    cas: [ca.record],
    organizations: [{name: organization, slug, block, createdAt: iso(now)}],
    nodes: [],
    certificates: [],
    federation: federation(self, ca.privateKey),
  }
  // The organization's own ORGANIZATION_VAULT_SECRET: made with its home, carried only in its own nodes' bundles.
  const home = await Home.create(homeDir, {state, secrets: newSecrets(true), caCertificatePem: ca.pem, caKeyPem: ca.keyPem}, {force: opts.force})
  return {
    home: resolve(home.dir),
    network: network.name,
    cidr: network.cidr,
    organization,
    block,
    access,
    caFingerprint: ca.record.id,
    caNotAfter: ca.record.notAfter,
    caLifetime: formatDuration(duration),
    keyEncrypted: opts.passphrase !== null,
    version: state.federation!.current.descriptor.version,
    member: isMember(state.federation!),
    descriptorDigest: descriptorDigest(state.federation!.current.descriptor),
  }
}

/** What `tbmesh federation request` reports. */
export interface MembershipRequestResult {
  path: string
  organization: string
  block: string
  access: AccessLevel
  caFingerprint: string
  /** The descriptor version the request extends. */
  baseVersion: number
  /** Read it to each approving organization's admin; they see the same code. */
  verificationCode: string
}

/**
 * Writes this (pending) organization's membership request to `out`, signed by its CA key (`caKey`, 64 bytes).
 * Refuses an existing `out` without `force`, and a home that is already a member. Throws UserError.
 */
export async function createMembershipRequest(home: Home, caKey: Buffer, out: string, opts: {force?: boolean} = {}): Promise<MembershipRequestResult> {
  const fed = requireFederation(home.state)
  if (isMember(fed)) throw new UserError(`${fed.self.organization} is already a member of ${home.state.network.name}`, {fix: 'nothing to request'})
  const base = fed.current.descriptor
  const request: MembershipRequest = {
    type: MEMBERSHIP_REQUEST_TYPE,
    formatVersion: FORMAT_VERSION,
    network: base.network,
    base: {version: base.version, digest: descriptorDigest(base)},
    organization: fed.self.organization,
    slug: fed.self.slug,
    block: fed.self.block,
    access: fed.self.access,
    caCertificate: fed.self.caCertificate,
    createdAt: new Date().toISOString(),
  }
  const text = `${JSON.stringify({request, signature: caSign(caKey, requestMessage(request)).toString('base64')}, null, 2)}\n`
  await writeNewFile(out, text, {force: opts.force, mode: 0o644, what: 'request'})
  return {
    path: resolve(out),
    organization: request.organization,
    block: request.block,
    access: request.access,
    caFingerprint: fed.self.caFingerprint,
    baseVersion: base.version,
    verificationCode: membershipCode(fed.self, request.base.digest),
  }
}

/** What `tbmesh federation approve` reports. */
export interface ApproveResult extends ChangeSummary {
  /** Where the version with this organization's approval was written. */
  path: string
  complete: boolean
  /** True when the approvals are now enough and this home adopted the version. */
  adopted: boolean
  /** Nodes of this home that need an update bundle (`tbmesh export-update --all`) after an adoption. */
  nodesToUpdate: string[]
}

/**
 * Approves a change with this organization's CA key (`caKey`, 64 bytes) and writes the version with its approval to
 * `out` (refused when it exists, unless `force`). `file` is either a membership request (the next version, adding the
 * requester, is made here) or a proposed version from another member (this approval is added to those it carries).
 * `confirm` is shown the change and the verification code and must return true. When the approvals reach the number
 * needed, this home adopts the version in the same step. A member approves one successor per version (recorded in the
 * state); a different one is refused unless `replace`. Throws UserError for anything that does not check out.
 */
export async function approveChange(
  home: Home,
  caKey: Buffer,
  file: string,
  opts: {out: string; force?: boolean; replace?: boolean; confirm: (summary: ChangeSummary) => Promise<boolean>},
): Promise<ApproveResult> {
  const fed = requireMember(home.state, 'approve changes')
  const current = fed.current.descriptor
  const value = await readJson(file, 'file')
  const proposal: SignedDescriptor =
    typeof value === 'object' && value !== null && 'request' in value ? proposeMember(current, value, file) : checkProposal(current, value, file)
  const d = proposal.descriptor
  if (proposal.approvals.some((a) => a.organization === fed.self.slug)) {
    throw new UserError(`${fed.self.organization} already approved version ${d.version}`, {fix: 'send the file on to the other organizations'})
  }
  const before = checkApprovals(proposal, file)
  const member = d.change.kind === 'add-member' || d.change.kind === 'rotate-member-ca' ? d.members.find((m) => m.slug === d.change.organization) : undefined
  // For a CA rotation the code covers the member's new CA: its admin reads the same code from `tbmesh rotate-ca`.
  const code = member && (d.change.kind === 'rotate-member-ca' ? rotationCode(member, d.change.caFingerprint, d.previous!) : membershipCode(member, d.previous!))
  const c = d.change
  const roleNode =
    c.kind === 'add-role-node'
      ? {
          organization: c.organization,
          overlayIp: c.overlayIp,
          ...(c.lighthouse ? {endpoint: d.lighthouses.at(-1)!.endpoint} : changeAddsRelay(c) ? {endpoint: descriptorRelays(d).at(-1)!.endpoint} : {}),
          lighthouse: c.lighthouse,
          relay: changeAddsRelay(c),
          origin: c.origin,
        }
      : undefined
  const summary: ChangeSummary = {
    version: d.version,
    change: d.change,
    ...(member ? {member, verificationCode: code} : {}),
    ...(roleNode ? {roleNode} : {}),
    approvedBy: before.approvedBy,
    needed: before.needed,
  }
  if (!(await opts.confirm(summary))) throw new UserError(`version ${d.version} not approved`, {fix: 'ask the organization for a new request if the codes differ'})
  const signed: SignedDescriptor = {descriptor: d, approvals: [...proposal.approvals, approve(d, fed.self.slug, fed.self.caFingerprint, caKey)]}
  const status = checkApprovals(signed, file)
  const digest = descriptorDigest(d)
  let written = false
  // A list of approvals whose record was not committed must not stay behind: it would count as this member's vote.
  const nodesToUpdate = await home
    .transaction(async ({state}) => {
      const now = requireMember(state, 'approve changes')
      assertHolds(now, current)
      if (now.approved && now.approved.version === d.version && now.approved.digest !== digest && !opts.replace) {
        throw new UserError(`${fed.self.organization} already approved another version ${d.version}; approving a second one could split the network`, {
          fix: 'complete that version first; if every member agrees it was abandoned, pass --replace-approval',
        })
      }
      now.approved = {version: d.version, digest}
      await writeNewFile(opts.out, `${JSON.stringify(signed, null, 2)}\n`, {force: opts.force, mode: 0o644, what: 'descriptor'})
      written = true
      return status.complete ? adoptInto(state, signed) : []
    })
    .catch(async (error: unknown) => {
      if (written) await rm(opts.out, {force: true}).catch(() => {})
      throw error
    })
  return {...summary, approvedBy: status.approvedBy, path: resolve(opts.out), complete: status.complete, adopted: status.complete, nodesToUpdate}
}

/** The version adding the requester of membership request `value` to `current`, unsigned. Throws UserError. */
function proposeMember(current: NetworkDescriptor, value: unknown, file: string): SignedDescriptor {
  const {request: r} = checkMembershipRequest(value, file)
  const refuse = (problem: string, fix: string): never => {
    throw new UserError(`membership request of ${JSON.stringify(r.organization)}: ${problem}`, {fix})
  }
  if (r.network !== current.network) refuse(`it is for network ${JSON.stringify(r.network)}, not ${JSON.stringify(current.network)}`, 'check that the request is for this network')
  if (r.base.version !== current.version || r.base.digest !== descriptorDigest(current)) {
    refuse(`it was made against version ${r.base.version}, but the network is at version ${current.version}`, `send them version ${current.version} (\`tbmesh federation show --out FILE\`) to import and request again`)
  }
  const ca = checkMemberCa(r, current.cidr)
  if (typeof ca === 'string') return refuse(ca, 'ask for a new request made with `tbmesh init-ca --federated`')
  const caFingerprint = fingerprint(ca)
  const sameCa = current.members.find((m) => m.caFingerprint === caFingerprint)
  if (sameCa) refuse(`its CA is already the CA of ${sameCa.organization}`, 'each organization needs its own CA')
  const twin = slugTwin(current.members.map((m) => ({name: m.organization, slug: m.slug})), r.organization)
  if (twin) throw organizationConflict(r.organization, twin.name)
  const taken = current.members.find((m) => m.slug === r.slug)
  if (taken) refuse(`${taken.organization} is already a member`, 'nothing to approve')
  if ((ca as NebulaCertificate).details.notAfter <= Date.now() / 1000) refuse('its CA has expired', 'ask for a new request with a new CA')
  const networkCurve = certificateFromPem(current.members[0]!.caCertificate).details.curve
  if ((ca as NebulaCertificate).details.curve !== networkCurve) {
    refuse(`its CA uses ${(ca as NebulaCertificate).details.curve}, not the network's curve (${networkCurve})`, 'ask for a new request made with `tbmesh init-ca --federated --descriptor`, which takes the network\'s curve')
  }
  const block = parseCidr(r.block)
  if (!contains(parseCidr(current.cidr), block.base)) refuse(`its block ${r.block} lies outside ${current.cidr}`, 'ask for a request with a block inside the overlay')
  if (block.prefix !== current.orgPrefix) refuse(`its block ${r.block} is not a /${current.orgPrefix}, the size of every organization's block`, `ask for a request with a /${current.orgPrefix}`)
  const holder = current.members.find((m) => overlaps(parseCidr(m.block), block))
  if (holder) refuse(`its block ${r.block} overlaps the block ${holder.block} of ${holder.organization}`, 'ask them to choose a free block (init-ca --federated --block)')
  const member: Member = {organization: r.organization, slug: r.slug, block: r.block, access: r.access, caCertificate: r.caCertificate, caFingerprint}
  const descriptor = nextVersion(current, {kind: 'add-member', organization: r.slug}, (next) => {
    next.members.push(member)
  })
  return {descriptor, approvals: []}
}

/** A proposed version from another member: well formed, the successor of `current`, its approvals valid. */
function checkProposal(current: NetworkDescriptor, value: unknown, file: string): SignedDescriptor {
  const proposal = checkDescriptor(value, file)
  if (descriptorDigest(proposal.descriptor) === descriptorDigest(current)) {
    throw new UserError(`${file} is version ${current.version}, which this home already adopted`, {fix: 'nothing to approve'})
  }
  checkSuccessor(current, proposal.descriptor, file)
  return proposal
}

/** What `tbmesh federation import` reports for a descriptor version. */
export interface ImportResult {
  kind: 'descriptor'
  version: number
  change: DescriptorChange
  /** False when the home already held this version. */
  adopted: boolean
  /** Whether this organization is a member after the import. */
  member: boolean
  approvedBy: string[]
  /** Nodes of this home that need an update bundle (`tbmesh export-update --all`). */
  nodesToUpdate: string[]
  /** Problems for this organization: e.g. a pending request made stale by another organization's admission. */
  warnings: string[]
}

/**
 * Imports a descriptor version approved by enough members: it must extend the version this home holds and carry
 * enough valid approvals of that version's members. A pending organization becomes a member with the version that
 * lists its CA. Marks this home's nodes as needing an update. Throws UserError for anything that does not check out.
 */
export async function importDescriptor(home: Home, file: string): Promise<ImportResult> {
  const fed = requireFederation(home.state)
  const signed = checkDescriptor(await readJson(file, 'descriptor'), file)
  const d = signed.descriptor
  const current = fed.current.descriptor
  if (descriptorDigest(d) === descriptorDigest(current)) {
    return {kind: 'descriptor', version: d.version, change: d.change, adopted: false, member: isMember(fed), approvedBy: checkApprovals(fed.current, file).approvedBy, nodesToUpdate: [], warnings: []}
  }
  checkSuccessor(current, d, file)
  const status = checkApprovals(signed, file)
  if (!status.complete) throw incomplete(file, d, status.approvedBy.length, status.needed)
  const nodesToUpdate = await adopt(home, signed, current)
  const after = home.state.federation!
  const warnings: string[] = []
  if (!isMember(after)) {
    const holder = d.members.find((m) => overlaps(parseCidr(m.block), parseCidr(after.self.block)))
    warnings.push(
      holder
        ? `your block ${after.self.block} now belongs to ${holder.organization}: create your home again with \`tbmesh init-ca --federated --force --block\` and a free block`
        : 'your membership request was made against an older version: make a new one with `tbmesh federation request`',
    )
  }
  return {kind: 'descriptor', version: d.version, change: d.change, adopted: true, member: isMember(after), approvedBy: status.approvedBy, nodesToUpdate, warnings}
}

/**
 * Imports a federation file of any kind: a descriptor version ({@link importDescriptor}), a revocation list or a
 * violation report.
 */
export async function importFederationFile(home: Home, file: string): Promise<ImportResult | ImportRevocationsResult | ImportViolationReportResult> {
  const value = await readJson(file, 'file')
  if (typeof value === 'object' && value !== null && 'revocations' in value) return importRevocations(home, file)
  if (typeof value === 'object' && value !== null && 'report' in value) return importViolationReport(home, file)
  return importDescriptor(home, file)
}

/**
 * Adopts `signed` (checked by the caller) in a transaction, provided the home still holds `expected`: see
 * {@link adoptInto}. Returns the names of the nodes that need an update.
 */
async function adopt(home: Home, signed: SignedDescriptor, expected: NetworkDescriptor): Promise<string[]> {
  return home.transaction(async ({state}) => {
    assertHolds(requireFederation(state), expected)
    return adoptInto(state, signed)
  })
}

/** Throws UserError unless the home (freshly loaded under the lock) still holds `expected`, the version checked against. */
function assertHolds(fed: FederationState, expected: NetworkDescriptor): void {
  if (descriptorDigest(fed.current.descriptor) !== descriptorDigest(expected)) {
    throw new UserError('the descriptor of this home changed while the command ran', {fix: 'run the command again'})
  }
}

/**
 * Makes `signed` the current version of `state` (a pending organization listed in it is a member from then on), and
 * every node not revoked is marked as needing an update. Returns the names of those nodes. When the version is this
 * organization's own CA rotation (approved by the other members), it also starts round 1 here. Throws UserError when
 * the version lists this organization with another CA or block than its own (see `ownRotationRound`).
 */
function adoptInto(state: NetworkState, signed: SignedDescriptor): string[] {
  const fed = requireFederation(state)
  const round = ownRotationRound(state, signed)
  fed.current = signed
  if (!round) return markForUpdate(state)
  fed.self = structuredClone(signed.descriptor.members.find((m) => m.slug === fed.self.slug)!)
  startRound(state, round)
  return state.nodes.filter((n) => !n.revoked).map((n) => n.name)
}

/** Where a federated network stands, from this home: what `tbmesh federation show` reports. */
export interface FederationStatus {
  network: string
  cidr: string
  version: number
  /** Hex SHA-256 of the current version (compare it with other organizations to be sure you hold the same). */
  digest: string
  organization: string
  member: boolean
  requiredApprovals: 'majority' | number
  /** Approvals the next change needs. */
  nextChangeNeeds: number
  members: Array<Omit<Member, 'caCertificate'> & {self: boolean}>
  lighthouses: NetworkDescriptor['lighthouses']
  /** Every relay, lighthouses that relay included. */
  relays: NonNullable<NetworkDescriptor['relays']>
  origin: NetworkDescriptor['origin']
  approvedBy: string[]
  /** Set when `out` was given: where the current version was written. */
  path?: string
}

/** This home's view of its federated network; with `out`, also writes the current version there (to send to others). */
export async function federationStatus(home: Home, opts: {out?: string; force?: boolean} = {}): Promise<FederationStatus> {
  const fed = requireFederation(home.state)
  const d = fed.current.descriptor
  if (opts.out) await writeNewFile(opts.out, `${JSON.stringify(fed.current, null, 2)}\n`, {force: opts.force, mode: 0o644, what: 'descriptor'})
  return {
    network: d.network,
    cidr: d.cidr,
    version: d.version,
    digest: descriptorDigest(d),
    organization: fed.self.organization,
    member: isMember(fed),
    requiredApprovals: d.requiredApprovals,
    nextChangeNeeds: approvalsNeeded(d.requiredApprovals, d.members.length),
    members: d.members.map(({caCertificate: _, ...m}) => ({...m, self: m.slug === fed.self.slug})),
    lighthouses: d.lighthouses,
    relays: descriptorRelays(d),
    origin: d.origin,
    approvedBy: fed.current.approvals.map((a) => a.organization),
    ...(opts.out ? {path: resolve(opts.out)} : {}),
  }
}

function incomplete(file: string, d: NetworkDescriptor, have: number, needed: number): UserError {
  return new UserError(`${file} (version ${d.version}) has ${have} valid approval${have === 1 ? '' : 's'}; it needs ${needed}`, {
    fix: 'have more member organizations approve it (`tbmesh federation approve`)',
  })
}

async function readDescriptorFile(file: string): Promise<SignedDescriptor> {
  return checkDescriptor(await readJson(file, 'descriptor'), file)
}
