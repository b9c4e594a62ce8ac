/**
 * The certificate format against the real nebula-cert 1.6.1: its fixtures decode, re-encode and re-sign byte for
 * byte; certificates we sign pass its `verify` and `print`; verifyCertificate applies Nebula's rules.
 * nebula-cert is required when CI is set (the suite fails rather than skips).
 */

import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {
  caPrivateKeyFromPem,
  caPrivateKeyMatchesCertificate,
  caPrivateKeyToPem,
  type CertificateDetails,
  certificateFromPem,
  certificatesFromPem,
  certificateToPem,
  CertificateVerifyError,
  type CertificateVerifyReason,
  checkSignature,
  fingerprint,
  generateCaKeyPair,
  generateHostKeyPair,
  hostKeyMatchesCertificate,
  hostPrivateKeyFromPem,
  hostPublicKeyFromPem,
  hostPublicKeyFromPrivate,
  hostPublicKeyToPem,
  marshalCertificate,
  type NebulaCertificate,
  signCertificate,
  signDetails,
  SigningError,
  type SigningReason,
  toPrintJson,
  unmarshalCertificate,
  verifyCertificate,
  type VerifyOptions,
} from '../src/nebula/index.js'

const FIXTURES = fileURLToPath(new URL('fixtures/nebula-cert/', import.meta.url))
const CERTS = ['ca', 'ca-constrained', 'host', 'host-constrained', 'host-minimal', 'keygen-host'] as const
const ISSUER_KEY: Record<(typeof CERTS)[number], string> = {
  ca: 'ca.key',
  'ca-constrained': 'ca-constrained.key',
  host: 'ca.key',
  'host-constrained': 'ca-constrained.key',
  'host-minimal': 'ca.key',
  'keygen-host': 'ca.key',
}

const fixture = (name: string): Promise<string> => readFile(join(FIXTURES, name), 'utf8')

/** `nebula-cert print -json` output, as parsed JSON. */
interface PrintJson {
  details: {
    name: string
    ips: string[]
    subnets: string[]
    groups: string[]
    notBefore: string
    notAfter: string
    publicKey: string
    isCa: boolean
    issuer: string
  }
  fingerprint: string
  signature: string
}

/**
 * Compares our view with nebula-cert 1.6.1's (whose print -json names networks `ips` and unsafe networks `subnets`, and
 * has no `curve` nor `version`), times by instant (nebula-cert prints them in the local time zone).
 */
function expectSameAsPrintJson(certificate: NebulaCertificate, theirs: PrintJson): void {
  const ours = toPrintJson(certificate)
  if (ours.version !== 1) throw new Error('a v1 certificate was expected')
  const {curve, networks, unsafeNetworks, ...rest} = ours.details
  expect(curve).toBe('CURVE25519')
  expect({...rest, ips: networks, subnets: unsafeNetworks, notBefore: 0, notAfter: 0}).toEqual({...theirs.details, notBefore: 0, notAfter: 0})
  expect(Date.parse(ours.details.notBefore)).toBe(Date.parse(theirs.details.notBefore))
  expect(Date.parse(ours.details.notAfter)).toBe(Date.parse(theirs.details.notAfter))
  expect(certificate.details.notBefore * 1000).toBe(Date.parse(theirs.details.notBefore))
  expect(ours.fingerprint).toBe(theirs.fingerprint)
  expect(ours.signature).toBe(theirs.signature)
}

const haveNebulaCert = (await execa('nebula-cert', ['-version'], {reject: false})).exitCode === 0
const runNebulaCertTests = haveNebulaCert || Boolean(process.env.CI)

async function nebulaCert(args: string[], cwd: string) {
  return execa('nebula-cert', args, {cwd, reject: false, env: {TZ: 'UTC'}})
}

