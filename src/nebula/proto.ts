/**
 * The small part of the protobuf wire format (protobuf.dev, "Encoding") that Nebula's v1 certificates and encrypted
 * keys use: varints (up to 64 bits, as bigint), length-delimited records, packed repeated uint32.
 *
 * The writer produces the canonical proto3 encoding Go's `proto.Marshal` produces for these messages: fields in
 * number order, shortest varints, zero and empty scalars left out, packed repeated uint32. The reader accepts only that
 * encoding, because Nebula re-marshals what it parsed before checking signatures and fingerprints: unknown fields,
 * unexpected wire types, fields out of order or repeated when singular, explicit default values, over-long varints
 * and lengths past the end are all refused through the caller's `fail`. The reader always advances, so it cannot hang.
 */

import type {Fail} from './pem.js'

/** Wire type of varint fields (int32, int64, uint32, bool, enum). */
export const WIRE_VARINT = 0
/** Wire type of length-delimited fields (string, bytes, sub-message, packed repeated). */
export const WIRE_LEN = 2

/** How one field of a message may appear on the wire. */
export interface FieldRule {
  /** Field name, for error messages. */
  name: string
  /** `varint` (int32, int64, uint32, bool, enum) or `len` (string, bytes, sub-message, packed repeated). */
  wire: 'varint' | 'len'
  /** Repeated, non-packed (e.g. `repeated string`): records follow one another. */
  repeated?: boolean
  /** A sub-message: present even when empty (proto3 writes a set sub-message). Scalars may not hold their default. */
  message?: boolean
}

/** Field number → rule. A field number missing from the schema is an unknown field and refused. */
export type MessageSchema = Readonly<Record<number, FieldRule>>

/** The fields of one decoded message. Absent scalars read as their proto3 default (0, empty). */
export class DecodedMessage {
  constructor(private readonly fields: ReadonlyMap<number, ReadonlyArray<bigint | Buffer>>) {}

  /** Whether the field was present. */
  has(field: number): boolean {
    return this.fields.has(field)
  }

  /** A singular varint field, 0n when absent. */
  varint(field: number): bigint {
    const value = this.fields.get(field)?.[0]
    return typeof value === 'bigint' ? value : 0n
  }

  /** A singular length-delimited field, empty when absent. */
  bytes(field: number): Buffer {
    const value = this.fields.get(field)?.[0]
    return Buffer.isBuffer(value) ? value : Buffer.alloc(0)
  }

  /** Every record of a repeated length-delimited field, in order. */
  repeated(field: number): Buffer[] {
    return (this.fields.get(field) ?? []).filter((value): value is Buffer => Buffer.isBuffer(value))
  }
}

/**
 * Reads one varint at `pos`.
 * @returns the value (unsigned, up to 64 bits) and the position after it
 * @throws through `fail` when the data ends inside the varint, it is longer than 10 bytes or overflows 64 bits, or
 *   it is not the shortest encoding of its value
 */
export function readVarint(bytes: Uint8Array, pos: number, fail: Fail): [bigint, number] {
  let value = 0n
  for (let i = 0; i < 10; i++) {
    if (pos + i >= bytes.length) fail(`data ends inside a varint at byte ${pos}`)
    const byte = bytes[pos + i]!
    value |= BigInt(byte & 0x7f) << BigInt(7 * i)
    if ((byte & 0x80) === 0) {
      if (i > 0 && byte === 0) fail(`varint at byte ${pos} is not minimally encoded`)
      if (i === 9 && byte > 1) fail(`varint at byte ${pos} overflows 64 bits`)
      return [value, pos + i + 1]
    }
  }
  return fail(`varint at byte ${pos} is longer than 10 bytes`)
}

/**
 * Decodes one message against its schema.
 * @throws through `fail` on anything but the canonical encoding (see the module comment)
 */
export function decodeMessage(bytes: Uint8Array, schema: MessageSchema, fail: Fail): DecodedMessage {
  const fields = new Map<number, Array<bigint | Buffer>>()
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  let pos = 0
  let last = 0
  while (pos < buffer.length) {
    const start = pos
    const [tag, afterTag] = readVarint(buffer, pos, fail)
    pos = afterTag
    const number = tag >> 3n
    const wireType = Number(tag & 7n)
    if (number < 1n || number > 0x1fffffffn) fail(`invalid field number ${number} at byte ${start}`)
    const field = Number(number)
    const rule = Object.hasOwn(schema, field) ? schema[field] : undefined
    if (!rule) fail(`unknown field ${field} (wire type ${wireType}) at byte ${start}`)
    const expected = rule.wire === 'varint' ? WIRE_VARINT : WIRE_LEN
    if (wireType !== expected) fail(`field ${rule.name} has wire type ${wireType}, expected ${expected}`)
    if (field < last) fail(`field ${rule.name} is out of order`)
    if (field === last && !rule.repeated) fail(`field ${rule.name} appears more than once`)
    last = field

    let value: bigint | Buffer
    if (wireType === WIRE_VARINT) {
      [value, pos] = readVarint(buffer, pos, fail)
      if (value === 0n && !rule.repeated) fail(`field ${rule.name} holds its default value (not canonical)`)
    } else {
      const [length, afterLength] = readVarint(buffer, pos, fail)
      if (length > BigInt(buffer.length - afterLength)) fail(`field ${rule.name} runs past the end of the data`)
      pos = afterLength + Number(length)
      value = buffer.subarray(afterLength, pos)
      if (value.length === 0 && !rule.repeated && !rule.message) {
        fail(`field ${rule.name} holds its default value (not canonical)`)
      }
    }
    const list = fields.get(field)
    if (list) list.push(value)
    else fields.set(field, [value])
  }
  return new DecodedMessage(fields)
}

