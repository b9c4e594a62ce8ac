/**
 * Nebula v1 certificates: protobuf `RawNebulaCertificate { 1: Details, 2: Signature }` from `cert/cert.proto` in
 * slackhq/nebula (v1.6.1; field 100 `curve` from v1.7.0). This is the only certificate format Nebula 1.6.1 reads.
 *
 * Marshal, unmarshal, PEM, fingerprint, sign, check and verify; nothing else. The encoding is the canonical one that
 * Go's `proto.Marshal` gives, and only that encoding is accepted, because Nebula re-marshals a parsed certificate
 * before it checks the signature and computes the fingerprint.
 */

import {createHash, createPublicKey, verify} from 'node:crypto'

import {CertificateFormatError, CertificateVerifyError} from './errors.js'
import {assertCaPrivateKey, ed25519Sign, ed25519Verify} from './keys.js'
import {CERTIFICATE_BANNER, CERTIFICATE_V2_BANNER, decodePemBlocks, encodePem, type Fail} from './pem.js'
import {
  ProtoWriter,
  decodeMessage,
  toInt64,
  toPackedUint32,
  toUtf8String,
  type MessageSchema,
} from './proto.js'

/** Curve of a certificate's public key and signature. tbmesh issues CURVE25519 only. */
export type Curve = 'CURVE25519' | 'P256'

/** The signed part of a Nebula v1 certificate (`RawNebulaCertificateDetails`). */
export interface CertificateDetails {
  /** Certificate name (a host name, or the CA's name). */
  name: string
  /** Overlay IPv4 addresses, CIDR with the host address kept, e.g. `10.42.1.5/16`; on a CA, the allowed ranges. */
  ips: string[]
  /** Unsafe routes the host may serve, IPv4 CIDR; on a CA, the allowed ranges. */
  subnets: string[]
  /** Groups, order kept; on a CA, the allowed groups. */
  groups: string[]
  /** Start of validity, Unix seconds. */
  notBefore: number
  /** End of validity, Unix seconds. */
  notAfter: number
  /** 32 bytes: X25519 for a host, Ed25519 for a CA (65 bytes, uncompressed point, for P256). */
  publicKey: Buffer
  isCA: boolean
  /** Lowercase hex SHA-256 fingerprint of the issuing CA certificate; `''` on a CA. */
  issuer: string
  curve: Curve
}

/** A Nebula v1 certificate: its details and the CA's signature over the marshaled details (64 bytes for Ed25519). */
export interface NebulaCertificate {
  details: CertificateDetails
  signature: Buffer
}

/** `nebula-cert print -json` of a certificate (field names as Nebula writes them; `curve` as in 1.7.0+). */
export interface CertificatePrintJson {
  details: {
    name: string
    ips: string[]
    subnets: string[]
    groups: string[]
    /** RFC 3339, UTC, whole seconds, e.g. `2026-11-21T05:06:01Z`. */
    notBefore: string
    notAfter: string
    /** Lowercase hex. */
    publicKey: string
    isCa: boolean
    issuer: string
    curve: Curve
  }
  fingerprint: string
  /** Lowercase hex. */
  signature: string
}

/** Options of {@link verifyCertificate}. */
export interface VerifyOptions {
  /** Trusted CA certificates (a trust bundle), already vetted by the caller; non-CA entries are ignored. */
  trusted: readonly NebulaCertificate[]
  /** Fingerprints (hex SHA-256, any case) to refuse. */
  blocklist?: readonly string[]
  /** The time to verify at, Unix seconds (fractions allowed); default now. */
  now?: number
}

const CURVE_P256 = 1n
const ED25519_KEY_LENGTH = 32
const P256_KEY_LENGTH = 65
const ISSUER_LENGTH = 32
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex')

const RAW_CERTIFICATE: MessageSchema = {
  1: {name: 'Details', wire: 'len', message: true},
  2: {name: 'Signature', wire: 'len'},
}

