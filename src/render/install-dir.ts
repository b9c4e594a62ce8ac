/**
 * The installation directory inside a node's deployment files (systemd unit, compose files).
 *
 * The CA renders those files before anyone knows where the organization's admin will install the bundle, so they name
 * {@link INSTALL_DIR_PLACEHOLDER}; `tbmesh install` then puts the real directory in with {@link placeInstallDir}. The
 * renderers put a directory in with the same function, so a file rendered for DIR and a file rendered with the
 * placeholder and installed into DIR are the same bytes.
 *
 * Templates write the directory only inside double-quoted strings (a systemd `ExecStart=` argument, a YAML scalar) or
 * in comments, always followed by `/` or the closing quote; {@link placeInstallDir} escapes it for that syntax.
 */

import {UserError} from '../errors.js'

/** The directory deployment files name until `tbmesh install` replaces it (also the default `--dir`). */
export const INSTALL_DIR_PLACEHOLDER = '/etc/tbmesh'

/**
 * What the deployment files' renderers take besides the profile: what `tbmesh install` learns on the node. Rendering
 * with these and rendering without them, then installing with them, give the same bytes.
 */
export interface DeploymentExtra {
  /** The installation directory (absolute); default {@link INSTALL_DIR_PLACEHOLDER}, which `tbmesh install` replaces. */
  installDir?: string
  /** systemd unit: the installed nebula tells systemd it is ready (1.8 and later), so the unit is `Type=notify`. */
  sdNotify?: boolean
  /** Nebula compose file: the image to run (a reference with a tag or digest); default `NEBULA_IMAGE`. */
  nebulaImage?: string
}

/** Where the directory is written: a systemd unit file, or a docker compose file (YAML with `$` interpolation). */
export type InstallDirSyntax = 'systemd' | 'compose'

/** Every occurrence of the placeholder as a whole path prefix (followed by `/`, a quote, a blank or the line end). */
const OCCURRENCE = /\/etc\/tbmesh(?=[/"\s]|$)/gm

/**
 * `dir` escaped for a double-quoted string of `syntax`: backslash and `"` are backslash-escaped in both; systemd also
 * doubles `%` (specifiers) and `$` (variables), compose doubles `$` (interpolation).
 *
 * @throws UserError when `dir` contains a control character or line break (it could end the line it is written on).
 * @throws Error when `dir` is not an absolute path (tbmesh resolves it first, so this is a bug).
 */
export function escapeInstallDir(dir: string, syntax: InstallDirSyntax): string {
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(dir)) {
    throw new UserError(`the directory ${JSON.stringify(dir)} contains a control character or line break`, {fix: 'install into another --dir'})
  }
  if (!dir.startsWith('/')) throw new Error(`install directory is not absolute: ${JSON.stringify(dir)}`)
  const trimmed = dir.length > 1 ? dir.replace(/\/+$/, '') : dir
  const quoted = trimmed.replaceAll(/[\\"]/g, (c) => `\\${c}`).replaceAll('$', '$$$$')
  return syntax === 'systemd' ? quoted.replaceAll('%', '%%') : quoted
}

/**
 * `text` (a deployment file naming {@link INSTALL_DIR_PLACEHOLDER}) with every occurrence of the placeholder replaced
 * by `dir`, escaped for `syntax` ({@link escapeInstallDir}). The identity when `dir` is the placeholder.
 *
 * @throws UserError when `dir` contains a control character or line break.
 */
export function placeInstallDir(text: string, syntax: InstallDirSyntax, dir: string): string {
  const escaped = escapeInstallDir(dir, syntax)
  return text.replaceAll(OCCURRENCE, () => escaped)
}
