/**
 * The network state ("home"): the one module that reads and writes a tbmesh home. Nothing else touches its files.
 *
 * Layout of a home (directory 0700):
 * - `state.json`: schema version, network settings, CAs, organizations with their IP blocks, nodes, and the ledger of
 *   every certificate issued. Public data, 0644.
 * - `secrets.json` (0600): network-wide secrets (MultiChain RPC user and password).
 * - `ca/<fingerprint>.crt` and `ca/<fingerprint>.key` (0600, encrypted unless created with --no-passphrase): each CA.
 *   Several CAs fit (rotation, one CA per organization) without a change of layout.
 * - `certs/<fingerprint>.crt`: every certificate issued, named by its fingerprint.
 * - `keys/<node>.key` (0600): host private keys generated on the CA side.
 * - `state.lock`: the inter-process lock (proper-lockfile).
 *
 * Guarantees: every write is atomic (temporary file in the same directory, fsync, rename, fsync of the directory);
 * every read-modify-write runs under the inter-process lock on a freshly loaded state; a certificate file is written
 * only after the ledger row naming it is committed, and a host key before, so a crash at any point leaves a state that
 * loads and in which every certificate file is in the ledger.
 */
import {constants as fsConstants} from 'node:fs'
import {mkdir, open, readFile, readdir, rm, stat} from 'node:fs/promises'
import {join} from 'node:path'
import lockfile from 'proper-lockfile'
import writeFileAtomic from 'write-file-atomic'

import {UserError} from './errors.js'
import {contains, formatCidr, overlaps, parseCidr, parseIp} from './ip.js'

/** The state file's schema version this build reads and writes. */
export const SCHEMA_VERSION = 1

/** Ports and device settings shared by every node of a network. Ports are TCP except `nebula` (UDP). */
export interface NetworkSettings {
  name: string
  /** Overlay network, IPv4 CIDR. */
  cidr: string
  /** Prefix length of each organization's block, e.g. 24. */
  orgPrefix: number
  /** ISO 8601 time of creation. */
  createdAt: string
  ports: {nebula: number; p2p: number; rpc: number; api: number}
  tun: {dev: string; mtu: number}
}

/** A CA of the network. `id` is its fingerprint (hex SHA-256 of the Nebula certificate). */
export interface CaRecord {
  id: string
  name: string
  /** Validity, ISO 8601. */
  notBefore: string
  notAfter: string
  /** True when the key file is `NEBULA ED25519 ENCRYPTED PRIVATE KEY`. */
  encrypted: boolean
  /** The organization this CA belongs to; null for a network-wide CA (single-CA mode). */
  organization: string | null
  /** `active` signs new certificates; other states come with rotation. */
  status: 'active'
}

/** An organization and its IP block. `slug` is the DNS-label form of the name used in groups and node names. */
export interface OrganizationRecord {
  name: string
  slug: string
  /** The organization's block inside the overlay, IPv4 CIDR. */
  block: string
  createdAt: string
}

/** A node of the network (its current identity; its certificates are in the ledger). */
export interface NodeRecord {
  name: string
  /** Organization slug. */
  organization: string
  /** Dotted IPv4. */
  overlayIp: string
  lighthouse: boolean
  origin: boolean
  /** Public underlay `host:port`, when known. */
  endpoint?: string
  /** Extra certificate groups given with --groups. */
  groups: string[]
  createdAt: string
}

/** One ledger row: a certificate as issued. Times are ISO 8601. */
export interface CertificateRecord {
  fingerprint: string
  name: string
  /** Organization slug. */
  organization: string
  overlayIp: string
  /** Every group in the certificate. */
  groups: string[]
  /** `lighthouse`, `origin`. */
  roles: string[]
  notBefore: string
  notAfter: string
  /** Fingerprint of the issuing CA. */
  issuer: string
  issuedAt: string
  /** True when the host private key is held in this home (`keys/<name>.key`). */
  keyInHome: boolean
}

/** Everything in `state.json`. */
export interface NetworkState {
  schemaVersion: typeof SCHEMA_VERSION
  network: NetworkSettings
  cas: CaRecord[]
  organizations: OrganizationRecord[]
  nodes: NodeRecord[]
  certificates: CertificateRecord[]
}

