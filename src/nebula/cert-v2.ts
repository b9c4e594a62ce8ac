/**
 * The Nebula v2 certificate format (Nebula 1.10+; `cert/cert_v2.go` and `cert/cert_v2.asn1` in slackhq/nebula, read at
 * v1.11.0): ASN.1 DER.
 *
 * ```
 * Certificate ::= SEQUENCE { details [0] Details, curve [1] Curve OPTIONAL (P256 only), publicKey [2] OCTET STRING,
 *                            signature [3] OCTET STRING }
 * Details ::= [0] { name [0] UTF8 (1–253 bytes), networks [1] OPTIONAL, unsafeNetworks [2] OPTIONAL,
 *                   groups [3] SEQUENCE OF UTF8String OPTIONAL, isCA [4] BOOLEAN OPTIONAL (only when true),
 *                   notBefore [5] INTEGER, notAfter [6] INTEGER (Unix seconds), issuer [7] OCTET STRING OPTIONAL }
 * a network ::= OCTET STRING (address, 4 or 16 bytes, host bits kept ‖ prefix length, 1 byte)
 * ```
 *
 * The details' tag is context-specific and constructed (0xA0) and holds the fields directly. Empty lists and a false
 * isCA are left out. Networks and unsafe networks are sorted (IPv4 first, then by address, then prefix length) when a
 * certificate is signed. The signed bytes are the details' TLV ‖ the curve byte (0 Curve25519, 1 P256) ‖ the public
 * key; the fingerprint is the SHA-256 of the signed bytes ‖ the signature (not of the outer encoding).
 *
 * Only the canonical encoding that nebula-cert writes is accepted (sorted networks, no trailing data anywhere), so that
 * `marshal(unmarshal(b))` equals `b` and the fingerprint computed from the parsed certificate is Nebula's.
 */

import type {CertificateDetails, CertificateFormat, CertificatePrintJson, Curve, NebulaCertificate} from './certificate.js'
import {type CertPrefix, comparePrefixes, formatCertPrefix, isIpv4Mapped, isUnspecified, parseCertPrefix} from './cidr.js'
import {derElement, derIntegerContents, DerReader, readDerInteger} from './der.js'
import {CertificateFormatError} from './errors.js'
import {CERTIFICATE_V2_BANNER, type Fail} from './pem.js'
import {printTime} from './print.js'

const TAG = {
  certificate: 0x30,
  details: 0xa0,
  curve: 0x81,
  publicKey: 0x82,
  signature: 0x83,
  name: 0x80,
  networks: 0xa1,
  unsafeNetworks: 0xa2,
  groups: 0xa3,
  isCA: 0x84,
  notBefore: 0x85,
  notAfter: 0x86,
  issuer: 0x87,
  octetString: 0x04,
  utf8String: 0x0c,
} as const

/** The curve byte of the signed bytes and of the `curve` field. */
const CURVE_BYTE: Record<Curve, number> = {CURVE25519: 0, P256: 1}
const KEY_LENGTH: Record<Curve, number> = {CURVE25519: 32, P256: 65}
const MAX_NAME_BYTES = 253
/** Largest certificate Nebula reads (`MaxCertificateSize`). */
const MAX_CERTIFICATE_BYTES = 65_536
const ISSUER_LENGTH = 32

const fail: Fail = (message) => {
  throw new CertificateFormatError(`invalid Nebula v2 certificate: ${message}`)
}

/**
 * The DER encoding of the details (with their tag), fields in the order given (`prepare` sorts the networks).
 * @throws CertificateFormatError when a value cannot be encoded: an empty or over-long name, a CIDR that does not parse,
 *   an empty group, a time that is not a safe integer, a public key of the wrong length for the curve, an issuer that
 *   is not 64 lowercase hex characters (or `''`), a string that is not well-formed Unicode
 */