describe('nebula-cert fixtures', () => {
  for (const name of CERTS) {
    describe(name, () => {
      it('decodes and re-encodes byte for byte (PEM and raw)', async () => {
        const pem = await fixture(`${name}.crt`)
        const certificate = certificateFromPem(pem)
        expect(certificateToPem(certificate)).toBe(pem)
        const raw = marshalCertificate(certificate)
        expect(marshalCertificate(unmarshalCertificate(raw)).equals(raw)).toBe(true)
        expect(unmarshalCertificate(raw)).toEqual(certificate)
      })

      it('has the fields and fingerprint nebula-cert prints', async () => {
        const certificate = certificateFromPem(await fixture(`${name}.crt`))
        const theirs = JSON.parse(await fixture(`${name}.json`)) as PrintJson
        expectSameAsPrintJson(certificate, theirs)
        expect(fingerprint(certificate)).toBe(theirs.fingerprint)
      })

      it('is reproduced exactly by re-signing its details with the fixture CA key', async () => {
        const certificate = certificateFromPem(await fixture(`${name}.crt`))
        const caKey = caPrivateKeyFromPem(await fixture(ISSUER_KEY[name]))
        const resigned = signDetails(certificate.details, caKey)
        expect(resigned.signature.equals(certificate.signature)).toBe(true)
        expect(certificateToPem(resigned)).toBe(await fixture(`${name}.crt`))
      })
    })
  }

  it('reads a trust bundle of several CAs, in order', async () => {
    const bundle = certificatesFromPem(await fixture('ca-bundle.crt'))
    expect(bundle.map((c) => c.details.name)).toEqual(['tbmesh fixture CA', 'tbmesh CA — constrained'])
    expect(bundle.map((c) => certificateToPem(c)).join('')).toBe(await fixture('ca-bundle.crt'))
    expect(() => certificateFromPem(bundle.map((c) => certificateToPem(c)).join(''))).toThrow(/expected one/)
  })

  it('keeps the host address of an IP and the order of groups and subnets', async () => {
    const {details} = certificateFromPem(await fixture('host.crt'))
    expect(details.ips).toEqual(['10.42.1.5/16'])
    expect(details.subnets).toEqual(['192.168.50.0/24', '10.99.0.0/16'])
    expect(details.groups).toEqual(['chain', 'api', 'ops'])
    expect(details.isCA).toBe(false)
  })

  it('verifies each host against its CA, as nebula-cert verify did', async () => {
    const trusted = certificatesFromPem(await fixture('ca-bundle.crt'))
    for (const name of ['host', 'host-constrained', 'host-minimal', 'keygen-host']) {
      const certificate = certificateFromPem(await fixture(`${name}.crt`))
      const now = certificate.details.notBefore + 3600
      expect(() => verifyCertificate(certificate, {trusted, now})).not.toThrow()
    }
    for (const ca of trusted) expect(checkSignature(ca, ca.details.publicKey)).toBe(true)
  })

  it('matches the CA keys and the host key pairs nebula-cert made', async () => {
    const ca = certificateFromPem(await fixture('ca.crt'))
    const caKey = caPrivateKeyFromPem(await fixture('ca.key'))
    const otherCaKey = caPrivateKeyFromPem(await fixture('ca-constrained.key'))
    expect(caPrivateKeyMatchesCertificate(caKey, ca)).toBe(true)
    expect(caPrivateKeyMatchesCertificate(otherCaKey, ca)).toBe(false)
    expect(caPrivateKeyToPem(caKey)).toBe(await fixture('ca.key'))

    for (const name of ['host', 'host-constrained', 'host-minimal']) {
      const certificate = certificateFromPem(await fixture(`${name}.crt`))
      const privateKey = hostPrivateKeyFromPem(await fixture(`${name}.key`))
      expect(hostKeyMatchesCertificate(privateKey, certificate)).toBe(true)
      expect(hostKeyMatchesCertificate(privateKey, ca)).toBe(false)
    }
    expect(hostKeyMatchesCertificate(hostPrivateKeyFromPem(await fixture('host.key')),
      certificateFromPem(await fixture('host-minimal.crt')))).toBe(false)

    const keygenPrivate = hostPrivateKeyFromPem(await fixture('keygen.key'))
    const keygenPublic = hostPublicKeyFromPem(await fixture('keygen.pub'))
    expect(hostPublicKeyFromPrivate(keygenPrivate).equals(keygenPublic)).toBe(true)
    expect(hostPublicKeyToPem(keygenPublic)).toBe(await fixture('keygen.pub'))
    const keygenHost = certificateFromPem(await fixture('keygen-host.crt'))
    expect(keygenHost.details.publicKey.equals(keygenPublic)).toBe(true)
    expect(hostKeyMatchesCertificate(keygenPrivate, keygenHost)).toBe(true)
  })
})

