/**
 * Certificate lifecycle on the CA side: what is issued and how long it lives (list, expiry warnings), renewal,
 * revocation (the network's blocklist) and CA rotation with an overlap period. tbmesh has no server: every change
 * reaches nodes as a signed update bundle (`export.ts`).
 */

import {UsageError, UserError} from '../errors.js'
import type {Home, Transaction} from '../home/home.js'
import {blocklist, currentCertificate, currentCertificates, findNode, isRelay, trustedCas} from '../home/queries.js'
import type {CaRecord, CertificateRecord, NetworkState, NodeRecord} from '../home/types.js'
import {EXPIRY_WARNING_SECONDS, iso} from '../lib/duration.js'
import {endorsementMessage} from '../lib/messages.js'
import {type Argon2Parameters, caPrivateKeyMatchesCertificate, certificateFromPem, ed25519Sign} from '../nebula/index.js'
import {activeIssuer, createCa, DEFAULTS, hostValidity, issueHostCertificate, type Issuer} from './ca.js'

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
  /** True while a CA rotation is under way and this node has not yet been sent an update with its new certificate. */
  updatePending: boolean
}

/** What `tbmesh list` reports. */
export interface ListResult {
  network: string
  cas: Array<Pick<CaRecord, 'id' | 'name' | 'notAfter' | 'status'> & {daysLeft: number}>
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
      updatePending: (node.updatePending ?? false) && !node.revoked,
    })
  }
  return {
    network: state.network.name,
    cas: trustedCas(state).map((ca) => ({id: ca.id, name: ca.name, notAfter: ca.notAfter, status: ca.status, daysLeft: Math.floor((Date.parse(ca.notAfter) / 1000 - now) / 86_400)})),
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
    for (const other of state.nodes) if (!other.revoked) other.updatePending = true
    return {
      name,
      fingerprints: state.certificates.filter((c) => c.name === name).map((c) => c.fingerprint),
      blocklistSize: blocklist(state).length,
    }
  })
}

/** What `tbmesh rotate-ca` reports. Times ISO 8601. */
export interface RotateCaResult {
  /** `started`: new CA active, old one still trusted; `finished`: old CA dropped from the trust bundle. */
  phase: 'started' | 'finished'
  caFingerprint: string
  previousCaFingerprint: string
  caNotAfter: string
  /** Certificates re-issued by the new CA (started) — none when finishing. */
  reissued: ReissuedCertificate[]
  keyEncrypted: boolean
}

/** Throws UserError in a federated network's home: its CA is listed in the descriptor, which tbmesh does not yet rotate. */
export function refuseFederatedRotation(state: NetworkState): void {
  if (state.federation) {
    throw new UserError("a federated network's member CAs are listed in its descriptor; tbmesh cannot rotate one yet", {
      fix: 'keep the current CA (it lives ten years by default)',
    })
  }
}

/**
 * Starts a CA rotation: creates a new CA (same name and IP constraint, `durationSeconds`, key encrypted with
 * `passphrase` unless null), has the current CA (`caKey`) vouch for it, keeps the current CA in the trust bundle as
 * `retiring`, and re-issues every node's certificate with the new CA (same key, IP, groups and not-after, capped by
 * the new CA). Throws UserError while another rotation is under way, and in a federated network.
 */
