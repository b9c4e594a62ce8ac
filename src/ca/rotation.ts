/**
 * CA rotation in three rounds, each shipped with `export-update --all` and installed on every node before the next
 * one starts, so that no pair of nodes loses connectivity whatever the install order:
 *
 * 1. {@link rotateCa}: a new CA (same name and limits; the same or another certificate version, the same curve) joins
 *    the trust bundle as `incoming`; nodes keep presenting their certificates. Every node then trusts both CAs.
 * 2. {@link switchCa}: the new CA becomes `active` (the old one `retiring`, still trusted) and every node gets a
 *    certificate of it. When the version changes, a node presents both its old and its new certificate (Nebula 1.10+
 *    holds a v1 and a v2 one for the same key) and opens tunnels with the new one (`pki.initiating_version`).
 * 3. {@link finishCaRotation}: the old CA is `retired`, out of the trust bundle; nodes present only the new certificate.
 *
 * Round 1 is the first in which a node trusts the new CA, round 3 the first in which a node stops trusting the old one;
 * in between (round 2) every node trusts both, so whichever certificate a peer presents is accepted. A round refuses
 * to start while nodes have not installed the previous one (`rounds.ts`). Update bundles signed by the new CA carry
 * the old CA's endorsement, so nodes that trust only the old CA's signature accept them.
 *
 * In a federated network a member rotates its own CA: round 1 is a descriptor version (`rotate-member-ca`) that adds
 * the new CA beside the member's current one, approved like any other change (when another version is adopted first,
 * `rotate-ca` proposes the same new CA again against it); round 3 a version
 * (`finish-member-ca-rotation`) that the member approves alone with its new CA (see `federation/member-ca.ts`).
 */

import {rm} from 'node:fs/promises'

import {UserError} from '../errors.js'
import {finishMemberRotation, proposeMemberRotation, type RotationVersion} from '../federation/member-ca.js'
import type {Home} from '../home/home.js'
import {currentCertificates} from '../home/queries.js'
import type {CaRecord, NetworkState} from '../home/types.js'
import {writeNewFile} from '../lib/files.js'
import {endorsementMessage} from '../lib/messages.js'
import {type Argon2Parameters, caPrivateKeyMatchesCertificate, caSign, type CertificateVersion, type Curve} from '../nebula/index.js'
import {activeIssuer, createCa, DEFAULTS, type Issuer} from './ca.js'
import {reissue, type ReissuedCertificate} from './lifecycle.js'
import {requireRoundInstalled, startRound} from './rounds.js'

/** What `tbmesh rotate-ca` reports, for each round. Times ISO 8601. */
export interface RotateCaResult {
  /** `started` (round 1), `switched` (round 2), `finished` (round 3). */
  phase: 'started' | 'switched' | 'finished'
  /** The new CA. */
  caFingerprint: string
  /** The CA it replaces. */
  previousCaFingerprint: string
  caNotAfter: string
  caVersion: CertificateVersion
  caCurve: Curve
  /** Certificates re-issued by the new CA (round 2 only). */
  reissued: ReissuedCertificate[]
  keyEncrypted: boolean
  /** Nodes that had not installed the previous round when `force` started this one. */
  forcedPast: string[]
  /** In a federated network (rounds 1 and 3): the descriptor version this round made. */
  descriptor?: RotationVersion
}

/** Options of {@link rotateCa}. */
export interface RotateCaOptions {
  /** Passphrase for the new CA's key; null stores it unencrypted. */
  passphrase: Buffer | null
  /** New CA lifetime, seconds; default ten years. */
  durationSeconds?: number
  /** Certificate version of the new CA and of the certificates it will issue; default the current CA's. */
  version?: CertificateVersion
  /** Curve of the new CA; must be the current one's (see {@link rotateCa}). */
  curve?: Curve
  argon2?: Argon2Parameters
  /** Start although nodes have not installed the previous round. */
  force?: boolean
  /** Federated: where to write the descriptor version that asks the members to trust the new CA. */
  descriptorOut?: string
  now?: number
}

