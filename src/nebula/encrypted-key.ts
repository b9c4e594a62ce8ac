/**
 * nebula-cert's passphrase-protected CA key, `NEBULA ED25519 ENCRYPTED PRIVATE KEY` or, for a P256 CA,
 * `NEBULA ECDSA P256 ENCRYPTED PRIVATE KEY` (nebula-cert 1.7.0+ `ca -encrypt`; `RawNebulaEncryptedData` in
 * `cert/cert.proto` of slackhq/nebula):
 *
 * ```
 * RawNebulaEncryptedData { 1: EncryptionMetadata { 1: algorithm "AES-256-GCM",
 *                                                  2: Argon2Parameters { 1: version 19, 2: memory KiB, 3: iterations,
 *                                                                        4: parallelism, 5: salt } },
 *                          2: ciphertext = 12-byte nonce ‖ AES-256-GCM ciphertext ‖ 16-byte tag }
 * ```
 *
 * The AES key is Argon2id(passphrase, salt, parameters), 32 bytes; no associated data; the plaintext is the 64-byte
 * Ed25519 key (seed ‖ public key) or the 32-byte P-256 scalar, as the banner says. The Argon2 parameters live in the file, so any parameters nebula-cert chose can be
 * read back (its own default, 2 GiB of memory, needs that much RAM to decrypt).
 */

import {createCipheriv, createDecipheriv, randomBytes} from 'node:crypto'

import argon2 from 'argon2'

import {KeyFormatError, NebulaError, PassphraseRequiredError, WrongPassphraseError} from './errors.js'
import {assertCaPrivateKey, caKeyCurve, caPrivateKeyFromPem} from './keys.js'
import {
  decodePemBlocks,
  ED25519_ENCRYPTED_PRIVATE_KEY_BANNER,
  ED25519_PRIVATE_KEY_BANNER,
  encodePem,
  type Fail,
  P256_CA_PRIVATE_KEY_BANNER,
  P256_ENCRYPTED_PRIVATE_KEY_BANNER,
} from './pem.js'
import {decodeMessage, type MessageSchema, ProtoWriter, toInt32, toUint32, toUtf8String} from './proto.js'

/** Argon2id cost parameters, as stored in the key file. */
export interface Argon2Parameters {
  /** Memory, KiB (at least 8 × parallelism). */
  memory: number
  /** Passes over the memory (≥ 1). */
  iterations: number
  /** Lanes (1..255). */
  parallelism: number
}

/** Everything the key file says about how it was encrypted. */
export interface EncryptedKeyParameters extends Argon2Parameters {
  /** Cipher name; always `AES-256-GCM`. */
  algorithm: string
  /** Argon2 version; always 19 (0x13). */
  version: number
  /** Argon2 salt (32 random bytes when tbmesh or nebula-cert wrote the file). */
  salt: Buffer
}

/**
 * tbmesh's defaults: 64 MiB, 3 iterations, 4 lanes (nebula-cert uses 2 GiB, 1 iteration on 64-bit builds; both can
 * read either, since the file holds the parameters).
 */
export const DEFAULT_ARGON2_PARAMETERS: Readonly<Argon2Parameters> = Object.freeze({
  memory: 64 * 1024,
  iterations: 3,
  parallelism: 4,
})

const ALGORITHM = 'AES-256-GCM'
const ARGON2_VERSION = 0x13
const SALT_LENGTH = 32
const MIN_SALT_LENGTH = 16
const NONCE_LENGTH = 12
const TAG_LENGTH = 16

const ENCRYPTED_DATA: MessageSchema = {
  1: {name: 'EncryptionMetadata', wire: 'len', message: true},
  2: {name: 'Ciphertext', wire: 'len'},
}
const METADATA: MessageSchema = {
  1: {name: 'EncryptionAlgorithm', wire: 'len'},
  2: {name: 'Argon2Parameters', wire: 'len', message: true},
}
const ARGON2: MessageSchema = {
  1: {name: 'version', wire: 'varint'},
  2: {name: 'memory', wire: 'varint'},
  3: {name: 'iterations', wire: 'varint'},
  4: {name: 'parallelism', wire: 'varint'},
  5: {name: 'salt', wire: 'len'},
}

const fail: Fail = (message) => {
  throw new KeyFormatError(`invalid encrypted CA key: ${message}`)
}

/** Encrypted banner → the length of the key it holds. */
const PLAINTEXT_LENGTH: Readonly<Record<string, number>> = {[ED25519_ENCRYPTED_PRIVATE_KEY_BANNER]: 64, [P256_ENCRYPTED_PRIVATE_KEY_BANNER]: 32}

