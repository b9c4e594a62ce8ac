/**
 * Certificate lifecycle on the CA side: what is issued and how long it lives (list, expiry warnings), renewal and
 * revocation (the network's blocklist); CA rotation is `rotation.ts`. tbmesh has no server: every change reaches nodes
 * as a signed update bundle (`export.ts`).
 */

import {UsageError, UserError} from '../errors.js'
import type {Home, Transaction} from '../home/home.js'
import {blocklist, currentCertificate, currentCertificates, findNode, isRelay, trustedCas} from '../home/queries.js'
import type {CaRecord, CertificateRecord, NetworkState, NodeRecord, RotationState} from '../home/types.js'
import {EXPIRY_WARNING_SECONDS, iso} from '../lib/duration.js'
import {certificateFromPem, type CertificateVersion, type Curve} from '../nebula/index.js'
import {activeIssuer, hostValidity, issueHostCertificate, type Issuer} from './ca.js'
import {markForUpdate, pendingInstalls} from './rounds.js'

/** Status of a node's current certificate, as `tbmesh list` shows it. */
export type CertificateStatus = 'valid' | 'expiring' | 'expired' | 'revoked' | 'superseded'

/** One row of `tbmesh list`. Times ISO 8601; `daysLeft` whole days until not-after (negative once expired). */
export interface NodeListing {
  name: string
  /** Organization name. */
  organization: string
  overlayIp: string
  roles: string[]
  access: string
  /** Full fingerprint of the current certificate; `shortFingerprint` is its first 12 hex digits. */
  fingerprint: string
  shortFingerprint: string
  notAfter: string
  daysLeft: number
  status: CertificateStatus
  /** Fingerprint of the CA that issued the current certificate. */
  issuer: string
  /** Format and curve of the current certificate. */
  version: CertificateVersion
  curve: Curve
  /** True while the node has not yet been sent an update with its latest changes (rotation, renewal, revocations). */
  updatePending: boolean
  /** Sequence number of the last bundle exported to the node (0: none). */
  sequence: number
  /** The highest sequence its admin reported installed (`tbmesh confirm-install`; 0: none). */
  installed: number
  /** True while the current CA rotation round waits for this node's install (see `confirm-install`). */
  roundPending: boolean
}

/** What `tbmesh list` reports. */
export interface ListResult {
  network: string
  cas: Array<Pick<CaRecord, 'id' | 'name' | 'notAfter' | 'status'> & {daysLeft: number; version: CertificateVersion; curve: Curve}>
  /** The CA rotation under way or the last one, and the nodes its current round still waits for. */
  rotation: (RotationState & {waitingFor: string[]}) | null
  nodes: NodeListing[]
}

/**
 * One row per node (filtered by organization name or slug when `org` is given), with the status of its current
 * certificate at `now` (Unix seconds).
 */
export function listNodes(state: NetworkState, opts: {org?: string; now?: number} = {}): ListResult {
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const orgs = new Map(state.organizations.map((o) => [o.slug, o]))
  const wanted = opts.org?.toLowerCase()
  const nodes: NodeListing[] = []
  const newest = currentCertificates(state)
  const waiting = new Set(pendingInstalls(state).map((n) => n.name))
  for (const node of state.nodes) {
    const org = orgs.get(node.organization)!
    if (wanted !== undefined && org.slug !== wanted && org.name.toLowerCase() !== wanted) continue
    const cert = newest.get(node.name)
    if (!cert) continue
    const notAfter = Date.parse(cert.notAfter) / 1000
    nodes.push({
      name: node.name,
      organization: org.name,
      overlayIp: node.overlayIp,
      roles: isRelay(node) ? [...cert.roles, 'relay'] : cert.roles,
      access: node.access,
      fingerprint: cert.fingerprint,
      shortFingerprint: cert.fingerprint.slice(0, 12),
      notAfter: cert.notAfter,
      daysLeft: Math.floor((notAfter - now) / 86_400),
      status: certificateStatus(node, cert, now),
      issuer: cert.issuer,
      version: cert.version ?? 1,
      curve: cert.curve ?? 'CURVE25519',
      updatePending: (node.updatePending ?? false) && !node.revoked,
      sequence: node.sequence ?? 0,
      installed: node.installed ?? 0,
      roundPending: waiting.has(node.name),
    })
  }
  const daysLeft = (ca: CaRecord): number => Math.floor((Date.parse(ca.notAfter) / 1000 - now) / 86_400)
  return {
    network: state.network.name,
    cas: trustedCas(state).map((ca) => ({id: ca.id, name: ca.name, notAfter: ca.notAfter, status: ca.status, daysLeft: daysLeft(ca), version: ca.version ?? 1, curve: ca.curve ?? 'CURVE25519'})),
    rotation: state.rotation ? {...state.rotation, waitingFor: [...waiting]} : null,
    nodes,
  }
}

