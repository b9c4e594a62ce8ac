/**
 * The Nebula v1 certificate format: protobuf `RawNebulaCertificate { 1: Details, 2: Signature }` from `cert/cert.proto`
 * in slackhq/nebula (v1.6.1; field 100 `curve` from v1.7.0). The only format Nebula 1.6.1 reads; every later version
 * reads it too.
 *
 * The encoding is the canonical one that Go's `proto.Marshal` gives, and only that encoding is accepted, because
 * Nebula re-marshals a parsed certificate before it checks the signature and computes the fingerprint. The signed
 * bytes are the marshaled details; the fingerprint is the SHA-256 of the whole marshaled certificate.
 */

import type {CertificateDetails, CertificateFormat, CertificatePrintJson, Curve, NebulaCertificate} from './certificate.js'
import {parseCertPrefix, prefixMask} from './cidr.js'
import {CertificateFormatError} from './errors.js'
import {CERTIFICATE_BANNER, type Fail} from './pem.js'
import {printTime} from './print.js'
import {decodeMessage, type MessageSchema, ProtoWriter, toInt64, toPackedUint32, toUtf8String} from './proto.js'

const CURVE_P256 = 1n
const ED25519_KEY_LENGTH = 32
const P256_KEY_LENGTH = 65
const ISSUER_LENGTH = 32

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
    version: 1,
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

function checkKeyLength(publicKey: Buffer, curve: Curve): void {
  const expected = curve === 'P256' ? P256_KEY_LENGTH : ED25519_KEY_LENGTH
  if (publicKey.length !== expected) fail(`public key is ${publicKey.length} bytes, expected ${expected} for ${curve}`)
}

function checkString(value: string, what: string): void {
  if (Buffer.from(value, 'utf8').toString('utf8') !== value) fail(`${what} is not well-formed Unicode`)
}

function cidrToPair(cidr: string, what: string): [number, number] {
  const {address, bits} = parseCertPrefix(cidr, what, fail)
  return [address.readUInt32BE(0), prefixMask(bits)]
}

function pairsToCidrs(words: number[], field: string): string[] {
  if (words.length % 2 !== 0) fail(`${field} holds an odd number of words (address, mask pairs expected)`)
  const cidrs: string[] = []
  for (let i = 0; i < words.length; i += 2) {
    const address = words[i]!
    const mask = words[i + 1]!
    const prefix = Math.clz32(~mask)
    if (prefixMask(prefix) !== mask) fail(`${field} has a mask that is not a prefix: ${mask.toString(16)}`)
    const octets = [address >>> 24, (address >>> 16) & 255, (address >>> 8) & 255, address & 255]
    cidrs.push(`${octets.join('.')}/${prefix}`)
  }
  return cidrs
}

/**
 * A checked copy of `details` as v1 signs them: order kept, as nebula-cert keeps it.
 * @throws CertificateFormatError as {@link marshalDetails}
 */
function prepare(details: CertificateDetails): CertificateDetails {
  const copy = {...details, ips: [...details.ips], subnets: [...details.subnets], groups: [...details.groups], publicKey: Buffer.from(details.publicKey)}
  marshalDetails(copy)
  return copy
}

/** `nebula-cert print -json` (1.10+) of a v1 certificate: curve and public key among the details, empty lists `[]`. */
function printJson(certificate: NebulaCertificate, fingerprint: string): CertificatePrintJson {
  const {details} = certificate
  return {
    details: {
      curve: details.curve,
      groups: [...details.groups],
      isCa: details.isCA,
      issuer: details.issuer,
      name: details.name,
      networks: [...details.ips],
      notAfter: printTime(details.notAfter),
      notBefore: printTime(details.notBefore),
      publicKey: details.publicKey.toString('hex'),
      unsafeNetworks: [...details.subnets],
    },
    fingerprint,
    signature: certificate.signature.toString('hex'),
    version: 1,
  }
}

/** The v1 format, as `codec.ts` dispatches to it. */
export const CERTIFICATE_V1: CertificateFormat = {
  version: 1,
  banner: CERTIFICATE_BANNER,
  prepare,
  signedBytes: marshalDetails,
  marshal: marshalCertificate,
  unmarshal: unmarshalCertificate,
  fingerprintBytes: marshalCertificate,
  printJson,
}
