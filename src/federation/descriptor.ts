/**
 * The network descriptor of a federated network, the membership requests that extend it and the revocation lists
 * members exchange: their checks. Pure functions: no I/O. The types are in `home/types.ts`, the signed bytes in
 * `lib/messages.ts`.
 *
 * A federated network has no single CA. Each member organization has its own Nebula CA, constrained (in the CA
 * certificate, which Nebula enforces) to the overlay CIDR and to the groups it may issue: `org:<slug>`, its
 * `access:<level>` groups and the `role:` groups. The descriptor lists the network's settings, its members (name, IP
 * block, access level, CA certificate), its lighthouses, its relays and its origin node; every node trusts the CAs it
 * lists and scopes its firewall rules by CA (`ca_sha`) and block (`cidr`).
 *
 * The descriptor is versioned. Version 1 is signed by the founding organization. Every later version changes one thing
 * (`change`), names the digest of the version it extends (`previous`), and is valid only with the approvals of enough
 * members of that previous version: by default more than half of them (`requiredApprovals: 'majority'`), as TruBudget
 * requires for new organizations. An approval is a signature (Ed25519, or ECDSA P256) by a member's CA key over
 * `tbmesh-network-descriptor:v1:<digest>`, where the digest is the hex SHA-256 of the descriptor's canonical JSON
 * (object keys sorted, no white space).
 *
 * File format (JSON, UTF-8): `{"descriptor": NetworkDescriptor, "approvals": Approval[]}` ({@link SignedDescriptor}).
 * Membership request: `{"request": MembershipRequest, "signature": base64}`, signed by the requesting CA's key.
 */

import {UserError} from '../errors.js'
import {memberCas} from '../home/queries.js'
import type {
  AccessLevel,
  Approval,
  DescriptorChange,
  Member,
  MembershipRequest,
  NetworkDescriptor,
  NetworkState,
  RevocationList,
  SignedDescriptor,
  SignedMembershipRequest,
  SignedRevocationList,
} from '../home/types.js'
import {checkEndpoint, contains, formatCidr, overlaps, parseCidr, parseIp} from '../lib/ip.js'
import {approvalMessage, canonicalJson, jsonDigest, requestMessage, revocationMessage, verificationCode} from '../lib/messages.js'
import {organizationNameProblem, slugify} from '../lib/names.js'
import {DNS_LABEL, guard, SHA256_HEX} from '../lib/text.js'
import {blocklistFingerprints, caSign, caSignatureValid, certificateFromPem, checkSignature, fingerprint, type NebulaCertificate} from '../nebula/index.js'

/** `type` of a descriptor version. */
export const DESCRIPTOR_TYPE = 'tbmesh-network-descriptor'
/** `type` of a membership request. */
export const MEMBERSHIP_REQUEST_TYPE = 'tbmesh-membership-request'
/** `formatVersion` of every federation file this tbmesh reads and writes. */
export const FORMAT_VERSION = 1

/** Hex SHA-256 of a descriptor's canonical JSON. */
export function descriptorDigest(descriptor: NetworkDescriptor): string {
  return jsonDigest(descriptor)
}

/**
 * The verification code of a membership (`verificationCode` in `lib/messages.ts`) over the canonical JSON of the member
 * entry (organization, slug, block, access, CA fingerprint) and of `baseDigest`, the digest of the descriptor version
 * the membership extends, as `XXXX-XXXX-XXXX-XXXX-XXXX`. The requester and every approver see the same code and compare it by phone:
 * it covers the CA that will be trusted, the block it may use, and the network the joiner was given (a joiner trusts
 * the descriptor file it received; a matching code shows it received the members' own).
 */
export function membershipCode(m: Pick<Member, 'organization' | 'slug' | 'block' | 'access' | 'caFingerprint'>, baseDigest: string): string {
  return verificationCode('membership', canonicalJson({organization: m.organization, slug: m.slug, block: m.block, access: m.access, caFingerprint: m.caFingerprint, base: baseDigest}))
}

