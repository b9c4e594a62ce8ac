/**
 * Declarative networks: a YAML (or JSON) file names the network, its organizations and their nodes; `tbmesh apply`
 * plans what is missing, creates it in one transaction, and writes join bundles for the new nodes. Existing nodes are
 * never changed silently: a difference is refused with what differs and how to change it.
 */

import {readFile} from 'node:fs/promises'
import {resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {UsageError, UserError} from '../errors.js'
import type {Home} from '../home/home.js'
import {isRelay} from '../home/queries.js'
import type {AccessLevel, NetworkState} from '../home/types.js'
import {parseDuration} from '../lib/duration.js'
import {checkNewFile, syncFiles} from '../lib/files.js'
import {organizationConflict, organizationNameProblem, slugify, slugTwin} from '../lib/names.js'
import {type AddNodeOptions, type AddNodeResult, addNodes} from './add-node.js'
import type {PortChoice} from './ca.js'
import {type ExportBundleResult, type PackedNodeBundle, packNodeBundle, writeNodeBundle} from './export.js'
import {networkPorts} from './node-profile.js'

/** A node as the network file describes it. Durations as text (`365d`). */
export interface NetworkFileNode {
  name: string
  roles?: Array<'lighthouse' | 'origin' | 'registrar'>
  /** The registrar the node joins and registers at (name or overlay IP); default the origin. */
  registerAt?: string
  /** Whether the node relays (`relay.am_relay`); default: when it is a lighthouse. */
  relay?: boolean
  endpoint?: string
  ip?: string
  groups?: string[]
  access?: AccessLevel
  duration?: string
}

/**
 * The network file (`templates/network.schema.json` is its JSON Schema). `network.orgPrefix` and
 * `network.caDuration` matter only when `apply` creates the network.
 */
export interface NetworkFile {
  network: {name: string; cidr: string; orgPrefix?: number; caDuration?: string; ports?: PortChoice; allowDockerOverlap?: boolean}
  organizations: Array<{name: string; access?: AccessLevel; nodes: NetworkFileNode[]}>
}

const SCHEMA_URL = new URL('../../templates/network.schema.json', import.meta.url)

/**
 * Reads and validates a network file (YAML or JSON). Throws UserError naming the file, the line and the key of the
 * first problem, e.g. `network.yaml:12: organizations[0].nodes[1].roles[0] must be one of lighthouse, origin`.
 * Organization names are checked as `add-node` checks them (`organizationNameProblem` in `lib/names.ts`), two names of
 * the file with one slug are refused, and the names are returned NFC-normalized.
 */
export async function readNetworkFile(file: string): Promise<NetworkFile> {
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new UserError(`cannot read ${file} (${error.code ?? 'error'})`, {fix: 'check the -f path'})
  })
  const {LineCounter, parseDocument} = await import('yaml')
  const lines = new LineCounter()
  const doc = parseDocument(text, {lineCounter: lines, prettyErrors: false, uniqueKeys: true})
  const fix = 'see templates/network.schema.json or the README for the format'
  if (doc.errors.length > 0) {
    const error = doc.errors[0]
    const line = lines.linePos(error.pos[0]).line
    throw new UserError(`${file}:${line}: ${error.message.split('\n')[0]}`, {fix})
  }
  const data = doc.toJS() as unknown
  const {Ajv} = await import('ajv')
  const ajv = new Ajv({allErrors: false, strict: true})
  const validate = ajv.compile(JSON.parse(await readFile(fileURLToPath(SCHEMA_URL), 'utf8')))
  if (!validate(data)) {
    const error = validate.errors![0]
    const segments = error.instancePath.split('/').slice(1).map((s) => (/^\d+$/.test(s) ? Number(s) : s))
    const extra = error.keyword === 'additionalProperties' ? (error.params as {additionalProperty: string}).additionalProperty : undefined
    const path = [...segments, ...(extra ? [extra] : [])]
    const node = (doc.getIn(path, true) ?? doc.getIn(segments, true)) as {range?: [number, number]} | undefined
    const line = node?.range ? lines.linePos(node.range[0]).line : 1
    const key = path.reduce<string>((acc, s) => (typeof s === 'number' ? `${acc}[${s}]` : acc ? `${acc}.${s}` : String(s)), '') || '(top level)'
    const message =
      error.keyword === 'additionalProperties'
        ? 'is not a known key'
        : error.keyword === 'enum'
          ? `must be one of ${(error.params as {allowedValues: string[]}).allowedValues.join(', ')}`
          : error.keyword === 'required'
            ? `needs "${(error.params as {missingProperty: string}).missingProperty}"`
            : (error.message ?? 'is invalid')
    throw new UserError(`${file}:${line}: ${key} ${message}`, {fix})
  }
  // Organization names: the one validator every name passes (lib/names.ts), NFC-normalized as add-node stores them.
  const network = data as NetworkFile
  const seen: Array<{name: string; slug: string}> = []
  for (const [i, org] of network.organizations.entries()) {
    const at = (): number => lines.linePos((doc.getIn(['organizations', i, 'name'], true) as {range?: [number, number]} | undefined)?.range?.[0] ?? 0).line
    const name = org.name.normalize('NFC').trim()
    const problem = organizationNameProblem(name)
    if (problem) throw new UserError(`${file}:${at()}: organizations[${i}].name ${JSON.stringify(org.name)} is not a valid organization name (it ${problem})`, {fix})
    const twin = slugTwin(seen, name)
    if (twin) throw new UserError(`${file}:${at()}: organizations[${i}].name: ${organizationConflict(name, twin.name).line}`)
    seen.push({name, slug: slugify(name)})
    org.name = name
  }
  return network
}

