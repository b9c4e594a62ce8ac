/**
 * The names operators give: networks, organizations (as TruBudget knows them), nodes, certificate groups; and the slug,
 * the DNS-label form of an organization name used in groups (`org:<slug>`) and node names. Every place a name enters
 * tbmesh (flags, join requests, network files, federation files) checks it here.
 */

import {UsageError} from '../errors.js'
import {DNS_LABEL} from './text.js'

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

/** Checks an organization name (1-100 characters, at least one letter or digit) and returns it trimmed. Throws UsageError. */
export function checkOrganizationName(name: string): string {
  const trimmed = name.trim()
  if (trimmed.length === 0 || trimmed.length > 100 || /[\u0000-\u001F\u007F"\\]/.test(trimmed) || slugify(trimmed) === '') {
    throw new UsageError(`--org "${name}" is not a valid organization name`, {fix: 'use 1-100 characters with at least one letter or digit, no quotes or control characters'})
  }
  return trimmed
}

/** Throws UsageError unless `name` is a lowercase DNS label. */
export function checkNodeName(name: string): void {
  if (!DNS_LABEL.test(name)) {
    throw new UsageError(`--name "${name}" is not a lowercase DNS label`, {fix: 'use a-z, 0-9 and inner dashes, at most 63 characters, e.g. acme-1'})
  }
}

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