/** Signs `descriptor` as member `organization` (slug) with its CA key (64-byte Ed25519 or 32-byte P256). */
export function approve(descriptor: NetworkDescriptor, organization: string, caFingerprint: string, caKey: Buffer): Approval {
  return {organization, caFingerprint, signature: caSign(caKey, approvalMessage(descriptorDigest(descriptor))).toString('base64')}
}

/** The groups a member's CA may list: its `org:` group, its access groups and the role groups. */
export function allowedCaGroups(slug: string, access: AccessLevel): string[] {
  return [`org:${slug}`, ...(access === 'trusted' ? ['access:trusted'] : []), 'access:managed', 'role:lighthouse', 'role:origin']
}

/**
 * How many approvals a change to a version with `members` members needs: more than half of them, always, so that two
 * disjoint sets of members can never both complete a rival version; a fixed `rule` (`init-ca --approvals N`) only
 * raises that to N, capped at the number of members (3 while the founder is alone would let nothing change).
 */
export function approvalsNeeded(rule: NetworkDescriptor['requiredApprovals'], members: number): number {
  const majority = Math.floor(members / 2) + 1
  return rule === 'majority' ? majority : Math.max(majority, Math.min(rule, members))
}

/**
 * The members whose approvals count for `d`, with the CAs that may sign them: those of the version it extends (for
 * version 1, the founder). An added member is always the last one ({@link checkDescriptor} and {@link checkSuccessor}
 * insist), so it never counts; a member's new CA counts only from the version after the one that adds it; and a
 * member finishing its CA rotation approves alone, with its new CA (see `member-ca.ts`).
 */
export function approvingMembers(d: NetworkDescriptor): Member[] {
  const c = d.change
  if (c.kind === 'add-member') return d.members.slice(0, -1)
  if (c.kind === 'finish-member-ca-rotation') return d.members.filter((m) => m.slug === c.organization)
  if (c.kind === 'rotate-member-ca') {
    return d.members.map((m) => {
      if (m.slug !== c.organization) return m
      const {incomingCa: _, ...before} = m
      return before
    })
  }
  return d.members
}

/** How many approvals `d` needs: one (the member's own) to finish a CA rotation; otherwise by the network's rule. */
export function approvalsNeededFor(d: NetworkDescriptor): number {
  if (d.change.kind === 'finish-member-ca-rotation') return 1
  return approvalsNeeded(d.requiredApprovals, approvingMembers(d).length)
}

/** Approval status of a version: who approved (slugs, each counted once) and how many are needed. */
export interface ApprovalStatus {
  approvedBy: string[]
  needed: number
  complete: boolean
}

/**
 * Checks every approval of `signed` (each must be a valid signature by a member of the approving set, with that
 * member's CA) and counts them. Throws UserError naming `what` and the first bad approval.
 */
export function checkApprovals(signed: SignedDescriptor, what: string): ApprovalStatus {
  const d = signed.descriptor
  const voters = approvingMembers(d)
  const message = approvalMessage(descriptorDigest(d))
  const approvedBy: string[] = []
  for (const a of signed.approvals) {
    const member = voters.find((m) => m.slug === a.organization)
    const fix = 'ask for a fresh copy from the organization that sent it'
    if (!member) throw new UserError(`${what} carries an approval by ${JSON.stringify(a.organization)}, which cannot approve version ${d.version}`, {fix})
    const signer = memberCas(member).find((c) => c.caFingerprint === a.caFingerprint)
    if (!signer) throw new UserError(`${what}: the approval of ${a.organization} names another CA than the member's`, {fix})
    const ca = certificateFromPem(signer.caCertificate)
    if (!caSignatureValid(ca, message, Buffer.from(a.signature, 'base64'))) {
      throw new UserError(`${what}: the approval of ${a.organization} does not verify (the file was changed after it was signed)`, {fix})
    }
    if (!approvedBy.includes(a.organization)) approvedBy.push(a.organization)
  }
  const needed = approvalsNeededFor(d)
  return {approvedBy, needed, complete: approvedBy.length >= needed}
}

