/**
 * Shared test helpers: run the built CLI as a real process, make temp dirs, and check certificates with the real
 * nebula-cert, the newest build and the one on PATH (required when CI is set).
 */

import {spawnSync} from 'node:child_process'
import {mkdtemp, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'

import {execa, type Result} from 'execa'
import {expect} from 'vitest'

import {certificatesFromPem, toPrintJson} from '../src/nebula/index.js'
import {nebulaBuild} from './e2e/debian.js'

export const ROOT = resolve(import.meta.dirname, '..')
export const BIN = join(ROOT, 'bin', 'run.js')

/** True when `cmd` is on PATH. */
export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
}

/** The path of `cmd` on PATH; throws when it is not there. */
export function which(cmd: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${cmd}`], {encoding: 'utf8'})
  if (found.status !== 0) throw new Error(`${cmd} is not on PATH`)
  return found.stdout.trim()
}

/** nebula-cert is required in CI; locally, tests that need it are skipped when it is absent. */
export const NEBULA_CERT = have('nebula-cert')
if (process.env.CI && !NEBULA_CERT) throw new Error('nebula-cert is required in CI (apt-get install -y nebula)')

/** A fresh temp dir, removed by the returned cleanup. */
export async function tempDir(prefix = 'tbmesh-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix))
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, {recursive: true, force: true})
}

/**
 * Runs `tbmesh ARGS` as a real process (never rejects). The environment is cleaned of TBMESH_* and CI-agnostic:
 * pass `env` to set variables. stdin is closed (no TTY). With `netns`, it runs inside that network namespace
 * (`ip netns exec`), as `uid`/`gid` when given (through `setpriv`).
 */
export async function tbmesh(args: string[], opts: {env?: Record<string, string>; cwd?: string; uid?: number; gid?: number; netns?: string} = {}): Promise<Result> {
  // NODE_ENV: vitest sets it to "test", and with it oclif registers tsx and runs src/commands/*.ts instead of the build
  // (and takes twice as long to start).
  const env: Record<string, string | undefined> = {...process.env, NODE_ENV: undefined, TBMESH_HOME: undefined, TBMESH_CA_PASSPHRASE: undefined, TBMESH_BUNDLE_PASSPHRASE: undefined, TBMESH_LOCK_TIMEOUT: undefined, DEBUG: undefined, ...opts.env}
  const options = {env, extendEnv: false, reject: false, stdin: 'ignore', cwd: opts.cwd ?? ROOT, timeout: 60_000} as const
  if (opts.netns === undefined) return execa('node', [BIN, ...args], {...options, uid: opts.uid, gid: opts.gid})
  const as = opts.uid === undefined ? [] : ['setpriv', `--reuid=${opts.uid}`, `--regid=${opts.gid ?? opts.uid}`, '--clear-groups']
  return execa('ip', ['netns', 'exec', opts.netns, ...as, process.execPath, BIN, ...args], options)
}

/** Runs tbmesh with --json, expects success, and returns the parsed result. */
export async function tbmeshJson<T = Record<string, unknown>>(args: string[], opts: {env?: Record<string, string>; cwd?: string} = {}): Promise<T> {
  const result = await tbmesh([...args, '--json'], opts)
  if (result.exitCode !== 0) throw new Error(`tbmesh ${args.join(' ')} exited ${result.exitCode}: ${result.stderr}\n${result.stdout}`)
  return JSON.parse(String(result.stdout)) as T
}

/**
 * Checks certificates with the real nebula-cert: the newest build (Debian unstable's, see e2e/debian.ts) must accept
 * `verify -ca` and its `print -json` must equal ours for every PEM block of `certPem` (same fields, same fingerprint);
 * when every certificate is v1 Curve25519, the nebula-cert on PATH (1.6.1) must accept `verify` too. Returns the newest
 * build's `print -json` element of the first certificate (1.10+ layout: `networks`, `unsafeNetworks`, `version`).
 * Throws with nebula-cert's output when a verify fails.
 */
export async function nebulaCertCheck(caPem: string, certPem: string): Promise<Record<string, any>> {
  const dir = await tempDir('tbmesh-verify-')
  try {
    await writeFile(join(dir, 'ca.crt'), caPem)
    await writeFile(join(dir, 'host.crt'), certPem)
    const args = ['verify', '-ca', join(dir, 'ca.crt'), '-crt', join(dir, 'host.crt')]
    const newest = (await nebulaBuild('newest')).nebulaCert
    const verify = await execa(newest, args, {reject: false})
    if (verify.exitCode !== 0) throw new Error(`nebula-cert verify failed: ${verify.stdout} ${verify.stderr}`)
    const ours = certificatesFromPem(certPem)
    const oldOnly = [...ours, ...certificatesFromPem(caPem)].every((c) => c.version === 1 && c.details.curve === 'CURVE25519')
    if (oldOnly && NEBULA_CERT) {
      const old = await execa('nebula-cert', args, {reject: false})
      if (old.exitCode !== 0) throw new Error(`nebula-cert (on PATH) verify failed: ${old.stdout} ${old.stderr}`)
    }
    const printed = await execa(newest, ['print', '-json', '-path', join(dir, 'host.crt')], {env: {TZ: 'UTC'}})
    const theirs = JSON.parse(String(printed.stdout)) as Array<Record<string, any>>
    expect(theirs).toEqual(ours.map((c) => toPrintJson(c)))
    return theirs[0]!
  } finally {
    await removeDir(dir)
  }
}

/** A map path → bytes (hex) + mode of every file below `dir`, to prove a command changed nothing. */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  async function walk(d: string): Promise<void> {
    let entries
    try {
      entries = await readdir(d, {withFileTypes: true})
    } catch {
      return
    }
    for (const e of entries) {
      const p = join(d, e.name)
      const s = await stat(p)
      if (e.isDirectory()) {
        out[`${p.slice(dir.length)}/`] = (s.mode & 0o7777).toString(8)
        await walk(p)
      } else out[p.slice(dir.length)] = `${(s.mode & 0o7777).toString(8)}:${(await readFile(p)).toString('hex')}`
    }
  }
  await walk(dir)
  return out
}

/** Non-zero exit (or exactly `exit`), exactly one line on stderr, `Error: ` + a reason matching `reason`, no stack. */
export function expectOneLineError(result: Result, reason: RegExp, exit?: number): void {
  const stderr = String(result.stderr)
  if (exit === undefined) expect(result.exitCode, stderr).not.toBe(0)
  else expect(result.exitCode, stderr).toBe(exit)
  expect(stderr.split('\n'), stderr).toHaveLength(1)
  expect(stderr).toMatch(/^Error: \S/)
  expect(stderr).toMatch(reason)
  expect(stderr).not.toMatch(/\bat .*:\d+:\d+|node:internal/)
}

/** A member home of {@link threeMembers}: its CA (fingerprint, block) and `--home` arguments. */
export interface MemberHome {
  caFingerprint: string
  block: string
  home: string[]
}

/** A node added with the CLI (`AddNodeResult`, the fields tests use). */
export interface AddedNode {
  name: string
  overlayIp: string
  fingerprint: string
}

/**
 * A federated network of three members built with the CLI in `dir` (homes `home-acme`, `home-umbrella`,
 * `home-globex`, no passphrases): ACME founds network `fed` on `cidr` with a lighthouse at `lighthouseEndpoint` and its
 * origin node; Umbrella joins with ACME's approval, Globex with ACME's and Umbrella's; every member imports the result;
 * Umbrella and Globex add one node each (umbrella-1, globex-1).
 */
export async function threeMembers(dir: string, cidr: string, lighthouseEndpoint: string): Promise<{members: Record<'acme' | 'umbrella' | 'globex', MemberHome>; nodes: Record<'lighthouse' | 'umbrella' | 'globex', AddedNode>}> {
  const home = (org: string) => ['--home', join(dir, `home-${org}`)]
  const ca: Record<string, {caFingerprint: string; block: string}> = {}
  const approve = (org: string, file: string, out: string) => tbmeshJson(['federation', 'approve', file, ...home(org), '--out', join(dir, out), '--yes'])
  const joinAs = async (org: string, name: string, descriptor: string): Promise<string> => {
    ca[org] = await tbmeshJson(['init-ca', ...home(org), '--federated', '--org', name, '--descriptor', descriptor, '--no-passphrase'])
    await tbmeshJson(['federation', 'request', ...home(org), '--out', join(dir, `${org}.request.json`)])
    return join(dir, `${org}.request.json`)
  }
  ca.acme = await tbmeshJson(['init-ca', ...home('acme'), '--federated', '--org', 'ACME', '--network', 'fed', '--cidr', cidr, '--no-passphrase'])
  const lighthouse = await tbmeshJson<AddedNode>(['add-node', ...home('acme'), '--name', 'lighthouse', '--lighthouse', '--endpoint', lighthouseEndpoint])
  await tbmeshJson(['add-node', ...home('acme'), '--origin'])
  await tbmeshJson(['federation', 'show', ...home('acme'), '--out', join(dir, 'v3.json')])
  await approve('acme', await joinAs('umbrella', 'Umbrella', join(dir, 'v3.json')), 'v4.json')
  await tbmeshJson(['federation', 'import', join(dir, 'v4.json'), ...home('umbrella')])
  await approve('acme', await joinAs('globex', 'Globex', join(dir, 'v4.json')), 'v5.partial.json')
  await approve('umbrella', join(dir, 'v5.partial.json'), 'v5.json')
  for (const org of ['acme', 'globex']) await tbmeshJson(['federation', 'import', join(dir, 'v5.json'), ...home(org)])
  const umbrella = await tbmeshJson<AddedNode>(['add-node', ...home('umbrella')])
  const globex = await tbmeshJson<AddedNode>(['add-node', ...home('globex')])
  const member = (org: string): MemberHome => ({caFingerprint: ca[org].caFingerprint, block: ca[org].block, home: home(org)})
  return {members: {acme: member('acme'), umbrella: member('umbrella'), globex: member('globex')}, nodes: {lighthouse, umbrella, globex}}
}
