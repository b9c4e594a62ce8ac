/**
 * v2 certificates and P256 against nebula-cert 1.11: its fixtures (test/fixtures/nebula-cert-v2) decode and re-encode
 * byte for byte, print the same fields and fingerprint, and re-sign exactly (Ed25519) or verify (ECDSA); upstream's
 * vectors; only canonical v2 encodings are read; P256 keys, signatures (low-s) and encrypted keys; what we sign passes
 * the newest nebula-cert; a blocklisted P256 certificate cannot come back with the other form of its signature.
 */

import {createHash} from 'node:crypto'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {derElement} from '../src/nebula/der.js'
import {
  blocklistFingerprints,
  caKeyCurve,
  caPrivateKeyFromPem,
  caPrivateKeyMatchesCertificate,
  caPrivateKeyToPem,
  caSign,
  caSignatureValid,
  type CertificateDetails,
  CertificateFormatError,
  certificateFromPem,
  certificatesFromPem,
  certificateToPem,
  checkSignature,
  decodePemBlocks,
  ecdsaOtherForm,
  encryptCaKey,
  fingerprint,
  generateCaKeyPair,
  generateHostKeyPair,
  hostKeyMatchesCertificate,
  hostPrivateKeyToPem,
  hostPublicKeyToPem,
  KeyFormatError,
  marshalCertificate,
  marshalDetailsV2,
  type NebulaCertificate,
  readCaPrivateKey,
  readHostPrivateKey,
  readHostPublicKey,
  signCertificate,
  signDetails,
  signedBytesV2,
  SigningError,
  toPrintJson,
  unmarshalCertificateV2,
  verifyCertificate,
} from '../src/nebula/index.js'
import {nebulaBuild} from './e2e/debian.js'
import {nebulaCertCheck} from './helpers.js'

const V2 = fileURLToPath(new URL('fixtures/nebula-cert-v2/', import.meta.url))
const V1 = fileURLToPath(new URL('fixtures/nebula-cert/', import.meta.url))
const v2 = (name: string): Promise<string> => readFile(join(V2, name), 'utf8')
const v1 = (name: string): Promise<string> => readFile(join(V1, name), 'utf8')
const PASSPHRASE = 'tbmesh fixture passphrase'
const ORDER = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551')
const hex = (text: string): Buffer => Buffer.from(text.replaceAll(/\s+/g, ''), 'hex')

/** Every certificate fixture, and the key file of the CA that signed each of its blocks (undefined: ECDSA, verify only). */
const FIXTURES: Record<string, Array<{key?: () => Promise<Buffer>; ca: () => Promise<string>}>> = {
  'ca-v2': [{key: async () => caPrivateKeyFromPem(await v2('ca-v2.key')), ca: () => v2('ca-v2.crt')}],
  'host-v2': [{key: async () => caPrivateKeyFromPem(await v2('ca-v2.key')), ca: () => v2('ca-v2.crt')}],
  'host-v2-unsafe': [{key: async () => caPrivateKeyFromPem(await v2('ca-v2.key')), ca: () => v2('ca-v2.crt')}],
  'ca-v2-encrypted': [{key: async () => readCaPrivateKey(await v2('ca-v2-encrypted.key'), PASSPHRASE), ca: () => v2('ca-v2-encrypted.crt')}],
  'host-v1ca-v2': [{key: async () => caPrivateKeyFromPem(await v1('ca.key')), ca: () => v1('ca.crt')}],
  'host-dual': [
    {key: async () => caPrivateKeyFromPem(await v1('ca.key')), ca: () => v1('ca.crt')},
    {key: async () => caPrivateKeyFromPem(await v2('ca-v2.key')), ca: () => v2('ca-v2.crt')},
  ],
  'ca-p256': [{ca: () => v2('ca-p256.crt')}],
  'host-p256': [{ca: () => v2('ca-p256.crt')}],
  'host-p256-gen': [{ca: () => v2('ca-p256.crt')}],
  'ca-p256-v1': [{ca: () => v2('ca-p256-v1.crt')}],
  'host-p256-v1': [{ca: () => v2('ca-p256-v1.crt')}],
  'ca-p256-encrypted': [{ca: () => v2('ca-p256-encrypted.crt')}],
}

function formatError(fn: () => unknown): CertificateFormatError {
  try {
    fn()
  } catch (error) {
    if (error instanceof CertificateFormatError) return error
    throw error
  }
  throw new Error('expected a CertificateFormatError')
}