/**
 * Parses and checks a member's CA certificate: a valid self-signed Nebula CA whose fingerprint is `caFingerprint`,
 * constrained to exactly the overlay `cidr` and to a non-empty subset of {@link allowedCaGroups} that includes
 * `org:<slug>`. Returns the problem as text, or the certificate.
 */
export function checkMemberCa(m: Pick<Member, 'slug' | 'access' | 'caCertificate'> & {caFingerprint?: string}, cidr: string): NebulaCertificate | string {
  let ca: NebulaCertificate
  try {
    ca = certificateFromPem(m.caCertificate)
  } catch (error) {
    return `the CA certificate of ${m.slug} does not parse (${(error as Error).message})`
  }
  if (!ca.details.isCA || !checkSignature(ca, ca.details.publicKey)) return `the CA certificate of ${m.slug} is not a valid self-signed CA`
  if (m.caFingerprint !== undefined && fingerprint(ca) !== m.caFingerprint) return `the CA fingerprint of ${m.slug} does not match its certificate`
  if (ca.details.ips.length !== 1 || ca.details.ips[0] !== cidr) return `the CA of ${m.slug} is not constrained to the overlay ${cidr}`
  const allowed = allowedCaGroups(m.slug, m.access)
  if (!ca.details.groups.includes(`org:${m.slug}`)) return `the CA of ${m.slug} is not constrained to the group org:${m.slug}`
  const extra = ca.details.groups.find((g) => !allowed.includes(g))
  if (extra) return `the CA of ${m.slug} may issue the group ${extra}, which is not its own`
  return ca
}

/**
 * Checks the shape and the invariants of one descriptor version: settings, members (unique slugs and CAs, blocks
 * inside the overlay and disjoint, CA constraints as {@link checkMemberCa}), lighthouses, relays and origin inside
 * their organization's block, `change` consistent with the content. Throws UserError naming `what`.
 */