/** The status of a certificate row for `node` at `now` (Unix seconds). */
export function certificateStatus(node: NodeRecord, cert: CertificateRecord, now: number): CertificateStatus {
  if (node.revoked) return 'revoked'
  if (cert.supersededAt) return 'superseded'
  const notAfter = Date.parse(cert.notAfter) / 1000
  if (notAfter <= now) return 'expired'
  if (notAfter - now <= EXPIRY_WARNING_SECONDS) return 'expiring'
  return 'valid'
}

/**
 * The one-line warnings every command prints: a CA in the trust bundle, or a current host certificate of a node that is
 * not revoked, that expires within 30 days (or has expired). At most one line per CA and one summary line for hosts.
 */
export function expiryWarnings(state: NetworkState, now = Math.floor(Date.now() / 1000)): string[] {
  const warnings: string[] = []
  for (const ca of trustedCas(state)) {
    const left = Date.parse(ca.notAfter) / 1000 - now
    if (left <= 0) warnings.push(`the CA ${ca.id.slice(0, 12)} expired on ${ca.notAfter}: every tunnel fails; run \`tbmesh rotate-ca\``)
    else if (left <= EXPIRY_WARNING_SECONDS) warnings.push(`the CA ${ca.id.slice(0, 12)} expires on ${ca.notAfter}: run \`tbmesh rotate-ca\` now`)
  }
  const expiring: string[] = []
  const newest = currentCertificates(state)
  for (const node of state.nodes) {
    if (node.revoked) continue
    const cert = newest.get(node.name)
    if (cert && Date.parse(cert.notAfter) / 1000 - now <= EXPIRY_WARNING_SECONDS) expiring.push(node.name)
  }
  if (expiring.length > 0) {
    const names = expiring.length > 5 ? `${expiring.slice(0, 5).join(', ')} and ${expiring.length - 5} more` : expiring.join(', ')
    warnings.push(`certificates of ${names} expire within 30 days: run \`tbmesh renew --expiring-within 30d\` and \`tbmesh export-update\``)
  }
  return warnings
}

// ---------------------------------------------------------------------------------------------------------------------
// Renewal, revocation, rotation

/** One re-issued certificate. */
export interface ReissuedCertificate {
  name: string
  fingerprint: string
  /** Fingerprint of the certificate it supersedes. */
  previous: string
  issuer: string
  notAfter: string
}

/** What `tbmesh renew` reports. */
export interface RenewResult {
  renewed: ReissuedCertificate[]
}

/**
 * Re-signs the current certificates of `names` (or of every node not revoked whose certificate expires within
 * `expiringWithinSeconds`) with the active CA: same public key, IP and groups, a new validity of `durationSeconds`
 * (default one year), never past the CA. The old rows are marked superseded. Throws UserError for unknown or revoked
 * nodes and UsageError for a lifetime past the CA's.
 */
