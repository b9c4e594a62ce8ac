/**
 * A federated installation's `nebula/members.json` (written by `render/members-json.ts`): its checks, shared by
 * `install` (which refuses a bundle whose members file does not fit its trust bundle) and `tbmesh up` (which reads the
 * installed one to decide, for every peer, whether its address lies in the block of the member whose CA signed it).
 */

import {formatCidr, outsideBlock, overlaps, parseCidr} from '../lib/ip.js'
import {DNS_LABEL, SHA256_HEX} from '../lib/text.js'
import {fingerprint, type NebulaCertificate} from '../nebula/index.js'
import {MEMBERS_FILE_TYPE, type MembersFile} from '../render/members-json.js'

/** Path of the members file inside a bundle and an installation. */
export const MEMBERS_PATH = 'nebula/members.json'

/** True when a trust bundle is a federated network's: some CA is constrained to an `org:` group (single-CA CAs are not). */
export function isFederatedTrust(cas: readonly NebulaCertificate[]): boolean {
  return cas.some((ca) => ca.details.groups.some((g) => g.startsWith('org:')))
}

/**
 * Parses and checks a members file against what it must agree with: the network name, the trust bundle `cas` (exactly
 * the members' CAs), and the node's own certificates `hosts` (one, or in a rotation round two for one key), issued by
 * member CA `signer`'s member and holding only addresses of that member's block. Blocks are canonical IPv4 CIDRs inside `cidr`, pairwise disjoint; CAs unique; a slug twice only
 * with the same name and block (a member rotating its CA).
 * Returns the file, or the first problem as text (the caller words the refusal).
 */
export function checkMembersFile(
  text: string,
  expect: {network: string; cas: readonly NebulaCertificate[]; hosts?: readonly NebulaCertificate[]; signer?: string},
): MembersFile | string {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return `${MEMBERS_PATH} is not JSON`
  }
  const f = value as MembersFile
  if (typeof f !== 'object' || f === null || f.type !== MEMBERS_FILE_TYPE || f.formatVersion !== 1 || !Array.isArray(f.members)) {
    return `${MEMBERS_PATH} is not a tbmesh members file of a supported format`
  }
  if (f.network !== expect.network) return `${MEMBERS_PATH} is for network ${JSON.stringify(f.network)}, not ${JSON.stringify(expect.network)}`
  let overlay
  try {
    overlay = parseCidr(String(f.cidr), 'cidr')
  } catch {
    return `${MEMBERS_PATH} has no valid "cidr"`
  }
  const blocks: Array<ReturnType<typeof parseCidr>> = []
  // A member rotating its CA has two entries: same organization, slug and block, one per CA.
  const bySlug = new Map<string, {organization: string; block: string}>()
  const cas = new Set<string>()
  for (const m of f.members) {
    if (typeof m !== 'object' || m === null || typeof m.organization !== 'string' || typeof m.slug !== 'string' || !DNS_LABEL.test(m.slug)) {
      return `${MEMBERS_PATH} lists a member without a valid organization and slug`
    }
    if (typeof m.caFingerprint !== 'string' || !SHA256_HEX.test(m.caFingerprint)) return `${MEMBERS_PATH}: member ${m.slug} has no valid CA fingerprint`
    let block
    try {
      block = parseCidr(String(m.block), `block of ${m.slug}`)
    } catch {
      return `${MEMBERS_PATH}: member ${m.slug} has no valid block`
    }
    if (formatCidr(block) !== m.block || block.prefix < overlay.prefix || outsideBlock(f.cidr, [], [m.block]).length > 0) {
      return `${MEMBERS_PATH}: the block ${m.block} of ${m.slug} does not lie in ${f.cidr}`
    }
    const seen = bySlug.get(m.slug)
    if (seen && (seen.organization !== m.organization || seen.block !== m.block)) return `${MEMBERS_PATH} lists ${m.slug} twice, with different names or blocks`
    if (!seen && blocks.some((b) => overlaps(b, block))) return `${MEMBERS_PATH}: the block ${m.block} of ${m.slug} overlaps another member's`
    if (cas.has(m.caFingerprint)) return `${MEMBERS_PATH} lists the CA ${m.caFingerprint} twice`
    if (!seen) {
      blocks.push(block)
      bySlug.set(m.slug, {organization: m.organization, block: m.block})
    }
    cas.add(m.caFingerprint)
  }
  const trusted = new Set(expect.cas.map((ca) => fingerprint(ca)))
  for (const fp of trusted) if (!cas.has(fp)) return `the trust bundle holds CA ${fp}, which ${MEMBERS_PATH} gives no member`
  for (const fp of cas) if (!trusted.has(fp)) return `${MEMBERS_PATH} names CA ${fp}, which the trust bundle does not hold`
  if (expect.hosts && expect.hosts.length > 0 && expect.signer !== undefined) {
    const own = f.members.find((m) => m.caFingerprint === expect.signer)
    if (!own) return `the CA ${expect.signer} that signed the bundle is no member in ${MEMBERS_PATH}`
    for (const host of expect.hosts) {
      const outside = outsideBlock(own.block, host.details.ips, host.details.subnets)
      if (outside.length > 0) return `the host certificate holds ${outside.join(', ')}, outside its organization's block ${own.block}`
    }
  }
  return f
}