const rotationUnderWay = (state: NetworkState): CaRecord | undefined => state.cas.find((c) => c.status === 'incoming' || c.status === 'retiring')

/**
 * Round 1: creates the new CA (name, networks and groups of the current one; `version`, default the current one's;
 * lifetime `durationSeconds`; key encrypted with `passphrase` unless null), endorsed by the current CA (`caKey`), and
 * puts it into the trust bundle as `incoming`. Nodes keep their certificates. In a federated home it also makes the
 * descriptor version adding the new CA beside this member's (approved here with the current CA; adopted at once when
 * that approval is enough, otherwise written to `descriptorOut` for the other members to approve).
 * @throws UserError while a rotation is under way, while nodes have not installed the previous round (unless
 *   `force`), for a curve change (Nebula cannot connect nodes of different curves, and every host would need a new
 *   key), and in a federated home that is not a member or has no `descriptorOut` when one is needed
 */
export async function rotateCa(home: Home, caKey: Buffer, opts: RotateCaOptions): Promise<RotateCaResult> {
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const old = await activeIssuer(home, caKey)
  if (!caPrivateKeyMatchesCertificate(caKey, old.certificate)) throw new Error('rotateCa: caKey is not the active CA key')
  const waiting = unproposed(home.state)
  if (waiting) return proposeAgain(home, old, waiting, opts)
  refuseUnderWay(home.state)
  const {name, ips, subnets, groups, curve} = old.certificate.details
  if (opts.curve !== undefined && opts.curve !== curve) {
    throw new UserError(`the CA uses ${curveName(curve)}; a rotation cannot change the curve to ${curveName(opts.curve)}`, {
      fix: 'Nebula connects only nodes of one curve and every node would need a new key: rotate without --curve, or build a new network with `tbmesh init-ca --curve`',
    })
  }
  requireRoundInstalled(home.state, 'start a CA rotation', opts.force)
  const ca = await createCa({
    name, ips, subnets, groups, curve,
    version: opts.version ?? old.certificate.version,
    organization: old.record.organization,
    durationSeconds: opts.durationSeconds ?? DEFAULTS.caDurationSeconds,
    passphrase: opts.passphrase,
    argon2: opts.argon2,
    now,
  })
  const id = ca.record.id
  const incoming: CaRecord = {...ca.record, status: 'incoming', endorsement: {by: old.record.id, signature: caSign(caKey, endorsementMessage(id)).toString('base64')}}
  const written: string[] = []
  return home
    .transaction(async (tx) => {
      const {state} = tx
      refuseUnderWay(state)
      const forcedPast = requireRoundInstalled(state, 'start a CA rotation', opts.force)
      await tx.writeCa(id, ca.pem, ca.keyPem)
      state.cas.push(incoming)
      const descriptor = state.federation ? await propose(state, old, incoming, ca.pem, opts.descriptorOut, written) : undefined
      if (!state.federation) startRound(state, {round: 1, caFingerprint: id, previousCaFingerprint: old.record.id})
      return result('started', incoming, old.record.id, ca.certificate.version, curve, [], forcedPast, descriptor)
    })
    .catch(async (error: unknown) => {
      for (const file of written) await rm(file, {force: true}).catch(() => {})
      throw error
    })
}

/**
 * In a federated home: the incoming CA that the adopted descriptor does not list yet (its round-1 version still waits
 * for approvals, or another version was adopted first and made it stale). Undefined otherwise.
 */
function unproposed(state: NetworkState): CaRecord | undefined {
  const incoming = state.cas.find((c) => c.status === 'incoming')
  return state.federation && incoming && state.federation.self.incomingCa?.caFingerprint !== incoming.id ? incoming : undefined
}

/**
 * Proposes the incoming CA again, against the descriptor version this home holds now (after another version was
 * adopted, the first proposal extends a version that is no longer current and cannot be imported).
 */
