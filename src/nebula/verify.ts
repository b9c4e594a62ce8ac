/**
 * Verifying certificates and matching keys to them, as a Nebula node and `nebula-cert verify` do
 * (`cert/ca_pool.go`, `Certificate.VerifyPrivateKey` in slackhq/nebula), and `nebula-cert print -json`'s view.
 */

import type {CertificateDetails, CertificatePrintJson, NebulaCertificate} from './certificate.js'
import {fingerprint} from './codec.js'
import {CertificateVerifyError} from './errors.js'
import {assertCaPrivateKey, hostPublicKeyFromPrivate, KEY_LENGTH} from './keys.js'
import {caConstraintViolation, checkSignature} from './sign.js'

/** Options of {@link verifyCertificate}. */
export interface VerifyOptions {
  /** Trusted CA certificates (a trust bundle), already vetted by the caller; non-CA entries are ignored. */
  trusted: readonly NebulaCertificate[]
  /** Fingerprints (hex SHA-256, any case) to refuse. */
  blocklist?: readonly string[]
  /** The time to verify at, Unix seconds (fractions allowed); default now. */
  now?: number
}

/**
 * Verifies a certificate the way `nebula-cert verify` and a Nebula node do, rule by rule in Nebula's order: (1) not
 * blocklisted, (2) issued by a trusted CA, (3) the CA and the certificate valid at `now`, (4) signature, (5) validity
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

  const print = fingerprint(certificate)
  const blocked = options.blocklist?.some((entry) => entry.toLowerCase() === print)
  if (blocked) reject('blocklisted', `is blocklisted (${print})`)

  if (details.issuer === '') reject('unknown-issuer', 'has no issuer')
  const ca = options.trusted.find((c) => c.details.isCA && fingerprint(c) === details.issuer)
  if (!ca) return reject('unknown-issuer', `was issued by an unknown CA (${details.issuer})`)
  const caDetails = ca.details

  if (!validAt(caDetails, now)) {
    reject('ca-expired', `was issued by CA ${JSON.stringify(caDetails.name)}, which is not valid now`)
  }
  if (!validAt(details, now)) {
    reject('expired', details.notBefore > now ? 'is not valid yet' : 'has expired')
  }

  if (caDetails.curve !== details.curve) reject('bad-signature', `uses ${details.curve} but its CA ${caDetails.curve}`)
  if (!checkSignature(certificate, caDetails.publicKey)) {
    reject('bad-signature', 'has a signature that does not match its CA')
  }

  const violation = caConstraintViolation(ca, details)
  if (violation) reject(violation.reason, violation.message)
}

/**
 * Whether a 64-byte Ed25519 private key belongs to a CA certificate (a Curve25519 CA whose public key is the key's).
 * Never throws: a malformed key gives false.
 */
export function caPrivateKeyMatchesCertificate(privateKey: Uint8Array, certificate: NebulaCertificate): boolean {
  const {details} = certificate
  if (!details.isCA || details.curve !== 'CURVE25519') return false
  try {
    assertCaPrivateKey(privateKey)
  } catch {
    return false
  }
  return Buffer.from(privateKey.subarray(32)).equals(details.publicKey)
}

/** Whether a 32-byte X25519 private key belongs to a (Curve25519, non-CA) certificate. Never throws. */
export function hostKeyMatchesCertificate(privateKey: Uint8Array, certificate: NebulaCertificate): boolean {
  const {details} = certificate
  if (details.isCA || details.curve !== 'CURVE25519' || privateKey.length !== KEY_LENGTH) return false
  return hostPublicKeyFromPrivate(privateKey).equals(details.publicKey)
}

/**
 * The `nebula-cert print -json` view of a certificate (times as RFC 3339 UTC, keys and signature in hex).
 * @throws CertificateFormatError when the certificate cannot be marshaled (for the fingerprint)
 */
export function toPrintJson(certificate: NebulaCertificate): CertificatePrintJson {
  const {details} = certificate
  return {
    details: {
      name: details.name,
      ips: [...details.ips],
      subnets: [...details.subnets],
      groups: [...details.groups],
      notBefore: formatTime(details.notBefore),
      notAfter: formatTime(details.notAfter),
      publicKey: details.publicKey.toString('hex'),
      isCa: details.isCA,
      issuer: details.issuer,
      curve: details.curve,
    },
    fingerprint: fingerprint(certificate),
    signature: certificate.signature.toString('hex'),
  }
}

function validAt(details: CertificateDetails, now: number): boolean {
  return details.notBefore <= now && now <= details.notAfter
}

function formatTime(seconds: number): string {
  const date = new Date(seconds * 1000)
  if (Number.isNaN(date.getTime())) return String(seconds)
  return date.toISOString().replace(/\.000Z$/, 'Z')
}
