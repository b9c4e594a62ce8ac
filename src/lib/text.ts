/**
 * Text primitives every module shares: the patterns names, fingerprints, nonces and times are checked against; SHA-256
 * as lowercase hex; and {@link safeLine}, the one way tbmesh prints or writes text it did not make itself.
 */

import {createHash, randomBytes} from 'node:crypto'

/** A lowercase hex SHA-256 (64 digits): certificate fingerprints, digests, file hashes. */
export const SHA256_HEX = /^[0-9a-f]{64}$/

/** A join-request nonce: 16 random bytes as 32 lowercase hex digits. */
export const NONCE_HEX = /^[0-9a-f]{32}$/

/** A lowercase DNS label (RFC 1123, 1–63 characters): node names, organization slugs. */
export const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

/** ISO 8601 with a time zone, as `Date.prototype.toISOString` writes it (seconds and fractions optional). */
export const ISO8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/

/** True when `value` is an {@link ISO8601} string that is also a real time. */
export function isIsoTime(value: unknown): value is string {
  return typeof value === 'string' && ISO8601.test(value) && !Number.isNaN(Date.parse(value))
}

/** Lowercase hex SHA-256 of `data` (strings are hashed as UTF-8). */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/**
 * A new random secret: 33 bytes from the system's CSPRNG as base64url, 44 characters of `A-Z a-z 0-9 - _`, which every
 * file format tbmesh writes (env files, multichain.conf, YAML) takes unquoted. 264 bits; TruBudget wants at least 32
 * characters for its RPC password.
 */
export function newSecret(): string {
  return randomBytes(33).toString('base64url')
}

/**
 * Characters that would change how a line reads when printed: C0 and C1 controls (line breaks included), the Unicode
 * line and paragraph separators, and the bidirectional marks, embeddings, overrides and isolates that can reorder a
 * line on a terminal (`U+200E`, `U+200F`, `U+202A`–`U+202E`, `U+2066`–`U+2069`).
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

/**
 * `text` made safe to print on one line or to write into one line of a generated file: every character of
 * {@link UNSAFE} is written as a `\uXXXX` escape (a tab as a blank), so untrusted text (an organization name from a
 * request file, a path, a subprocess's output) can neither start a new line nor reorder the one it is on.
 */
export function safeLine(text: string): string {
  return text.replaceAll(UNSAFE, (c) => (c === '\t' ? ' ' : `\\u${c.codePointAt(0)!.toString(16).padStart(4, '0')}`))
}

/** The last non-empty line of `text` (a program's output), trimmed; `no output` when there is none. */
export function lastLine(text: string): string {
  return text.trim().split('\n').findLast((l) => l.trim() !== '')?.trim() ?? 'no output'
}

/** `safeLine` of `text` as a JSON string literal, cut to `max` characters: for names in messages. */
export function quoted(text: string, max = 120): string {
  return safeLine(JSON.stringify(text.length > max ? `${text.slice(0, max - 3)}...` : text))
}

/**
 * Runs `fn` and turns whatever it throws into `bad(message)`: for checkers that report every problem through one
 * callback (a file's name and a fix) while reusing parsers that throw their own errors.
 */
export function guard<T>(fn: () => T, bad: (problem: string) => never): T {
  try {
    return fn()
  } catch (error) {
    return bad((error as Error).message)
  }
}
