import fc from 'fast-check'
import {describe, expect, it} from 'vitest'

import {UsageError, UserError} from '../src/errors.js'
import {checkRequestedIp, contains, formatCidr, formatIp, type Ipv4Network, maskOf, nextFreeBlock, nextFreeIp, overlaps, parseCidr, parseIp, sizeOf, specialRangeOverlap} from '../src/lib/ip.js'

describe('parseIp / parseCidr', () => {
  it('round-trips addresses and networks', () => {
    expect(formatIp(parseIp('10.42.1.5'))).toBe('10.42.1.5')
    expect(formatIp(parseIp('255.255.255.255'))).toBe('255.255.255.255')
    expect(formatCidr(parseCidr('10.42.0.0/16'))).toBe('10.42.0.0/16')
    expect(parseCidr('0.0.0.0/0')).toEqual({base: 0, prefix: 0})
  })

  it.each([
    ['10.42.0.0', 'not a CIDR'],
    ['10.42.0.0/33', 'not a CIDR'],
    ['10.42.1.0/16', 'host bits set'],
    ['fd00::/64', 'IPv6'],
    ['10.42.256.0/24', 'not an IPv4 address'],
    ['10.042.0.0/16', 'not an IPv4 address'],
    ['10.42.0.0/16/1', 'not a CIDR'],
  ])('rejects %s (%s)', (text, why) => {
    expect(() => parseCidr(text, '--cidr')).toThrow(UsageError)
    expect(() => parseCidr(text, '--cidr')).toThrow(why)
  })
})

describe('blocks and allocation', () => {
  const net = parseCidr('10.42.0.0/16')

  it('hands out /24 blocks in order, skipping taken ones, until the network is full', () => {
    const a = nextFreeBlock(net, 24, [])
    expect(formatCidr(a)).toBe('10.42.0.0/24')
    const b = nextFreeBlock(net, 24, [a, parseCidr('10.42.1.0/24')])
    expect(formatCidr(b)).toBe('10.42.2.0/24')
    const small = parseCidr('10.42.0.0/23')
    expect(() => nextFreeBlock(small, 24, [parseCidr('10.42.0.0/24'), parseCidr('10.42.1.0/24')])).toThrow(UserError)
  })

  it('never gives the first or last address of a block', () => {
    const block = parseCidr('10.42.7.0/30')
    const first = nextFreeIp(block, new Set(), 'ACME')
    expect(formatIp(first)).toBe('10.42.7.1')
    const second = nextFreeIp(block, new Set([first]), 'ACME')
    expect(formatIp(second)).toBe('10.42.7.2')
    expect(() => nextFreeIp(block, new Set([first, second]), 'ACME')).toThrow('is full')
  })

  it('checks a requested IP', () => {
    const block = parseCidr('10.42.1.0/24')
    const used = new Set([parseIp('10.42.1.7')])
    expect(() => checkRequestedIp(block, parseIp('10.42.1.8'), used, 'ACME')).not.toThrow()
    expect(() => checkRequestedIp(block, parseIp('10.42.2.8'), used, 'ACME')).toThrow('outside')
    expect(() => checkRequestedIp(block, parseIp('10.42.1.0'), used, 'ACME')).toThrow('first or last')
    expect(() => checkRequestedIp(block, parseIp('10.42.1.255'), used, 'ACME')).toThrow('first or last')
    expect(() => checkRequestedIp(block, parseIp('10.42.1.7'), used, 'ACME')).toThrow('already used')
  })

  it('property: allocation stays inside the block, never repeats, never uses the first or last address', () => {
    fc.assert(
      fc.property(fc.integer({min: 0, max: 255}), fc.integer({min: 24, max: 30}), fc.array(fc.nat(), {maxLength: 40}), (third, prefix, picks) => {
        const aligned = parseCidr(`10.42.${third}.0/${prefix}`, 'block', false)
        const used = new Set<number>()
        // pre-use some random addresses of the block (never its edges)
        const size = 2 ** (32 - prefix)
        for (const p of picks) {
          const ip = aligned.base + 1 + (p % (size - 2))
          used.add(ip)
        }
        for (;;) {
          let ip: number
          try {
            ip = nextFreeIp(aligned, used, 'X')
          } catch (error) {
            expect(error).toBeInstanceOf(UserError)
            expect(used.size).toBe(size - 2)
            return
          }
          expect(contains(aligned, ip)).toBe(true)
          expect(ip).not.toBe(aligned.base)
          expect(ip).not.toBe(aligned.base + size - 1)
          expect(used.has(ip)).toBe(false)
          used.add(ip)
        }
      }),
    )
  })

  it('detects overlaps', () => {
    expect(overlaps(parseCidr('10.42.0.0/16'), parseCidr('10.42.3.0/24'))).toBe(true)
    expect(overlaps(parseCidr('10.42.2.0/24'), parseCidr('10.42.3.0/24'))).toBe(false)
  })
})

