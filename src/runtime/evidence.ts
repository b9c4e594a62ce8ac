/**
 * Evidence records: what `tbmesh up` writes when a peer's certificate holds an address outside its issuer's block, one
 * JSON file per certificate in `DIR/evidence/` (carried over by `install`, see `NODE_LOCAL_DIRS` in `bundle/layout.ts`).
 * The fingerprints of these records are the node's local blocklist. An organization's admin turns records into a
 * signed violation report for the other members (`tbmesh federation report`, `federation/violations.ts`).
 */

import {readdir, readFile} from 'node:fs/promises'
import path from 'node:path'

import {NODE_LOCAL_DIRS} from '../bundle/layout.js'
import {writeAtomic} from '../lib/files.js'
import {isIsoTime, SHA256_HEX} from '../lib/text.js'

/** The directory of an installation holding evidence records. */
export const EVIDENCE_DIR = NODE_LOCAL_DIRS[0].slice(0, -1)

/** `type` of an evidence record. */
export const EVIDENCE_TYPE = 'tbmesh-violation-evidence'

/** One evidence record (JSON, UTF-8, two-space indent). */
export interface EvidenceRecord {
  type: typeof EVIDENCE_TYPE
  formatVersion: 1
  network: string
  /** The node that saw it: name and overlay IP. */
  observer: {node: string; overlayIp: string}
  /** When it was seen, ISO 8601. */
  observedAt: string
  /** Hex SHA-256 of the offending certificate: the blocklisted fingerprint. */
  fingerprint: string
  /** The CA that signed it, and the member that CA belongs to (with its block) when known. */
  issuer: {caFingerprint: string; organization?: string; slug?: string; blocks?: string[]}
  /** The overlay addresses the tunnel served. */
  addresses: string[]
  /** What lies outside the issuer's block: addresses, networks, unsafe networks. */
  outside: string[]
  /** The impostor's underlay `ip:port`, when Nebula knew it. */
  underlay?: string
  /** Overlay addresses of the relays the tunnel went through. */
  relays: string[]
  /** The certificate's details as Nebula reported them. */
  certificateDetails: {name: string; networks: string[]; unsafeNetworks: string[]; groups: string[]; notBefore: string; notAfter: string}
  /** The certificate itself (PEM), when it could be rebuilt exactly: what makes a report verifiable by others. */
  certificate?: string
}

/**
 * Checks the shape of an evidence record (a parsed file). Returns it, or the problem as text. It does not check the
 * certificate: a report's importer does that against the descriptor.
 */
export function checkEvidence(value: unknown): EvidenceRecord | string {
  const r = value as EvidenceRecord
  if (typeof r !== 'object' || r === null || r.type !== EVIDENCE_TYPE || r.formatVersion !== 1) return 'not a tbmesh evidence record'
  if (typeof r.fingerprint !== 'string' || !SHA256_HEX.test(r.fingerprint)) return 'its fingerprint is not a hex SHA-256'
  if (typeof r.issuer !== 'object' || r.issuer === null || typeof r.issuer.caFingerprint !== 'string' || !SHA256_HEX.test(r.issuer.caFingerprint)) return 'its issuer is missing'
  if (!isIsoTime(r.observedAt)) return 'observedAt is not an ISO 8601 time'
  if (typeof r.network !== 'string' || !Array.isArray(r.addresses) || !Array.isArray(r.outside)) return 'it is incomplete'
  if (r.certificate !== undefined && typeof r.certificate !== 'string') return 'its certificate is not PEM text'
  return r
}

/** The file name of a record: its time (compact, UTC) and fingerprint, e.g. `20260101T120000Z-9f3a….json`. */
export function evidenceFileName(record: EvidenceRecord): string {
  const time = record.observedAt.replaceAll(/[-:]/g, '').replace(/\.\d+/, '')
  return `${time}-${record.fingerprint}.json`
}

/** Where `record` is kept in the installation `dir`: `DIR/evidence/<name>`. */
export function evidencePath(dir: string, record: EvidenceRecord): string {
  return path.join(dir, EVIDENCE_DIR, evidenceFileName(record))
}

/** Writes `record` durably into `DIR/evidence/` (created 0700 when missing); returns its path. Throws UserError when it cannot. */
export async function writeEvidence(dir: string, record: EvidenceRecord): Promise<string> {
  const file = evidencePath(dir, record)
  await writeAtomic(file, `${JSON.stringify(record, null, 2)}\n`, 0o644)
  return file
}

/**
 * The evidence records in `DIR/evidence/` (none when it does not exist), oldest first, and a line for each file that
 * is not a record (left alone).
 */
export async function readEvidence(dir: string): Promise<{records: EvidenceRecord[]; problems: string[]}> {
  const folder = path.join(dir, EVIDENCE_DIR)
  const names = await readdir(folder).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return [] as string[]
    throw error
  })
  const records: EvidenceRecord[] = []
  const problems: string[] = []
  for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
    let value: unknown
    try {
      value = JSON.parse(await readFile(path.join(folder, name), 'utf8'))
    } catch {
      problems.push(`${path.join(folder, name)} is not JSON`)
      continue
    }
    const checked = checkEvidence(value)
    if (typeof checked === 'string') problems.push(`${path.join(folder, name)}: ${checked}`)
    else records.push(checked)
  }
  return {records, problems}
}
