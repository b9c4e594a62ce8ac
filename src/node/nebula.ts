/**
 * Running the `nebula` binary on a node: finding it, its version ({@link nebulaVersion}, the one probe doctor, install
 * and the service checks share), and `nebula -test` on a config. Small on purpose: doctor and install load it without the bundle code.
 */

import {constants as fsConstants} from 'node:fs'
import {access, stat} from 'node:fs/promises'
import path from 'node:path'

import {execa} from 'execa'

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
