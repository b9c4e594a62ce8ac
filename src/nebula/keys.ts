/**
 * Nebula's raw keys and their PEM files (slackhq/nebula `cert/pem.go`, `cert/crypto.go`), on `node:crypto`.
 *
 * - CA (signing) keys are Ed25519: the private key is 64 bytes, the 32-byte seed then the 32-byte public key
 *   (Go's `ed25519.PrivateKey`); the public key is 32 bytes.
 * - Host (key agreement) keys are X25519: the private key is the raw 32-byte scalar (unclamped, as nebula-cert writes
 *   it); the public key is 32 bytes.
 *
 * Node loads raw keys through fixed DER prefixes: PKCS#8 for private keys, SPKI for public keys. Whether a key belongs
 * to a certificate is the certificate's business (`verify.ts`): this module knows nothing of certificates.
 */

import {createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, randomBytes, sign, verify} from 'node:crypto'

import {KeyFormatError} from './errors.js'
import {
  decodePemBlocks,
  ED25519_ENCRYPTED_PRIVATE_KEY_BANNER,
  ED25519_PRIVATE_KEY_BANNER,
  ED25519_PUBLIC_KEY_BANNER,
  encodePem,
  type Fail,
  X25519_PRIVATE_KEY_BANNER,
  X25519_PUBLIC_KEY_BANNER,
} from './pem.js'

/** Length in bytes of an Ed25519 CA private key as Nebula stores it (seed ‖ public key). */
export const CA_PRIVATE_KEY_LENGTH = 64
/** Length in bytes of Ed25519 and X25519 public keys, and of an X25519 private key. */
export const KEY_LENGTH = 32

const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex')
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

/** An Ed25519 CA key pair: `privateKey` 64 bytes (seed ‖ public key), `publicKey` 32 bytes. */
export interface CaKeyPair {
  privateKey: Buffer
  publicKey: Buffer
}

/** An X25519 host key pair: `privateKey` the raw 32-byte scalar, `publicKey` 32 bytes. */
export interface HostKeyPair {
  privateKey: Buffer
  publicKey: Buffer
}

const failKey: Fail = (message) => {
  throw new KeyFormatError(message)
}

/** A fresh Ed25519 CA key pair (what `nebula-cert ca` makes). */
export function generateCaKeyPair(): CaKeyPair {
  const seed = randomBytes(32)
  const publicKey = ed25519PublicKeyFromSeed(seed)
  return {privateKey: Buffer.concat([seed, publicKey]), publicKey}
}

/** A fresh X25519 host key pair (what `nebula-cert keygen` makes). */
export function generateHostKeyPair(): HostKeyPair {
  // OpenSSL generates and exports raw keys as JWK far faster than it parses PKCS#8 (which OpenSSL 3 makes slow).
  const pair = generateKeyPairSync('x25519')
  return {
    privateKey: Buffer.from(pair.privateKey.export({format: 'jwk'}).d!, 'base64url'),
    publicKey: Buffer.from(pair.publicKey.export({format: 'jwk'}).x!, 'base64url'),
  }
}

/**
 * The X25519 public key (32 bytes) of a raw 32-byte private scalar.
 * @throws KeyFormatError when the key is not 32 bytes
 */
