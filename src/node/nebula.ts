/**
 * Running the `nebula` binary on a node: finding it, its version and what that version can do, and `nebula -test` on a
 * config. Small on purpose: doctor and install load it without the bundle code.
 *
 * The one version probe: everything that depends on the installed Nebula's version (the systemd unit's `Type=`,
 * doctor's warnings, refusing what an old Nebula cannot load) asks {@link nebulaVersion} and compares with
 * `compareVersions` (`lib/version.ts`).
 */

import {constants as fsConstants} from 'node:fs'
import {access, stat} from 'node:fs/promises'
import path from 'node:path'

import {runChild} from '../lib/spawn.js'
import {lastLine} from '../lib/text.js'
import {compareVersions} from '../lib/version.js'

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

/**
 * The first Nebula release that tells systemd it is ready (`sd_notify` READY=1 once its tun device is up, so a
 * `Type=notify` unit works): 1.8.0 (`cmd/nebula/notify_linux.go` in slackhq/nebula). An older Nebula under
 * `Type=notify` is killed by systemd when the start times out, and restarted, in a loop.
 */
export const SD_NOTIFY_SINCE = '1.8.0'

/** Whether Nebula `version` notifies systemd ({@link SD_NOTIFY_SINCE}). */
export function hasSdNotify(version: string): boolean {
  return compareVersions(version, SD_NOTIFY_SINCE) >= 0
}

/** A security fix of Nebula that an installation may lack: the versions affected, and where it matters for tbmesh. */
export interface NebulaAdvisory {
  /** Short name, e.g. `source-ip-spoofing`. */
  id: string
  /** The first version affected (inclusive). */
  since: string
  /** The release that fixed it. */
  fixed: string
  /** Where it matters: in every network, only in a federated one (member CAs scoped by `ca_sha`/`cidr`), or only with P256 certificates. */
  applies: 'always' | 'federated' | 'p256'
  /** What an affected Nebula lets a peer do, one line. */
  summary: string
  /** Where it is described. */
  reference: string
}

/**
 * The security fixes doctor checks for, from slackhq/nebula's CHANGELOG.md and security advisories. Not listed: the
 * IPv6 firewall bypasses fixed in 1.11.0 and 1.11.1, since tbmesh's overlay carries IPv4 only.
 */
export const NEBULA_ADVISORIES: readonly NebulaAdvisory[] = [
  {
    id: 'source-ip-spoofing',
    since: '1.9.4',
    fixed: '1.9.7',
    applies: 'always',
    summary: 'a peer whose certificate lists unsafe routes can send packets from overlay addresses that are not its own',
    reference: 'Nebula 1.9.7 release notes (#1494)',
  },
  {
    id: 'p256-blocklist-bypass',
    since: '1.7.0',
    fixed: '1.10.3',
    applies: 'p256',
    summary: 'a blocklisted P256 certificate passes with its signature rewritten to its other valid form',
    reference: 'GHSA-69x3-g4r3-p962',
  },
  {
    id: 'conntrack-before-address-check',
    since: '0.0.0',
    fixed: '1.11.0',
    applies: 'federated',
    summary: "a peer's packets are matched against established flows before Nebula checks that their source address is in its certificate",
    reference: 'Nebula 1.11.0 release',
  },
]

/**
 * The advisories of {@link NEBULA_ADVISORIES} that Nebula `version` is affected by, in an installation that is
 * `federated` and whose certificates use curve `p256` or not.
 */
export function advisoriesFor(version: string, installation: {federated: boolean; p256: boolean}): NebulaAdvisory[] {
  return NEBULA_ADVISORIES.filter((a) =>
    compareVersions(version, a.since) >= 0 &&
    compareVersions(version, a.fixed) < 0 &&
    (a.applies === 'always' || (a.applies === 'federated' && installation.federated) || (a.applies === 'p256' && installation.p256)))
}

/** Runs `nebula -test -config CONFIG` (30 s limit) with `binary`, default the nebula on PATH, when there is one. */
export async function nebulaTest(config: string, binary?: string): Promise<NebulaTestResult> {
  const nebula = binary ?? (await onPath('nebula'))
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
