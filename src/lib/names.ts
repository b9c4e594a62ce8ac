/**
 * The names operators give: networks, organizations (as TruBudget knows them), nodes, certificate groups; and the slug,
 * the DNS-label form of an organization name used in groups (`org:<slug>`) and node names. Every place a name enters
 * tbmesh (flags, join requests, network files, federation files) checks it here.
 */

import {UsageError, UserError} from '../errors.js'
import {DNS_LABEL, quoted} from './text.js'

/** The DNS-label form of an organization name: `ACME Corp.` → `acme-corp`. */
export function slugify(name: string): string {
  return name
    .normalize('NFKD')
    .replaceAll(/[\u0300-\u036F]/g, '')
    .toLowerCase()
    .replaceAll(/[^a-z0-9]+/g, '-')
    .replaceAll(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '')
}

/** Checks a network name (1-64 letters, digits, blanks, `.`, `_`, `-`, starting with a letter or digit). Throws UsageError. */
export function checkNetworkName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/.test(name)) {
    throw new UsageError(`--network "${name}" is not a valid network name`, {fix: 'use 1-64 letters, digits, spaces, dots, dashes or underscores'})
  }
  return name
}

/** Longest organization name, in characters (code points). */
export const MAX_ORGANIZATION_NAME = 100

/**
 * Characters a value in tbmesh's env files cannot hold: `docker run --env-file` takes a value literally while docker
 * compose's `env_file:` strips quotes and reads `$`, `#` and `\\`, and `%` starts a systemd specifier where a value is
 * copied into a unit's `Environment=` (see `envValue` in `render/trubudget.ts`).
 */
