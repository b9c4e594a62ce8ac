/**
 * The decoder's strictness: only the canonical encoding of a v1 certificate is accepted, and malformed input of any
 * kind fails with CertificateFormatError (never another error, never a hang). Property tests with fast-check.
 */

import {readFile} from 'node:fs/promises'
import {fileURLToPath} from 'node:url'

import fc from 'fast-check'
import {describe, expect, it} from 'vitest'

import {
  CERTIFICATE_BANNER,
  CERTIFICATE_V2_BANNER,
  type CertificateDetails,
  CertificateFormatError,
  certificateFromPem,
  certificatesFromPem,
  certificateToPem,
  decodePemBlocks,
  encodePem,
  fingerprint,
  marshalCertificate,
  marshalDetails,
  type NebulaCertificate,
  unmarshalCertificate,
  X25519_PRIVATE_KEY_BANNER,
} from '../src/nebula/index.js'
import {encodeVarint, ProtoWriter} from '../src/nebula/proto.js'

const hex = (text: string): Buffer => Buffer.from(text.replaceAll(/\s+/g, ''), 'hex')
const KEY = `3a20${'11'.repeat(32)}` // field 7, PublicKey, 32 bytes
const SIGNATURE = Buffer.alloc(64, 7)

/** A RawNebulaCertificate around raw details bytes. */
function wrap(details: Buffer, signature: Buffer = SIGNATURE): Buffer {
  return new ProtoWriter().message(1, details).bytes(2, signature).finish()
}

/** Runs `fn` and returns the CertificateFormatError it throws (failing on success or on any other error). */
function formatError(fn: () => unknown): CertificateFormatError {
  try {
    fn()
  } catch (error) {
    if (error instanceof CertificateFormatError) {
      expect(error.message).not.toContain('\n')
      return error
    }
    throw error
  }
  throw new Error('expected a CertificateFormatError, got success')
}

