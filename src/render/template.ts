/**
 * What the renderers share: reading templates from the package's `templates/` folder, a minimal `{{name}}`
 * placeholder substitution, value checks and the typed errors a renderer throws.
 *
 * Templates are resolved relative to this module (`src/render/` or `dist/render/` → `../../templates/`), so they are
 * found both when running the TypeScript sources and the compiled package. Each file is read once and cached.
 */

import {readFileSync} from 'node:fs'

import {UserError} from '../errors.js'
import {isIpv4} from '../lib/ip.js'
import type {NodeProfile} from './profile.js'

const cache = new Map<string, string>()

/**
 * The text of `templates/<name>` (UTF-8), read once per process and cached.
 *
 * @throws Error when the file is missing (a broken installation, not something the user can fix).
 */
export function readTemplate(name: string): string {
  let text = cache.get(name)
  if (text === undefined) {
    text = readFileSync(new URL(`../../templates/${name}`, import.meta.url), 'utf8')
    cache.set(name, text)
  }
  return text
}

const PLACEHOLDER = /\{\{([A-Za-z][A-Za-z0-9]*)\}\}/g

/**
 * Replace every `{{name}}` in `template` with `values[name]` (numbers are written in decimal).
 *
 * Strict both ways, so a template and its renderer cannot drift apart silently:
 * @throws Error when the template uses a placeholder that `values` lacks (or maps to undefined), when `values` holds a
 *   name the template never uses, or when a `{{` / `}}` is left that is not a well-formed placeholder.
 */
export function fillPlaceholders(template: string, values: Record<string, string | number | undefined>): string {
  const rest = template.replaceAll(PLACEHOLDER, '')
  const stray = /\{\{|\}\}/.exec(rest)
  if (stray) throw new Error(`template has a malformed placeholder near ${JSON.stringify(rest.slice(stray.index, stray.index + 24))}`)
  const used = new Set<string>()
  const out = template.replaceAll(PLACEHOLDER, (_match, name: string) => {
    const value = Object.hasOwn(values, name) ? values[name] : undefined
    if (value === undefined) throw new Error(`template placeholder {{${name}}} has no value`)
    used.add(name)
    return String(value)
  })
  for (const name of Object.keys(values)) {
    if (!used.has(name)) throw new Error(`template has no placeholder {{${name}}}`)
  }
  return out
}

/**
 * The network has no origin (alpha) node yet, but a non-origin node's files need the origin's overlay IP
 * (`P2P_HOST`, `API_HOST`). Commands show it as "add an --origin node first".
 */
export class NoOriginError extends UserError {
  override name = 'NoOriginError'
  constructor(network: string) {
    super(`Network ${JSON.stringify(network)} has no origin node yet`, {fix: 'add an --origin node first'})
  }
}

/** A value (organization name, RPC credentials) that cannot be written safely into a generated file. */
export class UnsafeValueError extends UserError {
  override name = 'UnsafeValueError'
  constructor(
    /** The setting, e.g. `ORGANIZATION` or `rpcpassword`. */
    readonly setting: string,
    /** Why it was refused, e.g. `contains "$"`. */
    readonly reason: string,
    fix: string,
  ) {
    super(`Cannot write ${setting}: the value ${reason}`, {fix})
  }
}

/** The origin's overlay IP: the node's own IP on the origin, else `p.originOverlayIp`. @throws NoOriginError */
export function originIp(p: NodeProfile): string {
  if (p.node.origin) return p.node.overlayIp
  if (p.originOverlayIp === undefined) throw new NoOriginError(p.network.name)
  return p.originOverlayIp
}

/**
 * Where a node other than the origin joins and registers (`P2P_HOST`, `API_HOST`): its registrar, by default the origin;
 * undefined on the origin, which creates the chain. @throws NoOriginError when it needs the origin and there is none.
 */
export function registrarIp(p: NodeProfile): string | undefined {
  if (p.node.origin) return undefined
  return assertIPv4(p.registrarOverlayIp ?? originIp(p), 'registrarOverlayIp')
}

/** @throws Error unless `ip` is a dotted-quad IPv4 address (a profile is built by tbmesh, so this is a bug). */
export function assertIPv4(ip: string, what: string): string {
  if (!isIpv4(ip)) throw new Error(`profile ${what} is not an IPv4 address: ${JSON.stringify(ip)}`)
  return ip
}

/** @throws Error unless `port` is an integer in 0..65535. */
export function assertPort(port: number, what: string): number {
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new Error(`profile ${what} is not a port: ${port}`)
  return port
}