export function marshalDetails(details: CertificateDetails): Buffer {
  const {name, ips, subnets, groups, notBefore, notAfter, publicKey, isCA, issuer, curve} = details
  const nameBytes = utf8(name, 'name')
  if (nameBytes.length === 0 || nameBytes.length > MAX_NAME_BYTES) fail(`the name must be 1 to ${MAX_NAME_BYTES} bytes, not ${nameBytes.length}`)
  for (const [field, value] of [['notBefore', notBefore], ['notAfter', notAfter]] as const) {
    if (!Number.isSafeInteger(value)) fail(`${field} is not a whole number of seconds: ${value}`)
  }
  checkKey(publicKey, curve)
  if (issuer !== '' && !/^[0-9a-f]{64}$/.test(issuer)) fail(`issuer is not a lowercase hex SHA-256: ${issuer}`)
  const parts: Buffer[] = [derElement(TAG.name, nameBytes)]
  const list = (tag: number, items: Buffer[]): void => {
    if (items.length > 0) parts.push(derElement(tag, Buffer.concat(items)))
  }
  const networkItems = (cidrs: string[], what: string): Buffer[] =>
    cidrs.map((cidr) => {
      const {address, bits} = parseCertPrefix(cidr, what, fail, {ipv6: true})
      return derElement(TAG.octetString, Buffer.concat([address, Buffer.from([bits])]))
    })
  list(TAG.networks, networkItems(ips, 'network'))
  list(TAG.unsafeNetworks, networkItems(subnets, 'unsafe network'))
  list(
    TAG.groups,
    groups.map((group) => {
      const bytes = utf8(group, 'group')
      if (bytes.length === 0) fail('a group is empty')
      return derElement(TAG.utf8String, bytes)
    }),
  )
  if (isCA) parts.push(derElement(TAG.isCA, Buffer.from([0xff])))
  parts.push(derElement(TAG.notBefore, derIntegerContents(notBefore)), derElement(TAG.notAfter, derIntegerContents(notAfter)))
  if (issuer !== '') parts.push(derElement(TAG.issuer, Buffer.from(issuer, 'hex')))
  return derElement(TAG.details, Buffer.concat(parts))
}

/**
 * What a CA signs for `details` (`marshalForSigning`): the details' DER ‖ the curve byte ‖ the public key.
 * @throws CertificateFormatError as {@link marshalDetails}
 */
export function signedBytes(details: CertificateDetails): Buffer {
  return Buffer.concat([marshalDetails(details), Buffer.from([CURVE_BYTE[details.curve]]), details.publicKey])
}

/**
 * The certificate as stored (the PEM body).
 * @throws CertificateFormatError as {@link marshalDetails}
 */
export function marshalCertificate(certificate: NebulaCertificate): Buffer {
  const {details, signature} = certificate
  return derElement(
    TAG.certificate,
    Buffer.concat([
      marshalDetails(details),
      ...(details.curve === 'P256' ? [derElement(TAG.curve, Buffer.from([CURVE_BYTE.P256]))] : []),
      derElement(TAG.publicKey, details.publicKey),
      derElement(TAG.signature, signature),
    ]),
  )
}

/**
 * Parses a v2 certificate (the PEM body). Accepts only the canonical encoding (see the module comment) and only
 * certificates Nebula's rules allow (see {@link prepare}).
 * @throws CertificateFormatError for anything else, naming what is wrong
 */