describe.runIf(runNebulaCertTests)('certificates we sign, checked by the real nebula-cert', () => {
  let dir = ''
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tbmesh-nebula-'))
  })
  afterAll(async () => {
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('nebula-cert is installed (required when CI is set)', () => {
    expect(haveNebulaCert).toBe(true)
  })

  const now = Math.floor(Date.now() / 1000)
  const caKeys = generateCaKeyPair()
  const hostKeys = generateHostKeyPair()
  const caDetails: CertificateDetails = {
    name: 'tbmesh test CA ✓',
    ips: ['10.42.0.0/16', '192.168.7.0/24'],
    subnets: ['10.0.0.0/8'],
    groups: ['chain', 'api', 'ops'],
    notBefore: now - 3600,
    notAfter: now + 30 * 86400,
    publicKey: caKeys.publicKey,
    isCA: true,
    issuer: '',
    curve: 'CURVE25519',
  }
  const ca = signDetails(caDetails, caKeys.privateKey)
  const hostDetails: CertificateDetails = {
    name: 'acme-1',
    ips: ['10.42.1.5/16'],
    subnets: ['10.7.0.0/16', '10.8.8.0/24', '10.9.0.1/32'],
    groups: ['chain', 'api'],
    notBefore: now - 60,
    notAfter: now + 86400,
    publicKey: hostKeys.publicKey,
    isCA: false,
    issuer: fingerprint(ca),
    curve: 'CURVE25519',
  }
  const host = signDetails(hostDetails, caKeys.privateKey)

  async function write(name: string, text: string): Promise<string> {
    const path = join(dir, name)
    await writeFile(path, text, {mode: 0o600})
    return path
  }

  it('passes nebula-cert verify, and nebula-cert print shows the same fields', async () => {
    const caPath = await write('ca.crt', certificateToPem(ca))
    const hostPath = await write('host.crt', certificateToPem(host))
    const verified = await nebulaCert(['verify', '-ca', caPath, '-crt', hostPath], dir)
    expect(verified.stderr + verified.stdout).toBe('')
    expect(verified.exitCode).toBe(0)
    for (const [certificate, path] of [[ca, caPath], [host, hostPath]] as const) {
      const printed = await nebulaCert(['print', '-json', '-path', path], dir)
      expect(printed.exitCode).toBe(0)
      expectSameAsPrintJson(certificate, JSON.parse(printed.stdout) as PrintJson)
    }
    expect(() => verifyCertificate(host, {trusted: [ca]})).not.toThrow()
  })

  it('has a CA key nebula-cert signs with, for a public key we wrote', async () => {
    await write('ca.crt', certificateToPem(ca))
    await write('ca.key', caPrivateKeyToPem(caKeys.privateKey))
    const other = generateHostKeyPair()
    await write('other.pub', hostPublicKeyToPem(other.publicKey))
    const signed = await nebulaCert(
      ['sign', '-name', 'acme-2', '-ip', '10.42.2.9/16', '-groups', 'chain,ops', '-subnets', '10.5.0.0/16',
        '-in-pub', 'other.pub', '-out-crt', 'other.crt'],
      dir,
    )
    expect(signed.stderr).toBe('')
    expect(signed.exitCode).toBe(0)
    const certificate = certificateFromPem(await readFile(join(dir, 'other.crt'), 'utf8'))
    expect(certificate.details).toMatchObject({
      name: 'acme-2', ips: ['10.42.2.9/16'], subnets: ['10.5.0.0/16'], groups: ['chain', 'ops'], isCA: false,
      issuer: fingerprint(ca), notAfter: ca.details.notAfter - 1,
    })
    expect(hostKeyMatchesCertificate(other.privateKey, certificate)).toBe(true)
    expect(() => verifyCertificate(certificate, {trusted: [ca]})).not.toThrow()
  })

  it('agrees with nebula-cert verify on the constraint violations', async () => {
    const caPath = await write('ca.crt', certificateToPem(ca))
    const other = generateCaKeyPair()
    const stranger = signDetails({...caDetails, name: 'stranger', publicKey: other.publicKey}, other.privateKey)
    const cases: Array<[NebulaCertificate, CertificateVerifyReason, RegExp]> = [
      [
        signDetails({...hostDetails, issuer: fingerprint(stranger)}, other.privateKey),
        'unknown-issuer',
        /could not find ca/,
      ],
      [signDetails({...hostDetails, groups: ['chain', 'admin']}, caKeys.privateKey), 'group-not-allowed', /group/],
      [signDetails({...hostDetails, ips: ['10.43.0.1/16']}, caKeys.privateKey), 'ip-not-allowed', /ip assignment/],
      [signDetails({...hostDetails, ips: ['10.42.1.5/8']}, caKeys.privateKey), 'ip-not-allowed', /ip assignment/],
      [
        signDetails({...hostDetails, subnets: ['192.168.0.0/16']}, caKeys.privateKey),
        'subnet-not-allowed',
        /subnet assignment/,
      ],
      [signDetails({...hostDetails, notAfter: now - 10}, caKeys.privateKey), 'expired', /is expired/],
      [
        signDetails({...hostDetails, notAfter: caDetails.notAfter + 1}, caKeys.privateKey),
        'validity-outside-ca',
        /expires after signing certificate/,
      ],
      [{...host, signature: flipByte(host.signature, 5)}, 'bad-signature', /signature did not match/],
    ]
    for (const [certificate, reason, theirs] of cases) {
      const path = await write('bad.crt', certificateToPem(certificate))
      const result = await nebulaCert(['verify', '-ca', caPath, '-crt', path], dir)
      expect(result.exitCode, reason).not.toBe(0)
      expect(result.stderr + result.stdout, reason).toMatch(theirs)
      expect(verifyError(certificate, {trusted: [ca]})?.reason, reason).toBe(reason)
    }
  })
})