export function hostPublicKeyFromPrivate(privateKey: Uint8Array): Buffer {
  checkLength(privateKey, KEY_LENGTH, 'X25519 private key')
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
 * Checks a 64-byte Nebula Ed25519 private key: the right length, and a public half that belongs to the seed half
 * (Go signs with the stored public half as-is, so a mismatch would make signatures nobody can verify).
 * @throws KeyFormatError otherwise
 */
export function assertCaPrivateKey(privateKey: Uint8Array): void {
  signingKey(privateKey)
}

/** The parsed signing key of a checked 64-byte CA key, from the cache or parsed, checked and cached now. */
function signingKey(privateKey: Uint8Array): KeyObject {
  let key = signingKeys.get(privateKey)
  if (key) return key
  checkLength(privateKey, CA_PRIVATE_KEY_LENGTH, 'Ed25519 private key')
  const bytes = Buffer.from(privateKey)
  key = privateKeyObject(ED25519_PKCS8_PREFIX, bytes.subarray(0, 32))
  if (!rawPublicKey(key).equals(bytes.subarray(32))) {
    throw new KeyFormatError('Ed25519 private key is inconsistent: its public half does not match its seed')
  }
  signingKeys.set(privateKey, key)
  return key
}

/**
 * Ed25519 signature (64 bytes) of `message` with a 64-byte Nebula CA private key.
 * @throws KeyFormatError when the key is malformed (see {@link assertCaPrivateKey})
 */
export function ed25519Sign(privateKey: Uint8Array, message: Uint8Array): Buffer {
  return sign(null, message, signingKey(privateKey))
}

/**
 * Parsed, checked signing keys by the key buffer they came from: a CA signs many certificates in one run, and OpenSSL 3
 * takes about a millisecond to parse a key. Weak, so a key is forgotten with its buffer; a buffer must not be changed
 * after it has been used to sign.
 */
const signingKeys = new WeakMap<Uint8Array, KeyObject>()

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

/** PEM (`NEBULA ED25519 PRIVATE KEY`) of a 64-byte CA private key, as `nebula-cert ca` writes `ca.key`. */
export function caPrivateKeyToPem(privateKey: Uint8Array): string {
  assertCaPrivateKey(privateKey)
  return encodePem(ED25519_PRIVATE_KEY_BANNER, privateKey)
}

/**
 * The 64-byte CA private key of a `NEBULA ED25519 PRIVATE KEY` PEM (exactly one block).
 * For files that may be encrypted use `readCaPrivateKey`.
 * @throws KeyFormatError on bad PEM, another banner (an encrypted key included), or a malformed key
 */
export function caPrivateKeyFromPem(pem: string | Uint8Array): Buffer {
  const key = singleBlock(pem, ED25519_PRIVATE_KEY_BANNER)
  assertCaPrivateKey(key)
  return key
}

/** PEM (`NEBULA ED25519 PUBLIC KEY`) of a 32-byte Ed25519 public key. */
export function caPublicKeyToPem(publicKey: Uint8Array): string {
  checkLength(publicKey, KEY_LENGTH, 'Ed25519 public key')
  return encodePem(ED25519_PUBLIC_KEY_BANNER, publicKey)
}

/**
 * The 32-byte key of a `NEBULA ED25519 PUBLIC KEY` PEM.
 * @throws KeyFormatError on bad PEM, another banner or another length
 */
export function caPublicKeyFromPem(pem: string | Uint8Array): Buffer {
  const key = singleBlock(pem, ED25519_PUBLIC_KEY_BANNER)
  checkLength(key, KEY_LENGTH, 'Ed25519 public key')
  return key
}

/** PEM (`NEBULA X25519 PRIVATE KEY`) of a 32-byte host private key, as `nebula-cert keygen` writes it. */
export function hostPrivateKeyToPem(privateKey: Uint8Array): string {
  checkLength(privateKey, KEY_LENGTH, 'X25519 private key')
  return encodePem(X25519_PRIVATE_KEY_BANNER, privateKey)
}

/**
 * The 32-byte scalar of a `NEBULA X25519 PRIVATE KEY` PEM.
 * @throws KeyFormatError on bad PEM, another banner or another length
 */
export function hostPrivateKeyFromPem(pem: string | Uint8Array): Buffer {
  const key = singleBlock(pem, X25519_PRIVATE_KEY_BANNER)
  checkLength(key, KEY_LENGTH, 'X25519 private key')
  return key
}

/** PEM (`NEBULA X25519 PUBLIC KEY`) of a 32-byte host public key (input of `nebula-cert sign -in-pub`). */
export function hostPublicKeyToPem(publicKey: Uint8Array): string {
  checkLength(publicKey, KEY_LENGTH, 'X25519 public key')
  return encodePem(X25519_PUBLIC_KEY_BANNER, publicKey)
}

/**
 * The 32-byte key of a `NEBULA X25519 PUBLIC KEY` PEM.
 * @throws KeyFormatError on bad PEM, another banner or another length
 */
export function hostPublicKeyFromPem(pem: string | Uint8Array): Buffer {
  const key = singleBlock(pem, X25519_PUBLIC_KEY_BANNER)
  checkLength(key, KEY_LENGTH, 'X25519 public key')
  return key
}

/** The one PEM block of `pem`, which must carry `banner`. */
function singleBlock(pem: string | Uint8Array, banner: string): Buffer {
  const blocks = decodePemBlocks(pem, failKey)
  if (blocks.length !== 1) throw new KeyFormatError(`expected one ${banner} PEM block, found ${blocks.length}`)
  const [block] = blocks as [(typeof blocks)[0]]
  if (block.type !== banner) {
    const hint = block.type === ED25519_ENCRYPTED_PRIVATE_KEY_BANNER ? ' (the key is encrypted)' : ''
    throw new KeyFormatError(`expected a ${banner} PEM block, found ${block.type}${hint}`)
  }
  return block.bytes
}

function checkLength(key: Uint8Array, length: number, what: string): void {
  if (key.length !== length) throw new KeyFormatError(`${what} is ${key.length} bytes, expected ${length}`)
}

function privateKeyObject(prefix: Buffer, raw: Uint8Array): KeyObject {
  return createPrivateKey({key: Buffer.concat([prefix, raw]), format: 'der', type: 'pkcs8'})
}

function rawPublicKey(privateKey: KeyObject): Buffer {
  const der = createPublicKey(privateKey).export({format: 'der', type: 'spki'})
  return der.subarray(-32)
}