export function unmarshalCertificate(bytes: Uint8Array): NebulaCertificate {
  const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (input.length === 0 || input.length > MAX_CERTIFICATE_BYTES) fail(`${input.length} bytes, expected 1 to ${MAX_CERTIFICATE_BYTES}`)
  const outer = new DerReader(input, fail)
  const body = outer.read(TAG.certificate, 'the certificate SEQUENCE')
  if (!outer.done()) fail('data after the certificate')
  const fields = new DerReader(body, fail)
  const rawDetails = fields.read(TAG.details, 'details')
  const curveField = fields.optional(TAG.curve)
  if (curveField && !(curveField.length === 1 && curveField[0] === CURVE_BYTE.P256)) fail('the curve field is not P256 (Curve25519 leaves it out)')
  const curve: Curve = curveField ? 'P256' : 'CURVE25519'
  const publicKey = Buffer.from(fields.read(TAG.publicKey, 'public key'))
  const signature = Buffer.from(fields.read(TAG.signature, 'signature'))
  if (signature.length === 0) fail('the signature is empty')
  if (!fields.done()) fail('data after the signature')
  checkKey(publicKey, curve)

  const d = new DerReader(rawDetails, fail)
  const name = utf8Field(d.read(TAG.name, 'name'), 'name')
  const networks = networkList(d.optional(TAG.networks), 'networks')
  const unsafeNetworks = networkList(d.optional(TAG.unsafeNetworks), 'unsafe networks')
  const groupsField = d.optional(TAG.groups)
  const groups: string[] = []
  if (groupsField) {
    const items = new DerReader(groupsField, fail)
    if (items.done()) fail('the groups list is empty (not canonical)')
    while (!items.done()) {
      const group = items.read(TAG.utf8String, 'a group')
      if (group.length === 0) fail('a group is empty')
      groups.push(utf8Field(group, 'group'))
    }
  }
  const isCA = d.optional(TAG.isCA)
  if (isCA && !(isCA.length === 1 && isCA[0] === 0xff)) fail('isCA is not TRUE as DER writes it (false is left out)')
  const notBefore = readDerInteger(d.read(TAG.notBefore, 'notBefore'), 'notBefore', fail)
  const notAfter = readDerInteger(d.read(TAG.notAfter, 'notAfter'), 'notAfter', fail)
  const issuer = d.optional(TAG.issuer)
  if (issuer && issuer.length !== ISSUER_LENGTH) fail(`issuer is ${issuer.length} bytes, expected ${ISSUER_LENGTH}`)
  if (!d.done()) fail('data after the details')

  const details: CertificateDetails = {
    name,
    ips: networks,
    subnets: unsafeNetworks,
    groups,
    notBefore,
    notAfter,
    publicKey,
    isCA: isCA !== undefined,
    issuer: issuer ? issuer.toString('hex') : '',
    curve,
  }
  const checked = prepare(details)
  const unsorted = (field: 'ips' | 'subnets') => checked[field].some((cidr, i) => cidr !== details[field][i])
  if (unsorted('ips') || unsorted('subnets')) fail('the networks are not sorted as nebula-cert sorts them (not canonical)')
  const certificate: NebulaCertificate = {version: 2, details, signature}
  // Every rule above should make the encoding canonical; this guards the invariant the fingerprint relies on.
  if (!marshalCertificate(certificate).equals(input)) fail('not canonically encoded')
  return certificate
}

/**
 * A checked copy of `details` as v2 signs them (`validate` in slackhq/nebula): networks and unsafe networks sorted and
 * printed as Go prints them; refused: a host without a network, a network at the unspecified address (`0.0.0.0`, `::`)
 * or IPv4-mapped IPv6, a duplicate network or unsafe network, a host's unsafe network of a family none of its networks
 * has, and anything {@link marshalDetails} cannot encode.
 * @throws CertificateFormatError naming the rule
 */
