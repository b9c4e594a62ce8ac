/**
 * Running the `nebula` binary on a node: finding it, its version ({@link nebulaVersion}, the one probe doctor, install
 * and the service checks share), and `nebula -test` on a config. Small on purpose: doctor and install load it without the bundle code.
 */

import {constants as fsConstants} from 'node:fs'
import {access, stat} from 'node:fs/promises'
import path from 'node:path'

import {runChild} from '../lib/spawn.js'
import {lastLine} from '../lib/text.js'

/** Verdict of `nebula -test` on the installed configuration. */
export interface NebulaTestResult {
  /** False when `nebula` is not on PATH (nothing was checked). */
  ran: boolean
  /** Exit code 0. */
  ok?: boolean
  /** Combined stdout and stderr, at most the last 8 KiB. */
  output?: string
}

/** The first executable `name` on PATH, then in `extraDirs` (absolute), or undefined. */
export async function onPath(name: string, extraDirs: string[] = []): Promise<string | undefined> {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), ...extraDirs]) {
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
  const result = await runChild(nebula, ['-test', '-config', config], {timeoutMs: 30_000})
  const output = result.timedOut ? `${result.output}\nnebula -test timed out after 30 s` : result.output || (result.failure ?? '')
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
  const result = await runChild(path, ['-version'], {timeoutMs: 10_000})
  const version = /Version:\s*v?(\d+\.\d+\.\d+\S*)/.exec(result.output)?.[1]
  if (result.exitCode === 0 && version) return {path, version}
  const last = lastLine(result.output || (result.failure ?? ''))
  return {path, problem: `\`${path} -version\` failed: ${last}`}
}