describe('unmarshalCertificate', () => {
  it('accepts a minimal hand-made certificate', () => {
    const certificate = unmarshalCertificate(wrap(hex(`0a0161 ${KEY}`)))
    expect(certificate.details).toMatchObject({name: 'a', ips: [], groups: [], notBefore: 0, isCA: false, issuer: ''})
  })

  const rejected: Array<[string, Buffer, RegExp]> = [
    ['empty input', Buffer.alloc(0), /no data/],
    ['no details', new ProtoWriter().bytes(2, SIGNATURE).finish(), /no details/],
    ['unknown details field', wrap(hex(`0a0161 ${KEY} 5801`)), /unknown field 11/],
    ['unknown outer field', Buffer.concat([wrap(hex(`0a0161 ${KEY}`)), hex('1801')]), /unknown field 3/],
    ['unknown field with a group wire type', wrap(hex(`0a0161 ${KEY} 5b`)), /unknown field 11/],
    ['field number 0', wrap(hex(`0001 0a0161 ${KEY}`)), /invalid field number 0/],
    ['duplicate singular field', wrap(hex(`0a0161 0a0162 ${KEY}`)), /Name appears more than once/],
    ['duplicate details', Buffer.concat([hex('0a00 0a00'), hex('1240'), SIGNATURE]), /Details appears more than once/],
    ['fields out of order', wrap(hex(`${KEY} 0a0161`)), /Name is out of order/],
    ['repeated field split by another', wrap(hex(`0a0161 220161 2801 220162 ${KEY}`)), /Groups is out of order/],
    ['name as a varint', wrap(hex(`0801 ${KEY}`)), /Name has wire type 0, expected 2/],
    ['unpacked Ips', wrap(hex(`1001 1001 ${KEY}`)), /Ips has wire type 0/],
    ['NotBefore as fixed64', wrap(hex(`2901020304050607 08 ${KEY}`)), /NotBefore has wire type 1/],
    ['explicit zero NotBefore', wrap(hex(`0a0161 2800 ${KEY}`)), /NotBefore holds its default value/],
    ['explicit false IsCA', wrap(hex(`0a0161 ${KEY} 4000`)), /IsCA holds its default value/],
    ['explicit empty name', wrap(hex(`0a00 ${KEY}`)), /Name holds its default value/],
    ['explicit empty Ips', wrap(hex(`0a0161 1200 ${KEY}`)), /Ips holds its default value/],
    ['explicit CURVE25519', wrap(hex(`0a0161 ${KEY} a00600`)), /curve holds its default value/],
    ['non-minimal varint', wrap(hex(`0a0161 288100 ${KEY}`)), /not minimally encoded/],
    ['non-minimal length', wrap(hex(`0a810061 ${KEY}`)), /not minimally encoded/],
    ['varint longer than 10 bytes', wrap(hex(`0a0161 28${'ff'.repeat(10)}01 ${KEY}`)), /longer than 10 bytes/],
    ['varint over 64 bits', wrap(hex(`0a0161 28${'ff'.repeat(9)}02 ${KEY}`)), /overflows 64 bits/],
    ['NotBefore past safe integers', wrap(hex(`0a0161 28${'80'.repeat(8)}01 ${KEY}`)), /NotBefore is out of range/],
    ['truncated varint', hex('0a02 28ff'), /ends inside a varint/],
    ['length past the end', hex('0a05 0a0561'), /runs past the end/],
    ['outer length past the end', hex('0a7f 0a0161'), /runs past the end/],
    ['truncated tag', hex('8a'), /ends inside a varint/],
    ['odd number of Ips words', wrap(hex(`0a0161 120101 ${KEY}`)), /odd number of words/],
    [
      'mask that is not a prefix',
      wrap(
        Buffer.concat([new ProtoWriter().string(1, 'a').packedUint32(2, [0x0a2a0105, 0xff00ff00]).finish(), hex(KEY)]),
      ),
      /not a prefix/,
    ],
    ['Ips word over 32 bits', wrap(hex(`0a0161 1206 01 8080808010 ${KEY}`)), /does not fit in 32 bits/],
    ['missing public key', wrap(hex('0a0161')), /public key is 0 bytes, expected 32/],
    ['short public key', wrap(hex(`0a0161 3a1f${'11'.repeat(31)}`)), /public key is 31 bytes/],
    ['short issuer', wrap(hex(`0a0161 ${KEY} 4a1f${'22'.repeat(31)}`)), /issuer is 31 bytes/],
    ['IsCA that is not a boolean', wrap(hex(`0a0161 ${KEY} 4002`)), /IsCA is not a boolean/],
    ['unknown curve', wrap(hex(`0a0161 ${KEY} a00602`)), /unknown curve 2/],
    ['P256 curve with a 32-byte key', wrap(hex(`0a0161 ${KEY} a00601`)), /expected 65 for P256/],
    ['invalid UTF-8 name', wrap(hex(`0a02c328 ${KEY}`)), /Name is not valid UTF-8/],
    ['invalid UTF-8 group', wrap(hex(`0a0161 2201ff ${KEY}`)), /Groups is not valid UTF-8/],
  ]
  for (const [label, bytes, message] of rejected) {
    it(`rejects ${label}`, () => {
      expect(formatError(() => unmarshalCertificate(bytes)).message).toMatch(message)
    })
  }

  it('rejects every truncation of a real certificate (except the one that drops the whole signature)', async () => {
    const bytes = marshalCertificate(certificateFromPem(await fixtureText('host.crt')))
    const detailsEnd = bytes.length - 66 // 0x12 0x40 + 64-byte signature
    for (let length = 0; length < bytes.length; length++) {
      const prefix = bytes.subarray(0, length)
      if (length === detailsEnd) {
        expect(unmarshalCertificate(prefix).signature.length).toBe(0)
        continue
      }
      formatError(() => unmarshalCertificate(prefix))
    }
  })

  it('round-trips negative and large times, Unicode and empty groups', () => {
    const certificate: NebulaCertificate = {
      version: 1,
      details: {
        ...baseDetails(),
        name: 'nœud 🚀 \u{feff}',
        groups: ['', 'grüppe', ''],
        notBefore: -1,
        notAfter: Number.MAX_SAFE_INTEGER,
      },
      signature: Buffer.alloc(0),
    }
    const bytes = marshalCertificate(certificate)
    expect(unmarshalCertificate(bytes)).toEqual(certificate)
    // -1 is a 10-byte varint (64-bit two's complement), as Go writes an int64.
    expect(marshalDetails(certificate.details).includes(hex(`28${'ff'.repeat(9)}01`))).toBe(true)
  })
})

