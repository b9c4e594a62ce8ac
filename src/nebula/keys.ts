/**
 * Nebula's raw keys and their PEM files (slackhq/nebula `cert/pem.go`, `cert/crypto.go`, `cert/sign.go`), on
 * `node:crypto`, for both curves:
 *
 * - CA (signing) keys. Curve25519: Ed25519, the private key 64 bytes (the 32-byte seed then the 32-byte public key, Go's
 *   `ed25519.PrivateKey`), the public key 32 bytes. P256: ECDSA P-256, the private key the 32-byte big-endian scalar,
 *   the public key the 65-byte uncompressed point. A CA private key's length says its curve.
 * - Host (key agreement) keys. Curve25519: X25519, the raw 32-byte scalar (unclamped, as nebula-cert writes it) and a
 *   32-byte public key. P256: ECDH P-256, the 32-byte scalar and the 65-byte uncompressed point. Private keys of both
 *   curves are 32 bytes: their PEM banner says which.
 *
 * CA signatures: Ed25519 over the message; ECDSA P-256 over its SHA-256, ASN.1 DER, normalized to low-s as nebula-cert
 * 1.10.3+ does (`s ≤ n/2`). Node loads raw keys through fixed DER prefixes (PKCS#8, SPKI) or JWK. Whether a key belongs
 * to a certificate is the certificate's business (`verify.ts`): this module knows nothing of certificates.
 */

import {createECDH, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, sign, verify} from 'node:crypto'

import type {Curve} from './certificate.js'
import {derElement, DerReader} from './der.js'
import {KeyFormatError} from './errors.js'
import {
  decodePemBlocks,
  ED25519_ENCRYPTED_PRIVATE_KEY_BANNER,
  ED25519_PRIVATE_KEY_BANNER,
  ED25519_PUBLIC_KEY_BANNER,
  encodePem,
  type Fail,
  P256_CA_PRIVATE_KEY_BANNER,
  P256_CA_PUBLIC_KEY_BANNER,
  P256_ENCRYPTED_PRIVATE_KEY_BANNER,
  P256_PRIVATE_KEY_BANNER,
  P256_PUBLIC_KEY_BANNER,
  X25519_PRIVATE_KEY_BANNER,
  X25519_PUBLIC_KEY_BANNER,
} from './pem.js'

/** Length in bytes of an Ed25519 CA private key as Nebula stores it (seed ‖ public key). */
export const CA_PRIVATE_KEY_LENGTH = 64
/** Length in bytes of Ed25519 and X25519 public keys, and of X25519 and P-256 private keys. */
export const KEY_LENGTH = 32
/** Length in bytes of a P-256 public key (uncompressed point). */
export const P256_PUBLIC_KEY_LENGTH = 65

/** The order n of the P-256 group. */
const P256_ORDER = BigInt('0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551')
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex')

/** A CA key pair: Ed25519 (`privateKey` 64 bytes, `publicKey` 32) or ECDSA P-256 (32 and 65 bytes). */
export interface CaKeyPair {
  privateKey: Buffer
  publicKey: Buffer
}

/** A host key pair: X25519 (`privateKey` the raw 32-byte scalar, `publicKey` 32 bytes) or P-256 (32 and 65 bytes). */
export interface HostKeyPair {
  privateKey: Buffer
  publicKey: Buffer
}

/** A key read from PEM, with the curve its banner names. */
export interface CurveKey {
  curve: Curve
  key: Buffer
}

const failKey: Fail = (message) => {
  throw new KeyFormatError(message)
}

/** A fresh CA key pair of `curve` (what `nebula-cert ca -curve` makes). */
export function generateCaKeyPair(curve: Curve = 'CURVE25519'): CaKeyPair {
  if (curve === 'P256') return generateP256()
  const seed = randomBytes(32)
  const publicKey = ed25519PublicKeyFromSeed(seed)
  return {privateKey: Buffer.concat([seed, publicKey]), publicKey}
}

/** A fresh host key pair of `curve` (what `nebula-cert keygen -curve` makes). */
export function generateHostKeyPair(curve: Curve = 'CURVE25519'): HostKeyPair {
  if (curve === 'P256') return generateP256()
  // OpenSSL generates and exports raw keys as JWK far faster than it parses PKCS#8 (which OpenSSL 3 makes slow).
  const pair = generateKeyPairSync('x25519')
  return {
    privateKey: Buffer.from(pair.privateKey.export({format: 'jwk'}).d!, 'base64url'),
    publicKey: Buffer.from(pair.publicKey.export({format: 'jwk'}).x!, 'base64url'),
  }
}

