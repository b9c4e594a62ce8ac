/**
 * A member of a federated network rotating its own CA (rounds 1 and 3 of `ca/rotation.ts`), as descriptor versions:
 *
 * - `rotate-member-ca` adds the new CA to the member's entry as `incomingCa`: every member's nodes then trust it and
 *   their firewall rules accept the member's block from either CA. It is approved like any other change (a majority of
 *   the members by default), with the member's verification code covering the new CA's fingerprint. Why not by the
 *   member alone, although its current CA vouches for the new one: rotating is also how a member recovers from a
 *   stolen CA key, and a thief holding that key could vouch for a CA of its own just as well; the other members'
 *   approvals, after comparing the code by phone with the member's admin, are what tells the two apart.
 * - `finish-member-ca-rotation` makes the incoming CA the member's CA and drops the old one. It only removes trust, in
 *   a CA of the member's own, and it is approved by the member alone, with its new CA: the one the members approved,
 *   which a thief of the old key does not hold.
 */

import {UserError} from '../errors.js'
import type {CaRecord, Member, NetworkState, RotationState, SignedDescriptor} from '../home/types.js'
import {canonicalJson} from '../lib/messages.js'
import {approve, checkApprovals, checkMemberCa, descriptorDigest, membershipCode, nextVersion} from './descriptor.js'
import {requireMember} from './guards.js'

/** A descriptor version made by a rotation round, as `rotate-ca` reports it. */
export interface RotationVersion {
  version: number
  change: 'rotate-member-ca' | 'finish-member-ca-rotation'
  /** Whether this home adopted it (its approvals are enough). */
  adopted: boolean
  approvedBy: string[]
  needed: number
  /** For `rotate-member-ca`: the code approving members compare by phone (it covers the new CA's fingerprint). */
  verificationCode?: string
  /** Where the version was written for the other members. */
  path?: string
}

/** What a member signing a round needs: its CA's record (fingerprint) and key. */
interface MemberSigner {
  record: Pick<CaRecord, 'id'>
  key: Buffer
}

/**
 * Round 1 in `state` (a member's home): the next descriptor version, in which this member's entry gains `incoming` as
 * its `incomingCa`, approved by this member with its current CA (`old`). When that approval is enough the version is
 * adopted at once; otherwise this home records that it approved it (one version per version number). Returns the
 * version as text (the file for the other members) and what `rotate-ca` reports.
 * @throws UserError when this home is not a member, or the new CA is not constrained as a member CA must be
 */
export function proposeMemberRotation(state: NetworkState, old: MemberSigner, incoming: {caCertificate: string; caFingerprint: string}): {result: RotationVersion; text: string} {
  const fed = requireMember(state, 'rotate its CA')
  const self = fed.self
  const problem = checkMemberCa({slug: self.slug, access: self.access, ...incoming}, state.network.cidr)
  if (typeof problem === 'string') throw new Error(`proposeMemberRotation: ${problem}`)
  const d = nextVersion(fed.current.descriptor, {kind: 'rotate-member-ca', organization: self.slug, caFingerprint: incoming.caFingerprint}, (next) => {
    next.members.find((m) => m.slug === self.slug)!.incomingCa = {...incoming}
  })
  const signed: SignedDescriptor = {descriptor: d, approvals: [approve(d, self.slug, old.record.id, old.key)]}
  if (fed.approved?.version === d.version && fed.approved.digest !== descriptorDigest(d)) {
    throw new UserError(`${self.organization} already approved another version ${d.version}; proposing a second one could split the network`, {
      fix: 'complete or import that version first, then run `tbmesh rotate-ca --out FILE` again',
    })
  }
  const status = checkApprovals(signed, 'the new descriptor version')
  if (status.complete) adoptOwn(state, signed)
  else fed.approved = {version: d.version, digest: descriptorDigest(d)}
  return {
    result: {version: d.version, change: 'rotate-member-ca', adopted: status.complete, approvedBy: status.approvedBy, needed: status.needed, verificationCode: rotationCode(self, incoming.caFingerprint, d.previous!)},
    text: `${JSON.stringify(signed, null, 2)}\n`,
  }
}