const RAW_DETAILS: MessageSchema = {
  1: {name: 'Name', wire: 'len'},
  2: {name: 'Ips', wire: 'len'},
  3: {name: 'Subnets', wire: 'len'},
  4: {name: 'Groups', wire: 'len', repeated: true},
  5: {name: 'NotBefore', wire: 'varint'},
  6: {name: 'NotAfter', wire: 'varint'},
  7: {name: 'PublicKey', wire: 'len'},
  8: {name: 'IsCA', wire: 'varint'},
  9: {name: 'Issuer', wire: 'len'},
  100: {name: 'curve', wire: 'varint'},
}

const fail: Fail = (message) => {
  throw new CertificateFormatError(`invalid Nebula certificate: ${message}`)
}

/**
 * The canonical protobuf encoding of the details (`RawNebulaCertificateDetails`): the bytes a CA signs.
 * @throws CertificateFormatError when a value cannot be encoded: a CIDR that is not IPv4 `a.b.c.d/n`, a time that is
 *   not a safe integer, a public key of the wrong length for the curve, an issuer that is not 64 lowercase hex
 *   characters (or `''`), a string that is not well-formed Unicode
 */
export function marshalDetails(details: CertificateDetails): Buffer {
  const {name, ips, subnets, groups, notBefore, notAfter, publicKey, isCA, issuer, curve} = details
  checkString(name, 'name')
  for (const group of groups) checkString(group, 'group')
  for (const [field, value] of [['notBefore', notBefore], ['notAfter', notAfter]] as const) {
    if (!Number.isSafeInteger(value)) fail(`${field} is not a whole number of seconds: ${value}`)
  }
  if (curve !== 'CURVE25519' && curve !== 'P256') fail(`unknown curve ${String(curve)}`)
  checkKeyLength(publicKey, curve)
  if (issuer !== '' && !/^[0-9a-f]{64}$/.test(issuer)) fail(`issuer is not a lowercase hex SHA-256: ${issuer}`)
  return new ProtoWriter()
    .string(1, name)
    .packedUint32(2, ips.flatMap((cidr) => cidrToPair(cidr, 'ip')))
    .packedUint32(3, subnets.flatMap((cidr) => cidrToPair(cidr, 'subnet')))
    .repeatedString(4, groups)
    .varint(5, notBefore)
    .varint(6, notAfter)
    .bytes(7, publicKey)
    .bool(8, isCA)
    .bytes(9, Buffer.from(issuer, 'hex'))
    .varint(100, curve === 'P256' ? CURVE_P256 : 0n)
    .finish()
}

/**
 * The canonical protobuf encoding of a whole certificate (`RawNebulaCertificate`); its SHA-256 is the fingerprint.
 * @throws CertificateFormatError as {@link marshalDetails}
 */
export function marshalCertificate(certificate: NebulaCertificate): Buffer {
  return new ProtoWriter().message(1, marshalDetails(certificate.details)).bytes(2, certificate.signature).finish()
}

/**
 * Parses the protobuf bytes of a v1 certificate. Accepts only the canonical encoding, so that
 * `marshalCertificate(unmarshalCertificate(b))` equals `b`.
 * @throws CertificateFormatError on truncated data, bad varints or wire types, unknown, duplicate or out-of-order
 *   fields, explicit default values, invalid UTF-8, an odd number of IP or subnet words, a mask that is not a prefix,
 *   a public key of the wrong length, an issuer that is not 32 bytes, an unknown curve, missing details
 */