function generateP256(): {privateKey: Buffer; publicKey: Buffer} {
  const jwk = generateKeyPairSync('ec', {namedCurve: 'prime256v1'}).privateKey.export({format: 'jwk'})
  const coordinate = (v: string | undefined): Buffer => Buffer.from(v!, 'base64url')
  return {privateKey: coordinate(jwk.d), publicKey: Buffer.concat([Buffer.from([4]), coordinate(jwk.x), coordinate(jwk.y)])}
}

/**
 * The public key of a raw 32-byte host private key: X25519 (32 bytes) or P-256 (65 bytes, uncompressed).
 * @throws KeyFormatError when the key is not 32 bytes, or not a valid P-256 scalar (0 or ≥ n)
 */
export function hostPublicKeyFromPrivate(privateKey: Uint8Array, curve: Curve = 'CURVE25519'): Buffer {
  checkLength(privateKey, KEY_LENGTH, `${curve === 'P256' ? 'P256' : 'X25519'} private key`)
  if (curve === 'P256') return p256PublicKey(privateKey)
  return rawPublicKey(privateKeyObject(X25519_PKCS8_PREFIX, privateKey))
}

/**
 * The Ed25519 public key (32 bytes) of a 32-byte seed.
 * @throws KeyFormatError when the seed is not 32 bytes
 */
export function ed25519PublicKeyFromSeed(seed: Uint8Array): Buffer {
  checkLength(seed, 32, 'Ed25519 seed')
  return rawPublicKey(privateKeyObject(ED25519_PKCS8_PREFIX, seed))
}

/**
 * The curve of a CA private key, by its length: 64 bytes Ed25519 (CURVE25519), 32 bytes ECDSA P-256.
 * @throws KeyFormatError for any other length
 */
export function caKeyCurve(privateKey: Uint8Array): Curve {
  if (privateKey.length === CA_PRIVATE_KEY_LENGTH) return 'CURVE25519'
  if (privateKey.length === KEY_LENGTH) return 'P256'
  throw new KeyFormatError(`a CA private key is 64 bytes (Ed25519) or 32 bytes (P256), not ${privateKey.length}`)
}

/**
 * The public key of a CA private key: the stored public half of an Ed25519 key, the point of a P-256 scalar.
 * @throws KeyFormatError as {@link assertCaPrivateKey}
 */
export function caPublicKeyFromPrivate(privateKey: Uint8Array): Buffer {
  assertCaPrivateKey(privateKey)
  return caKeyCurve(privateKey) === 'P256' ? p256PublicKey(privateKey) : Buffer.from(privateKey.subarray(32))
}

/**
 * Checks a CA private key: a 64-byte Nebula Ed25519 key whose public half belongs to its seed half (Go signs with the
 * stored public half as-is, so a mismatch would make signatures nobody can verify), or a 32-byte P-256 scalar in
 * 1..n-1.
 * @throws KeyFormatError otherwise
 */
export function assertCaPrivateKey(privateKey: Uint8Array): void {
  signingKey(privateKey)
}

/** The parsed signing key of a checked CA key, from the cache or parsed, checked and cached now. */
function signingKey(privateKey: Uint8Array): KeyObject {
  let key = signingKeys.get(privateKey)
  if (key) return key
  const bytes = Buffer.from(privateKey)
  if (caKeyCurve(bytes) === 'P256') {
    const point = p256PublicKey(bytes)
    const b64 = (b: Buffer): string => b.toString('base64url')
    key = createPrivateKey({key: {kty: 'EC', crv: 'P-256', d: b64(bytes), x: b64(point.subarray(1, 33)), y: b64(point.subarray(33))}, format: 'jwk'})
  } else {
    key = privateKeyObject(ED25519_PKCS8_PREFIX, bytes.subarray(0, 32))
    if (!rawPublicKey(key).equals(bytes.subarray(32))) {
      throw new KeyFormatError('Ed25519 private key is inconsistent: its public half does not match its seed')
    }
  }
  signingKeys.set(privateKey, key)
  return key
}

/**
 * Parsed, checked signing keys by the key buffer they came from: a CA signs many certificates in one run, and OpenSSL 3
 * takes about a millisecond to parse a key. Weak, so a key is forgotten with its buffer; a buffer must not be changed
 * after it has been used to sign.
 */
