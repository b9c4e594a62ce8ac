/**
 * Running other programs (`nebula -test`, `nebula -version`, `nft`, the operator's `--reload-cmd`, Nebula itself under
 * `tbmesh up`): the one way tbmesh starts a child process (eslint refuses `execa` and `node:child_process` anywhere else in src/). Every child gets
 * {@link childEnv}: tbmesh's environment without its secrets, so that a passphrase given in `TBMESH_CA_PASSPHRASE` or
 * `TBMESH_BUNDLE_PASSPHRASE` reaches no other program, whatever that program prints or logs.
 */

import {type ChildProcess, spawn} from 'node:child_process'

import {isSecretEnv} from './passphrase.js'

/** How a child process ended. */
export interface ChildResult {
  /** Exit code; undefined when it was killed or could not start. */
  exitCode?: number
  /** stdout and stderr interleaved, as written. */
  output: string
  /** stdout alone (for machine-readable output such as `ip -j` or `docker inspect`). */
  stdout: string
  /** True when it was killed for running longer than `timeoutMs`. */
  timedOut: boolean
  /** A one-line reason when it did not exit 0 (could not start, killed, exit code). */
  failure?: string
}

/** `env` (default: this process's environment) without the variables that hold tbmesh's secrets ({@link isSecretEnv}). */
export function childEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [name, value] of Object.entries(env)) if (value !== undefined && !isSecretEnv(name)) out[name] = value
  return out
}

/**
 * The environment of a long-running child such as Nebula: `PATH` and the named variables that are set, nothing else
 * (an allowlist: no secret of tbmesh's, such as `TBMESH_CA_PASSPHRASE`, reaches it, whatever it is called).
 */
export function childEnvironment(names: readonly string[] = []): Record<string, string> {
  const env: Record<string, string> = {PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}
  for (const name of names) if (process.env[name] !== undefined) env[name] = process.env[name]!
  return env
}

/**
 * Starts `file` with `args` (no shell) as a long-running child with exactly `env` (build it with
 * {@link childEnvironment}), stdin closed, stdout and stderr piped to the caller, who owns its lifetime (signals, exit).
 */
export function startChild(file: string, args: string[], env: Record<string, string>): ChildProcess {
  return spawn(file, args, {env, stdio: ['ignore', 'pipe', 'pipe']})
}

/**
 * Runs `file` with `args` (no shell), stdin closed, with {@link childEnv}, killed after `timeoutMs`. Never throws for
 * the child's own failure (a missing binary, an exit code, a timeout): that is in the result.
 */
export async function runChild(file: string, args: string[], opts: {timeoutMs: number}): Promise<ChildResult> {
  const {execa} = await import('execa')
  return result(await execa(file, args, {env: childEnv(), extendEnv: false, reject: false, all: true, stdin: 'ignore', timeout: opts.timeoutMs}))
}

/**
 * Runs `command` through `/bin/sh -c` (an operator's command line, e.g. `systemctl reload nebula`), like
 * {@link runChild}.
 */
export async function runShell(command: string, opts: {timeoutMs: number}): Promise<ChildResult> {
  const {execaCommand} = await import('execa')
  return result(await execaCommand(command, {shell: true, env: childEnv(), extendEnv: false, reject: false, all: true, stdin: 'ignore', timeout: opts.timeoutMs}))
}

function result(r: {exitCode?: number; all?: unknown; stdout?: unknown; timedOut: boolean; failed: boolean; message?: string; shortMessage?: string}): ChildResult {
  return {
    ...(r.exitCode === undefined ? {} : {exitCode: r.exitCode}),
    output: typeof r.all === 'string' ? r.all : '',
    stdout: typeof r.stdout === 'string' ? r.stdout : '',
    timedOut: r.timedOut,
    ...(r.failed ? {failure: (r.shortMessage ?? r.message ?? 'failed').split('\n')[0]} : {}),
  }
}
