/**
 * Whether the underlay guard (`host/underlay-guard.nft`, rendered by `src/render/underlay-guard.ts`) is loaded in the
 * kernel and guards this installation: doctor's `underlay-guard` check. It reads the table with
 * `nft -j list table inet tbmesh_guard` (libnftables' JSON, schema version 1: a list of `{"table"|"chain"|"rule": …}`
 * objects; a rule's `expr` is a list of statements such as `{"match": {"op", "left", "right"}}`, `{"counter": …}`,
 * `{"drop": null}`; a one-element set is written as its element alone). Reading it needs CAP_NET_ADMIN.
 */

import {runChild} from '../lib/spawn.js'
import {lastLine} from '../lib/text.js'
import {GUARD_CHAIN, GUARD_TABLE} from '../render/underlay-guard.js'
import type {Verdict} from './compose-ports.js'
import {onPath} from './nebula.js'

/** What the loaded guard must do for this installation. */
export interface ExpectedGuard {
  /** The node's overlay IPs (from its host certificate), each of which must be guarded; empty when unknown. */
  overlayIps: string[]
  /** Nebula's `tun.dev`: with `lo`, the only interfaces a guarded packet may arrive on; undefined when unknown. */
  tunDev?: string
  /** Why the overlay IPs or the tun device are unknown (e.g. `config.yml names no tun.dev`), if they are. */
  unknown?: string
  /** The installation's guard file, for the fix in messages. */
  file: string
}

/** Highest nftables priority that runs before connection tracking (-200) and DNAT (-100): `raw`. */
const RAW_PRIORITY = -300

/** Where Debian installs nft, for a PATH without the sbin directories (a user's shell). */
const SBIN = ['/usr/sbin', '/sbin']

/**
 * The verdict on the loaded guard: pass when table `inet tbmesh_guard` has a `prerouting` chain (type filter, hook
 * prerouting, priority raw or earlier, policy accept) whose rules are all guard rules (a drop with nothing but address
 * and interface matches and a counter), together dropping every packet for each of `expected.overlayIps` that does not
 * arrive on `expected.tunDev` or `lo`; fail otherwise — nft missing, the table not loaded, loaded for another address
 * or device, a rule that could let a packet through first, no permission to read it ("run as root"), or what it must
 * guard unknown (`expected.unknown`).
 * Never throws.
 */
export async function checkUnderlayGuard(expected: ExpectedGuard): Promise<[Verdict, string]> {
  const nft = await onPath('nft', SBIN)
  if (!nft) return ['fail', `nft is not installed (apt-get install nftables): the underlay guard ${expected.file} cannot be loaded`]
  const table = `${GUARD_TABLE.family} ${GUARD_TABLE.name}`
  const listed = await runChild(nft, ['-j', 'list', 'table', GUARD_TABLE.family, GUARD_TABLE.name], {timeoutMs: 10_000})
  const ips = expected.overlayIps.join(', ') || 'its overlay IP'
  if (listed.exitCode !== 0) {
    // nft's stderr is libnftables' message; iptables-nft's warnings may come with it: look for the reason only.
    if (/Operation not permitted|you must be root/i.test(listed.output)) return ['fail', 'cannot check the underlay guard: run tbmesh doctor as root']
    if (/No such file or directory/i.test(listed.output)) {
      return ['fail', `the underlay guard is not loaded: any host on the underlay that routes ${ips} to this one reaches it past Nebula; load it: nft -f ${expected.file}`]
    }
    return ['fail', `cannot read the underlay guard (nft -j list table ${table}: ${lastLine(listed.output || (listed.failure ?? ''))})`]
  }
  const {tunDev} = expected
  if (expected.unknown || tunDev === undefined || expected.overlayIps.length === 0) {
    return ['fail', `the underlay guard is loaded, but cannot be checked: ${expected.unknown ?? 'the overlay IP or the tun device is unknown'}`]
  }
  let items: unknown[]
  try {
    items = (JSON.parse(listed.output) as {nftables?: unknown[]}).nftables ?? []
  } catch {
    return ['fail', `cannot read the underlay guard: nft -j printed no JSON (${lastLine(listed.output)})`]
  }
  const chain = items.map((i) => (i as {chain?: NftChain}).chain).find((c) => c?.name === GUARD_CHAIN)
  const reload = `load the installation's guard again: nft -f ${expected.file}`
  if (!chain || chain.type !== 'filter' || chain.hook !== 'prerouting' || typeof chain.prio !== 'number' || chain.prio > RAW_PRIORITY || chain.policy !== 'accept') {
    return ['fail', `table ${table} has no chain ${GUARD_CHAIN} hooked at prerouting with priority raw: ${reload}`]
  }
  const rules = items.map((i) => (i as {rule?: NftRule}).rule).filter((r): r is NftRule => r?.chain === GUARD_CHAIN)
  const guarded = new Set<string>()
  let dropped = 0
  for (const rule of rules) {
    const read = guardRule(rule)
    if (!read) return ['fail', `table ${table} holds a rule that is not the guard's, which may let packets through first: ${reload}`]
    dropped += read.packets
    const exempt = [...read.exempt].sort()
    if (exempt.length === 2 && exempt.includes('lo') && exempt.includes(tunDev)) for (const ip of read.addresses) guarded.add(ip)
  }
  const missing = expected.overlayIps.filter((ip) => !guarded.has(ip))
  if (missing.length > 0) {
    return ['fail', `the loaded underlay guard does not drop packets for ${missing.join(', ')} that arrive off ${tunDev} (it was loaded for another node or device): ${reload}`]
  }
  return ['pass', `the underlay guard is loaded: packets for ${ips} are dropped unless they arrive on ${tunDev} or lo (${dropped} dropped so far)`]
}

interface NftChain {
  name?: string
  type?: string
  hook?: string
  prio?: number
  policy?: string
}

interface NftRule {
  chain?: string
  expr?: unknown[]
}

/**
 * A rule of the guard's shape, read: the addresses it matches (`ip daddr` / `ip6 daddr` equal to one or a set), the
 * interfaces it exempts (`iifname !=` one or a set), its counter; undefined for any other rule (another verdict, or a
 * statement the guard does not have).
 */
function guardRule(rule: NftRule): {addresses: string[]; exempt: string[]; packets: number} | undefined {
  let addresses: string[] | undefined
  let exempt: string[] | undefined
  let packets = 0
  let drops = false
  for (const statement of rule.expr ?? []) {
    const s = statement as {match?: {op?: string; left?: {payload?: {protocol?: string; field?: string}; meta?: {key?: string}}; right?: unknown}; counter?: {packets?: number}; drop?: null}
    if (s.match) {
      const {op, left, right} = s.match
      const values = typeof right === 'string' ? [right] : (right as {set?: unknown[]} | undefined)?.set
      if (!Array.isArray(values) || !values.every((v) => typeof v === 'string')) return undefined
      if (op === '==' && (left?.payload?.protocol === 'ip' || left?.payload?.protocol === 'ip6') && left.payload.field === 'daddr') addresses = values as string[]
      else if (op === '!=' && left?.meta?.key === 'iifname') exempt = values as string[]
      else return undefined
    } else if (s.counter) packets = typeof s.counter.packets === 'number' ? s.counter.packets : 0
    else if ('drop' in s) drops = true
    else return undefined
  }
  return drops && addresses && exempt ? {addresses, exempt, packets} : undefined
}