describe('verifyCertificate', () => {
  const now = 1_800_000_000
  const caKeys = generateCaKeyPair()
  const caDetails: CertificateDetails = {
    name: 'ca',
    ips: ['10.42.0.0/16'],
    subnets: ['10.0.0.0/8', '172.16.0.0/12'],
    groups: ['chain', 'ops'],
    notBefore: now - 1000,
    notAfter: now + 1000,
    publicKey: caKeys.publicKey,
    isCA: true,
    issuer: '',
    curve: 'CURVE25519',
  }
  const ca = signDetails(caDetails, caKeys.privateKey)
  const good: CertificateDetails = {
    name: 'node',
    ips: ['10.42.9.9/16', '10.42.1.1/24'],
    subnets: ['10.7.0.0/16', '172.20.0.0/16'],
    groups: ['ops'],
    notBefore: now - 500,
    notAfter: now + 500,
    publicKey: generateHostKeyPair().publicKey,
    isCA: false,
    issuer: fingerprint(ca),
    curve: 'CURVE25519',
  }
  const sign = (changes: Partial<CertificateDetails>) => signDetails({...good, ...changes}, caKeys.privateKey)
  const opts = {trusted: [ca], now}

  it('accepts a good certificate, at its boundaries too', () => {
    const certificate = sign({})
    expect(() => verifyCertificate(certificate, opts)).not.toThrow()
    expect(() => verifyCertificate(certificate, {...opts, now: now - 500})).not.toThrow()
    expect(() => verifyCertificate(certificate, {...opts, now: now + 500})).not.toThrow()
    expect(() => verifyCertificate(sign({notBefore: now - 1000, notAfter: now + 1000}), opts)).not.toThrow()
  })

  it('accepts anything when the CA has no constraints', () => {
    const open = signDetails({...caDetails, ips: [], subnets: [], groups: []}, caKeys.privateKey)
    const certificate = signDetails(
      {...good, issuer: fingerprint(open), ips: ['192.0.2.1/1'], subnets: ['0.0.0.0/0'], groups: ['anything']},
      caKeys.privateKey,
    )
    expect(() => verifyCertificate(certificate, {trusted: [open], now})).not.toThrow()
  })

  type Violation = [CertificateVerifyReason, string, () => NebulaCertificate, Partial<VerifyOptions>]
  const violations: Violation[] = [
    ['blocklisted', 'blocklisted fingerprint', () => sign({}), {blocklist: ['00', fingerprint(sign({}))]}],
    ['unknown-issuer', 'no issuer', () => sign({issuer: ''}), {}],
    ['unknown-issuer', 'issuer not trusted', () => sign({issuer: 'ab'.repeat(32)}), {}],
    [
      'unknown-issuer',
      'trusted entry that is not a CA',
      () => sign({issuer: fingerprint(sign({}))}),
      {trusted: [ca, sign({})]},
    ],
    ['ca-expired', 'CA expired', () => sign({}), {now: now + 1001}],
    ['ca-expired', 'CA not yet valid', () => sign({}), {now: now - 1001}],
    ['expired', 'certificate expired', () => sign({}), {now: now + 501}],
    ['expired', 'certificate not yet valid', () => sign({}), {now: now - 501}],
    ['bad-signature', 'flipped signature byte', () => ({...sign({}), signature: flipByte(sign({}).signature, 0)}), {}],
    ['bad-signature', 'details changed after signing', () => ({...sign({}), details: {...good, name: 'other'}}), {}],
    ['bad-signature', 'signed by another key', () => signDetails(good, generateCaKeyPair().privateKey), {}],
    ['validity-outside-ca', 'ends after the CA', () => sign({notAfter: now + 1001}), {}],
    ['validity-outside-ca', 'starts before the CA', () => sign({notBefore: now - 1001}), {}],
    ['group-not-allowed', 'group outside the CA', () => sign({groups: ['ops', 'admin']}), {}],
    ['ip-not-allowed', 'IP outside the CA', () => sign({ips: ['10.43.0.1/16']}), {}],
    ['ip-not-allowed', 'IP prefix shorter than the CA', () => sign({ips: ['10.42.0.1/15']}), {}],
    ['subnet-not-allowed', 'subnet outside the CA', () => sign({subnets: ['192.168.1.0/24']}), {}],
    ['subnet-not-allowed', 'subnet wider than the CA', () => sign({subnets: ['172.16.0.0/11']}), {}],
  ]
  for (const [reason, label, make, extra] of violations) {
    it(`rejects: ${label} (${reason})`, () => {
      const error = verifyError(make(), {...opts, ...extra})
      expect(error).toBeInstanceOf(CertificateVerifyError)
      expect(error?.reason).toBe(reason)
      expect(error?.message).not.toContain('\n')
    })
  }

  it('checks the rules in Nebula order (blocklist before issuer before time)', () => {
    const certificate = sign({issuer: 'ab'.repeat(32), groups: ['admin']})
    expect(verifyError(certificate, {...opts, now: now + 5000, blocklist: [fingerprint(certificate)]})?.reason)
      .toBe('blocklisted')
    expect(verifyError(certificate, {...opts, now: now + 5000})?.reason).toBe('unknown-issuer')
    expect(verifyError(sign({groups: ['admin'], notAfter: now + 5000}), {...opts, now: now + 2000})?.reason)
      .toBe('ca-expired')
  })
})

