/**
 * The inter-process lock on a directory (proper-lockfile): one process at a time changes what the directory holds.
 * Knows nothing of what is in it. A lock whose holder died (SIGKILL, OOM) on this machine is taken over at once; any
 * other once nobody has refreshed it for {@link LOCK_STALE_MS}.
 */

import fs from 'node:fs'
import {hostname} from 'node:os'
import {join} from 'node:path'

import lockfile from 'proper-lockfile'

import {UsageError, UserError} from '../errors.js'
import {fileError, type FileErrorFixes} from '../lib/files.js'
import {sha256Hex} from '../lib/text.js'

/** How long a lock may go without being refreshed before another process takes it over (ms). */
const LOCK_STALE_MS = 5000

/** Environment variable: how long to wait for another tbmesh process's lock on the home, in seconds (default 30). */
const LOCK_TIMEOUT_ENV = 'TBMESH_LOCK_TIMEOUT'

function lockWaitMs(): number {
  const text = process.env[LOCK_TIMEOUT_ENV]
  if (text === undefined || text === '') return 30_000
  if (!/^\d+(\.\d+)?$/.test(text)) throw new UsageError(`${LOCK_TIMEOUT_ENV}=${text} is not a number of seconds`, {fix: 'set it to e.g. 30, or unset it'})
  return Math.round(Number(text) * 1000)
}

/**
 * Runs `fn` holding the inter-process lock on `dir` (proper-lockfile: the directory `dir/lockName`, refreshed while
 * held, taken over when stale). `fn` gets `assertHeld`, to call right before committing: it throws if the lock was
 * lost meanwhile (the process stalled past the stale time and another took over), so that nothing is committed then.
 * Waits up to TBMESH_LOCK_TIMEOUT seconds (default 30) for another process; then throws a UserError naming it.
 */
export async function withLock<T>(dir: string, lockName: string, fn: (assertHeld: () => void) => Promise<T>, fixes?: FileErrorFixes): Promise<T> {
  const lockDir = join(dir, lockName)
  const waitMs = lockWaitMs()
  let compromised: Error | undefined
  let release: () => Promise<void>
  const lock = (wait: boolean) =>
    lockfile.lock(dir, {
      lockfilePath: lockDir,
      realpath: false,
      stale: LOCK_STALE_MS,
      retries: wait && waitMs > 0 ? {retries: 10_000, factor: 1.2, minTimeout: 20, maxTimeout: 500, randomize: true, maxRetryTime: waitMs} : 0,
      fs: lockFs(),
      onCompromised: (error) => {
        compromised = error
      },
    })
  // proper-lockfile retries whatever the error: wait only when the lock is taken (or being taken over), so that a
  // read-only or missing home fails at once.
  const busy = (error: unknown) => {
    const code = (error as NodeJS.ErrnoException).code
    return code === 'ELOCKED' || code === 'ENOTEMPTY' || (code === 'ENOENT' && fs.existsSync(dir)) // ENOENT: a takeover race
  }
  try {
    release = await lock(false).catch((error: unknown) => {
      if (!busy(error)) throw error
      return lock(true)
    })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ELOCKED' || code === 'ENOTEMPTY') {
      const holder = parseHolder(listHolders(lockDir)[0] ?? '')
      const who = holder ? ` (pid ${holder.pid}${holder.machine === machine() ? '' : ' on another machine'})` : ''
      throw new UserError(`another tbmesh process${who} is changing ${dir}`, {
        fix: `wait for it to finish and run the command again (waited ${waitMs / 1000} s; set ${LOCK_TIMEOUT_ENV} to wait longer)`,
      })
    }
    throw fileError(error, `cannot lock ${dir}`, {other: 'check that the directory exists and is writable', ...fixes})
  }
  const assertHeld = () => {
    if (compromised) throw new UserError(`lost the lock on ${dir} (${compromised.message})`, {fix: 'nothing was changed: run the command again'})
  }
  try {
    return await fn(assertHeld)
  } finally {
    await release().catch(() => {})
  }
}