export function checkDescriptor(value: unknown, what: string): SignedDescriptor {
  const bad = (problem: string): never => {
    throw new UserError(`${what}: ${problem}`, {fix: 'ask for a fresh copy from the organization that sent it'})
  }
  const signed = value as SignedDescriptor
  if (typeof signed !== 'object' || signed === null || typeof signed.descriptor !== 'object' || signed.descriptor === null || !Array.isArray(signed.approvals)) {
    bad('not a tbmesh network descriptor')
  }
  const d = signed.descriptor
  if (d.type !== DESCRIPTOR_TYPE) bad('not a tbmesh network descriptor')
  if (d.formatVersion !== FORMAT_VERSION) bad(`format version ${JSON.stringify(d.formatVersion)} is not supported (this tbmesh reads ${FORMAT_VERSION})`)
  if (typeof d.network !== 'string' || d.network.length === 0) bad('"network" is missing')
  if (typeof d.cidr !== 'string') bad('"cidr" is missing')
  const net = guard(() => parseCidr(d.cidr, 'cidr'), bad)
  if (formatCidr(net) !== d.cidr) bad('"cidr" is not in canonical form')
  if (!Number.isInteger(d.orgPrefix) || d.orgPrefix < net.prefix || d.orgPrefix > 30) bad(`"orgPrefix" does not fit ${d.cidr}`)
  const ports = d.ports as unknown as Record<string, unknown>
  for (const key of ['nebula', 'p2p', 'rpc', 'api', 'storage']) {
    if (key === 'storage' && typeof ports === 'object' && ports !== null && ports.storage === undefined) continue // versions made before it was chosen
    if (typeof ports !== 'object' || ports === null || !Number.isInteger(ports[key]) || (ports[key] as number) < 1 || (ports[key] as number) > 65_535) bad(`"ports.${key}" is not a port`)
  }
  if (!Number.isInteger(d.version) || d.version < 1) bad('"version" is not a positive integer')
  if (d.version === 1 ? d.previous !== null : typeof d.previous !== 'string' || !SHA256_HEX.test(d.previous)) bad('"previous" does not fit the version')
  if (d.requiredApprovals !== 'majority' && !(Number.isInteger(d.requiredApprovals) && (d.requiredApprovals as number) >= 1)) bad('"requiredApprovals" is neither "majority" nor a positive integer')
  if (typeof d.createdAt !== 'string' || Number.isNaN(Date.parse(d.createdAt))) bad('"createdAt" is not a time')
  if (!Array.isArray(d.members) || d.members.length === 0) bad('"members" is empty')
  const blocks: Array<[string, ReturnType<typeof parseCidr>]> = []
  const cas = new Set<string>()
  let curve: string | undefined
  for (const m of d.members) {
    if (typeof m !== 'object' || m === null || typeof m.slug !== 'string' || !DNS_LABEL.test(m.slug)) bad('a member has no valid slug')
    const nameProblem = organizationNameProblem(m.organization)
    if (nameProblem) bad(`the name ${JSON.stringify(m.organization)} of member ${m.slug} is not a valid organization name (it ${nameProblem})`)
    if (m.slug !== slugify(m.organization)) bad(`member ${m.slug} is not the slug of ${JSON.stringify(m.organization)}`)
    if (m.access !== 'trusted' && m.access !== 'managed') bad(`member ${m.slug} has no valid access level`)
    if (typeof m.block !== 'string') bad(`member ${m.slug} has no block`)
    const block = guard(() => parseCidr(m.block, `block of ${m.slug}`), bad)
    if (block.prefix < net.prefix || !contains(net, block.base)) bad(`the block ${m.block} of ${m.slug} lies outside ${d.cidr}`)
    if (block.prefix !== d.orgPrefix) bad(`the block ${m.block} of ${m.slug} is not a /${d.orgPrefix}`)
    for (const [other, b] of blocks) {
      if (other === m.slug) bad(`member ${m.slug} is listed twice`)
      if (overlaps(b, block)) bad(`the blocks of ${other} and ${m.slug} overlap`)
    }
    blocks.push([m.slug, block])
    if (typeof m.caCertificate !== 'string' || typeof m.caFingerprint !== 'string') bad(`member ${m.slug} has no CA certificate`)
    const incoming = m.incomingCa as unknown
    if (incoming !== undefined && (typeof incoming !== 'object' || incoming === null || typeof m.incomingCa!.caCertificate !== 'string' || typeof m.incomingCa!.caFingerprint !== 'string')) {
      bad(`member ${m.slug} has a malformed incoming CA`)
    }
    for (const entry of memberCas(m)) {
      const ca = checkMemberCa({slug: m.slug, access: m.access, ...entry}, d.cidr)
      if (typeof ca === 'string') return bad(ca)
      // One curve for the whole network: Nebula cannot make a tunnel between nodes of different curves.
      curve ??= ca.details.curve
      if (ca.details.curve !== curve) bad(`the CA of ${m.slug} uses ${ca.details.curve}, another curve than the network's (${curve})`)
      if (cas.has(entry.caFingerprint)) bad(`the CA ${entry.caFingerprint} of ${m.slug} is listed twice or belongs to another member too`)
      cas.add(entry.caFingerprint)
    }
  }
  const blockOf = (slug: unknown, ip: unknown, role: string): void => {
    const entry = blocks.find(([s]) => s === slug)
    if (!entry) bad(`the ${role} belongs to ${JSON.stringify(slug)}, which is not a member`)
    if (typeof ip !== 'string') bad(`the ${role} has no overlay IP`)
    const addr = guard(() => parseIp(ip as string, `${role} overlay IP`), bad)
    if (!contains(entry![1], addr)) bad(`the ${role} ${ip} lies outside the block of ${slug}`)
  }
  // Lighthouses and relays: a node of a member, inside its block, with a public endpoint, listed once.
  const roleNodes = (list: unknown, role: 'lighthouse' | 'relay'): void => {
    if (!Array.isArray(list)) bad(`"${role}s" is not a list`)
    const ips = new Set<string>()
    for (const l of list as NetworkDescriptor['lighthouses']) {
      blockOf(l?.organization, l?.overlayIp, role)
      if (typeof l.endpoint !== 'string') bad(`the ${role} ${l.overlayIp} has no endpoint`)
      guard(() => checkEndpoint(l.endpoint), (problem) => bad(`the ${role} ${l.overlayIp}: ${problem}`))
      if (ips.has(l.overlayIp)) bad(`the ${role} ${l.overlayIp} is listed twice`)
      ips.add(l.overlayIp)
    }
  }
  roleNodes(d.lighthouses, 'lighthouse')
  if (d.relays !== undefined) roleNodes(d.relays, 'relay')
  if (d.origin !== null) blockOf(d.origin?.organization, d.origin?.overlayIp, 'origin')
  const c = d.change as unknown as Record<string, unknown>
  if (typeof c !== 'object' || c === null) bad('"change" is missing')
  // What a change names must be what it added (the last member, the last lighthouse): the approving members are
  // derived from it, so naming an older member would let the new one approve its own admission.
  const isLast = (list: NetworkDescriptor['lighthouses']): boolean => list.at(-1)?.overlayIp === c.overlayIp && list.at(-1)?.organization === c.organization
  const kindOk =
    (c.kind === 'found' && d.version === 1 && d.members.length === 1 && c.organization === d.members[0].slug) ||
    (c.kind === 'add-member' && d.version > 1 && d.members.length > 1 && c.organization === d.members.at(-1)!.slug) ||
    (c.kind === 'add-role-node' &&
      d.version > 1 &&
      typeof c.lighthouse === 'boolean' &&
      typeof c.origin === 'boolean' &&
      (c.relay === undefined || typeof c.relay === 'boolean') &&
      (c.lighthouse || c.origin || c.relay === true) &&
      (!c.lighthouse || isLast(d.lighthouses)) &&
      (!changeAddsRelay(c as DescriptorChange) || isLast(descriptorRelays(d))) &&
      (!c.origin || (d.origin?.overlayIp === c.overlayIp && d.origin?.organization === c.organization))) ||
    (c.kind === 'rotate-member-ca' && d.version > 1 && d.members.some((m) => m.slug === c.organization && m.incomingCa?.caFingerprint === c.caFingerprint)) ||
    (c.kind === 'finish-member-ca-rotation' && d.version > 1 && d.members.some((m) => m.slug === c.organization && !m.incomingCa && m.caFingerprint === c.caFingerprint))
  if (!kindOk) bad(`"change" (${JSON.stringify(c.kind)}) does not fit the version`)
  for (const a of signed.approvals) {
    if (typeof a !== 'object' || a === null || typeof a.organization !== 'string' || typeof a.caFingerprint !== 'string' || typeof a.signature !== 'string') bad('an approval is malformed')
  }
  return signed
}