export async function renew(
  home: Home,
  caKey: Buffer,
  opts: {names?: string[]; expiringWithinSeconds?: number; durationSeconds?: number; now?: number},
): Promise<RenewResult> {
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const issuer = await activeIssuer(home, caKey)
  const {notAfter} = hostValidity(issuer.certificate, now, opts.durationSeconds)
  return home.transaction(async (tx) => {
    const {state} = tx
    let targets: NodeRecord[]
    if (opts.names && opts.names.length > 0) {
      targets = [...new Set(opts.names)].map((name) => findNode(state, name))
      const revoked = targets.find((n) => n.revoked)
      if (revoked) throw new UserError(`node ${revoked.name} is revoked`, {fix: 'add a new node instead'})
    } else {
      const horizon = now + (opts.expiringWithinSeconds ?? EXPIRY_WARNING_SECONDS)
      const newest = currentCertificates(state)
      targets = state.nodes.filter((n) => !n.revoked && Date.parse(newest.get(n.name)!.notAfter) / 1000 <= horizon)
    }
    const renewed: ReissuedCertificate[] = []
    for (const node of targets) renewed.push(await reissue(tx, node, issuer, now, notAfter))
    return {renewed}
  })
}

/** What `tbmesh revoke` reports. */
export interface RevokeResult {
  name: string
  /** Every certificate fingerprint ever issued to the node, now in the blocklist. */
  fingerprints: string[]
  /** Size of the network's blocklist after the revocation. */
  blocklistSize: number
}

/**
 * Revokes a node: every certificate ever issued to it goes into the network's blocklist (rendered into every node's
 * `pki.blocklist` by the next update bundles); its overlay IP is never handed out again. Throws UserError for an
 * unknown or already revoked node.
 */
export async function revoke(home: Home, name: string, opts: {reason?: string; now?: number} = {}): Promise<RevokeResult> {
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  if (opts.reason !== undefined && (opts.reason.length > 500 || /[\u0000-\u001F\u007F]/.test(opts.reason))) {
    throw new UsageError('--reason must be one line of at most 500 characters', {fix: 'shorten it'})
  }
  return home.transaction(async (tx) => {
    const {state} = tx
    const node = findNode(state, name)
    if (node.revoked) throw new UserError(`node ${name} was already revoked on ${node.revoked.at}`, {fix: 'nothing to do'})
    node.revoked = {at: iso(now), ...(opts.reason ? {reason: opts.reason} : {})}
    markForUpdate(state)
    return {
      name,
      fingerprints: state.certificates.filter((c) => c.name === name).map((c) => c.fingerprint),
      blocklistSize: blocklist(state).length,
    }
  })
}

/**
 * Re-signs `node`'s current certificate (same public key, IPs, subnets, groups) with `issuer`, in the issuer's format
 * version, until `notAfter`, marks the old ledger row superseded, and records the new one; the node then needs an
 * update bundle.
 */
export async function reissue(tx: Transaction, node: NodeRecord, issuer: Issuer, now: number, notAfter: number): Promise<ReissuedCertificate> {
  const row = currentCertificate(tx.state, node.name)!
  const old = certificateFromPem(await tx.readCertificate(row.fingerprint))
  // Strictly after the superseded certificate's not-before: re-signing the same details within the second they were
  // signed would otherwise yield the very same certificate (Ed25519 is deterministic), i.e. a duplicate fingerprint.
  const notBefore = Math.max(hostValidity(issuer.certificate, now).notBefore, Date.parse(row.notBefore) / 1000 + 1)
  const {name, ips, subnets, groups, publicKey} = old.details
  const {fingerprint: fp, format} = issueHostCertificate(tx, issuer, {name, ips, subnets, groups, publicKey, notBefore, notAfter})
  const issuedAt = new Date(Math.max(Date.now(), Date.parse(row.issuedAt) + 1)).toISOString()
  row.supersededAt = issuedAt
  const {otherFingerprint: _, ...kept} = row
  tx.state.certificates.push({...kept, fingerprint: fp, notBefore: iso(notBefore), notAfter: iso(notAfter), issuer: issuer.record.id, ...format, issuedAt, supersededAt: undefined})
  node.updatePending = true
  return {name: node.name, fingerprint: fp, previous: row.fingerprint, issuer: issuer.record.id, notAfter: iso(notAfter)}
}