describe('properties of block allocation and address checks (fast-check)', () => {
  /** A network /8 to /24 with random base, and random blocks inside it of any prefix up to 30. */
  const scenario = fc
    .record({base: fc.integer({min: 0, max: 0xffffffff}), prefix: fc.integer({min: 8, max: 24}), orgDelta: fc.integer({min: 0, max: 6})})
    .chain(({base, prefix, orgDelta}) => {
      const net = {base: (base & maskOf(prefix)) >>> 0, prefix}
      const orgPrefix = Math.min(prefix + orgDelta, 30)
      const block = fc.record({offset: fc.nat(), prefix: fc.integer({min: prefix, max: 30})}).map(({offset, prefix: p}) => {
        const b = (net.base + (offset % sizeOf(net))) >>> 0
        return {base: (b & maskOf(p)) >>> 0, prefix: p}
      })
      return fc.record({net: fc.constant(net), orgPrefix: fc.constant(orgPrefix), taken: fc.array(block, {maxLength: 12})})
    })

  it('nextFreeBlock returns an aligned block inside the network that overlaps nothing taken, or throws only when none is left', () => {
    fc.assert(
      fc.property(scenario, ({net, orgPrefix, taken}) => {
        let block: Ipv4Network
        try {
          block = nextFreeBlock(net, orgPrefix, taken)
        } catch (error) {
          expect(error).toBeInstanceOf(UserError)
          // every aligned block of that size overlaps something taken
          const step = 2 ** (32 - orgPrefix)
          for (let b = net.base; b < net.base + sizeOf(net); b += step) {
            expect(taken.some((t) => overlaps(t, {base: b, prefix: orgPrefix}))).toBe(true)
          }
          return
        }
        expect(block.prefix).toBe(orgPrefix)
        expect(contains(net, block.base)).toBe(true)
        expect(((block.base & maskOf(orgPrefix)) >>> 0) === block.base).toBe(true)
        for (const t of taken) expect(overlaps(t, block)).toBe(false)
      }),
      {numRuns: 500},
    )
  })

  it('every address nextFreeIp hands out passes checkRequestedIp, and checkRequestedIp refuses exactly the used, edge and outside ones', () => {
    fc.assert(
      fc.property(fc.integer({min: 0, max: 0xffffffff}), fc.integer({min: 22, max: 30}), fc.array(fc.nat(), {maxLength: 30}), fc.nat(), (base, prefix, picks, probe) => {
        const block = {base: (base & maskOf(prefix)) >>> 0, prefix}
        const size = sizeOf(block)
        const used = new Set(picks.map((p) => (block.base + 1 + (p % (size - 2))) >>> 0))
        if (used.size < size - 2) expect(() => checkRequestedIp(block, nextFreeIp(block, used, 'X'), used, 'X')).not.toThrow()
        // any address near the block: inside and usable and free ⇔ accepted
        const ip = (block.base - 2 + (probe % (size + 4))) >>> 0
        const acceptable = contains(block, ip) && ip !== block.base && ip !== block.base + size - 1 && !used.has(ip)
        if (acceptable) expect(() => checkRequestedIp(block, ip, used, 'X')).not.toThrow()
        else expect(() => checkRequestedIp(block, ip, used, 'X')).toThrow(UsageError)
      }),
      {numRuns: 1000},
    )
  })

  it('a network inside 10/8, 172.16/12 or 192.168/16 overlaps no special range; one holding a special address does', () => {
    fc.assert(
      fc.property(fc.constantFrom('10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10'), fc.nat(), fc.integer({min: 0, max: 32}), (privateRange, offset, extra) => {
        const outer = parseCidr(privateRange)
        const prefix = Math.min(outer.prefix + extra, 32)
        const net = {base: ((outer.base + (offset % sizeOf(outer))) & maskOf(prefix)) >>> 0, prefix}
        expect(specialRangeOverlap(net)).toBeUndefined()
      }),
    )
    fc.assert(
      fc.property(fc.constantFrom('127.0.0.1', '0.0.0.0', '169.254.1.1', '224.0.0.5', '255.255.255.255'), fc.integer({min: 0, max: 32}), (special, prefix) => {
        const net = {base: (parseIp(special) & maskOf(prefix)) >>> 0, prefix}
        expect(specialRangeOverlap(net)).toBeDefined()
      }),
    )
  })
})