/** Everything in `secrets.json`. */
export interface NetworkSecrets {
  schemaVersion: typeof SCHEMA_VERSION
  rpcUser: string
  /** MultiChain RPC password shared by every node (≥ 32 characters, as TruBudget requires). */
  rpcPassword: string
}

const STATE_FILE = 'state.json'
const SECRETS_FILE = 'secrets.json'
const LOCK_FILE = 'state.lock'

/** How long a lock may go without being refreshed before another process takes it over (ms). */
const LOCK_STALE_MS = 5000

/** The files a new home starts with. */
export interface NewHome {
  state: NetworkState
  secrets: NetworkSecrets
  /** PEM of the CA certificate, and its key (encrypted or plain). */
  caCertificatePem: string
  caKeyPem: string
}

/** Work done under the lock on a fresh copy of the state; see {@link Home.transaction}. */
export interface Transaction {
  /** The freshly loaded state; mutate it in place. It is validated and committed when the callback returns. */
  state: NetworkState
  /** Writes a host private key now (before the commit), atomically, 0600. */
  writeHostKey(node: string, pem: string): Promise<void>
  /** Queues a certificate file, written right after the commit under `certs/<fingerprint>.crt`. */
  addCertificate(fingerprint: string, pem: string): void
}

/**
 * An opened home. Obtain one with {@link Home.open} (existing) or {@link Home.create} (new).
 * `state` is the snapshot loaded at open time or after the last transaction.
 */
export class Home {
  private constructor(
    readonly dir: string,
    public state: NetworkState,
  ) {}

  /**
   * Creates a home in `dir` (made 0700 if missing). Refuses a directory that already holds a state unless `force`,
   * in which case the old CA, ledger and keys are removed first. Throws UserError.
   */
  static async create(dir: string, files: NewHome, opts: {force?: boolean} = {}): Promise<Home> {
    await mkdir(dir, {recursive: true, mode: 0o700})
    return withLock(dir, async () => {
      if (await exists(join(dir, STATE_FILE))) {
        if (!opts.force) {
          throw new UserError(`${dir} already holds a tbmesh network`, {
            fix: 'choose another --home, or pass --force to destroy it and start over',
          })
        }
        for (const entry of [STATE_FILE, SECRETS_FILE, 'ca', 'certs', 'keys']) await rm(join(dir, entry), {recursive: true, force: true})
      }
      validateState(files.state, join(dir, STATE_FILE))
      const caId = files.state.cas[0].id
      await writeAtomic(join(dir, 'ca', `${caId}.key`), files.caKeyPem, 0o600)
      await writeAtomic(join(dir, 'ca', `${caId}.crt`), files.caCertificatePem, 0o644)
      await writeAtomic(join(dir, SECRETS_FILE), json(files.secrets), 0o600)
      // state.json last: a home without it is not a home, so a crash before this point leaves nothing half-made.
      await writeAtomic(join(dir, STATE_FILE), json(files.state), 0o644)
      return new Home(dir, files.state)
    })
  }

  /** Opens an existing home and loads its state. Throws UserError when it is missing or the state is invalid. */
  static async open(dir: string): Promise<Home> {
    const s = await stat(dir).catch(() => undefined)
    if (!s?.isDirectory() || !(await exists(join(dir, STATE_FILE)))) {
      throw new UserError(`no tbmesh network in ${dir}`, {fix: 'run `tbmesh init-ca` first, or point --home / TBMESH_HOME at your network'})
    }
    return new Home(dir, await loadState(dir))
  }

