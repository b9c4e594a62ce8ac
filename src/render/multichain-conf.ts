/**
 * Renders a node's MultiChain `multichain.conf` from `templates/multichain.conf` (`{{name}}` placeholders).
 *
 * Format: Bitcoin-style `key=value` lines (MultiChain inherits Bitcoin's config reader, which drops everything after a
 * `#` and trims whitespace), so values with `#`, line breaks or surrounding blanks are refused rather than mangled.
 */

import {safeLine} from '../lib/text.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, assertPort, fillPlaceholders, readTemplate, UnsafeValueError} from './template.js'

/** @throws UnsafeValueError when `value` would not survive MultiChain's config reader unchanged. */
function confValue(setting: string, value: string, extra: {forbid?: string} = {}): string {
  const fix = 'use letters, digits and - _ . only'
  if (value === '') throw new UnsafeValueError(setting, 'is empty', fix)
  if (/[\u0000-\u001f\u007f\u2028\u2029]/.test(value)) throw new UnsafeValueError(setting, 'contains a control character or line break', fix)
  if (value.trim() !== value) throw new UnsafeValueError(setting, 'starts or ends with a blank', fix)
  for (const c of `#${extra.forbid ?? ''}`) {
    if (value.includes(c)) throw new UnsafeValueError(setting, `contains ${JSON.stringify(c)}`, fix)
  }
  return value
}

/**
 * The text of the node's `multichain.conf` for a host without Docker (see the template for when MultiChain reads it):
 * `rpcport`, `rpcuser`, `rpcallowip=127.0.0.1`, `bind` and `externalip` = the node's overlay IP, `port` = `ports.p2p`.
 * No `rpcpassword`: it is the node's own, and `tbmesh install` appends it ({@link multichainPasswordLine}).
 *
 * @throws UnsafeValueError when the RPC user contains `#`, `:` (HTTP basic auth splits there), a line break, or
 *   surrounding blanks.
 * @throws Error when the profile is malformed (not an IPv4 overlay IP, a port out of range).
 */
export function renderMultichainConf(p: NodeProfile): string {
  return fillPlaceholders(readTemplate('multichain.conf'), {
    node: safeLine(p.node.name),
    network: safeLine(JSON.stringify(p.network.name)),
    rpcPort: assertPort(p.ports.rpc, 'ports.rpc'),
    rpcUser: confValue('rpcuser', p.rpc.user, {forbid: ':'}),
    overlayIp: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    p2pPort: assertPort(p.ports.p2p, 'ports.p2p'),
  })
}

/**
 * The `rpcpassword=` line `tbmesh install` appends to the installed multichain.conf, with the node's own RPC password.
 * @throws UnsafeValueError when the password would not survive MultiChain's config reader unchanged.
 */
export function multichainPasswordLine(password: string): string {
  return `rpcpassword=${confValue('rpcpassword', password)}\n`
}
