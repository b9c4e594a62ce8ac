/**
 * Which nodes need an update bundle, and which have installed one: marking nodes after a change that reaches them
 * ({@link markForUpdate}), starting a CA rotation round ({@link startRound}), the installs a round still waits for
 * ({@link pendingInstalls}) and the installs node admins report ({@link confirmInstalls}). Functions of the state only.
 */

import {UsageError, UserError} from '../errors.js'
import type {Home} from '../home/home.js'
import {findNode} from '../home/queries.js'
import type {NetworkState, NodeRecord, RotationState} from '../home/types.js'

/** Marks every node not revoked as needing an update bundle; returns their names. */
export function markForUpdate(state: NetworkState): string[] {
  const names: string[] = []
  for (const node of state.nodes) {
    if (node.revoked) continue
    node.updatePending = true
    names.push(node.name)
  }
  return names
}

/**
 * Starts round `rotation.round` of a CA rotation: records it in the state, marks every node not revoked for an update,
 * and notes for each the sequence number of the first bundle that will carry the round (its next one), so that
 * {@link pendingInstalls} can tell when its admin has installed it.
 */
export function startRound(state: NetworkState, rotation: RotationState): void {
  state.rotation = rotation
  for (const node of state.nodes) {
    if (node.revoked) continue
    node.updatePending = true
    node.roundSequence = (node.sequence ?? 0) + 1
  }
}

/**
 * The nodes (not revoked) whose admins have not yet reported installing the bundle that carries the current rotation
 * round (`tbmesh confirm-install`). Nodes added during the round wait for nothing: their join bundle carries it.
 */
export function pendingInstalls(state: NetworkState): NodeRecord[] {
  return state.nodes.filter((n) => !n.revoked && n.roundSequence !== undefined && (n.installed ?? 0) < n.roundSequence)
}

/**
 * Refuses (UserError naming at most five nodes) to start `what` while nodes have not installed the current round,
 * unless `force`. Returns the names it forced past.
 */
export function requireRoundInstalled(state: NetworkState, what: string, force = false): string[] {
  const waiting = pendingInstalls(state).map((n) => n.name)
  if (waiting.length === 0 || force) return waiting
  const names = waiting.length > 5 ? `${waiting.slice(0, 5).join(', ')} and ${waiting.length - 5} more` : waiting.join(', ')
  const round = state.rotation ? `round ${state.rotation.round} of the CA rotation` : 'the last CA rotation round'
  throw new UserError(`cannot ${what}: ${names} ${waiting.length === 1 ? 'has' : 'have'} not installed ${round}`, {
    fix: 'ship `tbmesh export-update --all`, record each install with `tbmesh confirm-install NODE` (the receipt `install` prints), or pass --force',
  })
}

/** One install a node's admin reported: the node and the bundle sequence installed (default: the last one exported). */
export interface InstallReport {
  name: string
  sequence?: number
}

/** What `tbmesh confirm-install` reports. */
export interface ConfirmInstallResult {
  confirmed: Array<{name: string; installed: number}>
  /** Nodes the current rotation round still waits for. */
  waitingFor: string[]
}

/**
 * Records installs reported by node admins (the receipts `tbmesh install` prints): each node's `installed` becomes the
 * reported sequence when that is higher. Throws UserError for an unknown or revoked node and UsageError for a sequence
 * that was never exported to the node.
 */
export function confirmInstalls(state: NetworkState, reports: InstallReport[]): ConfirmInstallResult {
  const confirmed: ConfirmInstallResult['confirmed'] = []
  for (const report of reports) {
    const node = findNode(state, report.name)
    if (node.revoked) throw new UserError(`node ${node.name} was revoked on ${node.revoked.at}`, {fix: 'leave it out'})
    const exported = node.sequence ?? 0
    const sequence = report.sequence ?? exported
    if (!Number.isSafeInteger(sequence) || sequence < 1 || sequence > exported) {
      throw new UsageError(`${node.name}@${report.sequence ?? ''} is not a bundle exported to ${node.name} (its last is ${exported === 0 ? 'none' : exported})`, {
        fix: 'copy the receipt `tbmesh install` printed on the node, e.g. acme-1@3',
      })
    }
    node.installed = Math.max(node.installed ?? 0, sequence)
    confirmed.push({name: node.name, installed: node.installed})
  }
  return {confirmed, waitingFor: pendingInstalls(state).map((n) => n.name)}
}

/**
 * Parses a receipt as `tbmesh install` prints it, `NODE@SEQUENCE`, or a bare `NODE` (its last exported bundle).
 * Throws UsageError otherwise.
 */
export function parseReceipt(text: string): InstallReport {
  const match = /^([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:@([1-9]\d{0,9}))?$/.exec(text)
  if (!match) throw new UsageError(`${JSON.stringify(text)} is not a receipt NODE@SEQUENCE`, {fix: 'copy the receipt `tbmesh install` printed on the node, e.g. acme-1@3'})
  return {name: match[1]!, ...(match[2] ? {sequence: Number(match[2])} : {})}
}

/** Records installs in `home` (one transaction); see {@link confirmInstalls}. */
export async function recordInstalls(home: Home, reports: InstallReport[]): Promise<ConfirmInstallResult> {
  if (reports.length === 0) throw new UsageError('name the nodes whose admins reported an install', {fix: 'e.g. tbmesh confirm-install acme-1@3 umbrella-1@2'})
  return home.transaction(async ({state}) => confirmInstalls(state, reports))
}