// The lock's holder. proper-lockfile alone knows a lock is stale only when its mtime is LOCK_STALE_MS old, so a tbmesh
// killed with SIGKILL (OOM killer, CI timeout, `kill -9`) would block every other one for seconds. The holder therefore
// names itself with an empty file in the lock directory, `holder-<pid>-<start>-<machine>` (process id, its start time
// from /proc or 0, and a hash of the host name and PID namespace, within which process ids mean something). A waiter on
// the same machine that finds every holder gone reports the lock as stale to proper-lockfile at once, which then takes
// it over its usual way. Holders on other machines (a home on a network file system) and directories without a holder
// file fall back to the mtime. This goes through proper-lockfile's `fs` option, so its locking, refreshing and
// compromise detection are unchanged.

const HOLDER = /^holder-(\d+)-(\d+)-([0-9a-f]{8})$/

let machineId: string | undefined
/** This host and PID namespace, 8 hex digits. */
function machine(): string {
  if (machineId === undefined) {
    let ns = ''
    try {
      ns = fs.readlinkSync('/proc/self/ns/pid')
    } catch {}
    machineId = sha256Hex(`${hostname()}\0${ns}`).slice(0, 8)
  }
  return machineId
}

/** A process's start time since boot in clock ticks (Linux), `0` when unknown, `Z` for a zombie. */
function processStart(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[0] === 'Z' ? 'Z' : /^\d+$/.test(fields[19] ?? '') ? fields[19] : '0'
  } catch {
    return '0'
  }
}

function parseHolder(name: string): {pid: number; start: string; machine: string} | undefined {
  const m = HOLDER.exec(name)
  return m ? {pid: Number(m[1]), start: m[2], machine: m[3]} : undefined
}

/** True when the holder is known to be gone: same machine, and no such process (or a zombie, or another process since). */
function holderGone(name: string): boolean {
  const holder = parseHolder(name)
  if (!holder || holder.machine !== machine()) return false
  try {
    process.kill(holder.pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
  const start = processStart(holder.pid)
  return start === 'Z' || (start !== '0' && holder.start !== '0' && start !== holder.start)
}

function listHolders(lockDir: string): string[] {
  try {
    return fs.readdirSync(lockDir)
  } catch {
    return []
  }
}

/** The `fs` proper-lockfile locks with: names the holder in the lock directory and sees a gone holder's lock as stale. */
function lockFs() {
  const own = `holder-${process.pid}-${processStart(process.pid).replace('Z', '0')}-${machine()}`
  let stale: string[] = [] // holder files of a stale lock, removed together with it
  type Callback = (error: NodeJS.ErrnoException | null) => void
  return {
    realpath: fs.realpath,
    utimes: fs.utimes,
    mkdir(path: string, callback: Callback) {
      fs.mkdir(path, (error) => {
        if (error) return callback(error)
        // Name the holder before proper-lockfile reads the directory's mtime (creating the file changes it).
        fs.writeFile(join(path, own), '', {flag: 'wx'}, (error) => {
          if (error) {
            // ENOENT: a waiter that found the previous holder gone removed this directory in between: not ours.
            if (error.code !== 'ENOENT') fs.rmdir(path, () => callback(error))
            else callback(error)
            return
          }
          const holders = listHolders(path)
          if (holders.length === 1) return callback(null)
          // Two processes made it into one directory through a takeover race: neither may hold the lock.
          fs.unlink(join(path, own), () => callback(Object.assign(new Error('Lock file is already being held'), {code: 'ELOCKED'})))
        })
      })
    },
    stat(path: string, callback: (error: NodeJS.ErrnoException | null, stats?: fs.Stats) => void) {
      fs.stat(path, (error, stats) => {
        if (error) return callback(error)
        const holders = listHolders(path)
        if (stats.mtimeMs < Date.now() - LOCK_STALE_MS) {
          stale = holders.filter((h) => h !== own)
          return callback(null, stats)
        }
        if (holders.length > 0 && !holders.includes(own) && holders.every((holder) => holderGone(holder))) {
          stale = holders
          return callback(null, Object.assign(Object.create(Object.getPrototypeOf(stats)), stats, {mtime: new Date(0), mtimeMs: 0}))
        }
        callback(null, stats)
      })
    },
    rmdir(path: string, callback: Callback) {
      for (const name of new Set([own, ...stale])) {
        try {
          fs.unlinkSync(join(path, name))
        } catch {}
      }
      stale = []
      fs.rmdir(path, callback)
    },
    rmdirSync(path: string) {
      try {
        fs.unlinkSync(join(path, own))
      } catch {}
      fs.rmdirSync(path)
    },
  }
}