/** A node the file names that differs from the network's record of it. */
export interface NodeDifference {
  node: string
  /** One entry per differing field, e.g. `endpoint: 203.0.113.7:4242 → 203.0.113.8:4242`. */
  changes: string[]
}

/** What `apply` would do. */
export interface ApplyPlan {
  /** The home holds no network yet: apply creates it (CA, state) from `network`. */
  createNetwork: boolean
  /** Nodes to add, in file order. */
  add: Array<{name: string; organization: string; roles: string[]}>
  /** Nodes already present as described. */
  unchanged: string[]
  /** Nodes present but described differently: apply refuses to change them. */
  differs: NodeDifference[]
  /** Nodes of the network the file does not name: apply leaves them alone. */
  notInFile: string[]
}

/**
 * Compares the file with the network (`state`, undefined when the home is empty). Throws UserError when the file names
 * another network or CIDR than the home holds, names a node twice, or names an organization that shares its slug with
 * another one of the network under another name.
 */
export function planApply(state: NetworkState | undefined, file: NetworkFile): ApplyPlan {
  if (state && (state.network.name !== file.network.name || state.network.cidr !== file.network.cidr)) {
    throw new UserError(
      `the file describes network ${file.network.name} (${file.network.cidr}), but the home holds ${state.network.name} (${state.network.cidr})`,
      {fix: 'point --home at the right network, or fix network.name / network.cidr'},
    )
  }
  for (const org of file.organizations) {
    const twin = slugTwin(state?.organizations ?? [], org.name)
    if (twin) throw organizationConflict(org.name, twin.name)
  }
  if (state && file.network.ports) {
    const have = networkPorts(state.network.ports)
    for (const [key, port] of Object.entries(file.network.ports) as Array<[keyof PortChoice, number]>) {
      if (have[key] !== port) {
        throw new UserError(`the file gives network.ports.${key} ${port}, but the network uses ${have[key]}`, {fix: 'ports are chosen when the network is created: fix network.ports'})
      }
    }
  }
  const plan: ApplyPlan = {createNetwork: !state, add: [], unchanged: [], differs: [], notInFile: []}
  const named = new Set<string>()
  for (const org of file.organizations) {
    for (const node of org.nodes) {
      if (named.has(node.name)) throw new UserError(`the file names node ${node.name} twice`, {fix: 'give every node its own name'})
      named.add(node.name)
      const existing = state?.nodes.find((n) => n.name === node.name)
      if (!existing) {
        const relay = node.relay ?? node.roles?.includes('lighthouse') ?? false
        plan.add.push({name: node.name, organization: org.name, roles: [...(node.roles ?? []), ...(relay ? ['relay'] : [])]})
        continue
      }
      const changes = differences(state!, existing.name, org, node)
      if (changes.length > 0) plan.differs.push({node: node.name, changes})
      else plan.unchanged.push(node.name)
    }
  }
  plan.notInFile = (state?.nodes ?? []).filter((n) => !named.has(n.name) && !n.revoked).map((n) => n.name)
  return plan
}

function differences(state: NetworkState, name: string, org: NetworkFile['organizations'][number], wanted: NetworkFileNode): string[] {
  const node = state.nodes.find((n) => n.name === name)!
  const changes: string[] = []
  const show = (v: unknown) => (v === undefined || (Array.isArray(v) && v.length === 0) ? '(none)' : Array.isArray(v) ? v.join(',') : String(v))
  const compare = (field: string, have: unknown, want: unknown) => {
    if (show(have) !== show(want)) changes.push(`${field}: ${show(have)} → ${show(want)}`)
  }
  if (node.revoked) changes.push(`revoked on ${node.revoked.at}`)
  compare('organization', node.organization, slugify(org.name))
  const roles = (n: {lighthouse: boolean; origin: boolean; registrar?: boolean}) => [
    ...(n.lighthouse ? ['lighthouse'] : []),
    ...(n.origin ? ['origin'] : []),
    ...(n.registrar ? ['registrar'] : []),
  ]
  const has = (role: 'lighthouse' | 'origin' | 'registrar') => wanted.roles?.includes(role) ?? false
  compare('roles', roles(node), roles({lighthouse: has('lighthouse'), origin: has('origin'), registrar: has('registrar')}))
  const registerAt = wanted.registerAt === undefined ? undefined : (state.nodes.find((n) => n.name === wanted.registerAt)?.overlayIp ?? wanted.registerAt)
  compare('registerAt', node.registerAt, registerAt)
  compare('relay', isRelay(node), wanted.relay ?? wanted.roles?.includes('lighthouse') ?? false)
  compare('endpoint', node.endpoint, wanted.endpoint)
  if (wanted.ip !== undefined) compare('ip', node.overlayIp, wanted.ip)
  compare('groups', node.groups, wanted.groups ?? [])
  compare('access', node.access, wanted.access ?? org.access ?? (has('origin') || has('registrar') ? 'trusted' : 'managed'))
  return changes
}