async function proposeAgain(home: Home, old: Issuer, incoming: CaRecord, opts: RotateCaOptions): Promise<RotateCaResult> {
  const pem = await home.readCaCertificate(incoming)
  const written: string[] = []
  return home
    .transaction(async ({state}) => {
      const descriptor = await propose(state, old, incoming, pem, opts.descriptorOut, written)
      return result('started', incoming, old.record.id, incoming.version ?? 1, incoming.curve ?? 'CURVE25519', [], [], descriptor)
    })
    .catch(async (error: unknown) => {
      for (const file of written) await rm(file, {force: true}).catch(() => {})
      throw error
    })
}

/**
 * Round 1 in a federated home: the descriptor version adding `incoming` beside this member's CA (see
 * `federation/member-ca.ts`), written to `out` (pushed to `written`); round 1 starts here when it is adopted at once.
 * @throws UserError when it needs other members' approvals and no `out` was given
 */
async function propose(state: NetworkState, old: Issuer, incoming: CaRecord, pem: string, out: string | undefined, written: string[]): Promise<RotationVersion> {
  const proposal = proposeMemberRotation(state, old, {caCertificate: pem, caFingerprint: incoming.id})
  if (proposal.result.adopted) startRound(state, {round: 1, caFingerprint: incoming.id, previousCaFingerprint: old.record.id})
  else if (!out) throw new UserError(`the new CA needs the approval of ${proposal.result.needed} member organizations`, {fix: 'pass --out FILE and send the file to the other members'})
  if (!out) return proposal.result
  await writeNewFile(out, proposal.text, {mode: 0o644, what: 'descriptor'})
  written.push(out)
  return {...proposal.result, path: out}
}

/**
 * Round 2: the incoming CA (whose key is `newCaKey`) becomes active and the old one retiring (both still trusted), and
 * every node not revoked gets a certificate of the new CA (same key, networks, groups and not-after, capped by the new
 * CA), in the new CA's version.
 * @throws UserError when no rotation is in round 1, in a federated home before the members adopted the new CA, and
 *   while nodes have not installed round 1 (unless `force`)
 */
export async function switchCa(home: Home, newCaKey: Buffer, opts: {force?: boolean; now?: number} = {}): Promise<RotateCaResult> {
  const now = opts.now ?? Math.floor(Date.now() / 1000)
  const record = requireStatus(home.state, 'incoming', 'no CA rotation is in round 1', 'start one with `tbmesh rotate-ca`')
  const issuer = await activeIssuer(home, newCaKey, record)
  if (!caPrivateKeyMatchesCertificate(newCaKey, issuer.certificate)) throw new Error('switchCa: newCaKey is not the incoming CA key')
  return home.transaction(async (tx) => {
    const {state} = tx
    const incoming = requireStatus(state, 'incoming', 'no CA rotation is in round 1', 'start one with `tbmesh rotate-ca`')
    const fed = state.federation
    if (fed && fed.self.incomingCa?.caFingerprint !== incoming.id) {
      throw new UserError('the other members have not adopted the descriptor version that adds the new CA', {
        fix: 'have them approve it (`tbmesh federation approve`), `tbmesh federation import` the complete version, ship its updates, then switch',
      })
    }
    const forcedPast = requireRoundInstalled(state, 'switch to the new CA', opts.force)
    const old = state.cas.find((c) => c.status === 'active')!
    old.status = 'retiring'
    incoming.status = 'active'
    const signer: Issuer = {...issuer, record: incoming}
    const reissued: ReissuedCertificate[] = []
    const newest = currentCertificates(state)
    const caNotAfter = issuer.certificate.details.notAfter
    for (const node of state.nodes) {
      if (node.revoked) continue
      // Same not-after as today's certificate; one that has already expired gets a fresh default lifetime.
      const today = Date.parse(newest.get(node.name)!.notAfter) / 1000
      const until = today > now ? today : now + DEFAULTS.hostDurationSeconds
      reissued.push(await reissue(tx, node, signer, now, Math.min(until, caNotAfter - 1)))
    }
    startRound(state, {round: 2, caFingerprint: incoming.id, previousCaFingerprint: old.id})
    return result('switched', incoming, old.id, issuer.certificate.version, issuer.certificate.details.curve, reissued, forcedPast)
  })
}

