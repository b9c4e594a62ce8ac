/**
 * What every tbmesh command shares: `--home` (env `TBMESH_HOME`), `--json`, and error reporting — one line with the fix
 * for anything the user can fix, a non-zero exit, and no stack trace unless `DEBUG` is set.
 */

import {Command, Flags, type Interfaces} from '@oclif/core'

import {unlockCaKey} from './ca/ca.js'
import {expiryWarnings} from './ca/lifecycle.js'
import {ExternalError, UsageError, UserError} from './errors.js'
import {Home} from './home/home.js'
import type {CaRecord} from './home/types.js'
import {canPrompt, resolvePassphrase} from './lib/passphrase.js'
import {safeLine} from './lib/text.js'
import type {CertificateVersion, Curve} from './nebula/index.js'

/** `--passphrase-file` for the CA key, shared by every command that signs. */
export const caPassphraseFlag = Flags.file({description: 'file holding the CA key passphrase (or set TBMESH_CA_PASSPHRASE)'})

/** `--cert-version 1|2`: the Nebula certificate format of a CA and the certificates it issues (init-ca, rotate-ca). */
export const certVersionFlag = Flags.option({options: ['1', '2'] as const, description: 'Nebula certificate version: 1 (every Nebula) or 2 (Nebula 1.10+)'})

/** `--curve 25519|P256`: the curve of a CA's and its hosts' keys (init-ca, rotate-ca, join-request), as nebula-cert names it. */
export const curveFlag = Flags.option({options: ['25519', 'P256'] as const, description: 'key curve: 25519 (Ed25519 CA, X25519 hosts) or P256 (ECDSA)'})

/** The certificate version a `--cert-version` value names (undefined when absent). */
export function certVersionOf(flag: '1' | '2' | undefined): CertificateVersion | undefined {
  return flag === undefined ? undefined : flag === '2' ? 2 : 1
}

/** The curve a `--curve` value names (undefined when absent). */
export function curveOf(flag: '25519' | 'P256' | undefined): Curve | undefined {
  return flag === undefined ? undefined : flag === 'P256' ? 'P256' : 'CURVE25519'
}

/** `--bundle-passphrase-file` for encrypted bundles, shared by export and install. */
export const bundlePassphraseFlag = Flags.file({description: 'file holding the bundle passphrase (or set TBMESH_BUNDLE_PASSPHRASE)'})

export type TbmeshFlags<T extends typeof Command> = Interfaces.InferredFlags<(typeof TbmeshCommand)['baseFlags'] & T['flags']>

/** One step of multi-step work (see {@link TbmeshCommand.runSteps}). */
export interface Step {
  title: string
  /** True to show the step as skipped. */
  skip?: boolean
  run: (update: (text: string) => void) => Promise<unknown>
}

/** Base class of every command. */
export abstract class TbmeshCommand extends Command {
  static override enableJsonFlag = true

  static override baseFlags = {
    home: Flags.directory({
      description: 'network state directory (default: the tbmesh config directory, e.g. ~/.config/tbmesh)',
      env: 'TBMESH_HOME',
      helpGroup: 'GLOBAL',
    }),
  }

  /** The home directory: `--home`, `TBMESH_HOME`, or oclif's config dir. */
  protected homeDir(flags: {home?: string}): string {
    return flags.home ?? this.config.configDir
  }

  /**
   * Opens the home named by the flags and warns (once, on stderr) about a CA or host certificates that expire within
   * 30 days. Throws UserError when there is none.
   */
  protected async openHome(flags: {home?: string}): Promise<Home> {
    const home = await Home.open(this.homeDir(flags))
    for (const warning of expiryWarnings(home.state)) this.warn(warning)
    return home
  }

  /**
   * The private key of the active CA (or of `ca`): 64 bytes Ed25519 or 32 bytes P256, asking for its passphrase
   * (file → TBMESH_CA_PASSPHRASE → TTY prompt) only when the key is encrypted.
   */
  protected async unlockCa(home: Home, passphraseFile: string | undefined, ca: CaRecord = home.activeCa()): Promise<Buffer> {
    const passphrase = ca.encrypted
      ? await resolvePassphrase({file: passphraseFile, fileFlag: '--passphrase-file', env: 'TBMESH_CA_PASSPHRASE', purpose: 'CA key'})
      : null
    return unlockCaKey(home, passphrase, ca)
  }

  /**
   * Runs multi-step work: a listr2 task list on a terminal, one plain line per finished step otherwise, nothing under
   * --json. Each step's `run` may report progress through `update` (shown on a terminal only).
   */
  protected async runSteps(steps: Step[]): Promise<void> {
    if (this.jsonEnabled() || !canPrompt()) {
      for (const step of steps) {
        if (step.skip) continue
        await step.run(() => {})
        this.log(`✔ ${step.title}`)
      }
      return
    }
    const {Listr} = await import('listr2')
    const tasks = steps.map((step) => ({
      title: step.title,
      skip: step.skip,
      task: async (_ctx: unknown, task: {output: string}) => {
        await step.run((text) => {
          task.output = text
        })
      },
    }))
    await new Listr(tasks, {concurrent: false, exitOnError: true, rendererOptions: {collapseErrors: false}}).run()
  }