const signingKeys = new WeakMap<Uint8Array, KeyObject>()

/**
 * A CA's signature of `message` with its private key (see {@link caKeyCurve}): Ed25519 (64 bytes), or ECDSA P-256 over
 * SHA-256, ASN.1 DER, low-s (what `SignWith` and every tbmesh signed message use).
 * @throws KeyFormatError when the key is malformed (see {@link assertCaPrivateKey})
 */
export function caSign(privateKey: Uint8Array, message: Uint8Array): Buffer {
  const key = signingKey(privateKey)
  if (caKeyCurve(privateKey) === 'CURVE25519') return sign(null, message, key)
  return lowS(sign('sha256', message, {key, dsaEncoding: 'der'}))
}

/**
 * Whether `signature` is a valid CA signature of `message` by `publicKey` of `curve`: Ed25519 (32-byte key, 64-byte
 * signature), or ECDSA P-256 over SHA-256 with an ASN.1 DER signature (65-byte key; high-s accepted, as Go does).
 * Never throws.
 */
export function caVerify(curve: Curve, publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (curve === 'CURVE25519') return ed25519Verify(publicKey, message, signature)
  if (curve !== 'P256' || publicKey.length !== P256_PUBLIC_KEY_LENGTH) return false
  try {
    const key = createPublicKey({key: Buffer.concat([P256_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki'})
    return verify('sha256', message, {key, dsaEncoding: 'der'}, signature)
  } catch {
    return false
  }
}

/**
 * Ed25519 signature (64 bytes) of `message` with a 64-byte Nebula CA private key.
 * @throws KeyFormatError when the key is malformed or not Ed25519
 */
export function ed25519Sign(privateKey: Uint8Array, message: Uint8Array): Buffer {
  checkLength(privateKey, CA_PRIVATE_KEY_LENGTH, 'Ed25519 private key')
  return caSign(privateKey, message)
}

/** Whether `signature` is a valid Ed25519 signature of `message` by the 32-byte `publicKey`. Never throws. */
export function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== KEY_LENGTH || signature.length !== 64) return false
  try {
    const key = createPublicKey({key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey]), format: 'der', type: 'spki'})
    return verify(null, message, key, signature)
  } catch {
    return false
  }
}

/**
 * The other valid form of an ECDSA P-256 signature: `s` replaced by `n − s` (ASN.1 DER, minimal INTEGERs). Anyone can
 * make it from a signature, so a blocklist must hold the fingerprints of both forms (Nebula 1.10.3+ checks both).
 * @throws KeyFormatError when `signature` is not a DER ECDSA signature
 */
export function ecdsaOtherForm(signature: Uint8Array): Buffer {
  const {r, s} = ecdsaParts(signature)
  return ecdsaEncode(r, P256_ORDER - s)
}

/** `signature` with `s ≤ n/2` (`n − s` otherwise): the form nebula-cert 1.10.3+ writes. */
function lowS(signature: Buffer): Buffer {
  const {r, s} = ecdsaParts(signature)
  return s > P256_ORDER / 2n ? ecdsaEncode(r, P256_ORDER - s) : signature
}

function ecdsaParts(signature: Uint8Array): {r: bigint; s: bigint} {
  const fail: Fail = (message) => failKey(`not an ECDSA signature: ${message}`)
  const outer = new DerReader(Buffer.from(signature), fail)
  const body = new DerReader(outer.read(0x30, 'the SEQUENCE'), fail)
  const int = (what: string): bigint => {
    const bytes = body.read(0x02, what)
    if (bytes.length === 0 || (bytes[0]! & 0x80) !== 0) fail(`${what} is not a positive INTEGER`)
    return BigInt(`0x${bytes.toString('hex')}`)
  }
  const r = int('r')
  const s = int('s')
  if (!outer.done() || !body.done()) fail('trailing data')
  if (r === 0n || s === 0n || r >= P256_ORDER || s >= P256_ORDER) fail('r or s out of range')
  return {r, s}
}