describe('nebula-cert 1.11 fixtures', () => {
  for (const [name, blocks] of Object.entries(FIXTURES)) {
    it(`${name}: round-trips byte for byte, prints what nebula-cert printed, ${blocks[0]!.key ? 're-signs exactly' : 'verifies'}`, async () => {
      const pem = await v2(`${name}.crt`)
      const certificates = certificatesFromPem(pem)
      expect(certificates).toHaveLength(blocks.length)
      expect(certificates.map((c) => certificateToPem(c)).join('')).toBe(pem)
      expect(certificates.map((c) => toPrintJson(c))).toEqual(JSON.parse(await v2(`${name}.json`)))
      for (const [i, certificate] of certificates.entries()) {
        const {key, ca} = blocks[i]!
        const issuer = certificateFromPem(await ca())
        const now = certificate.details.notBefore + 60
        if (certificate.details.isCA) expect(checkSignature(certificate, certificate.details.publicKey)).toBe(true)
        else expect(() => verifyCertificate(certificate, {trusted: [issuer], now})).not.toThrow()
        if (key) {
          const resigned = signDetails(certificate.details, await key(), certificate.version)
          expect(certificateToPem(resigned)).toBe(certificateToPem(certificate))
        }
      }
    })
  }

  it('keeps v2 networks sorted as nebula-cert stored them (IPv4 first) and IPv6 as Go prints it', async () => {
    const {details, version} = certificateFromPem(await v2('host-v2-unsafe.crt'))
    expect(version).toBe(2)
    expect(details.ips).toEqual(['10.42.9.9/16', 'fd42::9/64'])
    expect(details.subnets).toEqual(['172.16.0.0/12', '192.168.60.0/24'])
  })

  it('matches the fixture keys to their certificates, per curve', async () => {
    const caP256 = certificateFromPem(await v2('ca-p256.crt'))
    const caKey = caPrivateKeyFromPem(await v2('ca-p256.key'))
    expect(caKeyCurve(caKey)).toBe('P256')
    expect(caPrivateKeyMatchesCertificate(caKey, caP256)).toBe(true)
    expect(caPrivateKeyMatchesCertificate(caKey, certificateFromPem(await v2('ca-p256-v1.crt')))).toBe(false)
    expect(caPrivateKeyToPem(caKey)).toBe(await v2('ca-p256.key'))
    const encrypted = await readCaPrivateKey(await v2('ca-p256-encrypted.key'), PASSPHRASE)
    expect(encrypted).toHaveLength(32)
    expect(caPrivateKeyMatchesCertificate(encrypted, certificateFromPem(await v2('ca-p256-encrypted.crt')))).toBe(true)

    const keygen = readHostPrivateKey(await v2('keygen-p256.key'))
    expect(keygen.curve).toBe('P256')
    expect(readHostPublicKey(await v2('keygen-p256.pub'))).toEqual({curve: 'P256', key: certificateFromPem(await v2('host-p256.crt')).details.publicKey})
    expect(hostPrivateKeyToPem(keygen.key, 'P256')).toBe(await v2('keygen-p256.key'))
    expect(hostPublicKeyToPem(readHostPublicKey(await v2('keygen-p256.pub')).key)).toBe(await v2('keygen-p256.pub'))
    for (const [cert, key] of [['host-p256.crt', 'keygen-p256.key'], ['host-p256-gen.crt', 'host-p256-gen.key'], ['host-p256-v1.crt', 'host-p256-v1.key'], ['host-v2.crt', 'host-v2.key']]) {
      const certificate = certificateFromPem(await v2(cert!))
      const host = readHostPrivateKey(await v2(key!))
      expect(hostKeyMatchesCertificate(host.key, certificate, host.curve), cert).toBe(true)
      // The same bytes read as a key of the other curve do not match (VerifyPrivateKey: the curves must agree).
      expect(hostKeyMatchesCertificate(host.key, certificate, host.curve === 'P256' ? 'CURVE25519' : 'P256'), cert).toBe(false)
    }
  })
})