export function unmarshalCertificate(bytes: Uint8Array): NebulaCertificate {
  if (bytes.length === 0) fail('no data')
  const raw = decodeMessage(bytes, RAW_CERTIFICATE, fail)
  if (!raw.has(1)) fail('no details')
  const d = decodeMessage(raw.bytes(1), RAW_DETAILS, fail)

  const curveValue = d.varint(100)
  if (curveValue > CURVE_P256) fail(`unknown curve ${curveValue}`)
  const curve: Curve = curveValue === CURVE_P256 ? 'P256' : 'CURVE25519'
  const publicKey = Buffer.from(d.bytes(7))
  checkKeyLength(publicKey, curve)
  if (d.varint(8) > 1n) fail('IsCA is not a boolean')
  const issuer = d.bytes(9)
  if (d.has(9) && issuer.length !== ISSUER_LENGTH) fail(`issuer is ${issuer.length} bytes, expected ${ISSUER_LENGTH}`)

  const certificate: NebulaCertificate = {
    details: {
      name: toUtf8String(d.bytes(1), 'Name', fail),
      ips: pairsToCidrs(toPackedUint32(d.bytes(2), 'Ips', fail), 'Ips'),
      subnets: pairsToCidrs(toPackedUint32(d.bytes(3), 'Subnets', fail), 'Subnets'),
      groups: d.repeated(4).map((group) => toUtf8String(group, 'Groups', fail)),
      notBefore: toInt64(d.varint(5), 'NotBefore', fail),
      notAfter: toInt64(d.varint(6), 'NotAfter', fail),
      publicKey,
      isCA: d.varint(8) === 1n,
      issuer: issuer.toString('hex'),
      curve,
    },
    signature: Buffer.from(raw.bytes(2)),
  }
  // Every rule above should make the encoding canonical; this guards the invariant Nebula relies on.
  if (!marshalCertificate(certificate).equals(bytes)) fail('not canonically encoded')
  return certificate
}

/** PEM (`NEBULA CERTIFICATE`) of a certificate, byte for byte as nebula-cert writes it. */
export function certificateToPem(certificate: NebulaCertificate): string {
  return encodePem(CERTIFICATE_BANNER, marshalCertificate(certificate))
}

/**
 * Every certificate of a PEM text, in order (a trust bundle such as Nebula's `pki.ca` holds several).
 * Blank and `#` comment lines between blocks are allowed.
 * @throws CertificateFormatError on bad PEM, a block with another banner (a v2 certificate included), no block at all,
 *   or a malformed certificate
 */
