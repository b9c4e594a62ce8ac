/**
 * Keys: raw Ed25519/X25519 helpers, their PEM files, and nebula-cert's encrypted CA key format checked against the
 * test vector of slackhq/nebula `cert/crypto_test.go`.
 */

import {createPrivateKey, createPublicKey, diffieHellman} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import {fileURLToPath} from 'node:url'

import fc from 'fast-check'
import {describe, expect, it} from 'vitest'

import {
  caPrivateKeyFromPem,
  caPrivateKeyToPem,
  caPublicKeyFromPem,
  caPublicKeyToPem,
  decodePemBlocks,
  decryptCaKey,
  DEFAULT_ARGON2_PARAMETERS,
  ED25519_ENCRYPTED_PRIVATE_KEY_BANNER,
  ED25519_PRIVATE_KEY_BANNER,
  ed25519PublicKeyFromSeed,
  ed25519Sign,
  ed25519Verify,
  encodePem,
  encryptCaKey,
  generateCaKeyPair,
  generateHostKeyPair,
  hostPrivateKeyFromPem,
  hostPrivateKeyToPem,
  hostPublicKeyFromPem,
  hostPublicKeyFromPrivate,
  hostPublicKeyToPem,
  isEncryptedCaKey,
  KeyFormatError,
  NebulaError,
  PassphraseRequiredError,
  readArgon2Parameters,
  readCaPrivateKey,
  WrongPassphraseError,
  X25519_PRIVATE_KEY_BANNER,
} from '../src/nebula/index.js'

/** From slackhq/nebula `cert/crypto_test.go` (TestDecryptAndUnmarshalSigningPrivateKey), passphrase "DO NOT USE". */
const VECTOR_PASSPHRASE = 'DO NOT USE'
const VECTOR_KEY = `# A good key
-----BEGIN NEBULA ED25519 ENCRYPTED PRIVATE KEY-----
CjsKC0FFUy0yNTYtR0NNEiwIExCAgAQYAyAEKiCPoDfGQiosxNPTbPn5EsMlc2MI
c0Bt4oz6gTrFQhX3aBJcimhHKeAuhyTGvllD0Z19fe+DFPcLH3h5VrdjVfIAajg0
KrbV3n9UHif/Au5skWmquNJzoW1E4MTdRbvpti6o+WdQ49DxjBFhx0YH8LBqrbPU
0BGkUHmIO7daP24=
-----END NEBULA ED25519 ENCRYPTED PRIVATE KEY-----
`
const VECTOR_SHORT_KEY = `# A key which, once decrypted, is too short
-----BEGIN NEBULA ED25519 ENCRYPTED PRIVATE KEY-----
CjsKC0FFUy0yNTYtR0NNEiwIExCAgAQYAyAEKiAVJwdfl3r+eqi/vF6S7OMdpjfo
hAzmTCRnr58Su4AqmBJbCv3zleYCEKYJP6UI3S8ekLMGISsgO4hm5leukCCyqT0Z
cQ76yrberpzkJKoPLGisX8f+xdy4aXSZl7oEYWQte1+vqbtl/eY9PGZhxUQdcyq7
hqzIyrRqfUgVuA==
-----END NEBULA ED25519 ENCRYPTED PRIVATE KEY-----
`
const VECTOR_INVALID_BANNER = `# Invalid banner (not encrypted)
-----BEGIN NEBULA ED25519 PRIVATE KEY-----
bWRp2CTVFhW9HD/qCd28ltDgK3w8VXSeaEYczDWos8sMUBqDb9jP3+NYwcS4lURG
XgLvodMXZJuaFPssp+WwtA==
-----END NEBULA ED25519 PRIVATE KEY-----
`
const VECTOR_INVALID_PEM = `# Not a valid PEM format
-BEGIN NEBULA ED25519 ENCRYPTED PRIVATE KEY-----
CjwKC0FFUy0yNTYtR0NNEi0IExCAgIABGAEgBCognnjujd67Vsv99p22wfAjQaDT
oCMW1mdjkU3gACKNW4MSXOWR9Sts4C81yk1RUku2gvGKs3TB9LYoklLsIizSYOLl
+Vs//O1T0I1Xbml2XBAROsb/VSoDln/6LMqR4B6fn6B3GOsLBBqRI8daDl9lRMPB
qrlJ69wer3ZUHFXA
-END NEBULA ED25519 ENCRYPTED PRIVATE KEY-----
`
/** What the vector decrypts to (the upstream test only checks its length; the GCM tag vouches for the bytes). */
const VECTOR_PLAINTEXT =
  'debf76bd9edf1b7c791b6e744500d6d32a9c8e13dfdf8afd40f0dbf6083347ff' +
  '1929e8e78106b7bfe47113e622ba3752c8089003f8eef31055059c9204ab4902'

