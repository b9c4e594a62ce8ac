/**
 * Whether to trust a bundle that `archive.ts` read: the manifest's signature by its CA, that CA pinned by the installer
 * (or, for an update, the CA that signed the installation, or one it vouched for during a rotation), the certificates
 * by Nebula's rules, the private key matching, the expiry.
 */

import path from 'node:path'

import {UsageError, UserError} from '../errors.js'
import {endorsementMessage, manifestMessage} from '../lib/messages.js'
import {quoted, SHA256_HEX} from '../lib/text.js'
import {
  caSignatureValid,
  certificatesFromPem,
  CertificateVerifyError,
  checkSignature,
  type CurveKey,
  fingerprint,
  hostCertificatesProblem,
  hostKeyMatchesCertificate,
  type NebulaCertificate,
  NebulaFormatError,
  readHostPrivateKey,
  verifyCertificate,
} from '../nebula/index.js'
import type {ReadBundleResult} from './archive.js'
import {type BundleManifest, MANIFEST, refusal, SIGNATURE} from './layout.js'

/** How {@link verifyBundleTrust} decides whom to trust and where the joiner's key is. */
export interface TrustOptions {
  /** The CA fingerprint the installer expects (hex SHA-256; `:` separators and case are ignored). */
  pin?: string
  /** Called when no pin is given: show the bundle's CA fingerprint and return whether the user trusts it. */
  confirmCa?: (caFingerprint: string, manifest: BundleManifest) => Promise<boolean>
  /** The joiner's host private key (PEM) for a request it made, by the request's nonce; undefined when unknown. */
  joinerKey?: (nonce: string) => Promise<string | undefined>
  /** A host private key (PEM) the installer holds, for a bundle that carries none (a node added with --pubkey). */
  hostKey?: string
  /**
   * For an update bundle: the installation it updates. Its signer replaces the pin: the update must be signed by the CA
   * that signed the installed bundle (`signer`, a fingerprint), or by a CA that one vouched for (a rotation). Another
   * CA of the trust bundle is not enough: in a federated network that is another organization's. The key must match
   * the new certificate.
   */
  installed?: {cas: NebulaCertificate[]; signer: string; hostKeyPem: string}
  /** Current time in ms since the epoch (tests). */
  now?: number
}

/** What {@link verifyBundleTrust} established. */
export interface TrustedBundle {
  ca: NebulaCertificate
  /** The host certificates: one, or a v1 and a v2 one for the same key (round 2 of a rotation that changes the format). */
  hosts: NebulaCertificate[]
  /** The host private key PEM: from the bundle, or from the joiner's home. */
  hostKeyPem: string
  /** True when the key came from the joiner's home (the bundle carried none). */
  keyFromJoiner: boolean
}

/**
 * Checks that a bundle (already read by `readBundle` in `archive.ts`: layout and hashes verified) comes from the pinned CA and is
 * fit to install: the manifest's signature (Ed25519 or ECDSA P256) by the CA in `nebula/ca.crt` whose fingerprint the manifest names;
 * that fingerprint equals the pin (or the user confirmed it); the CA certificate is self-signed and valid; the host
 * certificate passes every Nebula rule against the bundle's CAs and names the manifest's node and overlay IP; the
 * private key (the bundle's, or the joiner's own for the request whose nonce the manifest carries) matches the
 * certificate; and the bundle has not expired.
 * @throws UserError, one line naming what failed.
 */