/** The add-node options of every node the plan adds, in file order. */
function nodesToAdd(file: NetworkFile, plan: ApplyPlan): AddNodeOptions[] {
  const adding = new Set(plan.add.map((a) => a.name))
  const list: AddNodeOptions[] = []
  for (const org of file.organizations) {
    for (const node of org.nodes) {
      if (!adding.has(node.name)) continue
      list.push({
        org: org.name,
        name: node.name,
        ip: node.ip,
        lighthouse: node.roles?.includes('lighthouse'),
        relay: node.relay,
        origin: node.roles?.includes('origin'),
        registrar: node.roles?.includes('registrar'),
        registerAt: node.registerAt,
        endpoint: node.endpoint,
        groups: node.groups,
        access: node.access ?? org.access,
        durationSeconds: node.duration === undefined ? undefined : parseDuration(node.duration, `duration of ${node.name}`),
      })
    }
  }
  return list
}

/** What `tbmesh apply` reports. */
export interface ApplyResult {
  plan: ApplyPlan
  /** False for a dry run or when there was nothing to do. */
  applied: boolean
  added: AddNodeResult[]
  /** Join bundles written for the added nodes (with `--out`). */
  bundles: ExportBundleResult[]
}

/**
 * Carries out a plan on an existing home (create the network first with `initCa` when `plan.createNetwork`): adds
 * every planned node and, with `outDir`, packs their join bundles, all in one transaction, then writes (and encrypts)
 * the bundles once it committed, outside the home's lock. `progress` is told each node as it is done. Throws UserError
 * when the plan has differences, or a bundle file is in the way without `force` (nothing is changed then).
 */
export async function applyPlan(
  home: Home,
  caKey: Buffer,
  file: NetworkFile,
  plan: ApplyPlan,
  opts: {outDir?: string; bundlePassphrase: Buffer | null; force?: boolean; progress?: (phase: 'add' | 'bundle', done: number, total: number) => void},
): Promise<ApplyResult> {
  refuseDifferences(plan)
  const suffix = opts.bundlePassphrase ? '.tbmesh.tar.gz.age' : '.tbmesh.tar.gz'
  const outOf = (node: string): string => resolve(opts.outDir!, `${node}${suffix}`)
  // Packed and signed in the transaction that adds the nodes (advancing their sequence numbers); refused there, before
  // the commit, when a file is in the way; written and encrypted after the commit, outside the home's lock.
  const packed: Array<[string, PackedNodeBundle]> = []
  const added = await addNodes(home, caKey, nodesToAdd(file, plan), {
    progress: (done, total) => opts.progress?.('add', done, total),
    finish: async (tx, nodes) => {
      if (opts.outDir === undefined) return
      for (const node of nodes) {
        checkNewFile(outOf(node.name), {force: opts.force, what: 'the bundle'})
        packed.push([outOf(node.name), await packNodeBundle(home, tx, node.name, 'join', {caKey})])
      }
    },
  })
  const bundles: ExportBundleResult[] = []
  for (const [out, bundle] of packed) {
    bundles.push(await writeNodeBundle(out, bundle, {passphrase: opts.bundlePassphrase, force: opts.force, sync: false}))
    opts.progress?.('bundle', bundles.length, packed.length)
  }
  await syncFiles(bundles.map((b) => b.path))
  return {plan, applied: added.length > 0, added, bundles}
}

/** Throws UserError naming the first node the file describes differently, and how to change it. */
export function refuseDifferences(plan: ApplyPlan): void {
  if (plan.differs.length === 0) return
  const first = plan.differs[0]
  const more = plan.differs.length > 1 ? ` (and ${plan.differs.length - 1} more node(s))` : ''
  throw new UsageError(`node ${first.node} differs from the file: ${first.changes.join('; ')}${more}`, {
    fix: 'tbmesh does not change a node in place: revoke it and add it under a new name, or fix the file (renew changes only the validity)',
  })
}
