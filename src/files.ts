/**
 * Writing files outside the home safely: output files (bundles, request files) appear whole or not at all, and an
 * existing file is never replaced unless the user said `--force`.
 */
import {randomBytes} from 'node:crypto'
import fs from 'node:fs'
import {open} from 'node:fs/promises'
import path from 'node:path'

import {UserError} from './errors.js'

/**
 * Writes `data` to `target` atomically with `mode`: a temporary file in the same directory, flushed, then hard-linked
 * into place (so an existing target is never replaced) or, with `force`, renamed over it; then the directory is synced.
 * `what` names the file in messages (e.g. `the bundle`).
 * Throws UserError when the target exists (without force), is a directory, or its directory is missing or not writable.
 */
export async function writeNewFile(
  target: string,
  data: Buffer | string,
  opts: {force?: boolean; mode: number; what: string; /** false: leave flushing to a later {@link syncFiles} */ sync?: boolean},
): Promise<void> {
  // Synchronous calls: a handful of tiny operations per file, where thread-pool round trips would cost more than the
  // work (a thousand bundles in one `apply`).
  const dir = path.dirname(target)
  const existing = lstatOrUndefined(target)
  if (existing?.isDirectory()) throw new UserError(`${target} is a directory`, {fix: `give a file name for ${opts.what}`})
  if (existing && !opts.force) throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
  const dirStat = statOrUndefined(dir)
  if (!dirStat?.isDirectory()) {
    throw new UserError(dirStat ? `${dir} is not a directory` : `directory ${dir} does not exist`, {fix: `${dirStat ? 'choose a directory' : 'create it'} or write ${opts.what} elsewhere`})
  }

  if (opts.sync === false && !opts.force) {
    // Part of a batch the caller flushes and commits as a whole: written under its own name, refusing an existing file.
    try {
      fs.writeFileSync(target, data, {mode: opts.mode, flag: 'wx'})
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
      throw fsUserError(error, `cannot write to ${dir}`, 'choose a directory you can write to')
    }
    return
  }
  const tmp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`)
  let fd: number | undefined
  try {
    fd = fs.openSync(tmp, 'wx', opts.mode)
  } catch (error) {
    throw fsUserError(error, `cannot write to ${dir}`, 'choose a directory you can write to')
  }
  try {
    fs.fchmodSync(fd, opts.mode)
    fs.writeFileSync(fd, data)
    if (opts.sync !== false) fs.fsyncSync(fd)
    fs.closeSync(fd)
    fd = undefined
    if (opts.force) {
      fs.renameSync(tmp, target)
    } else {
      try {
        fs.linkSync(tmp, target)
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        if (code === 'EEXIST') throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
        // Filesystems without hard links: fall back to a (racy) check and rename.
        if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK'].includes(code ?? '')) throw error
        if (lstatOrUndefined(target)) throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
        fs.renameSync(tmp, target)
      }
    }
    if (opts.sync !== false) await fsyncDir(dir)
  } finally {
    if (fd !== undefined) fs.closeSync(fd)
    fs.rmSync(tmp, {force: true})
  }
}

/** lstat, or undefined when nothing is there (also when a parent is not a directory: the caller reports that). */
function lstatOrUndefined(file: string): fs.Stats | undefined {
  return orUndefined(() => fs.lstatSync(file, {throwIfNoEntry: false}))
}

/** stat, or undefined when nothing is there (also when a parent is not a directory). */
function statOrUndefined(file: string): fs.Stats | undefined {
  return orUndefined(() => fs.statSync(file, {throwIfNoEntry: false}))
}

function orUndefined(fn: () => fs.Stats | undefined): fs.Stats | undefined {
  try {
    return fn()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined
    throw error
  }
}

/**
 * Flushes files written with `sync: false` and their directories to disk, 32 files at a time: one durable point for a
 * batch of outputs instead of two flushes per file.
 */
export async function syncFiles(files: string[]): Promise<void> {
  for (let i = 0; i < files.length; i += 32) {
    await Promise.all(
      files.slice(i, i + 32).map(async (file) => {
        const h = await open(file, 'r')
        try {
          await h.sync()
        } finally {
          await h.close()
        }
      }),
    )
  }
  for (const dir of new Set(files.map((f) => path.dirname(f)))) await fsyncDir(dir)
}

/** Flushes a directory's entries to disk (after a rename, link or new file in it). */
export async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r')
  try {
    await h.sync()
  } finally {
    await h.close()
  }
}

/** Turns a permission error into a UserError with `message` and `fix`; other errors are returned unchanged. */
export function fsUserError(error: unknown, message: string, fix: string): Error {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return new UserError(`${message} (${code})`, {fix, cause: error})
  return error as Error
}
