/**
 * Signing certificates, as `cert/sign.go` in slackhq/nebula does it: {@link signCertificate} takes the issuing CA's
 * certificate and key (like `SignWith`), derives the issuer from the CA and refuses what the CA may not sign, so no
 * caller can forget a check. A self-signed CA is signed with no issuing certificate. Also the signature check every
 * verification uses.
 */

import type {CertificateDetails, CertificateVersion, NebulaCertificate} from './certificate.js'
import {type CertPrefix, parseCertPrefix, prefixContains} from './cidr.js'
import {fingerprint, formatOf, formatOfVersion} from './codec.js'
import {CertificateFormatError, type CertificateVerifyReason, SigningError} from './errors.js'
import {caKeyCurve, caPublicKeyFromPrivate, caSign, caVerify} from './keys.js'
import type {Fail} from './pem.js'

const failFormat: Fail = (message) => {
  throw new CertificateFormatError(`invalid Nebula certificate: ${message}`)
}

/** What a certificate is signed with: the issuing CA's certificate (absent for a self-signed CA) and private key. */
export interface Signer {
  /** The issuing CA's certificate; undefined when `details` describe a CA signing itself. */
  certificate?: NebulaCertificate
  /** The CA's private key: 64-byte Nebula Ed25519 key (seed ‖ public key), or 32-byte P-256 scalar. */
  key: Uint8Array
}

/** What {@link signCertificate} signs: the details without the issuer (derived), and the format version to sign in. */
export type TbsCertificate = Omit<CertificateDetails, 'issuer'> & {
  /** Default: the issuing CA's version (as `nebula-cert sign -version 0`); 1 for a self-signed CA. */
  version?: CertificateVersion
}

/**
 * Signs `details` as `signer` (`SignWith` in slackhq/nebula `cert/sign.go`): with an issuing CA, the issuer is that
 * CA's fingerprint and the certificate must be a non-CA one within the CA's limits (validity, groups, networks, unsafe
 * networks, and the same curve), signed with the CA's own key; without one, it must be a CA whose public key is
 * `signer.key`'s. The key's curve must be the certificate's. The format's rules are checked and, in v2, the networks
 * sorted (`CertificateFormat.prepare`). Ed25519 is deterministic, so signing the same details again gives the same
 * certificate; P256 signatures are randomized and normalized to low-s.
 * @throws SigningError (with a {@link CertificateVerifyReason} where one applies) for anything the CA may not sign or a
 *   key that is not the signer's or of another curve; CertificateFormatError when the details break the format's
 *   rules; KeyFormatError for a malformed key
 */
export function signCertificate(details: TbsCertificate, signer: Signer): NebulaCertificate {
  const {version: asked, ...rest} = details
  const version = asked ?? signer.certificate?.version ?? 1
  const format = formatOfVersion(version)
  let tbs: CertificateDetails = format.prepare({...rest, issuer: ''})
  const keyCurve = caKeyCurve(signer.key)
  if (keyCurve !== tbs.curve) throw new SigningError('wrong-key', `the certificate uses ${tbs.curve} but the signing key is ${keyCurve}`)
  const ownKey = caPublicKeyFromPrivate(signer.key)
  if (signer.certificate) {
    const ca = signer.certificate.details
    if (tbs.isCA) throw new SigningError('not-a-ca', 'a CA certificate cannot be signed by another CA')
    if (!ca.isCA) throw new SigningError('not-a-ca', `${JSON.stringify(ca.name)} is not a CA certificate`)
    if (ca.curve !== tbs.curve) throw new SigningError('bad-signature', `the certificate uses ${tbs.curve} but its CA ${ca.curve}`)
    if (!ownKey.equals(ca.publicKey)) throw new SigningError('wrong-key', `the key is not the key of CA ${JSON.stringify(ca.name)}`)
    const violation = caConstraintViolation(signer.certificate, tbs)
    if (violation) throw new SigningError(violation.reason, violation.message)
    tbs = {...tbs, issuer: fingerprint(signer.certificate)}
  } else {
    if (!tbs.isCA) throw new SigningError('not-a-ca', 'only a CA certificate can be self-signed')
    if (!ownKey.equals(tbs.publicKey)) throw new SigningError('wrong-key', "the key is not the CA certificate's own")
  }
  return signDetails(tbs, signer.key, version)
}

/**
 * Signs exactly `details` in format `version` (default 1) with a CA key of their curve, checking nothing against any
 * CA and nothing of the format's rules beyond what it can encode: the primitive under {@link signCertificate}, exported
 * for tests that must build certificates a CA would never sign (to show a verifier refusing them). tbmesh itself
 * issues only through {@link signCertificate}.
 * @throws CertificateFormatError when the details cannot be encoded; SigningError when the key is of another curve;
 *   KeyFormatError for a bad key
 */
export function signDetails(details: CertificateDetails, caPrivateKey: Uint8Array, version: CertificateVersion = 1): NebulaCertificate {
  const keyCurve = caKeyCurve(caPrivateKey)
  if (keyCurve !== details.curve) throw new SigningError('wrong-key', `the certificate uses ${details.curve} but the signing key is ${keyCurve}`)
  const copy = copyDetails(details)
  const certificate: NebulaCertificate = {version, details: copy, signature: Buffer.alloc(0)}
  certificate.signature = caSign(caPrivateKey, formatOf(certificate).signedBytes(copy))
  return certificate
}

/**
 * Whether the certificate's signature over its signed bytes verifies with `publicKey` (the issuing CA's; the
 * certificate's own for a self-signed CA): Ed25519 for CURVE25519 (32-byte key), ECDSA P-256 with SHA-256 and an
 * ASN.1 signature for P256 (65-byte key; high-s accepted, as Go does). Never throws.
 */
export function checkSignature(certificate: NebulaCertificate, publicKey: Uint8Array): boolean {
  let signed: Buffer
  try {
    signed = formatOf(certificate).signedBytes(certificate.details)
  } catch {
    return false
  }
  return caVerify(certificate.details.curve, publicKey, signed, certificate.signature)
}

/**
 * The first of the CA's limits that `details` break, in Nebula's order (rules 5–8 of verification; `checkCAConstraints`
 * in slackhq/nebula): validity within the CA's, groups among the CA's, networks and unsafe networks inside the CA's
 * ranges with a prefix at least as long (an empty CA list allows anything). Undefined when there is none.
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
  const parse = (cidr: string, field: string): CertPrefix => parseCertPrefix(cidr, field, failFormat, {ipv6: true})
  for (const [field, reason] of [['ips', 'ip-not-allowed'], ['subnets', 'subnet-not-allowed']] as const) {
    const ranges = limits[field].map((cidr) => parse(cidr, field))
    if (ranges.length === 0) continue
    for (const cidr of details[field]) {
      const inside = ranges.some((range) => prefixContains(range, parse(cidr, field)))
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