export function certificatesFromPem(pem: string | Uint8Array): NebulaCertificate[] {
  const blocks = decodePemBlocks(pem, fail)
  if (blocks.length === 0) fail('no NEBULA CERTIFICATE PEM block found')
  return blocks.map((block) => {
    if (block.type === CERTIFICATE_V2_BANNER) fail('v2 certificates are not supported (Nebula 1.6 reads v1 only)')
    if (block.type !== CERTIFICATE_BANNER) fail(`expected a ${CERTIFICATE_BANNER} PEM block, found ${block.type}`)
    return unmarshalCertificate(block.bytes)
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
 * The certificate's fingerprint: lowercase hex SHA-256 of its full marshaled bytes (what Nebula's blocklist and a
 * host certificate's `issuer` hold).
 * @throws CertificateFormatError as {@link marshalDetails}
 */
export function fingerprint(certificate: NebulaCertificate): string {
  return createHash('sha256').update(marshalCertificate(certificate)).digest('hex')
}

/**
 * Signs details with a CA key: Ed25519 over {@link marshalDetails} (deterministic, so re-signing the same details
 * gives the same certificate). The details are copied, not checked against the CA (see {@link verifyCertificate}).
 * @param caPrivateKey 64-byte Nebula Ed25519 key, seed ‖ public key
 * @throws CertificateFormatError when the details cannot be encoded or ask for the P256 curve;
 *   KeyFormatError when the key is malformed
 */
export function signCertificate(details: CertificateDetails, caPrivateKey: Uint8Array): NebulaCertificate {
  if (details.curve !== 'CURVE25519') fail(`signing ${details.curve} certificates is not supported`)
  assertCaPrivateKey(caPrivateKey)
  const copy = copyDetails(details)
  return {details: copy, signature: ed25519Sign(caPrivateKey, marshalDetails(copy))}
}

/**
 * Whether the certificate's signature over its marshaled details verifies with `publicKey` (the issuing CA's; the
 * certificate's own for a self-signed CA): Ed25519 for CURVE25519 (32-byte key), ECDSA P-256 with SHA-256 and an
 * ASN.1 signature for P256 (65-byte key). Never throws.
 */
export function checkSignature(certificate: NebulaCertificate, publicKey: Uint8Array): boolean {
  let signed: Buffer
  try {
    signed = marshalDetails(certificate.details)
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

  if (details.notAfter > caDetails.notAfter) reject('validity-outside-ca', 'expires after its CA')
  if (details.notBefore < caDetails.notBefore) reject('validity-outside-ca', 'is valid before its CA')

  if (caDetails.groups.length > 0) {
    const allowed = new Set(caDetails.groups)
    for (const group of details.groups) {
      if (!allowed.has(group)) {
        reject('group-not-allowed', `has group ${JSON.stringify(group)}, which its CA does not allow`)
      }
    }
  }
  for (const [field, reason] of [['ips', 'ip-not-allowed'], ['subnets', 'subnet-not-allowed']] as const) {
    const limits = caDetails[field].map((cidr) => parseCidr(cidr, field))
    if (limits.length === 0) continue
    for (const cidr of details[field]) {
      const [address, prefix] = parseCidr(cidr, field)
      const inside = limits.some(
        ([caAddress, caPrefix]) => prefix >= caPrefix && sameNetwork(address, caAddress, caPrefix),
      )
      if (!inside) reject(reason, `has ${field === 'ips' ? 'IP' : 'subnet'} ${cidr} outside its CA's ranges`)
    }
  }
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

function copyDetails(details: CertificateDetails): CertificateDetails {
  return {
    ...details,
    ips: [...details.ips],
    subnets: [...details.subnets],
    groups: [...details.groups],
    publicKey: Buffer.from(details.publicKey),
  }
}

function checkKeyLength(publicKey: Buffer, curve: Curve): void {
  const expected = curve === 'P256' ? P256_KEY_LENGTH : ED25519_KEY_LENGTH
  if (publicKey.length !== expected) fail(`public key is ${publicKey.length} bytes, expected ${expected} for ${curve}`)
}

function checkString(value: string, what: string): void {
  if (Buffer.from(value, 'utf8').toString('utf8') !== value) fail(`${what} is not well-formed Unicode`)
}

const CIDR = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\/(0|[1-9]\d?)$/

/** `a.b.c.d/n` → [address as uint32, prefix length]. */
function parseCidr(cidr: string, what: string): [number, number] {
  const match = CIDR.exec(cidr)
  const parts = match ? match.slice(1).map(Number) : []
  if (!match || parts.slice(0, 4).some((octet) => octet > 255) || parts[4]! > 32) {
    fail(`${what} ${JSON.stringify(cidr)} is not an IPv4 CIDR such as 10.42.1.5/16`)
  }
  const [a, b, c, d, prefix] = parts as [number, number, number, number, number]
  return [((a << 24) | (b << 16) | (c << 8) | d) >>> 0, prefix]
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0
}

function sameNetwork(a: number, b: number, prefix: number): boolean {
  const mask = maskOf(prefix)
  return ((a & mask) >>> 0) === ((b & mask) >>> 0)
}

function cidrToPair(cidr: string, what: string): [number, number] {
  const [address, prefix] = parseCidr(cidr, what)
  return [address, maskOf(prefix)]
}

function pairsToCidrs(words: number[], field: string): string[] {
  if (words.length % 2 !== 0) fail(`${field} holds an odd number of words (address, mask pairs expected)`)
  const cidrs: string[] = []
  for (let i = 0; i < words.length; i += 2) {
    const address = words[i]!
    const mask = words[i + 1]!
    const prefix = Math.clz32(~mask)
    if (maskOf(prefix) !== mask) fail(`${field} has a mask that is not a prefix: ${mask.toString(16)}`)
    const octets = [address >>> 24, (address >>> 16) & 255, (address >>> 8) & 255, address & 255]
    cidrs.push(`${octets.join('.')}/${prefix}`)
  }
  return cidrs
}

function formatTime(seconds: number): string {
  const date = new Date(seconds * 1000)
  if (Number.isNaN(date.getTime())) return String(seconds)
  return date.toISOString().replace(/\.000Z$/, 'Z')
}