export async function rotateCa(
  home: Home,
  caKey: Buffer,
  opts: {passphrase: Buffer | null; durationSeconds?: number; argon2?: Argon2Parameters; now?: number},
): Promise<RotateCaResult> {
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  refuseFederatedRotation(home.state)
  if (home.state.cas.some((c) => c.status === 'retiring')) {
    throw new UserError('a CA rotation is already under way', {fix: 'ship its updates, then run `tbmesh rotate-ca --finish`'})
  }
  const old = await activeIssuer(home, caKey)
  if (!caPrivateKeyMatchesCertificate(caKey, old.certificate)) throw new Error('rotateCa: caKey is not the active CA key')
  const {name, ips, subnets, groups} = old.certificate.details
  const ca = await createCa({
    name,
    ips,
    subnets,
    groups,
    organization: old.record.organization,
    durationSeconds: opts.durationSeconds ?? DEFAULTS.caDurationSeconds,
    passphrase: opts.passphrase,
    argon2: opts.argon2,
    now,
  })
  const id = ca.record.id
  const next: CaRecord = {...ca.record, endorsement: {by: old.record.id, signature: ed25519Sign(caKey, endorsementMessage(id)).toString('base64')}}
  const issuer: Issuer = {record: next, certificate: ca.certificate, key: ca.privateKey}
  return home.transaction(async (tx) => {
    const {state} = tx
    const retiring = state.cas.find((c) => c.status === 'retiring')
    if (retiring) throw new UserError('a CA rotation is already under way', {fix: 'ship its updates, then run `tbmesh rotate-ca --finish`'})
    await tx.writeCa(id, ca.pem, ca.keyPem)
    state.cas.find((c) => c.id === old.record.id)!.status = 'retiring'
    state.cas.push(next)
    const reissued: ReissuedCertificate[] = []
    const newest = currentCertificates(state)
    for (const node of state.nodes) {
      if (node.revoked) continue
      // Same not-after as today's certificate; one that has already expired gets a fresh default lifetime.
      const today = Date.parse(newest.get(node.name)!.notAfter) / 1000
      const current = today > now ? today : now + DEFAULTS.hostDurationSeconds
      reissued.push(await reissue(tx, node, issuer, now, Math.min(current, ca.certificate.details.notAfter - 1)))
    }
    return {phase: 'started', caFingerprint: id, previousCaFingerprint: old.record.id, caNotAfter: next.notAfter, reissued, keyEncrypted: next.encrypted}
  })
}

/**
 * Finishes a CA rotation: the retiring CA leaves the trust bundle (certificates it signed are refused once nodes
 * install the next updates). Throws UserError when no rotation is under way.
 */
export async function finishCaRotation(home: Home): Promise<RotateCaResult> {
  return home.transaction(async (tx) => {
    const {state} = tx
    const retiring = state.cas.find((c) => c.status === 'retiring')
    if (!retiring) throw new UserError('no CA rotation is under way', {fix: 'start one with `tbmesh rotate-ca`'})
    retiring.status = 'retired'
    for (const node of state.nodes) if (!node.revoked) node.updatePending = true
    const active = state.cas.find((c) => c.status === 'active')!
    return {phase: 'finished', caFingerprint: active.id, previousCaFingerprint: retiring.id, caNotAfter: active.notAfter, reissued: [], keyEncrypted: active.encrypted}
  })
}

/**
 * Re-signs `node`'s current certificate (same public key, IPs, subnets, groups) with `ca` until `notAfter`, marks the
 * old ledger row superseded, and records the new one; the node then needs an update bundle.
 */
async function reissue(tx: Transaction, node: NodeRecord, issuer: Issuer, now: number, notAfter: number): Promise<ReissuedCertificate> {
  const row = currentCertificate(tx.state, node.name)!
  const old = certificateFromPem(await tx.readCertificate(row.fingerprint))
  // Strictly after the superseded certificate's not-before: re-signing the same details within the second they were
  // signed would otherwise yield the very same certificate (Ed25519 is deterministic), i.e. a duplicate fingerprint.
  const notBefore = Math.max(hostValidity(issuer.certificate, now).notBefore, Date.parse(row.notBefore) / 1000 + 1)
  const {name, ips, subnets, groups, publicKey} = old.details
  const {fingerprint: fp} = issueHostCertificate(tx, issuer, {name, ips, subnets, groups, publicKey, notBefore, notAfter})
  const issuedAt = new Date(Math.max(Date.now(), Date.parse(row.issuedAt) + 1)).toISOString()
  row.supersededAt = issuedAt
  tx.state.certificates.push({...row, fingerprint: fp, notBefore: iso(notBefore), notAfter: iso(notAfter), issuer: issuer.record.id, issuedAt, supersededAt: undefined})
  node.updatePending = true
  return {name: node.name, fingerprint: fp, previous: row.fingerprint, issuer: issuer.record.id, notAfter: iso(notAfter)}
}