/**
 * Checks that `next` is the version right after `current` and changes only what its `change` says: same settings,
 * every member, lighthouse, relay and the origin of `current` kept unchanged, plus exactly the one addition (or, for a
 * member's CA rotation, exactly that member's new or replaced CA). Throws UserError.
 */
export function checkSuccessor(current: NetworkDescriptor, next: NetworkDescriptor, what: string): void {
  const fix = 'import the versions in order, or ask for the current version'
  if (next.network !== current.network || next.cidr !== current.cidr) {
    throw new UserError(`${what} describes network ${JSON.stringify(next.network)} (${next.cidr}), not ${JSON.stringify(current.network)} (${current.cidr})`, {fix: 'check that the file is for this network'})
  }
  if (next.version !== current.version + 1 || next.previous !== descriptorDigest(current)) {
    throw new UserError(`${what} (version ${next.version}) does not extend version ${current.version}, the one this home holds`, {fix})
  }
  const base = (d: NetworkDescriptor) => canonicalJson({...d, version: 0, previous: null, createdAt: '', change: null, members: [], lighthouses: [], relays: [], origin: null})
  const refuse = (problem: string): never => {
    throw new UserError(`${what} ${problem}`, {fix: 'refuse it and tell the other organizations'})
  }
  if (base(next) !== base(current)) refuse('changes the network settings or the approval rule')
  const sameList = <T>(a: T[], b: T[]) => a.length <= b.length && a.every((x, i) => canonicalJson(x) === canonicalJson(b[i]))
  const c = next.change
  // A member's CA rotation changes exactly its entry: the new CA added as incoming, or the incoming CA made its CA.
  const members = current.members.map((m): Member => {
    if (c.kind === 'rotate-member-ca' && m.slug === c.organization) {
      if (m.incomingCa) refuse(`starts a CA rotation of ${m.slug}, which is already rotating its CA`)
      return {...m, incomingCa: next.members.find((n) => n.slug === m.slug)?.incomingCa}
    }
    if (c.kind === 'finish-member-ca-rotation' && m.slug === c.organization) {
      if (!m.incomingCa) refuse(`finishes a CA rotation of ${m.slug}, which is not rotating its CA`)
      const {incomingCa, ...rest} = m
      return {...rest, caCertificate: incomingCa!.caCertificate, caFingerprint: incomingCa!.caFingerprint}
    }
    return m
  })
  if (!sameList(members, next.members)) refuse('changes or removes a member')
  if (!sameList(current.lighthouses, next.lighthouses)) refuse('changes or removes a lighthouse')
  // A version that lists its relays is never followed by one that leaves them to the default again.
  if ((current.relays !== undefined && next.relays === undefined) || !sameList(descriptorRelays(current), descriptorRelays(next))) refuse('changes or removes a relay')
  if (current.origin !== null && canonicalJson(current.origin) !== canonicalJson(next.origin)) refuse('changes the origin node')
  const added = {
    members: next.members.length - current.members.length,
    lighthouses: next.lighthouses.length - current.lighthouses.length,
    relays: descriptorRelays(next).length - descriptorRelays(current).length,
    origin: current.origin === null && next.origin !== null ? 1 : 0,
  }
  const expected = {
    members: c.kind === 'add-member' ? 1 : 0,
    lighthouses: c.kind === 'add-role-node' && c.lighthouse ? 1 : 0,
    relays: changeAddsRelay(c) ? 1 : 0,
    origin: c.kind === 'add-role-node' && c.origin ? 1 : 0,
  }
  if (canonicalJson(added) !== canonicalJson(expected)) refuse(`makes more changes than its "change" (${next.change.kind}) says`)
}