/** Cheap Argon2 costs for tests that only exercise the format. */
const FAST = {memory: 256, iterations: 1, parallelism: 1}

const fixture = (name: string): Promise<string> =>
  readFile(fileURLToPath(new URL(`fixtures/nebula-cert/${name}`, import.meta.url)), 'utf8')

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise
  } catch (error) {
    expect(error).toBeInstanceOf(Error)
    expect((error as Error).message).not.toContain('\n')
    return error as Error
  }
  throw new Error('expected a rejection')
}

describe('raw keys', () => {
  it('makes Ed25519 CA key pairs as Go stores them (seed ‖ public key)', () => {
    const {privateKey, publicKey} = generateCaKeyPair()
    expect(privateKey).toHaveLength(64)
    expect(publicKey).toHaveLength(32)
    expect(privateKey.subarray(32).equals(publicKey)).toBe(true)
    expect(ed25519PublicKeyFromSeed(privateKey.subarray(0, 32)).equals(publicKey)).toBe(true)
    const signature = ed25519Sign(privateKey, Buffer.from('hello'))
    expect(signature).toHaveLength(64)
    expect(ed25519Verify(publicKey, Buffer.from('hello'), signature)).toBe(true)
    expect(ed25519Verify(publicKey, Buffer.from('hellO'), signature)).toBe(false)
    expect(ed25519Verify(publicKey.subarray(1), Buffer.from('hello'), signature)).toBe(false)
    expect(ed25519Verify(publicKey, Buffer.from('hello'), signature.subarray(1))).toBe(false)
    expect(generateCaKeyPair().privateKey.equals(privateKey)).toBe(false)
  })

  it('signs and verifies RFC 8032 test vector 1', () => {
    const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex')
    const publicKey = Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex')
    const signature =
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155' +
      '5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b'
    expect(ed25519PublicKeyFromSeed(seed).equals(publicKey)).toBe(true)
    expect(ed25519Sign(Buffer.concat([seed, publicKey]), Buffer.alloc(0)).toString('hex')).toBe(signature)
    expect(ed25519Verify(publicKey, Buffer.alloc(0), Buffer.from(signature, 'hex'))).toBe(true)
  })

  it('derives public keys as Node exports them (JWK)', () => {
    const {privateKey, publicKey} = generateCaKeyPair()
    const pkcs8 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), privateKey.subarray(0, 32)])
    const nodeKey = createPrivateKey({key: pkcs8, format: 'der', type: 'pkcs8'})
    const jwk = createPublicKey(nodeKey).export({format: 'jwk'})
    expect(Buffer.from(jwk.x!, 'base64url').equals(publicKey)).toBe(true)
  })

  it('makes X25519 host key pairs that agree on a shared secret', () => {
    const a = generateHostKeyPair()
    const b = generateHostKeyPair()
    expect(a.privateKey).toHaveLength(32)
    expect(a.publicKey).toHaveLength(32)
    expect(hostPublicKeyFromPrivate(a.privateKey).equals(a.publicKey)).toBe(true)
    const prefix = Buffer.from('302e020100300506032b656e04220420', 'hex')
    const spki = Buffer.from('302a300506032b656e032100', 'hex')
    const secret = (priv: Buffer, pub: Buffer) =>
      diffieHellman({
        privateKey: createPrivateKey({key: Buffer.concat([prefix, priv]), format: 'der', type: 'pkcs8'}),
        publicKey: createPublicKey({key: Buffer.concat([spki, pub]), format: 'der', type: 'spki'}),
      })
    expect(secret(a.privateKey, b.publicKey).equals(secret(b.privateKey, a.publicKey))).toBe(true)
  })

  it('refuses malformed raw keys with KeyFormatError', () => {
    const {privateKey} = generateCaKeyPair()
    const inconsistent = Buffer.concat([privateKey.subarray(0, 32), generateCaKeyPair().publicKey])
    expect(() => ed25519Sign(inconsistent, Buffer.alloc(1))).toThrow(KeyFormatError)
    expect(() => ed25519Sign(privateKey.subarray(0, 32), Buffer.alloc(1))).toThrow(/64/)
    expect(() => hostPublicKeyFromPrivate(Buffer.alloc(31))).toThrow(KeyFormatError)
    expect(() => caPrivateKeyToPem(inconsistent)).toThrow(/public half does not match/)
  })
})