describe('upstream vectors (cert_v2_test.go, ca_pool_test.go)', () => {
  it('TestCertificateV2_marshalForSigningStability: the same details DER and signed bytes (networks left in the given order)', () => {
    const details: CertificateDetails = {
      name: 'testing',
      ips: ['10.1.1.2/16', '10.1.1.1/24'],
      subnets: ['9.1.1.3/16', '9.1.1.2/24'],
      groups: ['test-group1', 'test-group2', 'test-group3'],
      notBefore: Date.parse('1996-05-05T00:00:00Z') / 1000,
      notAfter: Date.parse('1996-05-05T00:00:00Z') / 1000 + 60,
      publicKey: Buffer.from('1234567890abcedfghij1234567890ab'),
      isCA: false,
      issuer: '',
      curve: 'CURVE25519',
    }
    // The vector's issuer is 16 bytes; tbmesh writes only 32-byte issuers (a fingerprint), so the details are encoded
    // without one and the vector's issuer TLV is appended (and the length fixed) before comparing.
    const expected = hex('a070800774657374696e67a10e04050a0101021004050a01010118a20e0405090101031004050901010218a3270c0b746573742d67726f7570310c0b746573742d67726f7570320c0b746573742d67726f7570338504318bef808604318befbc87101234567890abcdef1234567890abcdef')
    const ours = marshalDetailsV2(details)
    const spliced = Buffer.concat([Buffer.from([0xa0, ours[1]! + 18]), ours.subarray(2), expected.subarray(-18)])
    expect(spliced.toString('hex')).toBe(expected.toString('hex'))
    expect(signedBytesV2(details).subarray(ours.length).toString('hex')).toBe(`00${Buffer.from('1234567890abcedfghij1234567890ab').toString('hex')}`)
  })

  it('TestCertificateV2_MarshalJSON: details DER of a year-0 certificate and its fingerprint', () => {
    const details: CertificateDetails = {
      name: 'testing',
      ips: ['10.1.1.1/24', '10.1.1.2/16'],
      subnets: ['9.1.1.2/24', '9.1.1.3/16'],
      groups: ['test-group1', 'test-group2', 'test-group3'],
      notBefore: -62138358000,
      notAfter: -62138358000 + 3600,
      publicKey: Buffer.from('1234567890abcedf1234567890abcedf'),
      isCA: false,
      issuer: '',
      curve: 'CURVE25519',
    }
    const expected = hex('a072800774657374696e67a10e04050a0101011804050a01010210a20e0405090101021804050901010310a3270c0b746573742d67726f7570310c0b746573742d67726f7570320c0b746573742d67726f7570338505f18843e7108605f18843f52087101234567890abcedf1234567890abcedf')
    // Again the vector's issuer is 16 bytes: compare with it spliced in, and compute the fingerprint over those bytes.
    const issuer = expected.subarray(-16)
    const ours = marshalDetailsV2(details)
    const spliced = Buffer.concat([Buffer.from([0xa0, ours[1]! + 18]), ours.subarray(2), Buffer.from([0x87, 0x10]), issuer])
    expect(spliced.toString('hex')).toBe(expected.toString('hex'))
    const signature = Buffer.from('1234567890abcedf'.repeat(4))
    const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
    expect(digest(Buffer.concat([spliced, Buffer.from([0]), details.publicKey, signature]))).toBe('152d9a7400c1e001cb76cffd035215ebb351f69eeb797f7f847dd086e15e56dd')
    expect(toPrintJson({version: 2, details, signature}).details).toMatchObject({notBefore: '0000-11-30T01:00:00Z', notAfter: '0000-11-30T02:00:00Z'})
  })

  it('the P256 CA of ca_pool_test.go: a high-s signature that verifies, its fingerprint, and the other form\'s', () => {
    const ca = certificateFromPem(`-----BEGIN NEBULA CERTIFICATE-----
CmQKEG5lYnVsYSBQMjU2IHRlc3QozRwwzbjM8K8HOkEEdrmmg40zQp44AkMq6DZp
k+coOv04r+zh33ISyhbsafnYduN17p2eD7CmHvHuerguXD9f32gcxo/KsFCKEjMe
+0ABoAYBEkcwRQIgVoTg38L7uWku9xQgsr06kxZ/viQLOO/w1Qj1vFUEnhcCIQCq
75SjTiV92kv/1GcbT3wWpAZQQDBiUHVMVmh1822szA==
-----END NEBULA CERTIFICATE-----
`)
    expect(ca.details).toMatchObject({name: 'nebula P256 test', curve: 'P256', isCA: true})
    expect(fingerprint(ca)).toBe('552bf7d99bec1fc775a0e4c324bf6d8f789b3078f1919c7960d2e5e0c351ee97')
    expect(checkSignature(ca, ca.details.publicKey)).toBe(true)
    expect(blocklistFingerprints(ca)).toEqual(['552bf7d99bec1fc775a0e4c324bf6d8f789b3078f1919c7960d2e5e0c351ee97', '1f763ebcbad39ac742d222ddcbf2ea2cf53b1fb05f3936839cc3a74856aaae98'])
  })
})

