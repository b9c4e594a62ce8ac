/**
 * Registrars: the nodes where joining nodes register (TruBudget's `POST /api/network.registerNode`) and join the chain:
 * the origin, and every trusted node added with `--registrar`. Which node is one, and which registrar a node names.
 */

import {UsageError} from '../errors.js'
import type {NetworkState, NodeRecord} from '../home/types.js'
import {contains, formatIp, parseCidr, parseIp} from '../lib/ip.js'

/** Whether joining nodes may register at `node`: the origin, and every node added with `--registrar`. */
export function isRegistrar(node: Pick<NodeRecord, 'origin' | 'registrar'>): boolean {
  return node.origin || Boolean(node.registrar)
}

/**
 * The overlay IP of the registrar `ref` names (`--register-at`): a node of this home that is a registrar (by name or
 * overlay IP), or, for another organization's registrar in a federated network, an overlay IP inside the overlay.
 * Throws UsageError otherwise, or when it is the node itself (`self`).
 */
export function registrarIp(state: NetworkState, ref: string, self: string): string {
  const fix = 'name a registrar (add-node --registrar) or the origin, or give its overlay IP'
  const node = state.nodes.find((n) => n.name === ref || n.overlayIp === ref)
  if (node) {
    if (node.revoked) throw new UsageError(`--register-at ${ref}: node ${node.name} was revoked`, {fix})
    if (!isRegistrar(node)) throw new UsageError(`--register-at ${ref}: node ${node.name} is not a registrar`, {fix})
    return node.overlayIp
  }
  const ip = parseIp(ref, '--register-at')
  if (!contains(parseCidr(state.network.cidr), ip)) throw new UsageError(`--register-at ${ref} is neither a node of this network nor inside its overlay ${state.network.cidr}`, {fix})
  if (!state.federation) throw new UsageError(`--register-at ${ref} is no node of this network`, {fix})
  if (formatIp(ip) === self) throw new UsageError('a node cannot register at itself', {fix: 'leave --register-at out'})
  return formatIp(ip)
}