/** A varint as an unsigned 32-bit number; `fail`s above 2^32-1. */
export function toUint32(value: bigint, name: string, fail: Fail): number {
  if (value > 0xffffffffn) fail(`field ${name} does not fit in 32 bits`)
  return Number(value)
}

/** A varint as a signed 32-bit number (proto `int32`, negatives sign-extended to 64 bits); `fail`s out of range. */
export function toInt32(value: bigint, name: string, fail: Fail): number {
  const signed = BigInt.asIntN(64, value)
  if (signed < -0x80000000n || signed > 0x7fffffffn) fail(`field ${name} does not fit in 32 bits`)
  return Number(signed)
}

/** A varint as a signed 64-bit number (proto `int64`); `fail`s outside JavaScript's safe integers. */
export function toInt64(value: bigint, name: string, fail: Fail): number {
  const signed = BigInt.asIntN(64, value)
  if (signed < BigInt(Number.MIN_SAFE_INTEGER) || signed > BigInt(Number.MAX_SAFE_INTEGER)) {
    fail(`field ${name} is out of range`)
  }
  return Number(signed)
}

const utf8 = new TextDecoder('utf8', {fatal: true, ignoreBOM: true})

/** A proto3 `string`: bytes that must be valid UTF-8 (Go's protobuf refuses anything else). */
export function toUtf8String(bytes: Uint8Array, name: string, fail: Fail): string {
  try {
    return utf8.decode(bytes)
  } catch {
    return fail(`field ${name} is not valid UTF-8`)
  }
}

/** The body of a packed `repeated uint32` field. */
export function toPackedUint32(bytes: Uint8Array, name: string, fail: Fail): number[] {
  const values: number[] = []
  let pos = 0
  while (pos < bytes.length) {
    const [value, next] = readVarint(bytes, pos, fail)
    values.push(toUint32(value, name, fail))
    pos = next
  }
  return values
}

/**
 * Builds one message in canonical proto3 form. Call the field methods in field-number order; scalar methods leave
 * zero and empty values out, as proto3 does.
 */
export class ProtoWriter {
  private readonly chunks: Buffer[] = []

  /** A varint field (int32, int64, uint32, enum); omitted when 0. Negatives are written as 64-bit two's complement. */
  varint(field: number, value: number | bigint): this {
    const big = typeof value === 'bigint' ? value : BigInt(value)
    if (typeof value === 'number' && !Number.isSafeInteger(value)) throw new RangeError(`not an integer: ${value}`)
    if (big === 0n) return this
    this.tag(field, WIRE_VARINT)
    this.chunks.push(encodeVarint(BigInt.asUintN(64, big)))
    return this
  }

  /** A bool field; written (as 1) only when true. */
  bool(field: number, value: boolean): this {
    return value ? this.varint(field, 1) : this
  }

  /** A bytes field; omitted when empty. */
  bytes(field: number, value: Uint8Array): this {
    return value.length === 0 ? this : this.record(field, value)
  }

  /** A string field (UTF-8); omitted when empty. */
  string(field: number, value: string): this {
    return this.bytes(field, Buffer.from(value, 'utf8'))
  }

  /** A repeated string field: one record per value, empty strings included, order kept. */
  repeatedString(field: number, values: readonly string[]): this {
    for (const value of values) this.record(field, Buffer.from(value, 'utf8'))
    return this
  }

  /** A packed repeated uint32 field; omitted when empty. */
  packedUint32(field: number, values: readonly number[]): this {
    if (values.length === 0) return this
    const body = values.map((value) => {
      if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new RangeError(`not a uint32: ${value}`)
      return encodeVarint(BigInt(value))
    })
    return this.record(field, Buffer.concat(body))
  }

  /** A sub-message field (already encoded); always written, even when empty. */
  message(field: number, encoded: Uint8Array): this {
    return this.record(field, encoded)
  }

  /** The encoded message. */
  finish(): Buffer {
    return Buffer.concat(this.chunks)
  }

  private record(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_LEN)
    this.chunks.push(encodeVarint(BigInt(value.length)), Buffer.from(value))
    return this
  }

  private tag(field: number, wireType: number): void {
    if (!Number.isInteger(field) || field < 1 || field > 0x1fffffff) throw new RangeError(`bad field number ${field}`)
    this.chunks.push(encodeVarint((BigInt(field) << 3n) | BigInt(wireType)))
  }
}

/** The shortest varint encoding of an unsigned value below 2^64. */
export function encodeVarint(value: bigint): Buffer {
  if (value < 0n || value >= 1n << 64n) throw new RangeError(`varint out of range: ${value}`)
  const out: number[] = []
  let rest = value
  while (rest >= 0x80n) {
    out.push(Number(rest & 0x7fn) | 0x80)
    rest >>= 7n
  }
  out.push(Number(rest))
  return Buffer.from(out)
}