/**
 * The relays of a version (overlay IP, organization, public endpoint), lighthouses that relay included: `relays` as
 * listed, or every lighthouse in a version made before relays were listed.
 */
export function descriptorRelays(d: NetworkDescriptor): NonNullable<NetworkDescriptor['relays']> {
  return d.relays ?? d.lighthouses
}

/** Whether `change` adds a relay: an `add-role-node` whose `relay` is true, or absent on a lighthouse. */
export function changeAddsRelay(change: DescriptorChange): boolean {
  return change.kind === 'add-role-node' && (change.relay ?? change.lighthouse)
}

/** The next version of `current` with `change` applied by `mutate`, unsigned. */
export function nextVersion(current: NetworkDescriptor, change: DescriptorChange, mutate: (d: NetworkDescriptor) => void, now = new Date()): NetworkDescriptor {
  const next: NetworkDescriptor = structuredClone({...current, version: current.version + 1, previous: descriptorDigest(current), createdAt: now.toISOString(), change})
  mutate(next)
  return next
}

// ---------------------------------------------------------------------------------------------------------------------
// Membership requests

/**
 * Checks a membership request file's content: shape, a CA certificate as {@link checkMemberCa} wants it for the
 * requested slug and access level, and the signature by that CA. Throws UserError naming `what`.
 */