/**
 * Round 3: the retiring CA leaves the trust bundle (certificates it signed are refused once nodes install the next
 * updates), and nodes present only their certificates of the new CA. In a federated home this also makes and adopts
 * the descriptor version that replaces this member's CA by its new one, approved with the new CA (`caKey`, the active
 * key), and writes it to `descriptorOut` for the other members to import.
 * @throws UserError when no rotation is in round 2, while nodes have not installed round 2 (unless `force`), and in a
 *   federated home without `caKey` and `descriptorOut`
 */
export async function finishCaRotation(home: Home, opts: {force?: boolean; caKey?: Buffer; descriptorOut?: string} = {}): Promise<RotateCaResult> {
  requireStatus(home.state, 'retiring', 'no CA rotation is in round 2', 'start one with `tbmesh rotate-ca`, then `tbmesh rotate-ca --switch`')
  const active = opts.caKey ? await activeIssuer(home, opts.caKey) : undefined
  let written: string | undefined
  return home
    .transaction(async (tx) => {
      const {state} = tx
      const retiring = requireStatus(state, 'retiring', 'no CA rotation is in round 2', 'start one with `tbmesh rotate-ca`, then `tbmesh rotate-ca --switch`')
      const forcedPast = requireRoundInstalled(state, 'finish the CA rotation', opts.force)
      retiring.status = 'retired'
      let descriptor: RotationVersion | undefined
      if (state.federation) {
        if (!active || !opts.descriptorOut) throw new Error('finishCaRotation: a federated home needs caKey and descriptorOut')
        const finished = finishMemberRotation(state, active)
        await writeNewFile(opts.descriptorOut, finished.text, {mode: 0o644, what: 'descriptor'})
        written = opts.descriptorOut
        descriptor = {...finished.result, path: opts.descriptorOut}
      }
      const record = state.cas.find((c) => c.status === 'active')!
      startRound(state, {round: 3, caFingerprint: record.id, previousCaFingerprint: retiring.id})
      return result('finished', record, retiring.id, record.version ?? 1, record.curve ?? 'CURVE25519', [], forcedPast, descriptor)
    })
    .catch(async (error: unknown) => {
      if (written) await rm(written, {force: true}).catch(() => {})
      throw error
    })
}

function result(
  phase: RotateCaResult['phase'],
  ca: CaRecord,
  previous: string,
  caVersion: CertificateVersion,
  caCurve: Curve,
  reissued: ReissuedCertificate[],
  forcedPast: string[],
  descriptor?: RotationVersion,
): RotateCaResult {
  return {phase, caFingerprint: ca.id, previousCaFingerprint: previous, caNotAfter: ca.notAfter, caVersion, caCurve, reissued, keyEncrypted: ca.encrypted, forcedPast, ...(descriptor ? {descriptor} : {})}
}

function refuseUnderWay(state: NetworkState): void {
  const under = rotationUnderWay(state)
  if (!under) return
  const next = under.status === 'incoming' ? '`tbmesh rotate-ca --switch`' : '`tbmesh rotate-ca --finish`'
  throw new UserError('a CA rotation is already under way', {fix: `ship its updates, then run ${next}`})
}

function requireStatus(state: NetworkState, status: CaRecord['status'], message: string, fix: string): CaRecord {
  const ca = state.cas.find((c) => c.status === status)
  if (!ca) throw new UserError(message, {fix})
  return ca
}

function curveName(curve: Curve): string {
  return curve === 'P256' ? 'P256' : 'Curve25519'
}