describe('only canonical v2 encodings are read', () => {
  const caKeys = generateCaKeyPair()
  const base: CertificateDetails = {
    name: 'node', ips: ['10.42.1.5/16'], subnets: [], groups: ['g'], notBefore: 1000, notAfter: 2000,
    publicKey: generateHostKeyPair().publicKey, isCA: false, issuer: 'ab'.repeat(32), curve: 'CURVE25519',
  }
  const good = marshalCertificate(signDetails(base, caKeys.privateKey, 2))
  const outerHeader = good[1] === 0x81 ? 3 : 2
  const fields = good.subarray(outerHeader + 2, outerHeader + 2 + good[outerHeader + 1]!)
  const rest = good.subarray(outerHeader + 2 + fields.length)
  const envelope = (...parts: Buffer[]): Buffer => derElement(0x30, Buffer.concat(parts))
  /** The certificate with its details' contents replaced by `details`. */
  const withDetails = (details: Buffer): Buffer => envelope(derElement(0xa0, details), rest)

  it('reads what it writes', () => {
    expect(unmarshalCertificateV2(good).details).toEqual(base)
    // the helper rebuilds the same certificate from its own details
    expect(withDetails(fields).equals(good)).toBe(true)
  })

  const cases: Array<[string, Buffer, RegExp]> = [
    ['trailing data after the certificate', Buffer.concat([good, Buffer.from([0])]), /after the certificate/],
    ['trailing data after the signature', envelope(derElement(0xa0, fields), rest, Buffer.from([0x84, 0])), /after the signature/],
    ['trailing data inside the details', withDetails(Buffer.concat([fields, Buffer.from([0x88, 0])])), /after the details/],
    ['networks out of order', (() => {
      const c = signDetails({...base, ips: ['10.42.1.5/16', '10.42.1.4/16']}, caKeys.privateKey, 2)
      return marshalCertificate(c)
    })(), /not sorted/],
    ['a duplicate network', marshalCertificate(signDetails({...base, ips: ['10.42.1.5/16', '10.42.1.5/16']}, caKeys.privateKey, 2)), /listed twice/],
    ['a host without a network', marshalCertificate(signDetails({...base, ips: []}, caKeys.privateKey, 2)), /at least one network/],
    ['the unspecified address', marshalCertificate(signDetails({...base, ips: ['0.0.0.0/0']}, caKeys.privateKey, 2)), /unspecified/],
    ['an IPv4-mapped IPv6 network', marshalCertificate(signDetails({...base, ips: ['::ffff:a2a:105/112']}, caKeys.privateKey, 2)), /IPv4-mapped/],
    ['an IPv6 unsafe network without an IPv6 network', marshalCertificate(signDetails({...base, subnets: ['fd00::/8']}, caKeys.privateKey, 2)), /same IP family/],
    ['isCA written as false', withDetails(Buffer.concat([fields.subarray(0, fields.indexOf(0x85)), Buffer.from([0x84, 1, 0]), fields.subarray(fields.indexOf(0x85))])), /isCA/],
    ['a non-minimal time', withDetails(Buffer.from(fields.toString('hex').replace('850203e8', '85030003e8'), 'hex')), /not minimally encoded/],
    ['an issuer of 16 bytes', withDetails(Buffer.concat([fields.subarray(0, -34), derElement(0x87, Buffer.alloc(16, 1))])), /issuer is 16 bytes/],
    ['an empty name', withDetails(Buffer.concat([Buffer.from([0x80, 0]), fields.subarray(2 + fields[1]!)])), /name/],
    ['an empty groups list', withDetails(Buffer.from(fields.toString('hex').replace('a3030c0167', 'a300'), 'hex')), /groups list is empty/],
    ['a curve field for Curve25519', envelope(derElement(0xa0, fields), Buffer.from([0x81, 1, 0]), rest), /curve field/],
    ['a length in long form below 128', envelope(Buffer.from([0xa0, 0x81, fields.length]), fields, rest), /not minimally encoded/],
    ['a v1 certificate under the v2 banner', marshalCertificate(signDetails(base, caKeys.privateKey, 1)), /invalid Nebula v2 certificate/],
  ]
  for (const [label, bytes, message] of cases) {
    it(`refuses ${label}`, () => {
      expect(formatError(() => unmarshalCertificateV2(bytes)).message).toMatch(message)
    })
  }

  it('signCertificate sorts v2 networks and refuses what the format forbids', () => {
    const ca = signCertificate({...base, name: 'ca', ips: [], groups: [], isCA: true, publicKey: caKeys.publicKey, version: 2}, {key: caKeys.privateKey})
    const host = signCertificate({...base, ips: ['fd42::5/64', '10.42.9.9/16', '10.42.1.5/16'], subnets: ['fd43::/64', '192.168.0.0/24'], notBefore: 1500, notAfter: 1600}, {certificate: ca, key: caKeys.privateKey})
    expect(host.version).toBe(2)
    expect(host.details.ips).toEqual(['10.42.1.5/16', '10.42.9.9/16', 'fd42::5/64'])
    expect(certificateFromPem(certificateToPem(host))).toEqual(host)
    expect(() => signCertificate({...base, ips: ['0.0.0.0/8']}, {certificate: ca, key: caKeys.privateKey})).toThrow(/unspecified/)
    expect(() => signCertificate({...base, ips: ['10.42.1.5/16', '10.42.1.5/16']}, {certificate: ca, key: caKeys.privateKey})).toThrow(/listed twice/)
    // v1 carries IPv4 only.
    expect(() => signCertificate({...base, ips: ['fd42::5/64'], version: 1}, {certificate: ca, key: caKeys.privateKey})).toThrow(CertificateFormatError)
  })
})

