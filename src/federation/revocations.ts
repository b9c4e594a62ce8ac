/**
 * Revocation lists between members of a federated network: a member publishes every certificate it revoked, signed by
 * its CA ({@link exportRevocations}); the others check each was issued by that member and blocklist them on their nodes
 * ({@link importRevocations}).
 */

import {rm} from 'node:fs/promises'
import {resolve} from 'node:path'

import {markForUpdate} from '../ca/rounds.js'
import {UserError} from '../errors.js'
import type {Home} from '../home/home.js'
import {memberCas} from '../home/queries.js'
import type {RevocationList} from '../home/types.js'
import {writeNewFile} from '../lib/files.js'
import {revocationMessage} from '../lib/messages.js'
import {caSign} from '../nebula/index.js'
import {checkRevocationList, FORMAT_VERSION, REVOCATION_LIST_TYPE} from './descriptor.js'
import {readJson, requireFederation, requireMember} from './guards.js'

/** What `tbmesh federation revocations` reports. */
export interface ExportRevocationsResult {
  path: string
  sequence: number
  /** Fingerprints of the certificates listed: every certificate ever issued to a node this organization revoked. */
  fingerprints: string[]
}

/**
 * Writes this organization's revocation list to `out` (refused when it exists, unless `force`), signed by its CA key
 * (`caKey`, 64 bytes), with the next sequence number: every certificate ever issued to a node it revoked. The other
 * members import it with {@link importRevocations}, and their nodes refuse those certificates after the next update.
 */
export async function exportRevocations(home: Home, caKey: Buffer, out: string, opts: {force?: boolean} = {}): Promise<ExportRevocationsResult> {
  let written = false
  // A list whose sequence number was not committed must not stay behind: the next one would reuse the number.
  return home.transaction(async (tx) => {
    const fed = requireMember(tx.state, 'publish revocations')
    const revoked = new Set(tx.state.nodes.filter((n) => n.revoked).map((n) => n.name))
    // Certificates of the CAs the descriptor lists for this member: the others' nodes no longer trust older ones.
    const listed = new Set(memberCas(fed.self).map((c) => c.caFingerprint))
    const rows = tx.state.certificates.filter((c) => revoked.has(c.name) && listed.has(c.issuer))
    const sequence = (fed.revocationSequence ?? 0) + 1
    const revocations: RevocationList = {
      type: REVOCATION_LIST_TYPE,
      formatVersion: FORMAT_VERSION,
      network: tx.state.network.name,
      organization: fed.self.slug,
      caFingerprint: tx.state.cas.find((c) => c.status === 'active')!.id,
      sequence,
      createdAt: new Date().toISOString(),
      certificates: await Promise.all(rows.map((c) => tx.readCertificate(c.fingerprint))),
    }
    const text = `${JSON.stringify({revocations, signature: caSign(caKey, revocationMessage(revocations)).toString('base64')}, null, 2)}\n`
    await writeNewFile(out, text, {force: opts.force, mode: 0o644, what: 'revocation list'})
    written = true
    fed.revocationSequence = sequence
    return {path: resolve(out), sequence, fingerprints: rows.flatMap((c) => (c.otherFingerprint ? [c.fingerprint, c.otherFingerprint] : [c.fingerprint])).sort()}
  }).catch(async (error: unknown) => {
    if (written) await rm(out, {force: true}).catch(() => {})
    throw error
  })
}

/** What `tbmesh federation import` reports for a revocation list. */
export interface ImportRevocationsResult {
  kind: 'revocations'
  /** The member that published the list (slug). */
  organization: string
  sequence: number
  fingerprints: string[]
  /** Nodes of this home that need an update bundle to refuse the certificates (`tbmesh export-update --all`). */
  nodesToUpdate: string[]
}

/**
 * Imports another member's revocation list (checked by {@link checkRevocationList} against the current descriptor):
 * newer than the one held from that member, or refused. Its fingerprints join this home's blocklist; every node not
 * revoked is marked as needing an update. Throws UserError.
 */
export async function importRevocations(home: Home, file: string): Promise<ImportRevocationsResult> {
  const value = await readJson(file, 'revocation list')
  return home.transaction(async ({state}) => {
    const fed = requireFederation(state)
    const {list, fingerprints} = checkRevocationList(value, fed.current.descriptor, file)
    if (list.organization === fed.self.slug) throw new UserError(`${file} is ${fed.self.organization}'s own revocation list`, {fix: 'send it to the other members; your nodes get your revocations from `tbmesh export-update`'})
    const held = fed.revocations && Object.hasOwn(fed.revocations, list.organization) ? fed.revocations[list.organization] : undefined
    if (held && list.sequence <= held.sequence) {
      throw new UserError(`${file} has sequence ${list.sequence}, not newer than the ${held.sequence} held from ${list.organization} (a replay or a rollback)`, {
        fix: 'import the newest revocation list of that organization',
      })
    }
    fed.revocations = {...fed.revocations, [list.organization]: {sequence: list.sequence, fingerprints}}
    return {kind: 'revocations' as const, organization: list.organization, sequence: list.sequence, fingerprints, nodesToUpdate: markForUpdate(state)}
  })
}
