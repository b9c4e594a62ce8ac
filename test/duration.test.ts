import {describe, expect, it} from 'vitest'

import {UsageError} from '../src/errors.js'
import {formatDuration, parseDuration} from '../src/lib/duration.js'

describe('parseDuration', () => {
  it.each([
    ['8760h', 8760 * 3600],
    ['1h30m', 5400],
    ['90s', 90],
    ['365d', 365 * 86_400],
    ['10y', 10 * 365 * 86_400],
    ['1.5h', 5400],
    ['1y12h', 365 * 86_400 + 12 * 3600],
  ])('%s is %d seconds', (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds)
  })

  it.each(['', 'h', '10', '10w', '-1h', '0s', '1h-', 'abc', '500ms'])('rejects %j', (text) => {
    expect(() => parseDuration(text)).toThrow(UsageError)
  })

  it('formats in the largest whole unit', () => {
    expect(formatDuration(3650 * 86_400)).toBe('3650d')
    expect(formatDuration(7200)).toBe('2h')
    expect(formatDuration(61)).toBe('61s')
  })
})