describe('key PEM files', () => {
  it('round-trips every banner and reads nebula-cert files', async () => {
    const ca = generateCaKeyPair()
    const host = generateHostKeyPair()
    expect(caPrivateKeyFromPem(caPrivateKeyToPem(ca.privateKey)).equals(ca.privateKey)).toBe(true)
    expect(caPublicKeyFromPem(caPublicKeyToPem(ca.publicKey)).equals(ca.publicKey)).toBe(true)
    expect(hostPrivateKeyFromPem(hostPrivateKeyToPem(host.privateKey)).equals(host.privateKey)).toBe(true)
    expect(hostPublicKeyFromPem(hostPublicKeyToPem(host.publicKey)).equals(host.publicKey)).toBe(true)
    expect(caPrivateKeyToPem(ca.privateKey)).toMatch(/^-----BEGIN [A-Z0-9 ]+-----\n.{64}\n.{24}\n-----END/)
    expect(caPublicKeyToPem(ca.publicKey)).toMatch(/^-----BEGIN NEBULA ED25519 PUBLIC KEY-----\n.{44}\n-----END/)

    for (const name of ['ca.key', 'ca-constrained.key']) {
      const text = await fixture(name)
      expect(caPrivateKeyToPem(caPrivateKeyFromPem(text))).toBe(text)
      expect((await readCaPrivateKey(text)).equals(caPrivateKeyFromPem(text))).toBe(true)
      expect((await readCaPrivateKey(text, 'ignored')).equals(caPrivateKeyFromPem(text))).toBe(true)
    }
    for (const name of ['host.key', 'keygen.key']) {
      const text = await fixture(name)
      expect(hostPrivateKeyToPem(hostPrivateKeyFromPem(text))).toBe(text)
    }
  })

  it('refuses wrong banners, lengths and bundles with KeyFormatError', async () => {
    const host = generateHostKeyPair()
    const ca = generateCaKeyPair()
    const cases: Array<[() => unknown, RegExp]> = [
      [() => caPrivateKeyFromPem(hostPrivateKeyToPem(host.privateKey)), /found NEBULA X25519 PRIVATE KEY/],
      [() => hostPrivateKeyFromPem(caPrivateKeyToPem(ca.privateKey)), /found NEBULA ED25519 PRIVATE KEY/],
      [() => hostPublicKeyFromPem(hostPrivateKeyToPem(host.privateKey)), /expected a NEBULA X25519 PUBLIC KEY/],
      [() => caPublicKeyFromPem(hostPublicKeyToPem(host.publicKey)), /expected a NEBULA ED25519 PUBLIC KEY/],
      [() => caPrivateKeyFromPem(VECTOR_KEY), /the key is encrypted/],
      [() => hostPrivateKeyFromPem(encodePem('NEBULA X25519 PRIVATE KEY', Buffer.alloc(31))), /31 bytes, expected 32/],
      [() => hostPublicKeyFromPem(encodePem('NEBULA X25519 PUBLIC KEY', Buffer.alloc(33))), /33 bytes/],
      [() => caPublicKeyFromPem(encodePem('NEBULA ED25519 PUBLIC KEY', Buffer.alloc(64))), /64 bytes/],
      [() => caPrivateKeyFromPem(encodePem('NEBULA ED25519 PRIVATE KEY', Buffer.alloc(32))), /32 bytes, expected 64/],
      [
        () => {
          const mismatched = Buffer.concat([ca.privateKey.subarray(0, 32), Buffer.alloc(32)])
          return caPrivateKeyFromPem(encodePem('NEBULA ED25519 PRIVATE KEY', mismatched))
        },
        /does not match its seed/,
      ],
      [() => hostPublicKeyFromPem(hostPublicKeyToPem(host.publicKey).repeat(2)), /expected one .* found 2/],
      [() => hostPublicKeyFromPem(''), /found 0/],
      [() => hostPublicKeyFromPem(`junk\n${hostPublicKeyToPem(host.publicKey)}`), /unexpected text/],
    ]
    for (const [fn, message] of cases) {
      expect(fn).toThrow(KeyFormatError)
      expect(fn).toThrow(message)
    }
  })

  it('throws nothing but KeyFormatError on random text', () => {
    fc.assert(
      fc.property(fc.string({unit: 'binary', maxLength: 200}), fc.uint8Array({maxLength: 80}), (text, bytes) => {
        const inputs = [text, encodePem(X25519_PRIVATE_KEY_BANNER, bytes), encodePem(ED25519_PRIVATE_KEY_BANNER, bytes)]
        for (const input of inputs) {
          for (const read of [caPrivateKeyFromPem, caPublicKeyFromPem, hostPrivateKeyFromPem, hostPublicKeyFromPem]) {
            try {
              read(input)
            } catch (error) {
              expect(error).toBeInstanceOf(KeyFormatError)
            }
          }
        }
      }),
      {numRuns: 300},
    )
  })
})

