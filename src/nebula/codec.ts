/**
 * The one place that picks a certificate's format version (`cert/pem.go` in slackhq/nebula): PEM in and out, the
 * stored bytes, the fingerprint. Everything else works on {@link NebulaCertificate} and asks here for bytes.
 */

import {sha256Hex} from '../lib/text.js'
import {CERTIFICATE_V1} from './cert-v1.js'
import {CERTIFICATE_V2} from './cert-v2.js'
import type {CertificateFormat, CertificatePrintJson, CertificateVersion, NebulaCertificate} from './certificate.js'
import {CertificateFormatError} from './errors.js'
import {decodePemBlocks, encodePem, type Fail} from './pem.js'

/** The formats tbmesh reads and writes, by version (and PEM banner). */
const FORMATS: readonly CertificateFormat[] = [CERTIFICATE_V1, CERTIFICATE_V2]

const fail: Fail = (message) => {
  throw new CertificateFormatError(`invalid Nebula certificate: ${message}`)
}

/**
 * The format of a version number.
 * @throws CertificateFormatError for a version tbmesh does not know
 */
export function formatOfVersion(version: CertificateVersion): CertificateFormat {
  return FORMATS.find((f) => f.version === version) ?? fail(`unknown certificate version ${String(version)}`)
}

/**
 * The format a certificate is in (its `version`).
 * @throws CertificateFormatError for a version tbmesh does not know
 */
export function formatOf(certificate: NebulaCertificate): CertificateFormat {
  return formatOfVersion(certificate.version)
}

/**
 * The certificate's bytes as stored (the PEM body).
 * @throws CertificateFormatError when a value cannot be encoded
 */
export function marshalCertificate(certificate: NebulaCertificate): Buffer {
  return formatOf(certificate).marshal(certificate)
}

/** PEM of a certificate, byte for byte as nebula-cert writes it. */
export function certificateToPem(certificate: NebulaCertificate): string {
  const format = formatOf(certificate)
  return encodePem(format.banner, format.marshal(certificate))
}

/**
 * Every certificate of a PEM text, in order (a trust bundle such as Nebula's `pki.ca` holds several).
 * Blank and `#` comment lines between blocks are allowed.
 * @throws CertificateFormatError on bad PEM, a block with another banner, no block at all, or a malformed certificate
 */
export function certificatesFromPem(pem: string | Uint8Array): NebulaCertificate[] {
  const blocks = decodePemBlocks(pem, fail)
  if (blocks.length === 0) fail('no NEBULA CERTIFICATE PEM block found')
  return blocks.map((block) => {
    const format = FORMATS.find((f) => f.banner === block.type)
    if (format) return format.unmarshal(block.bytes)
    return fail(`expected a ${FORMATS.map((f) => f.banner).join(' or ')} PEM block, found ${block.type}`)
  })
}

/**
 * The one certificate of a PEM text.
 * @throws CertificateFormatError as {@link certificatesFromPem}, and when the text holds more than one certificate
 */
export function certificateFromPem(pem: string | Uint8Array): NebulaCertificate {
  const certificates = certificatesFromPem(pem)
  if (certificates.length !== 1) fail(`expected one certificate, found ${certificates.length}`)
  return certificates[0]!
}

/**
 * The certificate's fingerprint: lowercase hex SHA-256 (v1: of its full marshaled bytes; v2: of its signed bytes and
 * signature), what Nebula's blocklist, `ca_sha` rules and a host certificate's `issuer` hold.
 * @throws CertificateFormatError when a value cannot be encoded
 */
export function fingerprint(certificate: NebulaCertificate): string {
  return sha256Hex(formatOf(certificate).fingerprintBytes(certificate))
}

/**
 * The `nebula-cert print -json` (1.10+) element of a certificate (run it with `TZ=UTC` to compare times as text).
 * @throws CertificateFormatError when the certificate cannot be marshaled (for the fingerprint)
 */
export function toPrintJson(certificate: NebulaCertificate): CertificatePrintJson {
  return formatOf(certificate).printJson(certificate, fingerprint(certificate))
}
