/**
 * Durations as operators write them: Go-style like nebula-cert (`8760h`, `1h30m`, `90s`) plus days (`d`) and years
 * (`y` = 365 days), e.g. `10y`, `30d`, `1y12h`.
 */

import {UsageError} from '../errors.js'

const UNIT_SECONDS: Record<string, number> = {
  s: 1,
  m: 60,
  h: 3600,
  d: 86_400,
  y: 365 * 86_400,
}

/** A certificate expiring within this many seconds (30 days) is warned about, by the CA's commands and by doctor. */
export const EXPIRY_WARNING_SECONDS = 30 * 86_400

/**
 * Parses a duration into whole seconds (> 0). Fractions are allowed per component (`1.5h`).
 * Throws UsageError naming `flag` when the text does not parse, is zero or negative.
 */
export function parseDuration(text: string, flag = '--duration'): number {
  const trimmed = text.trim()
  if (trimmed.startsWith('-')) throw new UsageError(`${flag} ${text} is negative`, {fix: 'give a positive duration such as 8760h, 365d or 10y'})
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|y)/gy
  let seconds = 0
  let consumed = 0
  for (let m = re.exec(trimmed); m; m = re.exec(trimmed)) {
    seconds += Number(m[1]) * (m[2] === 'ms' ? 0.001 : UNIT_SECONDS[m[2]])
    consumed = re.lastIndex
  }
  if (trimmed.length === 0 || consumed !== trimmed.length) {
    throw new UsageError(`${flag} "${text}" is not a duration`, {fix: 'use units s, m, h, d, y, e.g. 8760h, 365d or 10y'})
  }
  const whole = Math.floor(seconds)
  if (whole <= 0) throw new UsageError(`${flag} ${text} is not positive`, {fix: 'give a duration of at least one second'})
  return whole
}

/** Formats seconds for people: `3650d`, `365d`, `12h`, `90s` (the largest whole unit of d/h/m/s). */
export function formatDuration(seconds: number): string {
  for (const [unit, size] of [['d', 86_400], ['h', 3600], ['m', 60]] as const) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`
  }
  return `${seconds}s`
}

/** Unix seconds as ISO 8601 without milliseconds, e.g. `2026-11-21T05:00:00Z`. */
export function iso(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString().replace('.000Z', 'Z')
}