export function checkMembershipRequest(value: unknown, what: string): {request: MembershipRequest; ca: NebulaCertificate} {
  const bad = (problem: string): never => {
    throw new UserError(`${what}: ${problem}`, {fix: 'ask the organization for a new request (`tbmesh federation request`)'})
  }
  const signed = value as SignedMembershipRequest
  if (typeof signed !== 'object' || signed === null || typeof signed.request !== 'object' || signed.request === null || typeof signed.signature !== 'string') bad('not a tbmesh membership request')
  const r = signed.request
  if (r.type !== MEMBERSHIP_REQUEST_TYPE) bad('not a tbmesh membership request')
  if (r.formatVersion !== FORMAT_VERSION) bad(`format version ${JSON.stringify(r.formatVersion)} is not supported`)
  for (const key of ['network', 'organization', 'slug', 'block', 'caCertificate', 'createdAt'] as const) if (typeof r[key] !== 'string') bad(`"${key}" is missing`)
  const nameProblem = organizationNameProblem(r.organization)
  if (nameProblem) bad(`"organization" ${JSON.stringify(r.organization)} is not a valid organization name (it ${nameProblem})`)
  if (!DNS_LABEL.test(r.slug) || r.slug !== slugify(r.organization)) bad(`"slug" is not the slug of ${JSON.stringify(r.organization)}`)
  if (r.access !== 'trusted' && r.access !== 'managed') bad('"access" is neither trusted nor managed')
  if (typeof r.base !== 'object' || r.base === null || !Number.isInteger(r.base.version) || typeof r.base.digest !== 'string') bad('"base" is missing')
  guard(() => parseCidr(r.block, 'block'), bad)
  if (Number.isNaN(Date.parse(r.createdAt))) bad('"createdAt" is not a time')
  let cidr: string | undefined
  try {
    cidr = certificateFromPem(r.caCertificate).details.ips[0]
  } catch {}
  const ca = checkMemberCa(r, cidr ?? '')
  if (typeof ca === 'string') bad(ca)
  if (!caSignatureValid(ca as NebulaCertificate, requestMessage(r), Buffer.from(signed.signature, 'base64'))) {
    bad('its signature does not verify (the file was changed after it was made)')
  }
  return {request: r, ca: ca as NebulaCertificate}
}

// ---------------------------------------------------------------------------------------------------------------------
// Revocation lists: how a member's revocations reach the other members' nodes

/** `type` of a revocation list. */
export const REVOCATION_LIST_TYPE = 'tbmesh-revocation-list'

/**
 * Checks a revocation list against descriptor `d`: published by a member with one of its CAs (its CA, or while it
 * rotates, its incoming CA), signed by it, and every certificate a host certificate issued and signed by one of the
 * member's CAs. Returns the list and the revoked fingerprints (sorted; for P256 both forms of each signature).
 * Throws UserError naming `what`.
 */
