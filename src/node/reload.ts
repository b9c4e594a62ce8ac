/**
 * Telling a running Nebula to pick up new files (Nebula reloads its config and certificates on SIGHUP): a signal to the
 * pid in a pid file, or an operator's command (e.g. `systemctl reload nebula`).
 */

import {readFile} from 'node:fs/promises'

import {ExternalError, UserError} from '../errors.js'
import {runShell} from '../lib/spawn.js'

/** How to make a running Nebula reload: SIGHUP to the pid in `pidFile`, or run `command` (a shell command line). */
export interface ReloadTarget {
  pidFile?: string
  command?: string
}

/** What {@link reloadNebula} did. */
export interface ReloadResult {
  method: 'signal' | 'command'
  /** The pid signalled (method `signal`). */
  pid?: number
}

/**
 * Makes a running Nebula re-read its config and certificates (Nebula reloads on SIGHUP). The command runs through
 * `/bin/sh -c` without tbmesh's secrets in its environment (`runShell`). Throws UserError for an
 * unreadable or invalid pid file or a pid that is not running, ExternalError when the command fails.
 */
export async function reloadNebula(target: ReloadTarget): Promise<ReloadResult> {
  if (target.command !== undefined) {
    const result = await runShell(target.command, {timeoutMs: 60_000})
    if (result.exitCode !== 0) throw new ExternalError('the files are installed, but the reload command failed', target.command, result.exitCode, result.output || (result.failure ?? ''))
    return {method: 'command'}
  }
  if (target.pidFile === undefined) throw new UserError('--reload needs --pid-file or --reload-cmd', {exit: 2, fix: 'e.g. --pid-file /run/nebula.pid'})
  const text = await readFile(target.pidFile, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new UserError(`cannot read --pid-file ${target.pidFile} (${error.code ?? 'error'})`, {fix: 'give the file holding the nebula process id; the files are installed'})
  })
  const pid = Number(text.trim())
  if (!Number.isSafeInteger(pid) || pid <= 1) throw new UserError(`--pid-file ${target.pidFile} holds no process id`, {fix: 'write nebula\'s pid into it; the files are installed'})
  try {
    process.kill(pid, 'SIGHUP')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new UserError(`cannot signal nebula (pid ${pid}): ${code === 'ESRCH' ? 'no such process' : code}`, {fix: 'start nebula, or fix --pid-file; the files are installed'})
  }
  return {method: 'signal', pid}
}