describe('marshalDetails', () => {
  it('writes fields in number order, packed IPs, issuer as raw bytes, IsCA and curve only when set', () => {
    const details: CertificateDetails = {
      ...baseDetails(),
      name: 'n',
      ips: ['10.42.1.5/16'],
      subnets: ['10.0.0.0/8'],
      groups: ['a', 'b'],
      notBefore: 1,
      notAfter: 300,
      issuer: 'ab'.repeat(32),
    }
    const ips = Buffer.concat([encodeVarint(0x0a2a0105n), encodeVarint(0xffff0000n)])
    const subnets = Buffer.concat([encodeVarint(0x0a000000n), encodeVarint(0xff000000n)])
    const expected = Buffer.concat([
      hex('0a016e'),
      hex('12'), encodeVarint(BigInt(ips.length)), ips,
      hex('1a'), encodeVarint(BigInt(subnets.length)), subnets,
      hex('220161 220162 2801 30ac02'),
      hex(KEY),
      hex(`4a20${'ab'.repeat(32)}`),
    ])
    expect(marshalDetails(details).toString('hex')).toBe(expected.toString('hex'))
    const ca = marshalDetails({...details, isCA: true, issuer: ''})
    expect(ca.subarray(-2).toString('hex')).toBe('4001')
    const p256 = marshalDetails({...details, curve: 'P256', publicKey: Buffer.alloc(65, 4)})
    expect(p256.subarray(-3).toString('hex')).toBe('a00601')
  })

  const invalid: Array<[string, Partial<CertificateDetails>, RegExp]> = [
    ['an IPv6 address', {ips: ['fd00::1/64']}, /not an IPv4 CIDR/],
    ['a CIDR without prefix', {ips: ['10.0.0.1']}, /not an IPv4 CIDR/],
    ['an octet over 255', {subnets: ['10.0.0.256/8']}, /not an IPv4 CIDR/],
    ['a prefix over 32', {ips: ['10.0.0.1/33']}, /not an IPv4 CIDR/],
    ['leading zeros', {ips: ['010.0.0.1/8']}, /not an IPv4 CIDR/],
    ['fractional seconds', {notBefore: 1.5}, /whole number of seconds/],
    ['a huge time', {notAfter: 2 ** 60}, /whole number of seconds/],
    ['a short public key', {publicKey: Buffer.alloc(31)}, /public key is 31 bytes/],
    ['an uppercase issuer', {issuer: 'AB'.repeat(32)}, /issuer/],
    ['a short issuer', {issuer: 'ab'}, /issuer/],
    ['a lone surrogate', {name: 'a\ud800'}, /well-formed Unicode/],
  ]
  for (const [label, changes, message] of invalid) {
    it(`refuses ${label}`, () => {
      expect(formatError(() => marshalDetails({...baseDetails(), ...changes})).message).toMatch(message)
    })
  }
})