export function checkRevocationList(value: unknown, d: NetworkDescriptor, what: string): {list: RevocationList; fingerprints: string[]} {
  const bad = (problem: string): never => {
    throw new UserError(`${what}: ${problem}`, {fix: 'ask the organization that sent it for a fresh copy (`tbmesh federation revocations`)'})
  }
  const signed = value as SignedRevocationList
  if (typeof signed !== 'object' || signed === null || typeof signed.revocations !== 'object' || signed.revocations === null || typeof signed.signature !== 'string') bad('not a tbmesh revocation list')
  const r = signed.revocations
  if (r.type !== REVOCATION_LIST_TYPE || r.formatVersion !== FORMAT_VERSION) bad('not a tbmesh revocation list of a supported format')
  if (r.network !== d.network) bad(`it is for network ${JSON.stringify(r.network)}, not ${JSON.stringify(d.network)}`)
  if (!Number.isInteger(r.sequence) || r.sequence < 1) bad('"sequence" is not a positive integer')
  if (!Array.isArray(r.certificates) || r.certificates.some((c) => typeof c !== 'string')) bad('"certificates" is not a list of PEM certificates')
  const member = d.members.find((m) => m.slug === r.organization)
  if (!member) return bad(`${JSON.stringify(r.organization)} is not a member of version ${d.version}`)
  // Either of the member's CAs while it rotates: the list is signed by the one that signs for it now.
  const cas = new Map(memberCas(member).map((c) => [c.caFingerprint, certificateFromPem(c.caCertificate)]))
  const ca = cas.get(r.caFingerprint)
  if (!ca) return bad(`it names another CA than ${member.organization}'s`)
  if (!caSignatureValid(ca, revocationMessage(r), Buffer.from(signed.signature, 'base64'))) bad('its signature does not verify (the file was changed after it was signed)')
  const fingerprints = new Set<string>()
  for (const pem of r.certificates) {
    let cert: NebulaCertificate
    try {
      cert = certificateFromPem(pem)
    } catch (error) {
      return bad(`a certificate does not parse (${(error as Error).message})`)
    }
    const issuer = cas.get(cert.details.issuer)
    if (cert.details.isCA || !issuer || !checkSignature(cert, issuer.details.publicKey)) {
      bad(`it lists ${JSON.stringify(cert.details.name)}, a certificate not issued by ${member.organization}'s CA`)
    }
    // Both fingerprints of a P256 certificate (either form of its signature verifies).
    for (const fp of blocklistFingerprints(cert)) fingerprints.add(fp)
  }
  return {list: r, fingerprints: [...fingerprints].sort()}
}

/**
 * The federation part of a home's state (`state.federation`, see `home/validate.ts`): this organization is the home's
 * one organization, its CA is a member CA held here, the adopted descriptor checks out and lists it as it is, and the
 * records of approvals and revocations are well formed. Reports the first problem through `bad`.
 */
export function checkFederationState(state: NetworkState, bad: (problem: string) => never): void {
  const f = state.federation!
  if (typeof f !== 'object' || f === null || typeof f.self !== 'object' || f.self === null) bad('"federation" is malformed')
  if (state.organizations.length !== 1 || state.organizations[0]?.slug !== f.self.slug) bad('"federation.self" is not the one organization of this home')
  const {descriptor} = guard(() => checkDescriptor(f.current, '"federation.current"'), bad)
  const ca = checkMemberCa(f.self, state.network.cidr)
  if (typeof ca === 'string' || f.self.caFingerprint !== fingerprint(ca)) bad(`"federation.self": ${typeof ca === 'string' ? ca : 'its CA fingerprint does not match'}`)
  const listed = descriptor.members.find((m) => m.slug === f.self.slug)
  if (listed !== undefined && canonicalJson(listed) !== canonicalJson(f.self)) bad('"federation.self" differs from its entry in the descriptor')
  if (f.revocationSequence !== undefined && !(Number.isInteger(f.revocationSequence) && f.revocationSequence >= 1)) bad('"federation.revocationSequence" is not a positive integer')
  if (f.approved !== undefined && !(Number.isInteger(f.approved?.version) && typeof f.approved.digest === 'string')) bad('"federation.approved" is malformed')
  if (!state.cas.some((ca) => ca.id === f.self.caFingerprint)) bad('"federation.self" names a CA this home does not hold')
  for (const [org, r] of Object.entries(f.revocations ?? {})) {
    if (!Number.isInteger(r?.sequence) || !Array.isArray(r.fingerprints) || !r.fingerprints.every((fp) => typeof fp === 'string' && SHA256_HEX.test(fp))) {
      bad(`the revocations imported from ${org} are malformed`)
    }
  }
  for (const [fp, v] of Object.entries(f.violations ?? {})) {
    if (!SHA256_HEX.test(fp) || typeof v?.issuer !== 'string' || typeof v.reportedBy !== 'string' || typeof v.observedAt !== 'string') bad('"federation.violations" is malformed')
  }
}
