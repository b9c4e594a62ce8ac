/**
 * What a compose file publishes: the `ports:` of its services read without Docker (short and long syntax, `${VAR}`
 * interpolation as far as it can be done without the environment, Compose 2.24's `!override` / `!reset` tags), and
 * doctor's verdict on the MultiChain P2P port.
 */

import {type CollectionTag, parse as parseYaml, type ScalarTag, YAMLMap, YAMLSeq} from 'yaml'

/** A check's verdict (doctor's `DoctorStatus`). */
export type Verdict = 'pass' | 'warn' | 'fail'

/** A value of a compose file tagged `!override` or `!reset` (Compose 2.24 merge tags). */
class ComposeTag {
  constructor(
    readonly tag: string,
    readonly value: unknown,
  ) {}
}

/** The merge tags, on any kind of node, read as {@link ComposeTag}s. */
const COMPOSE_TAGS: Array<ScalarTag | CollectionTag> = (['!override', '!reset'] as const).flatMap((tag): Array<ScalarTag | CollectionTag> => [
  {tag, collection: 'seq', nodeClass: YAMLSeq, resolve: (value) => new ComposeTag(tag, value.toJSON()) as never},
  {tag, collection: 'map', nodeClass: YAMLMap, resolve: (value) => new ComposeTag(tag, value.toJSON()) as never},
  {tag, resolve: (value: string) => new ComposeTag(tag, value)},
])

/** One port mapping of a compose file, as far as it can be read without the environment. */
interface PortMapping {
  /** Address the port is published on; '' for every interface. */
  hostIp: string
  /** Published (host) port or range, undefined when compose picks one. */
  published?: [number, number]
  /** Container port or range. */
  target?: [number, number]
  /** The mapping as written, for messages. */
  text: string
  /** Why it cannot be read (an unknown variable), if so. */
  unknown?: string
}

/**
 * Reads the `ports:` of every service of a compose file and decides: fail when a mapping of `p2pPort` (as host or
 * container port) is published on anything but `overlayIp`; warn when one cannot be read, when no mapping publishes it
 * (unless `o.requireP2p` is false), or, for an override (`o.override`, default true), when a list is merged (no
 * `!override`) with the ports of the file it overrides.
 */
export function composePorts(rel: string, text: string, overlayIp: string, p2pPort: number, o: {override?: boolean; requireP2p?: boolean} = {}): [Verdict, string] {
  let doc: unknown
  try {
    doc = parseYaml(text, {customTags: COMPOSE_TAGS})
  } catch (error) {
    return ['fail', `${rel} is not valid YAML (${(error as Error).message.split('\n')[0]})`]
  }
  const services = (doc as {services?: unknown} | null)?.services
  if (typeof services !== 'object' || services === null || Array.isArray(services)) return ['warn', `${rel} has no services`]
  const exposed: string[] = []
  const unreadable: string[] = []
  const merged: string[] = []
  let onOverlay = 0
  for (const [service, spec] of Object.entries(services as Record<string, unknown>)) {
    let ports = (spec as {ports?: unknown} | null)?.ports
    if (ports === undefined) continue
    if (ports instanceof ComposeTag) ports = ports.value
    else if (o.override ?? true) merged.push(service)
    if (!Array.isArray(ports)) continue
    for (const entry of ports) {
      const m = portMapping(entry, p2pPort)
      if (m.unknown) {
        unreadable.push(`${service}: ${m.text} (${m.unknown})`)
        continue
      }
      const covers = (r?: [number, number]): boolean => r !== undefined && r[0] <= p2pPort && p2pPort <= r[1]
      if (!covers(m.published) && !covers(m.target)) continue
      if (m.hostIp === overlayIp) onOverlay++
      else exposed.push(`${service}: ${m.text}`)
    }
  }
  const list = (items: string[]): string => items.map((i) => JSON.stringify(i)).join(', ')
  if (exposed.length > 0) {
    return ['fail', `${rel} publishes MultiChain P2P port ${p2pPort} beyond the overlay IP ${overlayIp}: ${list(exposed)}`]
  }
  if (unreadable.length > 0) return ['warn', `${rel} has port mappings doctor cannot read: ${list(unreadable)}`]
  if (onOverlay === 0 && (o.requireP2p ?? true)) return ['warn', `${rel} does not publish MultiChain P2P port ${p2pPort}: other nodes cannot connect to this one`]
  if (merged.length > 0) {
    return ['warn', `${rel} publishes port ${p2pPort} on ${overlayIp} only, but the ports of ${merged.join(', ')} lack !override: compose adds the overridden file's own`]
  }
  return ['pass', onOverlay === 0 ? `${rel} does not publish MultiChain P2P port ${p2pPort}` : `${rel} publishes MultiChain P2P port ${p2pPort} on the overlay IP ${overlayIp} only`]
}

/** A compose `ports:` entry, short (`[HOST:][PUBLISHED:]TARGET[/PROTO]`) or long syntax, read as {@link PortMapping}. */
function portMapping(entry: unknown, p2pPort: number): PortMapping {
  const text = typeof entry === 'string' || typeof entry === 'number' ? String(entry) : JSON.stringify(entry)
  const unknown: string[] = []
  const interpolate = (value: string): string =>
    value.replaceAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (match, braced, op, fallback, bare) => {
      const name = (braced ?? bare) as string
      if (name === 'P2P_PORT') return String(p2pPort)
      if (op === '-' || op === ':-') return fallback as string
      unknown.push(`\${${name}}`)
      return match
    })
  const range = (value: string | number | undefined): [number, number] | undefined => {
    if (value === undefined || value === '') return undefined
    const m = /^(\d+)(?:-(\d+))?$/.exec(interpolate(String(value)).trim())
    if (!m) {
      if (unknown.length === 0) unknown.push(`not a port: ${String(value)}`)
      return undefined
    }
    return [Number(m[1]), Number(m[2] ?? m[1])]
  }
  if (typeof entry === 'object' && entry !== null) {
    const long = entry as {target?: string | number; published?: string | number; host_ip?: string}
    const hostIp = interpolate(String(long.host_ip ?? ''))
    const mapping: PortMapping = {hostIp: normalizeHostIp(hostIp), published: range(long.published), target: range(long.target), text}
    return unknown.length > 0 ? {...mapping, unknown: [...new Set(unknown)].join(', ')} : mapping
  }
  let rest = interpolate(text).replace(/\/(tcp|udp|sctp)$/i, '')
  let hostIp = ''
  const bracketed = /^\[([^\]]*)\]:(.*)$/.exec(rest)
  if (bracketed) {
    hostIp = bracketed[1]
    rest = bracketed[2]
  }
  const parts = rest.split(':')
  let published: string | undefined
  let target: string
  if (parts.length === 1) target = parts[0]
  else {
    target = parts.at(-1)!
    published = parts.at(-2)
    if (!bracketed && parts.length > 2) hostIp = parts.slice(0, -2).join(':')
  }
  const mapping: PortMapping = {hostIp: normalizeHostIp(hostIp), published: range(published), target: range(target), text}
  return unknown.length > 0 ? {...mapping, unknown: [...new Set(unknown)].join(', ')} : mapping
}

/** '' for every interface (also written `0.0.0.0` or `::`), else the address. */
function normalizeHostIp(ip: string): string {
  const trimmed = ip.trim().replaceAll(/^\[|\]$/g, '')
  return trimmed === '0.0.0.0' || trimmed === '::' ? '' : trimmed
}