describe('P256 signatures and keys', () => {
  it('normalizes every ECDSA signature to low-s (s ≤ n/2); the other form verifies too', () => {
    const {privateKey, publicKey} = generateCaKeyPair('P256')
    const message = Buffer.from('tbmesh low-s')
    for (let i = 0; i < 24; i++) {
      const signature = caSign(privateKey, message)
      const s = sParameter(signature)
      expect(s <= ORDER / 2n).toBe(true)
      const other = ecdsaOtherForm(signature)
      expect(sParameter(other) > ORDER / 2n).toBe(true)
      const ca = {version: 2 as const, details: {name: 'x', ips: [], subnets: [], groups: [], notBefore: 0, notAfter: 1, publicKey, isCA: true, issuer: '', curve: 'P256' as const}, signature}
      expect(caSignatureValid(ca, message, signature)).toBe(true)
      expect(caSignatureValid(ca, message, other)).toBe(true)
    }
  })

  it('refuses keys of the wrong curve or an invalid scalar', () => {
    const p256 = generateCaKeyPair('P256')
    const ed = generateCaKeyPair()
    const details = {name: 'ca', ips: [], subnets: [], groups: [], notBefore: 0, notAfter: 10, isCA: true, curve: 'P256' as const}
    expect(() => signCertificate({...details, publicKey: p256.publicKey}, {key: ed.privateKey})).toThrow(SigningError)
    expect(() => caPrivateKeyToPem(Buffer.alloc(32))).toThrow(KeyFormatError)
    expect(() => caPrivateKeyToPem(Buffer.from('ff'.repeat(32), 'hex'))).toThrow(/not a valid scalar/)
    expect(() => readHostPublicKey(hostPublicKeyToPem(Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 1)])))).toThrow(/not a point/)
  })

  it('encrypts a P256 CA key under the ECDSA banner and reads it back', async () => {
    const {privateKey} = generateCaKeyPair('P256')
    const pem = await encryptCaKey(privateKey, 'pass', {memory: 1024, iterations: 1, parallelism: 1})
    expect(decodePemBlocks(pem)[0]!.type).toBe('NEBULA ECDSA P256 ENCRYPTED PRIVATE KEY')
    expect((await readCaPrivateKey(pem, 'pass')).equals(privateKey)).toBe(true)
  })
})

