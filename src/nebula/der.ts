/**
 * The small part of ASN.1 DER (ITU-T X.690) that Nebula's v2 certificates use, as Go's `cryptobyte` writes it: one-byte
 * tags (no high-tag form), definite lengths in their shortest form, INTEGERs as minimal two's complement.
 *
 * The reader accepts only that encoding and refuses through the caller's `fail`: a high tag, an indefinite, over-long
 * or non-minimal length, a length past the end, a non-minimal or over-long INTEGER. It always advances, so it cannot
 * hang.
 */

import type {Fail} from './pem.js'

/** One TLV as read: its tag byte and its contents (a view into the input). */
export interface DerElement {
  tag: number
  contents: Buffer
}

/** The DER encoding of `tag` with `contents` (definite length, shortest form). */
export function derElement(tag: number, contents: Uint8Array): Buffer {
  const n = contents.length
  let length: Buffer
  if (n < 0x80) length = Buffer.from([n])
  else {
    const bytes: number[] = []
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff)
    length = Buffer.from([0x80 | bytes.length, ...bytes])
  }
  return Buffer.concat([Buffer.from([tag]), length, contents])
}

/** The contents of an INTEGER holding `value` (a safe integer): minimal two's complement, big-endian. */
export function derIntegerContents(value: number): Buffer {
  let v = BigInt(value)
  const bytes: number[] = []
  for (;;) {
    const byte = Number(BigInt.asUintN(8, v))
    bytes.unshift(byte)
    v >>= 8n
    // Done once the rest is pure sign extension of the byte just written.
    if ((v === 0n && (byte & 0x80) === 0) || (v === -1n && (byte & 0x80) !== 0)) return Buffer.from(bytes)
  }
}

/**
 * Reads an INTEGER's contents (minimal two's complement, at most 8 bytes) as a number.
 * @throws through `fail` when empty, not minimal, longer than 8 bytes or outside the safe integer range
 */
export function readDerInteger(contents: Buffer, what: string, fail: Fail): number {
  if (contents.length === 0 || contents.length > 8) fail(`${what} is not an integer of 1 to 8 bytes`)
  if (contents.length > 1 && ((contents[0] === 0 && (contents[1]! & 0x80) === 0) || (contents[0] === 0xff && (contents[1]! & 0x80) !== 0))) {
    fail(`${what} is not minimally encoded`)
  }
  let value = contents[0]! & 0x80 ? -1n : 0n
  for (const byte of contents) value = (value << 8n) | BigInt(byte)
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) fail(`${what} is out of range`)
  return Number(value)
}

/** Reads the TLVs of `bytes` one after the other (see the module comment for what is refused). */
export class DerReader {
  private pos = 0

  constructor(
    private readonly bytes: Buffer,
    private readonly fail: Fail,
  ) {}

  /** True when every byte has been read. */
  done(): boolean {
    return this.pos >= this.bytes.length
  }

  /** The tag of the next element, or undefined at the end. */
  peek(): number | undefined {
    return this.done() ? undefined : this.bytes[this.pos]
  }

  /** Reads the next element; `fail`s when its tag is not `tag` (named `what`). */
  read(tag: number, what: string): Buffer {
    const element = this.next()
    if (!element || element.tag !== tag) this.fail(`${what} is missing or out of order`)
    return element!.contents
  }

  /** Reads the next element when its tag is `tag`; otherwise reads nothing. */
  optional(tag: number): Buffer | undefined {
    return this.peek() === tag ? this.next()!.contents : undefined
  }

  /** Reads the next element, or undefined at the end. */
  next(): DerElement | undefined {
    if (this.done()) return undefined
    const {bytes, fail} = this
    const start = this.pos
    const tag = bytes[start]!
    if ((tag & 0x1f) === 0x1f) fail(`high-tag-number form at byte ${start}`)
    if (start + 1 >= bytes.length) fail(`data ends inside the element at byte ${start}`)
    let length = bytes[start + 1]!
    let pos = start + 2
    if (length & 0x80) {
      const count = length & 0x7f
      if (count === 0 || count > 4) fail(`unsupported length encoding at byte ${start}`)
      if (pos + count > bytes.length) fail(`data ends inside the length at byte ${start}`)
      length = 0
      for (let i = 0; i < count; i++) length = length * 256 + bytes[pos + i]!
      if (bytes[pos] === 0 || length < 0x80) fail(`length at byte ${start} is not minimally encoded`)
      pos += count
    }
    if (length > bytes.length - pos) fail(`element at byte ${start} runs past the end of the data`)
    this.pos = pos + length
    return {tag, contents: bytes.subarray(pos, pos + length)}
  }
}