  /**
   * Runs `fn` under the inter-process lock on a freshly loaded state, then validates and commits the state atomically
   * and writes the queued certificate files. If `fn` throws, nothing is committed.
   * Throws UserError when the lock cannot be had (another tbmesh process holds it).
   */
  async transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    return withLock(this.dir, async () => {
      const state = await loadState(this.dir)
      const certificates: Array<[string, string]> = []
      const tx: Transaction = {
        state,
        writeHostKey: (node, pem) => writeAtomic(join(this.dir, 'keys', `${node}.key`), pem, 0o600),
        addCertificate: (fingerprint, pem) => void certificates.push([fingerprint, pem]),
      }
      const result = await fn(tx)
      validateState(state, join(this.dir, STATE_FILE))
      await writeAtomic(join(this.dir, STATE_FILE), json(state), 0o644)
      for (const [fingerprint, pem] of certificates) await writeAtomic(this.certificatePath(fingerprint), pem, 0o644)
      this.state = state
      return result
    })
  }

  /** The network-wide secrets. Throws UserError when the file is missing or malformed. */
  async readSecrets(): Promise<NetworkSecrets> {
    const file = join(this.dir, SECRETS_FILE)
    const data = parseJsonFile(await readText(file), file) as NetworkSecrets
    if (data.schemaVersion !== SCHEMA_VERSION || typeof data.rpcPassword !== 'string' || typeof data.rpcUser !== 'string') {
      throw new UserError(`${file} is not a tbmesh secrets file of schema version ${SCHEMA_VERSION}`, {fix: 'restore it from a backup'})
    }
    return data
  }

  /** The CA that signs new certificates. */
  activeCa(): CaRecord {
    const ca = this.state.cas.find((c) => c.status === 'active')
    if (!ca) throw new UserError(`${join(this.dir, STATE_FILE)} has no active CA`, {fix: 'restore it from a backup'})
    return ca
  }

  /** PEM text of a CA certificate. */
  readCaCertificate(ca: CaRecord): Promise<string> {
    return readText(join(this.dir, 'ca', `${ca.id}.crt`))
  }

  /** PEM text of a CA key (plain or encrypted; see `encrypted`). */
  readCaKey(ca: CaRecord): Promise<string> {
    return readText(join(this.dir, 'ca', `${ca.id}.key`))
  }

  /** PEM text of a host private key held in this home. */
  readHostKey(node: string): Promise<string> {
    return readText(join(this.dir, 'keys', `${node}.key`))
  }

  /** PEM text of an issued certificate. */
  readCertificate(fingerprint: string): Promise<string> {
    return readText(this.certificatePath(fingerprint))
  }

  /** The current (newest) ledger row of a node, or undefined. */
  currentCertificate(node: string): CertificateRecord | undefined {
    let newest: CertificateRecord | undefined
    for (const c of this.state.certificates) if (c.name === node && (!newest || c.issuedAt >= newest.issuedAt)) newest = c
    return newest
  }

  /** The certificate files present in `certs/` (fingerprints), for consistency checks. */
  async certificateFiles(): Promise<string[]> {
    const names = await readdir(join(this.dir, 'certs')).catch(() => [] as string[])
    return names.filter((n) => n.endsWith('.crt')).map((n) => n.slice(0, -4))
  }

  private certificatePath(fingerprint: string): string {
    return join(this.dir, 'certs', `${fingerprint}.crt`)
  }
}

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false)
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    throw new UserError(`cannot read ${file} (${code ?? 'error'})`, {fix: code === 'EACCES' ? 'run tbmesh as the home\'s owner' : 'restore it from a backup'})
  }
}

function parseJsonFile(text: string, file: string): unknown {
  try {
    return JSON.parse(text)
  } catch (error) {
    throw new UserError(`${file} is not valid JSON (${(error as Error).message})`, {fix: 'restore it from a backup or undo the hand edit'})
  }
}

async function loadState(dir: string): Promise<NetworkState> {
  const file = join(dir, STATE_FILE)
  const state = parseJsonFile(await readText(file), file) as NetworkState
  validateState(state, file)
  return state
}

/**
 * Checks the shape and the invariants of a state: schema version, one IP per node, every node inside its
 * organization's block, blocks inside the network and disjoint, unique names, at most one origin.
 * Throws UserError naming `file` and the first problem found.
 */
