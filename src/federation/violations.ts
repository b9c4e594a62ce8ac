/**
 * Violation reports between members of a federated network: evidence from a node's `tbmesh up` (a certificate holding
 * addresses outside the block of the member whose CA issued it) turned into a report signed by the reporting member's
 * CA ({@link exportViolationReport}), which the other members check against their descriptor and blocklist on their
 * nodes with the next update ({@link importViolationReport}).
 *
 * Unlike a revocation list, which only the issuing member may publish about its own certificates, a violation is
 * self-evident: the certificate, the issuer's CA and the issuer's block in the descriptor prove it. So any member may
 * report any member's certificate, and an importer needs to trust nothing but the descriptor: a report whose
 * certificate lies inside its issuer's block is refused, so a report cannot block a well-behaved node.
 */

import {rm} from 'node:fs/promises'
import path from 'node:path'

import {markForUpdate} from '../ca/rounds.js'
import {UserError} from '../errors.js'
import type {Home} from '../home/home.js'
import type {NetworkDescriptor, NetworkState, ReportedViolation, SignedViolationReport, ViolationReport} from '../home/types.js'
import {writeNewFile} from '../lib/files.js'
import {outsideBlock} from '../lib/ip.js'
import {violationReportMessage} from '../lib/messages.js'
import {isIsoTime, SHA256_HEX} from '../lib/text.js'
import {certificateFromPem, checkSignature, ed25519Sign, ed25519Verify, fingerprint} from '../nebula/index.js'
import {checkEvidence} from '../runtime/evidence.js'
import {FORMAT_VERSION} from './descriptor.js'
import {readJson, requireFederation, requireMember} from './guards.js'

/** `type` of a violation report. */
export const VIOLATION_REPORT_TYPE = 'tbmesh-violation-report'

/** A certificate proven to hold addresses outside its issuer's block. */
export interface ProvenViolation {
  fingerprint: string
  /** The issuing member's slug and block. */
  issuer: string
  block: string
  /** What of the certificate lies outside the block. */
  outside: string[]
}

/**
 * Checks that `pem` is a host certificate issued and signed by the CA of a member of `d`, holding an address, network
 * or unsafe network outside that member's block. Returns the proof, or why it is none (text).
 */
export function proveViolation(pem: string, d: NetworkDescriptor): ProvenViolation | string {
  let cert
  try {
    cert = certificateFromPem(pem)
  } catch (error) {
    return `a certificate does not parse (${(error as Error).message})`
  }
  const name = JSON.stringify(cert.details.name)
  if (cert.details.isCA) return `${name} is a CA certificate`
  const member = d.members.find((m) => m.caFingerprint === cert.details.issuer)
  if (!member) return `${name} was not issued by a member's CA`
  if (!checkSignature(cert, certificateFromPem(member.caCertificate).details.publicKey)) return `${name} does not carry a valid signature of ${member.organization}'s CA`
  const outside = outsideBlock(member.block, cert.details.ips, cert.details.subnets)
  if (outside.length === 0) return `${name} lies inside the block ${member.block} of its issuer ${member.organization}: no violation`
  return {fingerprint: fingerprint(cert), issuer: member.slug, block: member.block, outside}
}

/** What `tbmesh federation report` reports. */
export interface ExportViolationReportResult {
  path: string
  /** Each certificate reported: fingerprint, issuing member, what lies outside its block. */
  violations: ProvenViolation[]
  /** This home's nodes that need an update to blocklist them too (`tbmesh export-update --all`). */
  nodesToUpdate: string[]
}

/**
 * Writes a violation report to `out` (refused when it exists, unless `force`), signed with this member's CA key
 * (`caKey`), from evidence records (`DIR/evidence/*.json` of this organization's nodes): each must carry the
 * certificate and prove a violation against the current descriptor ({@link proveViolation}). The certificates also
 * join this home's own blocklist. Throws UserError naming the first file that does not.
 */
export async function exportViolationReport(home: Home, caKey: Buffer, evidenceFiles: string[], out: string, opts: {force?: boolean} = {}): Promise<ExportViolationReportResult> {
  if (evidenceFiles.length === 0) throw new UserError('name at least one evidence record', {exit: 2, fix: 'e.g. /etc/tbmesh/evidence/*.json'})
  const records = await Promise.all(
    evidenceFiles.map(async (file) => {
      const checked = checkEvidence(await readJson(file, 'evidence record'))
      if (typeof checked === 'string') throw new UserError(`${file}: ${checked}`, {fix: 'give the records `tbmesh up` wrote to DIR/evidence/'})
      if (!checked.certificate) throw new UserError(`${file} carries no certificate (Nebula reported one it could not rebuild)`, {fix: 'report it to the other members by hand'})
      return {file, record: checked}
    }),
  )
  let written = false
  return home
    .transaction(async ({state}) => {
      const fed = requireMember(state, 'report violations')
      const violations: ReportedViolation[] = []
      const proven: ProvenViolation[] = []
      for (const {file, record} of records) {
        if (record.network !== state.network.name) throw new UserError(`${file} is from network ${JSON.stringify(record.network)}, not ${JSON.stringify(state.network.name)}`, {fix: 'report it in its own network'})
        const proof = proveViolation(record.certificate!, fed.current.descriptor)
        if (typeof proof === 'string') throw new UserError(`${file}: ${proof}`, {fix: 'report only certificates outside their issuer\'s block'})
        if (proven.some((p) => p.fingerprint === proof.fingerprint)) continue
        proven.push(proof)
        violations.push({certificate: record.certificate!, observedAt: record.observedAt, observer: record.observer?.node ?? '', addresses: record.addresses, ...(record.underlay ? {underlay: record.underlay} : {})})
      }
      const report: ViolationReport = {
        type: VIOLATION_REPORT_TYPE,
        formatVersion: FORMAT_VERSION,
        network: state.network.name,
        organization: fed.self.slug,
        caFingerprint: fed.self.caFingerprint,
        createdAt: new Date().toISOString(),
        violations,
      }
      const signed: SignedViolationReport = {report, signature: ed25519Sign(caKey, violationReportMessage(report)).toString('base64')}
      await writeNewFile(out, `${JSON.stringify(signed, null, 2)}\n`, {force: opts.force, mode: 0o644, what: 'violation report'})
      written = true
      return {path: path.resolve(out), violations: proven, nodesToUpdate: record(state, fed.self.slug, violations, proven)}
    })
    .catch(async (error: unknown) => {
      if (written) await rm(out, {force: true}).catch(() => {})
      throw error
    })
}