describe('key readers refuse what is not their key (properties)', () => {
  const readers = [
    {read: caPrivateKeyFromPem, banner: ED25519_PRIVATE_KEY_BANNER, length: 64},
    {read: caPublicKeyFromPem, banner: 'NEBULA ED25519 PUBLIC KEY', length: 32},
    {read: hostPrivateKeyFromPem, banner: X25519_PRIVATE_KEY_BANNER, length: 32},
    {read: hostPublicKeyFromPem, banner: 'NEBULA X25519 PUBLIC KEY', length: 32},
  ]
  const refuses = (read: (pem: string) => Buffer, pem: string, why: RegExp): void => {
    let error: unknown
    try {
      read(pem)
    } catch (error_) {
      error = error_
    }
    expect(error, pem).toBeInstanceOf(KeyFormatError)
    expect((error as KeyFormatError).message).toMatch(why)
  }

  it('a block of another length, under another banner, beside another block, or no PEM at all, is refused', () => {
    fc.assert(
      fc.property(fc.constantFrom(...readers.keys()), fc.constantFrom(...readers.keys()), fc.uint8Array({maxLength: 80}), fc.string({maxLength: 80}), (i, j, bytes, text) => {
        const {read, banner, length} = readers[i]!
        const under = readers[j]!.banner
        const pem = encodePem(under, bytes)
        if (under !== banner) refuses(read, pem, new RegExp(`expected a ${banner}( or [A-Z0-9 ]+)? PEM block, found ${under}`))
        else if (bytes.length !== length) refuses(read, pem, /\d+ bytes|length/)
        // 64 random bytes are no CA key: the second half must be the public key of the first.
        else if (read === caPrivateKeyFromPem) refuses(read, pem, /its public half does not match its seed/)
        else expect(read(pem).equals(Buffer.from(bytes))).toBe(true) // the control: its own key is read
        refuses(read, `${encodePem(banner, new Uint8Array(length))}${encodePem(banner, new Uint8Array(length))}`, /expected one .* PEM block, found 2/)
        if (!text.includes('-----')) refuses(read, text, /./)
      }),
      {numRuns: 1000, examples: [[0, 0, new Uint8Array(64), ''], [2, 2, new Uint8Array(32), '']]},
    )
    const ca = generateCaKeyPair().privateKey
    expect(caPrivateKeyFromPem(caPrivateKeyToPem(ca)).equals(ca)).toBe(true)
  })
})