function ecdsaEncode(r: bigint, s: bigint): Buffer {
  const int = (v: bigint): Buffer => {
    let hex = v.toString(16)
    if (hex.length % 2) hex = `0${hex}`
    const bytes = Buffer.from(hex, 'hex')
    return derElement(0x02, bytes[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes)
  }
  return derElement(0x30, Buffer.concat([int(r), int(s)]))
}

/** PEM of a CA private key, as `nebula-cert ca` writes `ca.key`: `NEBULA ED25519 PRIVATE KEY` or `NEBULA ECDSA P256 PRIVATE KEY`. */
export function caPrivateKeyToPem(privateKey: Uint8Array): string {
  assertCaPrivateKey(privateKey)
  return encodePem(caKeyCurve(privateKey) === 'P256' ? P256_CA_PRIVATE_KEY_BANNER : ED25519_PRIVATE_KEY_BANNER, privateKey)
}

/**
 * The CA private key of a `NEBULA ED25519 PRIVATE KEY` (64 bytes) or `NEBULA ECDSA P256 PRIVATE KEY` (32 bytes) PEM
 * (exactly one block). For files that may be encrypted use `readCaPrivateKey`.
 * @throws KeyFormatError on bad PEM, another banner (an encrypted key included), or a malformed key
 */
export function caPrivateKeyFromPem(pem: string | Uint8Array): Buffer {
  const {type, bytes} = singleBlock(pem, [ED25519_PRIVATE_KEY_BANNER, P256_CA_PRIVATE_KEY_BANNER])
  checkLength(bytes, type === P256_CA_PRIVATE_KEY_BANNER ? KEY_LENGTH : CA_PRIVATE_KEY_LENGTH, type === P256_CA_PRIVATE_KEY_BANNER ? 'P256 private key' : 'Ed25519 private key')
  assertCaPrivateKey(bytes)
  return bytes
}

/** PEM of a CA public key: `NEBULA ED25519 PUBLIC KEY` (32 bytes) or `NEBULA ECDSA P256 PUBLIC KEY` (65 bytes). */
export function caPublicKeyToPem(publicKey: Uint8Array): string {
  if (publicKey.length === P256_PUBLIC_KEY_LENGTH) return encodePem(P256_CA_PUBLIC_KEY_BANNER, publicKey)
  checkLength(publicKey, KEY_LENGTH, 'Ed25519 public key')
  return encodePem(ED25519_PUBLIC_KEY_BANNER, publicKey)
}

/**
 * The key of a `NEBULA ED25519 PUBLIC KEY` (32 bytes) or `NEBULA ECDSA P256 PUBLIC KEY` (65 bytes) PEM.
 * @throws KeyFormatError on bad PEM, another banner or another length
 */
export function caPublicKeyFromPem(pem: string | Uint8Array): Buffer {
  const {type, bytes} = singleBlock(pem, [ED25519_PUBLIC_KEY_BANNER, P256_CA_PUBLIC_KEY_BANNER])
  if (type === P256_CA_PUBLIC_KEY_BANNER) checkLength(bytes, P256_PUBLIC_KEY_LENGTH, 'P256 public key')
  else checkLength(bytes, KEY_LENGTH, 'Ed25519 public key')
  return bytes
}

/** PEM of a 32-byte host private key of `curve`, as `nebula-cert keygen` writes it (`NEBULA X25519/P256 PRIVATE KEY`). */
export function hostPrivateKeyToPem(privateKey: Uint8Array, curve: Curve = 'CURVE25519'): string {
  hostPublicKeyFromPrivate(privateKey, curve)
  return encodePem(curve === 'P256' ? P256_PRIVATE_KEY_BANNER : X25519_PRIVATE_KEY_BANNER, privateKey)
}

/**
 * The 32-byte scalar of a `NEBULA X25519 PRIVATE KEY` PEM (for either curve, use {@link readHostPrivateKey}).
 * @throws KeyFormatError on bad PEM, another banner or another length
 */
export function hostPrivateKeyFromPem(pem: string | Uint8Array): Buffer {
  const {bytes} = singleBlock(pem, [X25519_PRIVATE_KEY_BANNER])
  checkLength(bytes, KEY_LENGTH, 'X25519 private key')
  return bytes
}

/**
 * A host private key PEM of either curve (`NEBULA X25519 PRIVATE KEY` or `NEBULA P256 PRIVATE KEY`): its curve and its
 * 32-byte scalar.
 * @throws KeyFormatError on bad PEM, another banner, another length, or an invalid P-256 scalar
 */
export function readHostPrivateKey(pem: string | Uint8Array): CurveKey {
  const {type, bytes} = singleBlock(pem, [X25519_PRIVATE_KEY_BANNER, P256_PRIVATE_KEY_BANNER])
  const curve: Curve = type === P256_PRIVATE_KEY_BANNER ? 'P256' : 'CURVE25519'
  hostPublicKeyFromPrivate(bytes, curve)
  return {curve, key: bytes}
}

/** PEM of a host public key (input of `nebula-cert sign -in-pub`): 32 bytes X25519, 65 bytes P-256. */
export function hostPublicKeyToPem(publicKey: Uint8Array): string {
  if (publicKey.length === P256_PUBLIC_KEY_LENGTH) return encodePem(P256_PUBLIC_KEY_BANNER, publicKey)
  checkLength(publicKey, KEY_LENGTH, 'X25519 public key')
  return encodePem(X25519_PUBLIC_KEY_BANNER, publicKey)
}

/**
 * The 32-byte key of a `NEBULA X25519 PUBLIC KEY` PEM (for either curve, use {@link readHostPublicKey}).
 * @throws KeyFormatError on bad PEM, another banner or another length
 */
export function hostPublicKeyFromPem(pem: string | Uint8Array): Buffer {
  return readHostPublicKey(pem, ['CURVE25519']).key
}

/**
 * A host public key PEM of the given curves (default both): `NEBULA X25519 PUBLIC KEY` (32 bytes) or
 * `NEBULA P256 PUBLIC KEY` (65 bytes, an uncompressed point on the curve).
 * @throws KeyFormatError on bad PEM, another banner, another length, or a P-256 key that is not a point of the curve
 */
export function readHostPublicKey(pem: string | Uint8Array, curves: readonly Curve[] = ['CURVE25519', 'P256']): CurveKey {
  const banners = curves.map((c) => (c === 'P256' ? P256_PUBLIC_KEY_BANNER : X25519_PUBLIC_KEY_BANNER))
  const {type, bytes} = singleBlock(pem, banners)
  if (type === X25519_PUBLIC_KEY_BANNER) {
    checkLength(bytes, KEY_LENGTH, 'X25519 public key')
    return {curve: 'CURVE25519', key: bytes}
  }
  checkLength(bytes, P256_PUBLIC_KEY_LENGTH, 'P256 public key')
  try {
    createPublicKey({key: Buffer.concat([P256_SPKI_PREFIX, bytes]), format: 'der', type: 'spki'})
  } catch {
    throw new KeyFormatError('P256 public key is not a point of the curve')
  }
  return {curve: 'P256', key: bytes}
}

/** The one PEM block of `pem`, which must carry one of `banners`. */
function singleBlock(pem: string | Uint8Array, banners: readonly string[]): {type: string; bytes: Buffer} {
  const blocks = decodePemBlocks(pem, failKey)
  const expected = banners.join(' or ')
  if (blocks.length !== 1) throw new KeyFormatError(`expected one ${expected} PEM block, found ${blocks.length}`)
  const [block] = blocks as [(typeof blocks)[0]]
  if (!banners.includes(block.type)) {
    const encrypted = block.type === ED25519_ENCRYPTED_PRIVATE_KEY_BANNER || block.type === P256_ENCRYPTED_PRIVATE_KEY_BANNER
    throw new KeyFormatError(`expected a ${expected} PEM block, found ${block.type}${encrypted ? ' (the key is encrypted)' : ''}`)
  }
  return {type: block.type, bytes: block.bytes}
}

function checkLength(key: Uint8Array, length: number, what: string): void {
  if (key.length !== length) throw new KeyFormatError(`${what} is ${key.length} bytes, expected ${length}`)
}

/** The 65-byte uncompressed point of a P-256 scalar; KeyFormatError when the scalar is 0 or ≥ n. */
function p256PublicKey(scalar: Uint8Array): Buffer {
  const ecdh = createECDH('prime256v1')
  try {
    ecdh.setPrivateKey(scalar)
  } catch {
    throw new KeyFormatError('P256 private key is not a valid scalar (0 or not below the group order)')
  }
  return ecdh.getPublicKey()
}

function privateKeyObject(prefix: Buffer, raw: Uint8Array): KeyObject {
  return createPrivateKey({key: Buffer.concat([prefix, raw]), format: 'der', type: 'pkcs8'})
}

function rawPublicKey(privateKey: KeyObject): Buffer {
  const der = createPublicKey(privateKey).export({format: 'der', type: 'spki'})
  return der.subarray(-32)
}