/** What `tbmesh federation import` reports for a violation report. */
export interface ImportViolationReportResult {
  kind: 'violations'
  /** The reporting member (slug). */
  organization: string
  violations: ProvenViolation[]
  /** Fingerprints this home did not hold yet. */
  added: string[]
  nodesToUpdate: string[]
}

/**
 * Checks a violation report against descriptor `d`: published by a member with its current CA and signed by it, and
 * every certificate a proven violation. Throws UserError naming `what`.
 */
export function checkViolationReport(value: unknown, d: NetworkDescriptor, what: string): {report: ViolationReport; proven: ProvenViolation[]} {
  const bad = (problem: string): never => {
    throw new UserError(`${what}: ${problem}`, {fix: 'refuse it and tell the organization that sent it'})
  }
  const signed = value as SignedViolationReport
  if (typeof signed !== 'object' || signed === null || typeof signed.report !== 'object' || signed.report === null || typeof signed.signature !== 'string') bad('not a tbmesh violation report')
  const r = signed.report
  if (r.type !== VIOLATION_REPORT_TYPE || r.formatVersion !== FORMAT_VERSION) bad('not a tbmesh violation report of a supported format')
  if (r.network !== d.network) bad(`it is for network ${JSON.stringify(r.network)}, not ${JSON.stringify(d.network)}`)
  const reporter = d.members.find((m) => m.slug === r.organization)
  if (!reporter) bad(`${JSON.stringify(r.organization)} is not a member of version ${d.version}`)
  if (reporter!.caFingerprint !== r.caFingerprint || typeof r.caFingerprint !== 'string' || !SHA256_HEX.test(r.caFingerprint)) bad(`it names another CA than ${reporter!.organization}'s`)
  const ca = certificateFromPem(reporter!.caCertificate)
  if (!ed25519Verify(ca.details.publicKey, violationReportMessage(r), Buffer.from(signed.signature, 'base64'))) bad('its signature does not verify (the file was changed after it was signed)')
  if (!Array.isArray(r.violations) || r.violations.length === 0) bad('it reports nothing')
  const proven: ProvenViolation[] = []
  for (const v of r.violations) {
    if (typeof v !== 'object' || v === null || typeof v.certificate !== 'string' || !isIsoTime(v.observedAt) || !Array.isArray(v.addresses)) bad('a violation is malformed')
    const proof = proveViolation(v.certificate, d)
    if (typeof proof === 'string') bad(proof)
    proven.push(proof as ProvenViolation)
  }
  return {report: r, proven}
}

/**
 * Imports another member's violation report (checked by {@link checkViolationReport} against the current descriptor):
 * its certificates join this home's blocklist; when any is new, every node not revoked is marked for an update.
 * Importing a report twice changes nothing. Throws UserError.
 */
export async function importViolationReport(home: Home, file: string): Promise<ImportViolationReportResult> {
  const value = await readJson(file, 'violation report')
  return home.transaction(async ({state}) => {
    const fed = requireFederation(state)
    const {report, proven} = checkViolationReport(value, fed.current.descriptor, file)
    if (report.organization === fed.self.slug) throw new UserError(`${file} is ${fed.self.organization}'s own report`, {fix: 'send it to the other members; your nodes got its certificates when you made it'})
    const before = new Set(Object.keys(fed.violations ?? {}))
    const nodesToUpdate = record(state, report.organization, report.violations, proven)
    return {kind: 'violations' as const, organization: report.organization, violations: proven, added: proven.map((p) => p.fingerprint).filter((fp) => !before.has(fp)), nodesToUpdate}
  })
}

/** Adds the proven violations to the state's blocklist; marks the nodes for an update when any is new. */
function record(state: NetworkState, reportedBy: string, violations: ReportedViolation[], proven: ProvenViolation[]): string[] {
  const fed = requireFederation(state)
  const held = {...fed.violations}
  let added = false
  for (const [i, p] of proven.entries()) {
    if (Object.hasOwn(held, p.fingerprint)) continue
    held[p.fingerprint] = {issuer: p.issuer, reportedBy, observedAt: violations[i].observedAt}
    added = true
  }
  fed.violations = held
  return added ? markForUpdate(state) : []
}