describe('PEM', () => {
  const pem = certificateToPem({version: 1, details: baseDetails(), signature: SIGNATURE})

  it('encodes as Go does: 64-column base64, trailing newline', () => {
    const bytes = Buffer.alloc(60, 0xab)
    const text = encodePem(CERTIFICATE_BANNER, bytes)
    const lines = text.split('\n')
    expect(lines[0]).toBe('-----BEGIN NEBULA CERTIFICATE-----')
    expect(lines[1]).toHaveLength(64)
    expect(lines[2]).toBe(bytes.toString('base64').slice(64))
    expect(lines[3]).toBe('-----END NEBULA CERTIFICATE-----')
    expect(lines[4]).toBe('')
    expect(encodePem(CERTIFICATE_BANNER, Buffer.alloc(48))).toMatch(/^-----BEGIN [^\n]+\n[A]{64}\n-----END/)
    expect(encodePem('X', Buffer.alloc(0))).toBe('-----BEGIN X-----\n-----END X-----\n')
  })

  it('accepts comments, blank lines and CRLF around blocks', () => {
    const text = `# trust bundle\n\n${pem}\r\n# second\r\n${pem.replaceAll('\n', '\r\n')}\n\n`
    expect(certificatesFromPem(text)).toHaveLength(2)
    expect(decodePemBlocks(text).map((block) => block.type)).toEqual([CERTIFICATE_BANNER, CERTIFICATE_BANNER])
  })

  const bad: Array<[string, string, RegExp]> = [
    ['no block at all', '', /no NEBULA CERTIFICATE PEM block/],
    ['only comments', '# nothing\n', /no NEBULA CERTIFICATE PEM block/],
    ['another banner', pem.replaceAll(CERTIFICATE_BANNER, X25519_PRIVATE_KEY_BANNER), /found NEBULA X25519 PRIVATE/],
    ['a v1 certificate under the v2 banner', pem.replaceAll(CERTIFICATE_BANNER, CERTIFICATE_V2_BANNER), /invalid Nebula v2 certificate/],
    ['text before a block', `hello\n${pem}`, /unexpected text outside a PEM block on line 1/],
    ['text after a block', `${pem}trailing`, /unexpected text outside/],
    ['a broken BEGIN line', `-${pem.slice(5)}`, /unexpected text outside/],
    ['a missing END line', pem.split('\n').slice(0, -2).join('\n'), /has no END line/],
    ['a mismatched END line', pem.replace('END NEBULA CERTIFICATE', 'END NEBULA X25519 PUBLIC KEY'), /ends with/],
    ['PEM headers', pem.replace('-----\n', '-----\nProc-Type: 4,ENCRYPTED\n\n'), /headers are not supported/],
    ['a nested BEGIN', pem.replace('-----\n', `-----\n-----BEGIN ${CERTIFICATE_BANNER}-----\n`), /unexpected PEM/],
    ['a bad base64 character', pem.replace(/\n([A-Za-z0-9])/, '\n*'), /not valid base64/],
    ['missing base64 padding', encodePem(CERTIFICATE_BANNER, Buffer.alloc(2)).replace('=', ''), /not valid base64/],
    ['non-canonical base64 bits', encodePem(CERTIFICATE_BANNER, Buffer.alloc(1)).replace('AA==', 'AB=='), /base64/],
    ['an empty block', encodePem(CERTIFICATE_BANNER, Buffer.alloc(0)), /no data/],
  ]
  for (const [label, text, message] of bad) {
    it(`rejects ${label}`, () => {
      expect(formatError(() => certificatesFromPem(text)).message).toMatch(message)
    })
  }
})

