/**
 * Where passphrases come from. Never from a flag value on argv: from a file named by a flag, from an environment
 * variable, or from a prompt on a TTY (only when stdin and stderr are terminals and `CI` is not set).
 */

import {readFile} from 'node:fs/promises'

import {UserError} from '../errors.js'

/**
 * Whether the environment variable `name` holds one of tbmesh's secrets: `TBMESH_CA_PASSPHRASE`,
 * `TBMESH_NEW_CA_PASSPHRASE`, `TBMESH_BUNDLE_PASSPHRASE`, and any later `TBMESH_…PASSPHRASE`. Child processes never see
 * them (`childEnv` in `spawn.ts`).
 */
export function isSecretEnv(name: string): boolean {
  return /^TBMESH_\w*PASSPHRASE$/.test(name)
}

/** True when tbmesh may ask the user something: an interactive terminal and no `CI` variable. */
export function canPrompt(): boolean {
  return Boolean(process.stdin.isTTY && process.stderr.isTTY && !process.env.CI)
}

/** Where to look for one passphrase, and how to ask for it. */
export interface PassphraseSource {
  /** Path given with the `--passphrase-file` flag (or its like), if any. */
  file?: string
  /** Name of the flag that names the file, for messages, e.g. `--passphrase-file`. */
  fileFlag: string
  /** Environment variable holding the passphrase, e.g. `TBMESH_CA_PASSPHRASE`. */
  env: string
  /** What it protects, for the prompt and messages, e.g. `CA key`. */
  purpose: string
  /** Ask twice on a TTY (when a new passphrase is being set). */
  confirm?: boolean
  /** Extra options to name in the error when no source is available, e.g. `--no-passphrase`. */
  alternatives?: string[]
}

/**
 * Resolves a passphrase: the file (its contents minus one trailing newline), then the environment, then a
 * prompt on a TTY. Returns the passphrase as UTF-8 bytes. Throws UserError for an unreadable or empty file, an empty
 * variable, a mismatch when confirming, or when there is no source and no TTY (naming the options).
 */
export async function resolvePassphrase(source: PassphraseSource): Promise<Buffer> {
  if (source.file !== undefined) {
    let text: string
    try {
      text = await readFile(source.file, 'utf8')
    } catch (error) {
      throw new UserError(`cannot read ${source.fileFlag} ${source.file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {
        fix: 'give a readable file holding the passphrase',
      })
    }
    const passphrase = text.replace(/\r?\n$/, '')
    if (passphrase.length === 0) throw new UserError(`${source.fileFlag} ${source.file} is empty`, {fix: 'write the passphrase into the file'})
    return Buffer.from(passphrase, 'utf8')
  }
  const fromEnv = process.env[source.env]
  if (fromEnv !== undefined) {
    if (fromEnv.length === 0) throw new UserError(`${source.env} is set but empty`, {fix: `unset it or put the ${source.purpose} passphrase in it`})
    return Buffer.from(fromEnv, 'utf8')
  }
  if (!canPrompt()) {
    const options = [`${source.fileFlag} FILE`, `the ${source.env} environment variable`, ...(source.alternatives ?? [])]
    throw new UserError(`no ${source.purpose} passphrase and no terminal to ask on`, {fix: `use ${options.join(' or ')}`})
  }
  const {password} = await import('@inquirer/prompts')
  const first = await password({message: `${source.purpose} passphrase`, mask: true, validate: (v) => v.length > 0 || 'the passphrase cannot be empty'}, {output: process.stderr})
  if (source.confirm) {
    const second = await password({message: `${source.purpose} passphrase (again)`, mask: true}, {output: process.stderr})
    if (second !== first) throw new UserError('the passphrases differ', {fix: 'run the command again and type the same passphrase twice'})
  }
  return Buffer.from(first, 'utf8')
}