describe('signCertificate (SignWith): the issuer derived, the CA\'s limits enforced', () => {
  const now = 1_800_000_000
  const caKeys = generateCaKeyPair()
  const caDetails = {name: 'ca', ips: ['10.42.0.0/16'], subnets: ['10.0.0.0/8'], groups: ['chain', 'ops'], notBefore: now - 1000, notAfter: now + 1000, publicKey: caKeys.publicKey, isCA: true, curve: 'CURVE25519'} as const
  const ca = signCertificate({...caDetails, ips: [...caDetails.ips], subnets: [...caDetails.subnets], groups: [...caDetails.groups]}, {key: caKeys.privateKey})
  const host = {name: 'node', ips: ['10.42.9.9/16'], subnets: ['10.7.0.0/16'], groups: ['ops'], notBefore: now - 500, notAfter: now + 500, publicKey: generateHostKeyPair().publicKey, isCA: false, curve: 'CURVE25519' as const}
  const signer = {certificate: ca, key: caKeys.privateKey}

  it('self-signs a CA (no issuer) and signs a host as that CA: issuer = the CA\'s fingerprint, verifiable, same bytes as the primitive', () => {
    expect(ca.details.issuer).toBe('')
    expect(checkSignature(ca, caKeys.publicKey)).toBe(true)
    const certificate = signCertificate(host, signer)
    expect(certificate.details.issuer).toBe(fingerprint(ca))
    expect(() => verifyCertificate(certificate, {trusted: [ca], now})).not.toThrow()
    expect(certificateToPem(certificate)).toBe(certificateToPem(signDetails({...host, issuer: fingerprint(ca)}, caKeys.privateKey)))
  })

  const other = generateCaKeyPair()
  const refusals: Array<[SigningReason, string, () => unknown]> = [
    ['validity-outside-ca', 'a host outliving its CA', () => signCertificate({...host, notAfter: now + 1001}, signer)],
    ['validity-outside-ca', 'a host valid before its CA', () => signCertificate({...host, notBefore: now - 1001}, signer)],
    ['group-not-allowed', 'a group the CA does not list', () => signCertificate({...host, groups: ['ops', 'admin']}, signer)],
    ['ip-not-allowed', 'an IP outside the CA', () => signCertificate({...host, ips: ['10.43.0.1/16']}, signer)],
    ['ip-not-allowed', 'an IP prefix shorter than the CA\'s', () => signCertificate({...host, ips: ['10.42.0.1/15']}, signer)],
    ['subnet-not-allowed', 'a subnet outside the CA', () => signCertificate({...host, subnets: ['192.168.0.0/24']}, signer)],
    ['not-a-ca', 'a CA signed by another CA', () => signCertificate({...host, isCA: true}, signer)],
    ['not-a-ca', 'a host that signs itself', () => signCertificate(host, {key: caKeys.privateKey})],
    ['not-a-ca', 'an issuer that is not a CA', () => signCertificate(host, {certificate: signCertificate(host, signer), key: caKeys.privateKey})],
    ['wrong-key', 'another key than the issuing CA\'s', () => signCertificate(host, {certificate: ca, key: other.privateKey})],
    ['wrong-key', 'a CA certificate for another key than the signing one', () => signCertificate({...caDetails, ips: [], subnets: [], groups: []}, {key: other.privateKey})],
  ]
  for (const [reason, label, sign] of refusals) {
    it(`refuses ${label} (${reason})`, () => {
      let error: unknown
      try {
        sign()
      } catch (error_) {
        error = error_
      }
      expect(error).toBeInstanceOf(SigningError)
      expect((error as SigningError).reason).toBe(reason)
      expect((error as SigningError).message).not.toContain('\n')
    })
  }
})

function verifyError(
  certificate: NebulaCertificate,
  options: Parameters<typeof verifyCertificate>[1],
): CertificateVerifyError | undefined {
  try {
    verifyCertificate(certificate, options)
  } catch (error) {
    if (error instanceof CertificateVerifyError) return error
    throw error
  }
  return undefined
}

function flipByte(bytes: Buffer, index: number): Buffer {
  const copy = Buffer.from(bytes)
  copy[index] = copy[index]! ^ 0x01
  return copy
}