describe('properties (fast-check)', () => {
  const cidr = fc
    .tuple(fc.integer({min: 0, max: 0xffffffff}), fc.integer({min: 0, max: 32}))
    .map(([address, prefix]) =>
      `${[address >>> 24, (address >>> 16) & 255, (address >>> 8) & 255, address & 255].join('.')}/${prefix}`,
    )
  const bytes = (length: number) => fc.uint8Array({minLength: length, maxLength: length}).map((b) => Buffer.from(b))
  const certificate: fc.Arbitrary<NebulaCertificate> = fc
    .record({
      name: fc.string({unit: 'binary', maxLength: 40}),
      ips: fc.array(cidr, {maxLength: 4}),
      subnets: fc.array(cidr, {maxLength: 4}),
      groups: fc.array(fc.string({unit: 'binary', maxLength: 12}), {maxLength: 5}),
      notBefore: fc.maxSafeInteger().map((n) => (n < 0 ? Math.max(n, Number.MIN_SAFE_INTEGER) : n)),
      notAfter: fc.integer({min: -(2 ** 40), max: 2 ** 40}),
      curve: fc.constantFrom('CURVE25519' as const, 'P256' as const),
      key25519: bytes(32),
      keyP256: bytes(65),
      isCA: fc.boolean(),
      issuer: fc.option(bytes(32).map((b) => b.toString('hex')), {nil: ''}),
      signature: fc.uint8Array({maxLength: 80}).map((b) => Buffer.from(b)),
    })
    .map(({key25519, keyP256, signature, ...details}) => ({
      version: 1 as const,
      details: {...details, publicKey: details.curve === 'P256' ? keyP256 : key25519},
      signature,
    }))

  it('decode(encode(x)) = x, and encode(decode(b)) = b, for random valid certificates', () => {
    fc.assert(
      fc.property(certificate, (cert) => {
        const encoded = marshalCertificate(cert)
        const decoded = unmarshalCertificate(encoded)
        expect(decoded).toEqual(cert)
        expect(marshalCertificate(decoded).equals(encoded)).toBe(true)
        expect(certificateFromPem(certificateToPem(cert))).toEqual(cert)
        expect(fingerprint(decoded)).toBe(fingerprint(cert))
      }),
      {numRuns: 300},
    )
  })

  /** Decodes; success must be canonical, and any failure a CertificateFormatError. */
  function decodesOrFormatError(input: Uint8Array): void {
    let decoded: NebulaCertificate
    try {
      decoded = unmarshalCertificate(input)
    } catch (error) {
      expect(error).toBeInstanceOf(CertificateFormatError)
      return
    }
    expect(marshalCertificate(decoded).equals(Buffer.from(input))).toBe(true)
  }

  it('random bytes throw nothing but CertificateFormatError', () => {
    fc.assert(fc.property(fc.uint8Array({maxLength: 400}), decodesOrFormatError), {numRuns: 2000})
  })

  it('random mutations of a real certificate throw nothing but CertificateFormatError', async () => {
    const original = marshalCertificate(certificateFromPem(await fixtureText('host-constrained.crt')))
    const mutation = fc.record({
      kind: fc.constantFrom('flip', 'insert', 'delete', 'set'),
      at: fc.nat(original.length),
      byte: fc.integer({min: 0, max: 255}),
    })
    fc.assert(
      fc.property(fc.array(mutation, {minLength: 1, maxLength: 4}), (mutations) => {
        let bytes = Buffer.from(original)
        for (const {kind, at, byte} of mutations) {
          const i = Math.min(at, Math.max(bytes.length - 1, 0))
          if (kind === 'flip' && bytes.length > 0) bytes[i] = bytes[i]! ^ (1 << (byte % 8))
          else if (kind === 'set' && bytes.length > 0) bytes[i] = byte
          else if (kind === 'insert') {
            bytes = Buffer.concat([bytes.subarray(0, i), Buffer.from([byte]), bytes.subarray(i)])
          }
          else if (kind === 'delete') bytes = Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + 1)])
        }
        decodesOrFormatError(bytes)
      }),
      {numRuns: 2000},
    )
  })

  it('random PEM text throws nothing but CertificateFormatError', () => {
    const text = fc.oneof(
      fc.string({unit: 'binary', maxLength: 300}),
      fc.uint8Array({maxLength: 200}).map((b) => encodePem(CERTIFICATE_BANNER, b)),
      fc.string({unit: 'binary-ascii', maxLength: 200}).map((s) => `-----BEGIN ${CERTIFICATE_BANNER}-----\n${s}`),
    )
    fc.assert(
      fc.property(text, (pemText) => {
        try {
          certificatesFromPem(pemText)
        } catch (error) {
          expect(error).toBeInstanceOf(CertificateFormatError)
        }
      }),
      {numRuns: 1000},
    )
  })
})

function baseDetails(): CertificateDetails {
  return {
    name: '',
    ips: [],
    subnets: [],
    groups: [],
    notBefore: 0,
    notAfter: 0,
    publicKey: Buffer.alloc(32, 0x11),
    isCA: false,
    issuer: '',
    curve: 'CURVE25519',
  }
}

function fixtureText(name: string): Promise<string> {
  return readFile(fileURLToPath(new URL(`fixtures/nebula-cert/${name}`, import.meta.url)), 'utf8')
}