  /**
   * A required value: the flag's (or argument's) `value` when given; otherwise, on a terminal (and without `CI`), asked
   * for with @inquirer/prompts — a choice among `choices` when there are some, else free text with `default`; otherwise
   * a usage error naming `flag`. `validate` returns an error text or true.
   */
  protected async ask(
    flag: string,
    value: string | undefined,
    prompt: {message: string; default?: string; choices?: string[]; validate?: (v: string) => string | true},
  ): Promise<string> {
    if (value !== undefined) return value
    if (!canPrompt()) throw new UsageError(`${flag} is required`, {fix: `pass ${flag} ${flag.startsWith('--') ? 'VALUE' : ''}`.trimEnd()})
    const inquirer = await import('@inquirer/prompts')
    if (prompt.choices && prompt.choices.length > 0) {
      return inquirer.select({message: prompt.message, choices: prompt.choices.map((c) => ({value: c, name: c})), default: prompt.default}, {output: process.stderr})
    }
    return inquirer.input({message: prompt.message, default: prompt.default, validate: prompt.validate, required: true}, {output: process.stderr})
  }

  /**
   * Shows `lines` (untrusted text made safe, see `safeLine`) on stderr and asks `question` (default no). With `yes`
   * (the command's --yes) it shows them, does not ask, and returns true. Without a terminal it asks nothing: it throws
   * a UsageError saying `unattended` (what needs confirmation, and the fix: check, then pass --yes) — or, with no
   * `unattended` given, shows nothing and returns false.
   */
  protected async confirmOrYes(opts: {lines?: string[]; question: string; yes?: boolean; unattended?: {message: string; fix: string}}): Promise<boolean> {
    if (!opts.yes && !canPrompt() && !opts.unattended) return false
    if (!this.jsonEnabled()) for (const line of opts.lines ?? []) process.stderr.write(`${safeLine(line)}\n`)
    if (opts.yes) return true
    if (!canPrompt()) throw new UsageError(opts.unattended!.message, {fix: opts.unattended!.fix})
    const {confirm} = await import('@inquirer/prompts')
    return confirm({message: opts.question, default: false}, {output: process.stderr})
  }

  /** Warnings are one line on stderr (oclif's own wraps them), and silent under --json. */
  override warn(input: string | Error): string | Error {
    if (!this.jsonEnabled()) process.stderr.write(`Warning: ${typeof input === 'string' ? input : input.message}\n`)
    return input
  }

  protected override async catch(error: Error & {oclif?: {exit?: number}; parse?: unknown}): Promise<unknown> {
    const failure = userFacing(error)
    if (!failure) return super.catch(error)
    process.exitCode = failure.exit
    if (this.jsonEnabled()) {
      this.logJson({error: {name: error.name, message: failure.line, exit: failure.exit}})
      return undefined
    }
    process.stderr.write(`Error: ${failure.line}\n`)
    if (process.env.DEBUG && error.stack) process.stderr.write(`${error.stack}\n`)
    this.exit(failure.exit)
  }
}

/** The one line and exit code for an error the user can act on, or undefined for a bug. */
function userFacing(error: Error & {oclif?: {exit?: number}; parse?: unknown}): {line: string; exit: number} | undefined {
  if (error instanceof UserError) return {line: error.line, exit: error.exit}
  if (error instanceof ExternalError) {
    const detail = error.stderr.trim().split('\n').at(-1) ?? ''
    return {line: `${error.message} (\`${error.command}\` exited ${error.exitCode ?? 'abnormally'}${detail ? `: ${detail}` : ''})`, exit: 1}
  }
  // oclif's own parse errors (missing or unknown flags, bad values) carry `parse`, or, when a flag's own parser
  // refused the value (`Flags.integer`), start with `Parsing --flag`: exit 2, folded into one line.
  if (('parse' in error || error.message.startsWith('Parsing --')) && error.oclif?.exit !== undefined) {
    const parts = error.message
      .replace(/^Parsing (--[\w-]+) *\n\s*/, '$1: ')
      .split('\n')
      .map((l) => l.trim().replaceAll(/\bflags? ([a-z][\w-]*)/g, (_m, name: string) => `flag --${name}`))
      .filter((l) => l && !l.startsWith('See more help') && !l.endsWith(':'))
    return {line: `${parts.join('; ')} (see --help)`, exit: error.oclif.exit}
  }
  return undefined
}