export function prepare(details: CertificateDetails): CertificateDetails {
  const parse = (cidrs: string[], what: string): CertPrefix[] => cidrs.map((cidr) => parseCertPrefix(cidr, what, fail, {ipv6: true}))
  const networks = parse(details.ips, 'network')
  const unsafeNetworks = parse(details.subnets, 'unsafe network')
  if (!details.isCA && networks.length === 0) fail('a host certificate needs at least one network')
  for (const network of networks) {
    if (isUnspecified(network)) fail(`network ${formatCertPrefix(network)} is the unspecified address`)
    if (isIpv4Mapped(network)) fail(`network ${formatCertPrefix(network)} is an IPv4-mapped IPv6 address`)
  }
  if (!details.isCA) {
    for (const unsafe of unsafeNetworks) {
      if (!networks.some((n) => n.address.length === unsafe.address.length)) {
        fail(`unsafe network ${formatCertPrefix(unsafe)} needs a network of the same IP family`)
      }
    }
  }
  const sorted = (list: CertPrefix[], what: string): string[] => {
    const texts = [...list].sort(comparePrefixes).map((prefix) => formatCertPrefix(prefix))
    const duplicate = texts.find((text, i) => i > 0 && text === texts[i - 1])
    if (duplicate) fail(`${what} ${duplicate} is listed twice`)
    return texts
  }
  const copy: CertificateDetails = {
    ...details,
    ips: sorted(networks, 'network'),
    subnets: sorted(unsafeNetworks, 'unsafe network'),
    groups: [...details.groups],
    publicKey: Buffer.from(details.publicKey),
  }
  marshalDetails(copy)
  return copy
}

/** `nebula-cert print -json` (1.10+) of a v2 certificate: curve and public key outside the details, absent lists `null`. */
function printJson(certificate: NebulaCertificate, fingerprint: string): CertificatePrintJson {
  const {details} = certificate
  const orNull = (list: string[]): string[] | null => (list.length > 0 ? [...list] : null)
  return {
    curve: details.curve,
    details: {
      groups: orNull(details.groups),
      isCa: details.isCA,
      issuer: details.issuer,
      name: details.name,
      networks: orNull(details.ips),
      notAfter: printTime(details.notAfter),
      notBefore: printTime(details.notBefore),
      unsafeNetworks: orNull(details.subnets),
    },
    fingerprint,
    publicKey: details.publicKey.toString('hex'),
    signature: certificate.signature.toString('hex'),
    version: 2,
  }
}

function networkList(field: Buffer | undefined, what: string): string[] {
  if (!field) return []
  const items = new DerReader(field, fail)
  if (items.done()) fail(`the ${what} list is empty (not canonical)`)
  const out: string[] = []
  while (!items.done()) {
    const item = items.read(TAG.octetString, `an item of ${what}`)
    if (item.length !== 5 && item.length !== 17) fail(`an item of ${what} is ${item.length} bytes, expected 5 or 17`)
    const bits = item.at(-1)!
    const address = Buffer.from(item.subarray(0, -1))
    if (bits > address.length * 8) fail(`an item of ${what} has prefix length ${bits}`)
    out.push(formatCertPrefix({address, bits}))
  }
  return out
}

function checkKey(publicKey: Buffer, curve: Curve): void {
  if (curve !== 'CURVE25519' && curve !== 'P256') fail(`unknown curve ${String(curve)}`)
  const expected = KEY_LENGTH[curve]
  if (publicKey.length !== expected) fail(`public key is ${publicKey.length} bytes, expected ${expected} for ${curve}`)
}

function utf8(value: string, what: string): Buffer {
  const bytes = Buffer.from(value, 'utf8')
  if (bytes.toString('utf8') !== value) fail(`${what} is not well-formed Unicode`)
  return bytes
}

function utf8Field(bytes: Buffer, what: string): string {
  const text = bytes.toString('utf8')
  if (!Buffer.from(text, 'utf8').equals(bytes)) fail(`${what} is not valid UTF-8`)
  return text
}

/** The v2 format, as `codec.ts` dispatches to it. */
export const CERTIFICATE_V2: CertificateFormat = {
  version: 2,
  banner: CERTIFICATE_V2_BANNER,
  prepare,
  signedBytes,
  marshal: marshalCertificate,
  unmarshal: unmarshalCertificate,
  fingerprintBytes: (certificate) => Buffer.concat([signedBytes(certificate.details), certificate.signature]),
  printJson,
}
