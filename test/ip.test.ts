import fc from 'fast-check'
import {describe, expect, it} from 'vitest'

import {UsageError, UserError} from '../src/errors.js'
import {checkRequestedIp, contains, formatCidr, formatIp, nextFreeBlock, nextFreeIp, overlaps, parseCidr, parseIp} from '../src/ip.js'

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
