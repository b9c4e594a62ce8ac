/**
 * PEM as Nebula writes it (Go's `encoding/pem`): `-----BEGIN <TYPE>-----`, the bytes in base64 (standard alphabet,
 * padded) wrapped at 64 columns, `-----END <TYPE>-----`, a trailing newline. Banners are from slackhq/nebula
 * `cert/pem.go`.
 *
 * Decoding is stricter than Go's: blank lines and `#` comment lines may sit between blocks, but any other text outside
 * a block, PEM headers, a mismatched END line, a missing END line or bad base64 is rejected.
 */

import {NebulaFormatError} from './errors.js'

/** v1 certificate (protobuf `RawNebulaCertificate`); the only certificate Nebula 1.6.1 reads. */
export const CERTIFICATE_BANNER = 'NEBULA CERTIFICATE'
/** v2 certificate (ASN.1, Nebula 1.10+). */
export const CERTIFICATE_V2_BANNER = 'NEBULA CERTIFICATE V2'
/** Ed25519 signing (CA) key: 64 bytes, the 32-byte seed then the 32-byte public key. */
export const ED25519_PRIVATE_KEY_BANNER = 'NEBULA ED25519 PRIVATE KEY'
/** Ed25519 public key: 32 bytes. */
export const ED25519_PUBLIC_KEY_BANNER = 'NEBULA ED25519 PUBLIC KEY'
/** Passphrase-protected Ed25519 CA key (protobuf `RawNebulaEncryptedData`, nebula-cert 1.7.0+). */
export const ED25519_ENCRYPTED_PRIVATE_KEY_BANNER = 'NEBULA ED25519 ENCRYPTED PRIVATE KEY'
/** X25519 host (key agreement) private key: the raw 32-byte scalar. */
export const X25519_PRIVATE_KEY_BANNER = 'NEBULA X25519 PRIVATE KEY'
/** X25519 host public key: 32 bytes. */
export const X25519_PUBLIC_KEY_BANNER = 'NEBULA X25519 PUBLIC KEY'
/** ECDSA P-256 signing (CA) key: the 32-byte big-endian scalar. */
export const P256_CA_PRIVATE_KEY_BANNER = 'NEBULA ECDSA P256 PRIVATE KEY'
/** ECDSA P-256 CA public key: 65 bytes, uncompressed point. */
export const P256_CA_PUBLIC_KEY_BANNER = 'NEBULA ECDSA P256 PUBLIC KEY'
/** Passphrase-protected ECDSA P-256 CA key (the same `RawNebulaEncryptedData` as the Ed25519 one). */
export const P256_ENCRYPTED_PRIVATE_KEY_BANNER = 'NEBULA ECDSA P256 ENCRYPTED PRIVATE KEY'
/** P-256 host (key agreement) private key: the 32-byte big-endian scalar. */
export const P256_PRIVATE_KEY_BANNER = 'NEBULA P256 PRIVATE KEY'
/** P-256 host public key: 65 bytes, uncompressed point. */
export const P256_PUBLIC_KEY_BANNER = 'NEBULA P256 PUBLIC KEY'

/** One PEM block: its banner type (e.g. `NEBULA CERTIFICATE`) and its decoded bytes. */
export interface PemBlock {
  type: string
  bytes: Buffer
}

/** Throws the caller's error type; never returns. */
export type Fail = (message: string) => never

const failFormat: Fail = (message) => {
  throw new NebulaFormatError(message)
}

const BEGIN = /^-----BEGIN ([A-Z0-9]+(?: [A-Z0-9]+)*)-----$/
const END = /^-----END ([A-Z0-9]+(?: [A-Z0-9]+)*)-----$/
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/

/**
 * Encodes bytes as one Go-style PEM block: base64 in 64-column lines, LF line ends, a trailing newline.
 * @param type the banner, e.g. {@link CERTIFICATE_BANNER}
 */
export function encodePem(type: string, bytes: Uint8Array): string {
  if (!BEGIN.test(`-----BEGIN ${type}-----`)) throw new RangeError(`invalid PEM type: ${JSON.stringify(type)}`)
  const b64 = Buffer.from(bytes).toString('base64')
  let body = ''
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n'
  return `-----BEGIN ${type}-----\n${body}-----END ${type}-----\n`
}

/**
 * Decodes every PEM block of a text, in order (a trust bundle holds several). Blank lines and `#` comment lines
 * between blocks are skipped; LF and CRLF line ends are accepted. A text without any block gives an empty array.
 * @param text the PEM text, or its bytes (UTF-8)
 * @param fail raises the caller's error type (default: throws {@link NebulaFormatError})
 * @throws whatever `fail` throws on text outside blocks, PEM headers, a mismatched or missing END line, bad base64
 */
export function decodePemBlocks(text: string | Uint8Array, fail: Fail = failFormat): PemBlock[] {
  const source = typeof text === 'string' ? text : Buffer.from(text).toString('utf8')
  const lines = source.split('\n')
  const blocks: PemBlock[] = []
  let type: string | undefined
  let body: string[] = []
  for (const [index, raw] of lines.entries()) {
    const line = raw.replace(/[ \t\r]+$/, '')
    const lineNo = index + 1
    if (type === undefined) {
      const begin = BEGIN.exec(line)
      if (begin) {
        type = begin[1]
        body = []
      } else if (line.trim() !== '' && !line.trimStart().startsWith('#')) {
        fail(`unexpected text outside a PEM block on line ${lineNo}`)
      }
      continue
    }
    const end = END.exec(line)
    if (end) {
      if (end[1] !== type) fail(`PEM block ${type} ends with the banner of ${end[1]} on line ${lineNo}`)
      blocks.push({type, bytes: decodeBase64(body.join(''), type, fail)})
      type = undefined
      continue
    }
    if (line.startsWith('-----')) fail(`unexpected PEM banner inside the ${type} block on line ${lineNo}`)
    if (line.includes(':')) fail(`PEM headers are not supported (line ${lineNo})`)
    body.push(line.trim())
  }
  if (type !== undefined) fail(`PEM block ${type} has no END line`)
  return blocks
}

function decodeBase64(b64: string, type: string, fail: Fail): Buffer {
  if (!BASE64.test(b64) || b64.length % 4 !== 0) fail(`PEM block ${type} is not valid base64`)
  const bytes = Buffer.from(b64, 'base64')
  // Node's decoder ignores stray bits; only the canonical spelling of the bytes is accepted.
  if (bytes.toString('base64') !== b64) fail(`PEM block ${type} is not valid base64`)
  return bytes
}
