/**
 * What an approver of a federated descriptor version is shown before signing (`tbmesh federation approve`): the
 * summary `approveChange` in `federation.ts` makes of the change, and its lines.
 */

import type {DescriptorChange, Member} from '../home/types.js'

/** What an approver is shown before signing (see `approveChange`'s `confirm` in `federation.ts`, and {@link describeChange}). */
export interface ChangeSummary {
  version: number
  change: DescriptorChange
  /** The new member (an `add-member` change), or the member rotating its CA (a `rotate-member-ca` change). */
  member?: Member
  /**
   * For an `add-role-node` change: the node every member's nodes will trust as a lighthouse and/or relay (its overlay
   * IP, and the underlay endpoint they will send to) and/or as the origin, where their TruBudget registers.
   */
  roleNode?: {organization: string; overlayIp: string; endpoint?: string; lighthouse: boolean; relay: boolean; origin: boolean}
  verificationCode?: string
  approvedBy: string[]
  needed: number
}

/**
 * The lines an approver reads before signing: everything the change does (the new member's name, slug, block, access
 * and CA fingerprint with the verification code; a member's current and new CA fingerprints; or the new lighthouse's or relay's overlay IP,
 * endpoint and organization, and the origin's), and the approvals so far. Organization names come from files other organizations made: print them with
 * `safeLine` (the command's confirmation does).
 */
export function describeChange(s: ChangeSummary): string[] {
  const lines: string[] = []
  if (s.member && s.change.kind === 'rotate-member-ca') {
    lines.push(
      `Version ${s.version}: ${JSON.stringify(s.member.organization)} (${s.member.slug}) rotates its CA`,
      `  current CA: ${s.member.caFingerprint}`,
      `  new CA:     ${s.change.caFingerprint}`,
      `Verification code: ${s.verificationCode}`,
    )
  } else if (s.member) {
    lines.push(
      `Version ${s.version} admits ${JSON.stringify(s.member.organization)} (${s.member.slug}) with block ${s.member.block} and ${s.member.access} access`,
      `  CA fingerprint: ${s.member.caFingerprint}`,
      `Verification code: ${s.verificationCode}`,
    )
  } else if (s.roleNode) {
    const n = s.roleNode
    const roles = [n.lighthouse && 'lighthouse', n.relay && 'relay', n.origin && 'origin node'].filter(Boolean).join(' and ')
    lines.push(`Version ${s.version} makes ${n.overlayIp} of ${n.organization} the network's ${roles}`)
    if (n.lighthouse) lines.push(`  lighthouse ${n.overlayIp} at endpoint ${n.endpoint}: every node will send its lighthouse queries there`)
    if (n.relay) lines.push(`  relay ${n.overlayIp} at endpoint ${n.endpoint}: nodes that cannot reach each other directly will talk through it`)
    if (n.origin) lines.push(`  origin ${n.overlayIp}: every node's TruBudget joins the chain and registers there`)
  } else lines.push(`Version ${s.version}: ${s.change.kind} by ${s.change.organization}`)
  lines.push(`Approved so far by: ${s.approvedBy.join(', ') || 'nobody'} (${s.needed} needed)`)
  return lines
}

