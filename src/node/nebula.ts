/**
 * Running the `nebula` binary on a node: finding it, its version ({@link nebulaVersion}, the one probe doctor, install
 * and the service checks share), the oldest version an installation's certificates need ({@link nebulaRequirement}),
 * and `nebula -test` on a config. Small on purpose: doctor and install load it without the bundle code.
 */

import {constants as fsConstants} from 'node:fs'
import {access, stat} from 'node:fs/promises'
import path from 'node:path'

import {execa} from 'execa'

import type {NebulaCertificate} from '../nebula/index.js'

/** Oldest Nebula the rendered config.yml is for (v1 Curve25519 certificates). */
export const MIN_NEBULA_VERSION = '1.6.1'

/** Verdict of `nebula -test` on the installed configuration. */
export interface NebulaTestResult {
  /** False when `nebula` is not on PATH (nothing was checked). */
  ran: boolean
  /** Exit code 0. */
  ok?: boolean
  /** Combined stdout and stderr, at most the last 8 KiB. */
  output?: string
}

/** The first executable `name` on PATH, or undefined. */
export async function onPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue
    const candidate = path.join(dir, name)
    try {
      await access(candidate, fsConstants.X_OK)
      if ((await stat(candidate)).isFile()) return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

/** Runs `nebula -test -config CONFIG` (30 s limit) when nebula is on PATH. */
export async function nebulaTest(config: string): Promise<NebulaTestResult> {
  const nebula = await onPath('nebula')
  if (!nebula) return {ran: false}
  const result = await execa(nebula, ['-test', '-config', config], {reject: false, all: true, stdin: 'ignore', timeout: 30_000})
  const all = typeof result.all === 'string' ? result.all : ''
  const output = result.timedOut ? `${all}\nnebula -test timed out after 30 s` : all || (result.failed ? (result.message ?? '') : '')
  return {ran: true, ok: result.exitCode === 0, output: output.length > 8192 ? output.slice(-8192) : output}
}

/** What `nebula -version` said: the binary, and its version (`1.6.1`) or, when it failed, why. */
export type NebulaVersion = {path: string; version: string} | {path: string; version?: undefined; problem: string}

/**
 * Runs `nebula -version` (10 s limit) on `binary`, default the first `nebula` on PATH. Undefined when there is none.
 * Never throws: a binary that fails or prints no version gives `problem`, one line.
 */
export async function nebulaVersion(binary?: string): Promise<NebulaVersion | undefined> {
  const path = binary ?? (await onPath('nebula'))
  if (!path) return undefined
  const result = await execa(path, ['-version'], {reject: false, all: true, stdin: 'ignore', timeout: 10_000})
  const output = String(result.all ?? '')
  const version = /Version:\s*v?(\d+\.\d+\.\d+\S*)/.exec(output)?.[1]
  if (result.exitCode === 0 && version) return {path, version}
  const last = (output || String(result.message ?? '')).trim().split('\n').findLast((l) => l.trim() !== '')?.trim() ?? 'no output'
  return {path, problem: `\`${path} -version\` failed: ${last}`}
}

/** Negative, zero or positive as version `a` is older than, the same as or newer than `b` (numeric `x.y.z`). */
export function compareVersions(a: string, b: string): number {
  const parts = (v: string): number[] => v.split(/[.+-]/).slice(0, 3).map((n) => Number.parseInt(n, 10) || 0)
  const [x, y] = [parts(a), parts(b)]
  for (let i = 0; i < 3; i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
  return 0
}

/** The oldest Nebula an installation needs, and the certificate that makes it so. */
export interface NebulaRequirement {
  /** `x.y.z`. */
  version: string
  /** What needs it, e.g. `a v2 CA certificate`; empty for the baseline. */
  why: string
}

/**
 * The oldest Nebula that loads `certificates` (an installation's trust bundle and host certificates): 1.10.0 for any
 * v2 certificate (1.6.1 and 1.9.3 refuse to start with a v2 CA in `pki.ca`), 1.7.0 for P256 (1.6.1 crashes on a P256
 * key), else {@link MIN_NEBULA_VERSION}.
 */
export function nebulaRequirement(certificates: readonly NebulaCertificate[]): NebulaRequirement {
  const what = (c: NebulaCertificate): string => (c.details.isCA ? 'CA certificate' : 'host certificate')
  const v2 = certificates.find((c) => c.version === 2)
  if (v2) return {version: '1.10.0', why: `a v2 ${what(v2)}`}
  const p256 = certificates.find((c) => c.details.curve === 'P256')
  if (p256) return {version: '1.7.0', why: `a P256 ${what(p256)}`}
  return {version: MIN_NEBULA_VERSION, why: ''}
}
