/**
 * Renders the environment file of a node's TruBudget blockchain container from `templates/blockchain.env`.
 *
 * Variable names are TruBudget's (`blockchain/src/envVarsSchema.js` in openkfw/TruBudget): a container with
 * `P2P_HOST` set joins the chain at that IP (a "beta"); without it, it creates the chain (the "alpha", tbmesh's origin).
 *
 * Format: `NAME=value` lines read by `docker run --env-file` (which takes the value literally, quotes included) and
 * by docker compose `env_file:` (dotenv rules: strips quotes, interpolates `$`, drops ` #` comments). Values are
 * therefore written unquoted and refused when the two readers would disagree about them.
 */

import {safeLine} from '../lib/text.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, assertPort, fillPlaceholders, originIp, readTemplate, UnsafeValueError} from './template.js'

/** TruBudget requires `MULTICHAIN_RPC_PASSWORD` to have at least this many characters. */
export const MIN_RPC_PASSWORD_LENGTH = 32

/**
 * `value` unchanged when `docker run --env-file` and docker compose both read it back as exactly `value`.
 * @throws UnsafeValueError for line breaks and other control characters, quotes, `` ` ``, `$`, `#`, `\`, and leading
 *   or trailing blanks.
 */
export function envValue(name: string, value: string): string {
  const fix = 'use letters, digits, blanks and - _ . : / @ + = , only'
  if (value === '') throw new UnsafeValueError(name, 'is empty', 'set a value')
  if (/[\r\n\u2028\u2029]/.test(value)) throw new UnsafeValueError(name, 'contains a line break', fix)
  if (/[\u0000-\u001f\u007f]/.test(value)) throw new UnsafeValueError(name, 'contains a control character', fix)
  const bad = /["'`$#\\]/.exec(value)
  if (bad) throw new UnsafeValueError(name, `contains ${JSON.stringify(bad[0])}`, fix)
  if (value.trim() !== value) throw new UnsafeValueError(name, 'starts or ends with a blank', fix)
  return value
}

/**
 * The text of the node's `blockchain.env`: `ORGANIZATION`, `EXTERNAL_IP` (own overlay IP), `P2P_PORT`; on every node
 * but the origin also `P2P_HOST` and `API_HOST` (the origin's overlay IP), `API_PROTOCOL=http`, `API_PORT`; then
 * `MULTICHAIN_RPC_PORT`, `MULTICHAIN_RPC_USER`, `MULTICHAIN_RPC_PASSWORD` and `RPC_ALLOW_IP=127.0.0.1`.
 *
 * @throws NoOriginError for a non-origin node while the network has no origin (`p.originOverlayIp` unset).
 * @throws UnsafeValueError for an empty value, an RPC password shorter than {@link MIN_RPC_PASSWORD_LENGTH},
 *   or a value {@link envValue} refuses.
 * @throws Error when the profile is malformed (not an IPv4 address, a port out of range).
 */
export function renderBlockchainEnv(p: NodeProfile): string {
  const origin = assertIPv4(originIp(p), p.node.origin ? 'node.overlayIp' : 'originOverlayIp')
  if (p.rpc.password.length < MIN_RPC_PASSWORD_LENGTH) {
    throw new UnsafeValueError(
      'MULTICHAIN_RPC_PASSWORD',
      `has ${p.rpc.password.length} characters, TruBudget needs at least ${MIN_RPC_PASSWORD_LENGTH}`,
      'use a longer RPC password',
    )
  }
  let joinSettings: string
  if (p.node.origin) {
    joinSettings = '# Origin (alpha) node: it creates TrubudgetChain, so P2P_HOST and API_* stay unset.'
  } else {
    joinSettings = [
      '# Joins the chain at the origin node and registers at its TruBudget API, both over the overlay.',
      `P2P_HOST=${origin}`,
      'API_PROTOCOL=http',
      `API_HOST=${origin}`,
      `API_PORT=${assertPort(p.ports.api, 'ports.api')}`,
    ].join('\n')
  }
  return fillPlaceholders(readTemplate('blockchain.env'), {
    node: safeLine(p.node.name),
    network: safeLine(JSON.stringify(p.network.name)),
    organization: envValue('ORGANIZATION', p.node.organization),
    overlayIp: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    p2pPort: assertPort(p.ports.p2p, 'ports.p2p'),
    joinSettings,
    rpcPort: assertPort(p.ports.rpc, 'ports.rpc'),
    rpcUser: envValue('MULTICHAIN_RPC_USER', p.rpc.user),
    rpcPassword: envValue('MULTICHAIN_RPC_PASSWORD', p.rpc.password),
  })
}
