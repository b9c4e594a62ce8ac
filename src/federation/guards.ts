/**
 * What every federation operation checks first (a federated home; a member), and reading the JSON files members
 * exchange.
 */

import {readFile} from 'node:fs/promises'

import {UserError} from '../errors.js'
import {isMember} from '../home/queries.js'
import type {FederationState, NetworkState} from '../home/types.js'

/** The home's federation; throws UserError in a single-CA home. */
export function requireFederation(state: NetworkState): FederationState {
  if (!state.federation) {
    throw new UserError(`network ${state.network.name} has a single CA, not a federation`, {fix: 'federation commands work in homes made with `tbmesh init-ca --federated`'})
  }
  return state.federation
}

export function requireMember(state: NetworkState, what: string): FederationState {
  const fed = requireFederation(state)
  if (!isMember(fed)) throw new UserError(`${fed.self.organization} is not a member yet and cannot ${what}`, {fix: 'import the version that admits it first (`tbmesh federation import`)'})
  return fed
}

/** The JSON content of a federation file (`what` names it in messages). Throws UserError. */
export async function readJson(file: string, what: string): Promise<unknown> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    throw new UserError(`cannot read ${what} ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {fix: 'check the path'})
  }
  try {
    return JSON.parse(text)
  } catch {
    throw new UserError(`${file} is not JSON`, {fix: 'ask for a fresh copy of the file'})
  }
}
