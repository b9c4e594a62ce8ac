/**
 * Verifying certificates and matching keys to them, as a Nebula node and `nebula-cert verify` do
 * (`cert/ca_pool.go`, `Certificate.VerifyPrivateKey` in slackhq/nebula), and checking messages a CA signed.
 */

import type {CertificateDetails, Curve, NebulaCertificate} from './certificate.js'
import {fingerprint, formatOf} from './codec.js'
import {CertificateVerifyError} from './errors.js'
import {caKeyCurve, caPublicKeyFromPrivate, caVerify, ecdsaOtherForm, hostPublicKeyFromPrivate, KEY_LENGTH} from './keys.js'
import {caConstraintViolation, checkSignature} from './sign.js'

/** Options of {@link verifyCertificate}. */
export interface VerifyOptions {
  /** Trusted CA certificates (a trust bundle), already vetted by the caller; non-CA entries are ignored. */
  trusted: readonly NebulaCertificate[]
  /** Fingerprints (hex SHA-256, any case) to refuse; a P256 certificate is refused under either form of its signature. */
  blocklist?: readonly string[]
  /** The time to verify at, Unix seconds (fractions allowed); default now. */
  now?: number
}

/**
 * Verifies a certificate the way `nebula-cert verify` and a Nebula node do, rule by rule in Nebula's order: (1) not
 * blocklisted (under either form of a P256 signature), (2) issued by a trusted CA of the same curve, (3) the CA and the
 * certificate valid at `now`, (4) signature, (5) validity
 * within the CA's, (6) groups, (7) IPs and (8) subnets within the CA's lists (an empty list allows anything).
 * The trusted CAs themselves are not checked (self-signature, expiry at load time): that is the caller's job.
 * @throws CertificateVerifyError with the `reason` of the first rule broken (one-line message);
 *   CertificateFormatError when the certificate cannot be marshaled
 */
export function verifyCertificate(certificate: NebulaCertificate, options: VerifyOptions): void {
  const {details} = certificate
  const now = options.now ?? Date.now() / 1000
  const label = `certificate ${JSON.stringify(details.name)}`
  const reject = (reason: CertificateVerifyError['reason'], message: string): never => {
    throw new CertificateVerifyError(reason, `${label} ${message}`)
  }

  const prints = blocklistFingerprints(certificate)
  const blocked = options.blocklist?.find((entry) => prints.includes(entry.toLowerCase()))
  if (blocked) reject('blocklisted', `is blocklisted (${blocked.toLowerCase()})`)

  if (details.issuer === '') reject('unknown-issuer', 'has no issuer')
  const ca = options.trusted.find((c) => c.details.isCA && fingerprint(c) === details.issuer)
  if (!ca) return reject('unknown-issuer', `was issued by an unknown CA (${details.issuer})`)
  const caDetails = ca.details

  if (caDetails.curve !== details.curve) reject('bad-signature', `uses ${details.curve} but its CA ${caDetails.curve}`)
  if (!validAt(caDetails, now)) {
    reject('ca-expired', `was issued by CA ${JSON.stringify(caDetails.name)}, which is not valid now`)
  }
  if (!validAt(details, now)) {
    reject('expired', details.notBefore > now ? 'is not valid yet' : 'has expired')
  }

  if (!checkSignature(certificate, caDetails.publicKey)) {
    reject('bad-signature', 'has a signature that does not match its CA')
  }

  const violation = caConstraintViolation(ca, details)
  if (violation) reject(violation.reason, violation.message)
}

/**
 * The fingerprints under which a blocklist must refuse `certificate`: its own and, for P256, the fingerprint of the
 * same certificate with the other form of its ECDSA signature (`s` → `n − s`), which anyone can make and which
 * verifies as well (Nebula 1.10.3+ checks both; older nodes only the one listed). Never throws for a certificate that
 * marshals; a P256 signature that is not DER gives only the first.
 */
export function blocklistFingerprints(certificate: NebulaCertificate): string[] {
  const own = fingerprint(certificate)
  if (certificate.details.curve !== 'P256') return [own]
  try {
    return [own, fingerprint({...certificate, signature: ecdsaOtherForm(certificate.signature)})]
  } catch {
    return [own]
  }
}

/**
 * Whether `signature` over `message` was made by the key of CA certificate `ca` (Ed25519 or ECDSA P-256, by its curve):
 * how manifests, endorsements, approvals and revocation lists signed with a CA key are checked. Never throws.
 */
export function caSignatureValid(ca: NebulaCertificate, message: Uint8Array, signature: Uint8Array): boolean {
  return caVerify(ca.details.curve, ca.details.publicKey, message, signature)
}

/**
 * Whether a CA private key (64-byte Ed25519 or 32-byte P-256) belongs to a CA certificate of its curve. Never throws:
 * a malformed key gives false.
 */
export function caPrivateKeyMatchesCertificate(privateKey: Uint8Array, certificate: NebulaCertificate): boolean {
  const {details} = certificate
  try {
    return details.isCA && caKeyCurve(privateKey) === details.curve && caPublicKeyFromPrivate(privateKey).equals(details.publicKey)
  } catch {
    return false
  }
}

/**
 * Whether a 32-byte host private key of `curve` (X25519 by default, or P-256) belongs to a non-CA certificate of that
 * curve (`VerifyPrivateKey`: the curves must be equal). Never throws.
 */
export function hostKeyMatchesCertificate(privateKey: Uint8Array, certificate: NebulaCertificate, curve: Curve = 'CURVE25519'): boolean {
  const {details} = certificate
  if (details.isCA || details.curve !== curve || privateKey.length !== KEY_LENGTH) return false
  try {
    return hostPublicKeyFromPrivate(privateKey, curve).equals(details.publicKey)
  } catch {
    return false
  }
}

/**
 * Why a node's certificates (`pki.cert`) cannot all be loaded by Nebula 1.10+ (`newCertState`): more than two, two of
 * the same version, or a v1 and a v2 certificate that differ in public key, curve or first network. Undefined when
 * fine (one certificate always is).
 */
export function hostCertificatesProblem(hosts: readonly NebulaCertificate[]): string | undefined {
  if (hosts.length === 1) return undefined
  const [a, b] = hosts as [NebulaCertificate, NebulaCertificate]
  if (hosts.length > 2 || a.version === b.version) return 'nebula/host.crt holds more than one certificate of a version'
  const same = a.details.publicKey.equals(b.details.publicKey) && a.details.curve === b.details.curve && a.details.ips[0] === b.details.ips[0]
  return same ? undefined : 'the v1 and v2 certificates of nebula/host.crt differ in key, curve or network'
}

/** The certificate's version and curve in people's words, e.g. `v2 P256`, `v1 Curve25519`. */
export function describeFormat(certificate: NebulaCertificate): string {
  return `v${formatOf(certificate).version} ${certificate.details.curve === 'P256' ? 'P256' : 'Curve25519'}`
}

function validAt(details: CertificateDetails, now: number): boolean {
  return details.notBefore <= now && now <= details.notAfter
}