describe('what tbmesh signs, checked by the newest nebula-cert', () => {
  let dir = ''
  let nebulaCert = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tbmesh-v2-'))
    nebulaCert = (await nebulaBuild('newest')).nebulaCert
  }, 120_000)
  afterAll(async () => {
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  const now = Math.floor(Date.now() / 1000)
  const make = (version: 1 | 2, curve: 'CURVE25519' | 'P256', caVersion = version) => {
    const caKeys = generateCaKeyPair(curve)
    const ca = signCertificate(
      {name: `ca ${version} ${curve}`, ips: ['10.42.0.0/16'], subnets: ['192.168.0.0/16'], groups: ['chain', 'ops'], notBefore: now - 60, notAfter: now + 86_400, publicKey: caKeys.publicKey, isCA: true, curve, version: caVersion},
      {key: caKeys.privateKey},
    )
    const hostKeys = generateHostKeyPair(curve)
    const host = signCertificate(
      {name: 'acme-1', ips: ['10.42.1.5/16'], subnets: ['192.168.7.0/24'], groups: ['ops'], notBefore: now - 30, notAfter: now + 3600, publicKey: hostKeys.publicKey, isCA: false, curve, version},
      {certificate: ca, key: caKeys.privateKey},
    )
    return {ca, caKeys, host, hostKeys}
  }

  for (const [label, version, curve, caVersion] of [
    ['v2 Curve25519', 2, 'CURVE25519', 2],
    ['v2 P256', 2, 'P256', 2],
    ['v1 P256', 1, 'P256', 1],
    ['a v2 host of a v1 CA', 2, 'CURVE25519', 1],
  ] as const) {
    it(`${label}: verify accepts it and print -json shows our fields and fingerprint`, async () => {
      const {ca, host, hostKeys} = make(version, curve, caVersion)
      const printed = await nebulaCertCheck(certificateToPem(ca), certificateToPem(host))
      expect(printed.fingerprint).toBe(fingerprint(host))
      expect(printed.version).toBe(version)
      expect(hostKeyMatchesCertificate(hostKeys.privateKey, host, curve)).toBe(true)
    })
  }

  it('signs with our P256 CA key for a P256 public key we wrote (sign -in-pub)', async () => {
    const {ca, caKeys} = make(2, 'P256')
    const other = generateHostKeyPair('P256')
    await writeFile(join(dir, 'ca.crt'), certificateToPem(ca))
    await writeFile(join(dir, 'ca.key'), caPrivateKeyToPem(caKeys.privateKey), {mode: 0o600})
    await writeFile(join(dir, 'other.pub'), hostPublicKeyToPem(other.publicKey))
    const signed = await execa(nebulaCert, ['sign', '-name', 'acme-2', '-networks', '10.42.2.9/16', '-groups', 'ops', '-in-pub', 'other.pub', '-out-crt', 'other.crt'], {cwd: dir, reject: false})
    expect(signed.stderr).toBe('')
    const certificate = certificateFromPem(await readFile(join(dir, 'other.crt'), 'utf8'))
    expect(certificate).toMatchObject({version: 2, details: {name: 'acme-2', ips: ['10.42.2.9/16'], curve: 'P256', issuer: fingerprint(ca)}})
    expect(sParameter(certificate.signature) <= ORDER / 2n).toBe(true)
    expect(hostKeyMatchesCertificate(other.privateKey, certificate, 'P256')).toBe(true)
    expect(() => verifyCertificate(certificate, {trusted: [ca]})).not.toThrow()
  })

  it('a blocklisted P256 certificate with the other form of its signature: accepted by nebula-cert, refused by tbmesh', async () => {
    const {ca, host} = make(2, 'P256')
    const forged: NebulaCertificate = {...host, signature: ecdsaOtherForm(host.signature)}
    // The attack: the other form verifies and has another fingerprint, so a blocklist of the issued one misses it.
    expect(fingerprint(forged)).not.toBe(fingerprint(host))
    await writeFile(join(dir, 'p-ca.crt'), certificateToPem(ca))
    await writeFile(join(dir, 'forged.crt'), certificateToPem(forged))
    expect((await execa(nebulaCert, ['verify', '-ca', 'p-ca.crt', '-crt', 'forged.crt'], {cwd: dir, reject: false})).exitCode).toBe(0)
    // The protection: the blocklist check looks at both forms.
    expect(() => verifyCertificate(forged, {trusted: [ca], blocklist: [fingerprint(host)]})).toThrow(/blocklisted/)
    expect(blocklistFingerprints(host)).toEqual([fingerprint(host), fingerprint(forged)])
  })
})

function sParameter(signature: Buffer): bigint {
  const rLength = signature[3]!
  const sLength = signature[4 + rLength + 1]!
  return BigInt(`0x${signature.subarray(4 + rLength + 2, 4 + rLength + 2 + sLength).toString('hex')}`)
}