/**
 * Encrypts a CA key with a passphrase into a `NEBULA ED25519 ENCRYPTED PRIVATE KEY` (64-byte key) or
 * `NEBULA ECDSA P256 ENCRYPTED PRIVATE KEY` (32-byte key) PEM that nebula-cert 1.7.0+ reads (fresh 32-byte salt and
 * 12-byte nonce each time).
 * @param privateKey the 64-byte Nebula Ed25519 key (seed ‖ public key) or the 32-byte P-256 scalar
 * @param passphrase bytes, or a string taken as UTF-8; must not be empty
 * @param params Argon2id costs, default {@link DEFAULT_ARGON2_PARAMETERS}
 * @throws KeyFormatError on a malformed key; NebulaError on an empty passphrase or out-of-range parameters
 */
export async function encryptCaKey(
  privateKey: Uint8Array,
  passphrase: Uint8Array | string,
  params: Argon2Parameters = DEFAULT_ARGON2_PARAMETERS,
): Promise<string> {
  assertCaPrivateKey(privateKey)
  const secret = passphraseBytes(passphrase)
  if (secret.length === 0) throw new NebulaError('the passphrase is empty')
  const problem = argon2Problem(params)
  if (problem) throw new NebulaError(`invalid Argon2 parameters: ${problem}`)
  const salt = randomBytes(SALT_LENGTH)
  const key = await deriveKey(secret, {...params, salt})
  const nonce = randomBytes(NONCE_LENGTH)
  const cipher = createCipheriv('aes-256-gcm', key, nonce)
  const ciphertext = Buffer.concat([nonce, cipher.update(privateKey), cipher.final(), cipher.getAuthTag()])

  const argon = new ProtoWriter()
    .varint(1, ARGON2_VERSION)
    .varint(2, params.memory)
    .varint(3, params.iterations)
    .varint(4, params.parallelism)
    .bytes(5, salt)
    .finish()
  const metadata = new ProtoWriter().string(1, ALGORITHM).message(2, argon).finish()
  const data = new ProtoWriter().message(1, metadata).bytes(2, ciphertext).finish()
  return encodePem(caKeyCurve(privateKey) === 'P256' ? P256_ENCRYPTED_PRIVATE_KEY_BANNER : ED25519_ENCRYPTED_PRIVATE_KEY_BANNER, data)
}

/**
 * Decrypts an encrypted CA key PEM (exactly one block) to the CA key: 64 bytes (Ed25519) or 32 (P256), as its banner
 * says.
 * @param pem the key file's text or bytes
 * @param passphrase bytes, or a string taken as UTF-8
 * @throws WrongPassphraseError when AES-GCM authentication fails (wrong passphrase or altered file);
 *   KeyFormatError on bad PEM, another banner, malformed or unsupported parameters, or a decrypted key that is not a
 *   valid key of the length its banner names (64-byte Ed25519, 32-byte P-256 scalar)
 */
export async function decryptCaKey(pem: string | Uint8Array, passphrase: Uint8Array | string): Promise<Buffer> {
  const {params, ciphertext, keyLength} = parseEncryptedKey(pem)
  const key = await deriveKey(passphraseBytes(passphrase), params)
  const nonce = ciphertext.subarray(0, NONCE_LENGTH)
  const tag = ciphertext.subarray(ciphertext.length - TAG_LENGTH)
  const body = ciphertext.subarray(NONCE_LENGTH, ciphertext.length - TAG_LENGTH)
  let plaintext: Buffer
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, {authTagLength: TAG_LENGTH})
    decipher.setAuthTag(tag)
    plaintext = Buffer.concat([decipher.update(body), decipher.final()])
  } catch {
    throw new WrongPassphraseError()
  }
  if (plaintext.length !== keyLength) fail(`the decrypted key is ${plaintext.length} bytes, expected ${keyLength}`)
  assertCaPrivateKey(plaintext)
  return plaintext
}

/**
 * The encryption parameters of an encrypted CA key PEM, without decrypting it (e.g. to tell the user how much memory
 * decryption takes).
 * @throws KeyFormatError as {@link decryptCaKey}
 */
export function readArgon2Parameters(pem: string | Uint8Array): EncryptedKeyParameters {
  return parseEncryptedKey(pem).params
}

/** Whether a PEM text is an encrypted CA key (its first block has an encrypted banner). Never throws. */
export function isEncryptedCaKey(pem: string | Uint8Array): boolean {
  try {
    return Object.hasOwn(PLAINTEXT_LENGTH, decodePemBlocks(pem)[0]?.type ?? '')
  } catch {
    return false
  }
}