/**
 * Round 3 in `state`: the next descriptor version, in which this member's incoming CA (the active one, `active`)
 * replaces its CA, approved and adopted here. Returns the version as text (for the other members to import).
 * @throws UserError when the adopted descriptor does not list the active CA as this member's incoming CA
 */
export function finishMemberRotation(state: NetworkState, active: MemberSigner): {result: RotationVersion; text: string} {
  const fed = requireMember(state, 'rotate its CA')
  const self = fed.self
  if (self.incomingCa?.caFingerprint !== active.record.id) {
    throw new UserError('the network descriptor does not list the active CA as this organization\'s new CA', {fix: 'import the version that adds it first (`tbmesh federation import`)'})
  }
  const d = nextVersion(fed.current.descriptor, {kind: 'finish-member-ca-rotation', organization: self.slug, caFingerprint: active.record.id}, (next) => {
    const entry = next.members.find((m) => m.slug === self.slug)!
    entry.caCertificate = entry.incomingCa!.caCertificate
    entry.caFingerprint = entry.incomingCa!.caFingerprint
    delete entry.incomingCa
  })
  const signed: SignedDescriptor = {descriptor: d, approvals: [approve(d, self.slug, active.record.id, active.key)]}
  const status = checkApprovals(signed, 'the new descriptor version')
  if (!status.complete) throw new Error('finishMemberRotation: the member\'s own approval should be enough')
  adoptOwn(state, signed)
  return {result: {version: d.version, change: 'finish-member-ca-rotation', adopted: true, approvedBy: status.approvedBy, needed: status.needed}, text: `${JSON.stringify(signed, null, 2)}\n`}
}

/**
 * When `signed` (about to be adopted by `state`'s home) starts this home's own CA rotation: the round it starts.
 * Undefined for any other version. Throws UserError when the version lists this organization differently than the
 * home holds it and not as its own rotation to a CA this home holds as incoming.
 */
export function ownRotationRound(state: NetworkState, signed: SignedDescriptor): RotationState | undefined {
  const fed = state.federation!
  const listed = signed.descriptor.members.find((m) => m.slug === fed.self.slug)
  if (!listed || canonicalJson(listed) === canonicalJson(fed.self)) return undefined
  const incoming = state.cas.find((c) => c.status === 'incoming')
  const {incomingCa, ...rest} = listed
  const own =
    signed.descriptor.change.kind === 'rotate-member-ca' &&
    incoming !== undefined &&
    incomingCa?.caFingerprint === incoming.id &&
    canonicalJson(rest) === canonicalJson(fed.self)
  if (!own) {
    throw new UserError(`version ${signed.descriptor.version} lists ${listed.organization} with another CA or block than this home's`, {
      fix: 'do not use it; tell the other organizations',
    })
  }
  return {round: 1, caFingerprint: incoming.id, previousCaFingerprint: fed.self.caFingerprint}
}

/**
 * The code a member's admin and the approving members compare by phone for a CA rotation: the membership code of the
 * member's entry with the new CA, over the digest of the version the rotation extends.
 */
export function rotationCode(member: Pick<Member, 'organization' | 'slug' | 'block' | 'access'>, caFingerprint: string, baseDigest: string): string {
  return membershipCode({...member, caFingerprint}, baseDigest)
}

/** Makes `signed`, a version of this home's own making with enough approvals, the current one; `self` follows it. */
function adoptOwn(state: NetworkState, signed: SignedDescriptor): void {
  const fed = state.federation!
  fed.current = signed
  fed.self = structuredClone(signed.descriptor.members.find((m) => m.slug === fed.self.slug)!)
}