export function validateState(state: NetworkState, file: string): void {
  const bad = (problem: string): never => {
    throw new UserError(`${file}: ${problem}`, {fix: 'restore it from a backup or undo the hand edit'})
  }
  if (typeof state !== 'object' || state === null || Array.isArray(state)) bad('not a tbmesh state')
  if (state.schemaVersion !== SCHEMA_VERSION) {
    bad(`schema version ${JSON.stringify(state.schemaVersion)} is not supported (this tbmesh reads ${SCHEMA_VERSION})`)
  }
  const {network} = state
  if (typeof network !== 'object' || network === null || typeof network.name !== 'string') bad('"network" is missing')
  for (const key of ['cas', 'organizations', 'nodes', 'certificates'] as const) if (!Array.isArray(state[key])) bad(`"${key}" is not a list`)
  const net = guard(() => parseCidr(network.cidr, 'network.cidr'), bad)
  const blocks = new Map<string, ReturnType<typeof parseCidr>>()
  for (const org of state.organizations) {
    if (typeof org?.slug !== 'string') bad('an organization has no slug')
    const block = guard(() => parseCidr(org.block, `block of ${org.slug}`), bad)
    if (!contains(net, block.base) || block.prefix < net.prefix) bad(`block ${org.block} of ${org.slug} lies outside ${network.cidr}`)
    for (const [other, b] of blocks) if (overlaps(b, block)) bad(`blocks of ${other} and ${org.slug} overlap`)
    if (blocks.has(org.slug)) bad(`organization ${org.slug} is listed twice`)
    blocks.set(org.slug, block)
  }
  const names = new Set<string>()
  const ips = new Map<number, string>()
  let origins = 0
  for (const node of state.nodes) {
    if (typeof node?.name !== 'string') bad('a node has no name')
    if (names.has(node.name)) bad(`node ${node.name} is listed twice`)
    names.add(node.name)
    const block = blocks.get(node.organization)
    if (!block) bad(`node ${node.name} belongs to unknown organization ${node.organization}`)
    const ip = guard(() => parseIp(node.overlayIp, `overlay IP of ${node.name}`), bad)
    if (!contains(block!, ip)) bad(`node ${node.name} (${node.overlayIp}) lies outside its organization's block ${formatCidr(block!)}`)
    const holder = ips.get(ip)
    if (holder) bad(`nodes ${holder} and ${node.name} share the overlay IP ${node.overlayIp}`)
    ips.set(ip, node.name)
    if (node.origin) origins++
  }
  if (origins > 1) bad('more than one origin node')
  for (const cert of state.certificates) {
    if (typeof cert?.fingerprint !== 'string' || !names.has(cert.name)) bad(`ledger row ${cert?.fingerprint ?? '?'} names no known node`)
  }
}

function guard<T>(fn: () => T, bad: (problem: string) => never): T {
  try {
    return fn()
  } catch (error) {
    return bad((error as Error).message)
  }
}

/**
 * Writes `data` to `file` atomically: a temporary file in the same directory, fsync, rename, fsync of the directory.
 * Creates the parent directory (0700) when missing.
 */
async function writeAtomic(file: string, data: string | Buffer, mode: number): Promise<void> {
  const dir = file.slice(0, file.lastIndexOf('/'))
  await mkdir(dir, {recursive: true, mode: 0o700})
  await writeFileAtomic(file, data, {mode, fsync: true})
  const handle = await open(dir, fsConstants.O_RDONLY)
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  let compromised: Error | undefined
  let release: () => Promise<void>
  try {
    release = await lockfile.lock(dir, {
      lockfilePath: join(dir, LOCK_FILE),
      realpath: false,
      stale: LOCK_STALE_MS,
      retries: {retries: 40, factor: 1.2, minTimeout: 25, maxTimeout: 1000, randomize: true},
      onCompromised: (error) => {
        compromised = error
      },
    })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOCKED') {
      throw new UserError(`another tbmesh process is changing ${dir}`, {fix: 'wait for it to finish and run the command again'})
    }
    throw new UserError(`cannot lock ${dir} (${(error as Error).message})`, {fix: 'check that the home exists and is writable'})
  }
  try {
    const result = await fn()
    if (compromised) throw new UserError(`lost the lock on ${dir} (${compromised.message})`, {fix: 'check the state with `tbmesh list` and retry'})
    return result
  } finally {
    await release().catch(() => {})
  }
}
