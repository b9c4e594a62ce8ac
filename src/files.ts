/**
 * Writing files outside the home safely: output files (bundles, request files) appear whole or not at all, and an
 * existing file is never replaced unless the user said `--force`.
 */
import {randomBytes} from 'node:crypto'
import {link, lstat, open, rename, stat, unlink} from 'node:fs/promises'
import path from 'node:path'

import {UserError} from './errors.js'

/**
 * Writes `data` to `target` atomically with `mode`: a temporary file in the same directory, flushed, then hard-linked
 * into place (so an existing target is never replaced) or, with `force`, renamed over it; then the directory is synced.
 * `what` names the file in messages (e.g. `the bundle`).
 * Throws UserError when the target exists (without force), is a directory, or its directory is missing or not writable.
 */
export async function writeNewFile(target: string, data: Buffer | string, opts: {force?: boolean; mode: number; what: string}): Promise<void> {
  const dir = path.dirname(target)
  const existing = await lstat(target).catch(() => undefined)
  if (existing?.isDirectory()) throw new UserError(`${target} is a directory`, {fix: `give a file name for ${opts.what}`})
  if (existing && !opts.force) throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
  const dirStat = await stat(dir).catch(() => undefined)
  if (!dirStat?.isDirectory()) {
    throw new UserError(dirStat ? `${dir} is not a directory` : `directory ${dir} does not exist`, {fix: `${dirStat ? 'choose a directory' : 'create it'} or write ${opts.what} elsewhere`})
  }

  const tmp = path.join(dir, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`)
  let handle
  try {
    handle = await open(tmp, 'wx', opts.mode)
  } catch (error) {
    throw fsUserError(error, `cannot write to ${dir}`, 'choose a directory you can write to')
  }
  try {
    await handle.chmod(opts.mode)
    await handle.writeFile(data)
    await handle.sync()
    await handle.close()
    handle = undefined
    if (opts.force) {
      await rename(tmp, target)
    } else {
      try {
        await link(tmp, target)
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        if (code === 'EEXIST') throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
        // Filesystems without hard links: fall back to a (racy) check and rename.
        if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK'].includes(code ?? '')) throw error
        if (await lstat(target).catch(() => undefined)) throw new UserError(`${target} already exists`, {fix: 'pass --force to overwrite it'})
        await rename(tmp, target)
      }
    }
    await fsyncDir(dir)
  } finally {
    await handle?.close().catch(() => {})
    await unlink(tmp).catch(() => {})
  }
}

/** Flushes a directory's entries to disk (after a rename or link in it). Best effort. */
export async function fsyncDir(dir: string): Promise<void> {
  const h = await open(dir, 'r').catch(() => undefined)
  if (!h) return
  await h.sync().catch(() => {})
  await h.close().catch(() => {})
}

/** Turns a permission error into a UserError with `message` and `fix`; other errors are returned unchanged. */
export function fsUserError(error: unknown, message: string, fix: string): Error {
  const code = (error as NodeJS.ErrnoException).code
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return new UserError(`${message} (${code})`, {fix, cause: error})
  return error as Error
}