export async function verifyBundleTrust(file: string, read: ReadBundleResult, opts: TrustOptions): Promise<TrustedBundle> {
  const {manifest, files} = read
  const now = opts.now ?? Date.now()
  let cas: NebulaCertificate[]
  let hosts: NebulaCertificate[]
  try {
    cas = certificatesFromPem(files.get('nebula/ca.crt')!)
    hosts = certificatesFromPem(files.get('nebula/host.crt')!)
  } catch (error) {
    if (error instanceof NebulaFormatError) throw refusal(file, `a certificate does not parse (${error.message})`)
    throw error
  }
  const ca = cas.find((c) => fingerprint(c) === manifest.caFingerprint)
  if (!ca) throw refusal(file, `nebula/ca.crt does not hold the CA ${manifest.caFingerprint} named in ${MANIFEST}`)
  const signature = Buffer.from(files.get(SIGNATURE)!.toString('utf8').trim(), 'base64')
  if (!caSignatureValid(ca, manifestMessage(files.get(MANIFEST)!, manifest.schemaVersion), signature)) {
    throw refusal(file, `${SIGNATURE} is not a valid signature of ${MANIFEST} by its CA`)
  }

  if (manifest.kind === 'update') {
    const installed = opts.installed
    if (!installed) throw new Error('verifyBundleTrust: an update needs the installation it updates')
    const endorsement = manifest.caEndorsement
    const endorser = endorsement?.by === installed.signer ? installed.cas.find((c) => fingerprint(c) === endorsement.by) : undefined
    const trusted =
      manifest.caFingerprint === installed.signer ||
      (endorser !== undefined &&
        caSignatureValid(endorser, endorsementMessage(manifest.caFingerprint), Buffer.from(endorsement!.signature, 'base64')))
    if (!trusted) {
      throw new UserError(`update ${path.basename(file)} is signed by CA ${manifest.caFingerprint}, which did not sign this installation`, {
        fix: 'install the earlier updates first, or ask the network operator for a new join bundle',
      })
    }
  } else if (opts.pin === undefined) {
    if (!opts.confirmCa || !(await opts.confirmCa(manifest.caFingerprint, manifest))) {
      throw new UserError(`bundle ${path.basename(file)} is signed by CA ${manifest.caFingerprint}, which you have not confirmed`, {
        fix: 'check the fingerprint with the network operator and pass --ca-fingerprint HEX',
      })
    }
  } else if (normalizeFingerprint(opts.pin) !== manifest.caFingerprint) {
    throw new UserError(`bundle ${path.basename(file)} is signed by CA ${manifest.caFingerprint}, not the pinned ${normalizeFingerprint(opts.pin)}`, {
      fix: 'do not install it; ask the network operator for a bundle from the right CA',
    })
  }

  const nowSeconds = Math.floor(now / 1000)
  if (!ca.details.isCA || !checkSignature(ca, ca.details.publicKey)) throw refusal(file, `the CA certificate ${manifest.caFingerprint} is not a valid self-signed CA`)
  if (nowSeconds > ca.details.notAfter) throw refusal(file, `the CA certificate expired on ${new Date(ca.details.notAfter * 1000).toISOString()}`)
  const problem = hostCertificatesProblem(hosts)
  if (problem) throw refusal(file, problem)
  for (const host of hosts) {
    try {
      verifyCertificate(host, {trusted: cas, now: nowSeconds})
    } catch (error) {
      if (error instanceof CertificateVerifyError) throw refusal(file, `the host certificate is not valid (${error.message})`)
      throw error
    }
    if (host.details.name !== manifest.node || !host.details.ips.some((ip) => ip.split('/')[0] === manifest.overlayIp)) {
      throw refusal(file, `the host certificate is for ${host.details.name} (${host.details.ips.join(', ')}), not ${manifest.node} (${manifest.overlayIp})`)
    }
  }

  let hostKeyPem = opts.installed?.hostKeyPem ?? files.get('nebula/host.key')?.toString('utf8')
  const keyFromJoiner = hostKeyPem === undefined
  if (hostKeyPem === undefined && opts.hostKey !== undefined) hostKeyPem = opts.hostKey
  else if (hostKeyPem === undefined) {
    if (!manifest.nonce) {
      throw new UserError(`bundle ${path.basename(file)} carries no host key and answers no join request`, {fix: 'give the node\'s private key with --key FILE'})
    }
    hostKeyPem = await opts.joinerKey?.(manifest.nonce)
    if (hostKeyPem === undefined) {
      throw new UserError(`bundle ${path.basename(file)} answers join request ${manifest.nonce}, which this machine did not make`, {
        fix: 'install it with the --home of the machine that ran `tbmesh join-request`',
      })
    }
  }
  let key: CurveKey
  try {
    key = readHostPrivateKey(hostKeyPem)
  } catch (error) {
    if (error instanceof NebulaFormatError) throw refusal(file, `the host key does not parse (${error.message})`)
    throw error
  }
  if (!hosts.every((host) => hostKeyMatchesCertificate(key.key, host, key.curve))) {
    const whose = opts.installed ? 'installed private key' : keyFromJoiner ? "join request's private key" : "bundle's private key"
    throw refusal(file, `the host certificate does not match the ${whose}`)
  }
  if (now > Date.parse(manifest.expiresAt)) {
    throw new UserError(`bundle ${path.basename(file)} expired on ${manifest.expiresAt}`, {fix: 'ask the network operator to export a new one'})
  }
  return {ca, hosts, hostKeyPem, keyFromJoiner}
}

/** A fingerprint as tbmesh compares it: lowercase hex without separators (`AB:CD…` as nebula-cert may show it). */
export function normalizeFingerprint(text: string): string {
  return text.trim().toLowerCase().replaceAll(':', '')
}

/**
 * A fingerprint given by a person (`--ca-fingerprint`), normalized. Throws UsageError unless it is a hex SHA-256.
 */
export function checkFingerprint(text: string, flag: string): string {
  const fp = normalizeFingerprint(text)
  if (!SHA256_HEX.test(fp)) throw new UsageError(`${flag} ${quoted(text)} is not a hex SHA-256 (64 hex digits)`, {fix: 'copy it from `tbmesh init-ca` or `nebula-cert print`'})
  return fp
}
