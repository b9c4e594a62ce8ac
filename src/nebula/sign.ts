/**
 * Signing certificates, as `cert/sign.go` in slackhq/nebula does it: {@link signCertificate} takes the issuing CA's
 * certificate and key (like `SignWith`), derives the issuer from the CA and refuses what the CA may not sign, so no
 * caller can forget a check. A self-signed CA is signed with no issuing certificate. Also the signature check every
 * verification uses.
 */

import {createPublicKey, verify} from 'node:crypto'

import type {CertificateDetails, NebulaCertificate} from './certificate.js'
import {parseCertCidr, sameNetwork} from './cidr.js'
import {fingerprint, formatOf} from './codec.js'
import {CertificateFormatError, type CertificateVerifyReason, SigningError} from './errors.js'
import {assertCaPrivateKey, ed25519Sign, ed25519Verify} from './keys.js'
import type {Fail} from './pem.js'

const P256_KEY_LENGTH = 65
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex')

const failFormat: Fail = (message) => {
  throw new CertificateFormatError(`invalid Nebula certificate: ${message}`)
}

/** What a certificate is signed with: the issuing CA's certificate (absent for a self-signed CA) and private key. */
export interface Signer {
  /** The issuing CA's certificate; undefined when `details` describe a CA signing itself. */
  certificate?: NebulaCertificate
  /** The CA's private key: 64-byte Nebula Ed25519 key (seed ‖ public key). */
  key: Uint8Array
}

/**
 * Signs `details` as `signer` (`SignWith` in slackhq/nebula `cert/sign.go`): with an issuing CA, the issuer is that
 * CA's fingerprint and the certificate must be a non-CA one within the CA's limits (validity, groups, IPs, subnets, and
 * the same curve), signed with the CA's own key; without one, it must be a CA whose public key is `signer.key`'s.
 * Ed25519 over the format's signed bytes: deterministic, so signing the same details again gives the same certificate.
 * @throws SigningError (with a {@link CertificateVerifyReason} where one applies) for anything the CA may not sign or a
 *   key that is not the signer's; CertificateFormatError when the details cannot be encoded or ask for P256;
 *   KeyFormatError for a malformed key
 */
export function signCertificate(details: Omit<CertificateDetails, 'issuer'>, signer: Signer): NebulaCertificate {
  const tbs: CertificateDetails = copyDetails({...details, issuer: ''})
  if (tbs.curve !== 'CURVE25519') failFormat(`signing ${tbs.curve} certificates is not supported`)
  assertCaPrivateKey(signer.key)
  const ownKey = Buffer.from(signer.key.subarray(32))
  if (signer.certificate) {
    const ca = signer.certificate.details
    if (tbs.isCA) throw new SigningError('not-a-ca', 'a CA certificate cannot be signed by another CA')
    if (!ca.isCA) throw new SigningError('not-a-ca', `${JSON.stringify(ca.name)} is not a CA certificate`)
    if (ca.curve !== tbs.curve) throw new SigningError('bad-signature', `the certificate uses ${tbs.curve} but its CA ${ca.curve}`)
    if (!ownKey.equals(ca.publicKey)) throw new SigningError('wrong-key', `the key is not the key of CA ${JSON.stringify(ca.name)}`)
    const violation = caConstraintViolation(signer.certificate, tbs)
    if (violation) throw new SigningError(violation.reason, violation.message)
    tbs.issuer = fingerprint(signer.certificate)
  } else {
    if (!tbs.isCA) throw new SigningError('not-a-ca', 'only a CA certificate can be self-signed')
    if (!ownKey.equals(tbs.publicKey)) throw new SigningError('wrong-key', "the key is not the CA certificate's own")
  }
  return signDetails(tbs, signer.key)
}

/**
 * Signs exactly `details` with a 64-byte Ed25519 CA key, checking nothing against any CA: the primitive under
 * {@link signCertificate}, exported for tests that must build certificates a CA would never sign (to show a verifier
 * refusing them). tbmesh itself issues only through {@link signCertificate}.
 * @throws CertificateFormatError when the details cannot be encoded or ask for P256; KeyFormatError for a bad key
 */
export function signDetails(details: CertificateDetails, caPrivateKey: Uint8Array): NebulaCertificate {
  if (details.curve !== 'CURVE25519') failFormat(`signing ${details.curve} certificates is not supported`)
  const copy = copyDetails(details)
  const certificate: NebulaCertificate = {details: copy, signature: Buffer.alloc(0)}
  certificate.signature = ed25519Sign(caPrivateKey, formatOf(certificate).signedBytes(copy))
  return certificate
}

/**
 * Whether the certificate's signature over its signed bytes verifies with `publicKey` (the issuing CA's; the
 * certificate's own for a self-signed CA): Ed25519 for CURVE25519 (32-byte key), ECDSA P-256 with SHA-256 and an
 * ASN.1 signature for P256 (65-byte key). Never throws.
 */
export function checkSignature(certificate: NebulaCertificate, publicKey: Uint8Array): boolean {
  let signed: Buffer
  try {
    signed = formatOf(certificate).signedBytes(certificate.details)
  } catch {
    return false
  }
  if (certificate.details.curve === 'CURVE25519') return ed25519Verify(publicKey, signed, certificate.signature)
  if (publicKey.length !== P256_KEY_LENGTH) return false
  try {
    const key = createPublicKey({key: Buffer.concat([P256_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki'})
    return verify('sha256', signed, key, certificate.signature)
  } catch {
    return false
  }
}

/**
 * The first of the CA's limits that `details` break, in Nebula's order (rules 5–8 of verification; `checkCAConstraints`
 * in slackhq/nebula): validity within the CA's, groups among the CA's, IPs and subnets inside the CA's ranges with a
 * prefix at least as long (an empty CA list allows anything). Undefined when there is none.
 * @throws CertificateFormatError when a CIDR does not parse
 */
export function caConstraintViolation(ca: NebulaCertificate, details: CertificateDetails): {reason: CertificateVerifyReason; message: string} | undefined {
  const limits = ca.details
  if (details.notAfter > limits.notAfter) return {reason: 'validity-outside-ca', message: 'expires after its CA'}
  if (details.notBefore < limits.notBefore) return {reason: 'validity-outside-ca', message: 'is valid before its CA'}
  if (limits.groups.length > 0) {
    const allowed = new Set(limits.groups)
    const extra = details.groups.find((group) => !allowed.has(group))
    if (extra !== undefined) return {reason: 'group-not-allowed', message: `has group ${JSON.stringify(extra)}, which its CA does not allow`}
  }
  for (const [field, reason] of [['ips', 'ip-not-allowed'], ['subnets', 'subnet-not-allowed']] as const) {
    const ranges = limits[field].map((cidr) => parseCertCidr(cidr, field, failFormat))
    if (ranges.length === 0) continue
    for (const cidr of details[field]) {
      const [address, prefix] = parseCertCidr(cidr, field, failFormat)
      const inside = ranges.some(([caAddress, caPrefix]) => prefix >= caPrefix && sameNetwork(address, caAddress, caPrefix))
      if (!inside) return {reason, message: `has ${field === 'ips' ? 'IP' : 'subnet'} ${cidr} outside its CA's ranges`}
    }
  }
  return undefined
}

function copyDetails(details: CertificateDetails): CertificateDetails {
  return {
    ...details,
    ips: [...details.ips],
    subnets: [...details.subnets],
    groups: [...details.groups],
    publicKey: Buffer.from(details.publicKey),
  }
}