/**
 * Loads a CA key file, plain (`NEBULA ED25519 PRIVATE KEY`, `NEBULA ECDSA P256 PRIVATE KEY`) or encrypted (their
 * `ENCRYPTED` forms), to the key (64 bytes Ed25519, 32 bytes P256). A passphrase given for a plain key is ignored.
 * @throws PassphraseRequiredError when the key is encrypted and no passphrase is given; WrongPassphraseError and
 *   KeyFormatError as {@link decryptCaKey} and `caPrivateKeyFromPem`
 */
export async function readCaPrivateKey(pem: string | Uint8Array, passphrase?: Uint8Array | string): Promise<Buffer> {
  const blocks = decodePemBlocks(pem, fail)
  const type = blocks.length === 1 ? blocks[0]!.type : undefined
  if (type !== undefined && Object.hasOwn(PLAINTEXT_LENGTH, type)) {
    if (passphrase === undefined) throw new PassphraseRequiredError()
    return decryptCaKey(pem, passphrase)
  }
  if (type !== ED25519_PRIVATE_KEY_BANNER && type !== P256_CA_PRIVATE_KEY_BANNER) {
    throw new KeyFormatError(
      `expected one CA key PEM block (${ED25519_PRIVATE_KEY_BANNER}, ${P256_CA_PRIVATE_KEY_BANNER} or their ENCRYPTED forms), found ` +
        (blocks.length === 1 ? type : `${blocks.length} blocks`),
    )
  }
  return caPrivateKeyFromPem(pem)
}

function parseEncryptedKey(pem: string | Uint8Array): {params: EncryptedKeyParameters; ciphertext: Buffer; keyLength: number} {
  const blocks = decodePemBlocks(pem, fail)
  if (blocks.length !== 1) fail(`expected one PEM block, found ${blocks.length}`)
  const [block] = blocks as [(typeof blocks)[0]]
  if (!Object.hasOwn(PLAINTEXT_LENGTH, block.type)) {
    fail(`expected a ${ED25519_ENCRYPTED_PRIVATE_KEY_BANNER} or ${P256_ENCRYPTED_PRIVATE_KEY_BANNER} PEM block, found ${block.type}`)
  }
  if (block.bytes.length === 0) fail('no data')
  const data = decodeMessage(block.bytes, ENCRYPTED_DATA, fail)
  if (!data.has(1)) fail('no EncryptionMetadata')
  const metadata = decodeMessage(data.bytes(1), METADATA, fail)
  if (!metadata.has(2)) fail('no Argon2Parameters')
  const argon = decodeMessage(metadata.bytes(2), ARGON2, fail)

  const params: EncryptedKeyParameters = {
    algorithm: toUtf8String(metadata.bytes(1), 'EncryptionAlgorithm', fail),
    version: toInt32(argon.varint(1), 'version', fail),
    memory: toUint32(argon.varint(2), 'memory', fail),
    iterations: toUint32(argon.varint(3), 'iterations', fail),
    parallelism: toUint32(argon.varint(4), 'parallelism', fail),
    salt: Buffer.from(argon.bytes(5)),
  }
  if (params.algorithm !== ALGORITHM) fail(`unsupported algorithm ${JSON.stringify(params.algorithm)}`)
  if (params.version !== ARGON2_VERSION) fail(`unsupported Argon2 version ${params.version}`)
  const problem = argon2Problem(params)
  if (problem) fail(problem)
  if (params.salt.length < MIN_SALT_LENGTH) fail(`salt is ${params.salt.length} bytes, at least 16 expected`)
  const ciphertext = Buffer.from(data.bytes(2))
  if (ciphertext.length < NONCE_LENGTH + TAG_LENGTH + 1) fail(`ciphertext is too short (${ciphertext.length} bytes)`)
  return {params, ciphertext, keyLength: PLAINTEXT_LENGTH[block.type]!}
}

function argon2Problem({memory, iterations, parallelism}: Argon2Parameters): string | undefined {
  if (!Number.isInteger(parallelism) || parallelism < 1 || parallelism > 255) return 'parallelism must be 1..255'
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > 0xffffffff) return 'iterations must be ≥ 1'
  if (!Number.isInteger(memory) || memory < 8 * parallelism || memory > 0xffffffff) {
    return 'memory must be at least 8 KiB per lane'
  }
  return undefined
}

async function deriveKey(passphrase: Buffer, params: Argon2Parameters & {salt: Buffer}): Promise<Buffer> {
  return argon2.hash(passphrase, {
    raw: true,
    type: argon2.argon2id,
    version: ARGON2_VERSION,
    memoryCost: params.memory,
    timeCost: params.iterations,
    parallelism: params.parallelism,
    salt: params.salt,
    hashLength: 32,
  })
}

function passphraseBytes(passphrase: Uint8Array | string): Buffer {
  return typeof passphrase === 'string' ? Buffer.from(passphrase, 'utf8') : Buffer.from(passphrase)
}
