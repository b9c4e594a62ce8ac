/**
 * Error kinds shared by every tbmesh module.
 *
 * - {@link UserError}: something the operator can fix (bad flag, wrong passphrase, missing home). Commands print its
 *   one-line message (plus the fix) and exit non-zero without a stack trace.
 * - {@link ExternalError}: a subprocess (nebula, nebula-cert) failed; keeps its command, exit code and stderr.
 * - Anything else is a bug and keeps its stack trace.
 */

import {safeLine} from './lib/text.js'

/** An error the user can fix. `message` is one line; `fix` (optional) says what to do about it. */
export class UserError extends Error {
  override name = 'UserError'
  /** Process exit code: 1 for a refused operation, 2 for bad usage (oclif's convention). */
  readonly exit: number
  /** One short sentence telling the user how to fix it, appended to the message when printed. */
  readonly fix?: string

  constructor(message: string, options: {exit?: number; fix?: string; cause?: unknown} = {}) {
    super(message, {cause: options.cause})
    this.exit = options.exit ?? 1
    this.fix = options.fix
  }

  /** The single line shown to the user: message and fix, with line breaks and other control characters escaped. */
  get line(): string {
    const text = this.fix ? `${this.message}: ${this.fix}` : this.message
    return safeLine(text)
  }
}

/** A bad command-line value (exit code 2). */
export class UsageError extends UserError {
  override name = 'UsageError'
  constructor(message: string, options: {fix?: string; cause?: unknown} = {}) {
    super(message, {...options, exit: 2})
  }
}

/** A subprocess we depend on failed. */
export class ExternalError extends Error {
  override name = 'ExternalError'
  constructor(
    message: string,
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(message)
  }
}