describe('encrypted CA key (nebula-cert 1.7.0+ format)', () => {
  it('decrypts the crypto_test.go vector to a valid 64-byte Ed25519 key', async () => {
    const key = await decryptCaKey(VECTOR_KEY, VECTOR_PASSPHRASE)
    expect(key).toHaveLength(64)
    expect(ed25519PublicKeyFromSeed(key.subarray(0, 32)).equals(key.subarray(32))).toBe(true)
    expect(key.toString('hex')).toBe(VECTOR_PLAINTEXT)
    expect((await decryptCaKey(VECTOR_KEY, Buffer.from(VECTOR_PASSPHRASE))).equals(key)).toBe(true)
    expect((await readCaPrivateKey(VECTOR_KEY, VECTOR_PASSPHRASE)).equals(key)).toBe(true)
  })

  it('reads the vector parameters without decrypting', () => {
    const params = readArgon2Parameters(VECTOR_KEY)
    expect(params).toMatchObject({algorithm: 'AES-256-GCM', version: 19, memory: 65536, iterations: 3, parallelism: 4})
    expect(params.salt).toHaveLength(32)
    expect(isEncryptedCaKey(VECTOR_KEY)).toBe(true)
    expect(isEncryptedCaKey(VECTOR_INVALID_BANNER)).toBe(false)
    expect(isEncryptedCaKey('garbage')).toBe(false)
  })

  it('fails like upstream on the vector bundle: short key, wrong banner, bad PEM, wrong passphrase', async () => {
    const short = await rejection(decryptCaKey(VECTOR_SHORT_KEY, VECTOR_PASSPHRASE))
    expect(short).toBeInstanceOf(KeyFormatError)
    expect(short.message).toMatch(/63 bytes, expected 64/)
    const banner = await rejection(decryptCaKey(VECTOR_INVALID_BANNER, VECTOR_PASSPHRASE))
    expect(banner).toBeInstanceOf(KeyFormatError)
    expect(banner.message).toMatch(/found NEBULA ED25519 PRIVATE KEY/)
    const pem = await rejection(decryptCaKey(VECTOR_INVALID_PEM, VECTOR_PASSPHRASE))
    expect(pem).toBeInstanceOf(KeyFormatError)
    expect(pem.message).toMatch(/unexpected text outside a PEM block/)
    const wrong = await rejection(decryptCaKey(VECTOR_KEY, 'invalid passphrase'))
    expect(wrong).toBeInstanceOf(WrongPassphraseError)
    expect(wrong).not.toBeInstanceOf(KeyFormatError)
  })

  it('writes the same structure as nebula-cert for the same parameters', async () => {
    const {privateKey} = generateCaKeyPair()
    const ours = decodePemBlocks(await encryptCaKey(privateKey, 'passphrase'))[0]!
    const theirs = decodePemBlocks(VECTOR_KEY)[0]!
    expect(ours.type).toBe(ED25519_ENCRYPTED_PRIVATE_KEY_BANNER)
    expect(ours.bytes).toHaveLength(theirs.bytes.length)
    // Everything up to the salt (algorithm, version, memory, iterations, parallelism) is identical.
    const header = theirs.bytes.length - 32 - 2 - 92
    expect(ours.bytes.subarray(0, header).equals(theirs.bytes.subarray(0, header))).toBe(true)
  })

  it('round-trips with the defaults, and with other parameters', async () => {
    const {privateKey} = generateCaKeyPair()
    const pem = await encryptCaKey(privateKey, 'correct horse')
    expect(readArgon2Parameters(pem)).toMatchObject({...DEFAULT_ARGON2_PARAMETERS, version: 19})
    expect((await decryptCaKey(pem, 'correct horse')).equals(privateKey)).toBe(true)

    const fast = await encryptCaKey(privateKey, Buffer.from('pässphrase'), FAST)
    expect(readArgon2Parameters(fast)).toMatchObject(FAST)
    expect((await decryptCaKey(fast, 'pässphrase')).equals(privateKey)).toBe(true)
    expect(await encryptCaKey(privateKey, 'pässphrase', FAST)).not.toBe(fast) // fresh salt and nonce
  })

  it('throws WrongPassphraseError for a wrong passphrase or altered ciphertext', async () => {
    const {privateKey} = generateCaKeyPair()
    const pem = await encryptCaKey(privateKey, 'right', FAST)
    expect(await rejection(decryptCaKey(pem, 'wrong'))).toBeInstanceOf(WrongPassphraseError)
    expect(await rejection(decryptCaKey(pem, ''))).toBeInstanceOf(WrongPassphraseError)
    expect(await rejection(readCaPrivateKey(pem, 'wrong'))).toBeInstanceOf(WrongPassphraseError)
    const block = decodePemBlocks(pem)[0]!
    const altered = Buffer.from(block.bytes)
    altered[altered.length - 20] = altered.at(-20)! ^ 1
    expect(await rejection(decryptCaKey(encodePem(block.type, altered), 'right'))).toBeInstanceOf(WrongPassphraseError)
  })

  it('asks for a passphrase when the key is encrypted', async () => {
    const error = await rejection(readCaPrivateKey(VECTOR_KEY))
    expect(error).toBeInstanceOf(PassphraseRequiredError)
    expect(await rejection(readCaPrivateKey(hostPrivateKeyToPem(generateHostKeyPair().privateKey)))).toBeInstanceOf(
      KeyFormatError,
    )
  })

  it('refuses bad inputs and malformed files', async () => {
    const {privateKey} = generateCaKeyPair()
    expect(await rejection(encryptCaKey(privateKey, ''))).toBeInstanceOf(NebulaError)
    expect(await rejection(encryptCaKey(privateKey.subarray(1), 'x'))).toBeInstanceOf(KeyFormatError)
    for (const params of [
      {...FAST, parallelism: 0},
      {...FAST, parallelism: 256},
      {...FAST, iterations: 0},
      {...FAST, memory: 7},
      {...FAST, memory: 1.5},
    ]) {
      expect((await rejection(encryptCaKey(privateKey, 'x', params))).message).toMatch(/invalid Argon2 parameters/)
    }

    const good = decodePemBlocks(await encryptCaKey(privateKey, 'x', FAST))[0]!.bytes
    const malformed: Array<[Buffer, RegExp]> = [
      [Buffer.alloc(0), /no data/],
      [Buffer.concat([good, Buffer.from('1801', 'hex')]), /unknown field 3/],
      [good.subarray(0, -5), /runs past the end/],
      [Buffer.from(good.toString('latin1').replace('AES-256-GCM', 'AES-256-CBC'), 'latin1'), /unsupported algorithm/],
      [Buffer.from(good.toString('hex').replace('0813', '0812'), 'hex'), /unsupported Argon2 version 18/],
    ]
    for (const [bytes, message] of malformed) {
      const error = await rejection(decryptCaKey(encodePem(ED25519_ENCRYPTED_PRIVATE_KEY_BANNER, bytes), 'x'))
      expect(error).toBeInstanceOf(KeyFormatError)
      expect(error.message).toMatch(message)
    }
  })
})
