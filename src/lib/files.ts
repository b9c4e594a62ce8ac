/**
 * Writing files safely, and file-system errors as one line the user can act on. Output files (bundles, request files)
 * appear whole or not at all, and an existing one is never replaced unless the user said `--force`
 * ({@link writeNewFile}); the home's files are replaced atomically and durably ({@link writeAtomic},
 * {@link writeAtomicMany}).
 */

import {randomBytes} from 'node:crypto'
import fs from 'node:fs'
import {mkdir, open, stat} from 'node:fs/promises'
import path from 'node:path'

import writeFileAtomic from 'write-file-atomic'

import {UserError} from '../errors.js'

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
  checkNewFile(target, opts)

  if (opts.sync === false && !opts.force) {
    // Part of a batch the caller flushes and commits as a whole: written under its own name, refusing an existing file.
    try {
      fs.writeFileSync(target, data, {mode: opts.mode, flag: 'wx'})
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
      throw fileError(error, `cannot write to ${dir}`, {denied: 'choose a directory you can write to'})
    }
    return
  }
  const tmp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`)
  let fd: number | undefined
  try {
    fd = fs.openSync(tmp, 'wx', opts.mode)
  } catch (error) {
    throw fileError(error, `cannot write to ${dir}`, {denied: 'choose a directory you can write to'})
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

/**
 * The checks {@link writeNewFile} makes before writing, for callers that must refuse before doing work the file would
 * record (a bundle's sequence number): `target` is not a directory, does not exist unless `force`, and its directory
 * exists. Throws UserError, the same as writeNewFile would.
 */
export function checkNewFile(target: string, opts: {force?: boolean; what: string}): void {
  const dir = path.dirname(target)
  const existing = lstatOrUndefined(target)
  if (existing?.isDirectory()) throw new UserError(`${target} is a directory`, {fix: `give a file name for ${opts.what}`})
  if (existing && !opts.force) throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
  const dirStat = statOrUndefined(dir)
  if (!dirStat?.isDirectory()) {
    throw new UserError(dirStat ? `${dir} is not a directory` : `directory ${dir} does not exist`, {fix: `${dirStat ? 'choose a directory' : 'create it'} or write ${opts.what} elsewhere`})
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

/** What to tell the user for the errno codes whose fix depends on where the file is (see {@link fileError}). */
export interface FileErrorFixes {
  /** EACCES, EPERM; default `check the permissions`. */
  denied?: string
  /** EROFS; default `the file system is read-only: choose another location`. */
  readOnly?: string
  /** Any other code; default `check the disk and run the command again`. */
  other?: string
}

/**
 * A UserError for a failed file operation: `what (CODE): fix`, the fix chosen by the errno code (ENOSPC and EDQUOT:
 * free disk space; ENOTDIR: a part of the path is not a directory; the others from `fixes`). Errors without an errno
 * code (bugs) are returned unchanged.
 */
export function fileError(error: unknown, what: string, fixes: FileErrorFixes = {}): Error {
  const code = (error as NodeJS.ErrnoException)?.code
  if (typeof code !== 'string') return error as Error
  const fix =
    code === 'ENOSPC' || code === 'EDQUOT'
      ? 'free some disk space and run the command again'
      : code === 'EACCES' || code === 'EPERM'
        ? (fixes.denied ?? 'check the permissions')
        : code === 'EROFS'
          ? (fixes.readOnly ?? 'the file system is read-only: choose another location')
          : code === 'ENOTDIR'
            ? 'a part of the path is not a directory: choose another path'
            : (fixes.other ?? 'check the disk and run the command again')
  return new UserError(`${what} (${code})`, {fix, cause: error})
}

/** True when something exists at `file` (stat succeeds). */
export async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  )
}

/**
 * Writes `data` to `file` atomically: a temporary file in the same directory, fsync, rename, fsync of the directory.
 * Creates the parent directory (0700) when missing. Throws UserError (naming the file and the errno) when it cannot.
 */
export async function writeAtomic(file: string, data: string | Buffer, mode: number, fixes?: FileErrorFixes): Promise<void> {
  const dir = path.dirname(file)
  try {
    const created = await mkdir(dir, {recursive: true, mode: 0o700})
    if (created) await fsyncDir(path.dirname(created)) // the new directory's entry, too
    await writeFileAtomic(file, data, {mode, fsync: true})
    await fsyncDir(dir)
  } catch (error) {
    throw fileError(error, `cannot write ${file}`, fixes)
  }
}

/**
 * Writes several files like {@link writeAtomic}, with one flush per file and one per directory at the end: when it
 * returns, every file is durable. A new file is written under its own name (the caller removes it if it never commits
 * what refers to it); an existing one is replaced atomically. Parent directories are created 0700.
 */
export async function writeAtomicMany(files: Array<[file: string, data: string, mode: number]>, fixes?: FileErrorFixes): Promise<void> {
  const dirs = new Set<string>()
  for (const [file] of files) dirs.add(path.dirname(file))
  for (const dir of dirs) {
    const created = await mkdir(dir, {recursive: true, mode: 0o700}).catch((error: unknown) => {
      throw fileError(error, `cannot create ${dir}`, fixes)
    })
    if (created) await fsyncDir(path.dirname(created))
  }
  // Synchronous writes, then all of them flushed at once, then their directories: durable before the caller commits,
  // without a thread-pool round trip and a flush per file.
  for (const [file, data, mode] of files) {
    try {
      try {
        fs.writeFileSync(file, data, {mode, flag: 'wx'})
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
        writeFileAtomic.sync(file, data, {mode, fsync: false})
      }
    } catch (error) {
      throw fileError(error, `cannot write ${file}`, fixes)
    }
  }
  await syncFiles(files.map(([file]) => file)).catch((error: unknown) => {
    throw fileError(error, `cannot flush ${path.dirname(files[0][0])}`, fixes)
  })
}