export const ENV_FILE_UNSAFE = /["'`$#\\%]/u

/**
 * Why `name` is not an organization name tbmesh can use, or undefined. An organization name is written into every
 * file a node gets (`ORGANIZATION` in blockchain.env, the README, comments of config.yml and the compose files, the
 * manifest, a federated CA's name), so it must be something each of them holds as it is:
 *
 * - 1 to {@link MAX_ORGANIZATION_NAME} characters, in Unicode normal form NFC, without blanks at either end;
 * - printable: no control, format (bidirectional marks, zero-width characters), private-use, unassigned or surrogate
 *   code point (`\p{C}`), no line or paragraph separator, and no blank but the plain space (U+0020);
 * - none of `"` `'` `` ` `` `$` `#` `\` `%`, which the env files cannot hold ({@link ENV_FILE_UNSAFE});
 * - at least one letter or digit that has a Latin form (its slug, {@link slugify}, is not empty).
 */
export function organizationNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'is empty'
  if ([...name].length > MAX_ORGANIZATION_NAME) return `is longer than ${MAX_ORGANIZATION_NAME} characters`
  const bad = /[\p{C}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u.exec(name)
  if (bad) {
    const code = `U+${bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`
    return /\p{Zs}/u.test(bad[0]) ? `contains the blank ${code}, not a plain space` : `contains the unprintable character ${code}`
  }
  if (name.normalize('NFC') !== name) return 'is not in Unicode normal form NFC'
  if (name.trim() !== name) return 'starts or ends with a blank'
  const unsafe = ENV_FILE_UNSAFE.exec(name)
  if (unsafe) return `contains ${JSON.stringify(unsafe[0])}, which TruBudget's env files cannot hold`
  if (slugify(name) === '') return 'has no Latin letter or digit (its slug, as in the group org:<slug>, is made of a-z and 0-9)'
  return undefined
}

/** What to do about a refused organization name. */
const ORGANIZATION_NAME_FIX = `use 1-${MAX_ORGANIZATION_NAME} printable characters with a letter or digit, without quotes, \`, $, # or \\`

/**
 * Checks an organization name given by a person (a flag, a prompt, a network file): normalized to NFC and trimmed
 * first, then {@link organizationNameProblem}. Returns the normalized name, the form tbmesh stores and writes.
 * @throws UsageError `<what> "<name>" is not a valid organization name (<problem>)`.
 */
export function checkOrganizationName(name: string, what = '--org'): string {
  const normalized = name.normalize('NFC').trim()
  const problem = organizationNameProblem(normalized)
  if (problem) throw new UsageError(`${what} "${name}" is not a valid organization name (it ${problem})`, {fix: ORGANIZATION_NAME_FIX})
  return normalized
}

/**
 * The organization of `known` (name and slug) that `name` would share a slug with although it is another name — as
 * the fullwidth `Ａcme` or `acme` would with `ACME` — or undefined. Such a name would get that organization's block,
 * group `org:<slug>` and nodes, so callers refuse it with {@link organizationConflict}.
 */
export function slugTwin<T extends {name: string; slug: string}>(known: readonly T[], name: string): T | undefined {
  const slug = slugify(name)
  return known.find((o) => o.slug === slug && o.name !== name)
}

/** The refusal of `name` because it shares its slug with the organization named `existing`, naming both. */
export function organizationConflict(name: string, existing: string): UserError {
  return new UserError(`organization ${quoted(name)} is not ${quoted(existing)}, but both have the slug ${slugify(name)}`, {
    fix: `write ${quoted(existing)} exactly for that organization, or choose a name that differs in its letters or digits`,
  })
}

/** Throws UsageError unless `name` is a lowercase DNS label. */
export function checkNodeName(name: string): void {
  if (!DNS_LABEL.test(name)) {
    throw new UsageError(`--name "${name}" is not a lowercase DNS label`, {fix: 'use a-z, 0-9 and inner dashes, at most 63 characters, e.g. acme-1'})
  }
}

/**
 * A network interface name tbmesh writes into files (Nebula's `tun.dev`, the underlay guard's quoted nftables string):
 * 1-15 characters (the kernel's IFNAMSIZ less the terminating NUL) of letters, digits, `_`, `.` and `-`.
 */
export const TUN_DEVICE = /^[A-Za-z0-9_.-]{1,15}$/

/**
 * Checks a container image reference as Docker reads it (`[registry[:port]/]path[:tag][@sha256:digest]`, path
 * components lowercase) that names a tag or a digest (an image without one would be whatever `latest` is that day).
 * Returns it. Throws UsageError naming `flag`.
 */
export function checkImageReference(image: string, flag: string): string {
  const component = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*'
  const reference = new RegExp(`^(?:[A-Za-z0-9.-]+(?::\\d+)?/)?${component}(?:/${component})*(?::[\\w][\\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$`)
  if (image.length > 255 || !reference.test(image)) {
    throw new UsageError(`${flag} "${image}" is not a container image reference`, {fix: 'e.g. nebulaoss/nebula:1.11.1 or registry.example.org/nebula:1.11.1'})
  }
  const path = image.split('@')[0]
  if (!image.includes('@') && !/:[\w][\w.-]*$/.test(path.slice(path.lastIndexOf('/') + 1))) {
    throw new UsageError(`${flag} "${image}" names no version`, {fix: `pin one: ${image}:1.11.1`})
  }
  return image
}

/** Group prefixes tbmesh sets itself from the node's organization, roles and access level. */
const RESERVED_GROUP_PREFIXES = ['org:', 'role:', 'access:']

/** Checks extra certificate groups (`--groups`) and returns them without duplicates, in order. Throws UsageError. */
export function checkGroups(groups: string[]): string[] {
  const out: string[] = []
  for (const group of groups) {
    if (!/^[A-Za-z0-9][A-Za-z0-9:._-]{0,63}$/.test(group)) {
      throw new UsageError(`--groups "${group}" is not a valid group name`, {fix: 'use letters, digits, ":", ".", "_" and "-"'})
    }
    if (RESERVED_GROUP_PREFIXES.some((p) => group.startsWith(p))) {
      throw new UsageError(`--groups "${group}" uses a prefix tbmesh sets itself`, {fix: 'org:, role: and access: groups come from --org, --lighthouse, --origin'})
    }
    if (!out.includes(group)) out.push(group)
  }
  return out
}
