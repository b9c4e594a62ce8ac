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
 * - `state.lock`: the inter-process lock (proper-lockfile), holding an empty `holder-<pid>-<start>-<machine>` file.
 *
 * Guarantees: every write is atomic (temporary file in the same directory, fsync, rename, fsync of the directory);
 * every read-modify-write runs under the inter-process lock on a freshly loaded state. A transaction writes its host
 * keys and its certificates (as `certs/<fingerprint>.crt.pending`) first, then commits `state.json`, then renames the
 * certificates into place; the next transaction finishes or removes what a killed one left (pending certificates,
 * temporary files, keys of nodes that were never committed). So a crash at any point leaves a state that loads, in
 * which every certificate file is in the ledger and every ledger row's certificate is on disk (at worst still pending).
 */
import fs from 'node:fs'
import {createHash} from 'node:crypto'
import {mkdir, readFile, readdir, rename, rm, stat} from 'node:fs/promises'
import {hostname} from 'node:os'
import {dirname, join} from 'node:path'
import lockfile from 'proper-lockfile'
import writeFileAtomic from 'write-file-atomic'

import {UsageError, UserError} from './errors.js'
import {fsyncDir, syncFiles} from './files.js'
import {canonicalJson, checkDescriptor, checkMemberCa, type Member, type SignedDescriptor} from './descriptor.js'
import {fingerprint as fingerprintOf} from './nebula/index.js'
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
  /**
   * `active`: signs new certificates and bundles. `retiring`: the previous CA during a rotation, still in the trust
   * bundle. `retired`: dropped from the trust bundle (`rotate-ca --finish`); kept for the record.
   */
  status: 'active' | 'retiring' | 'retired'
  /**
   * For a CA created by a rotation: the previous CA's vouching for it, so that nodes that trust only the previous CA
   * accept update bundles signed by this one. `signature` is base64 Ed25519 by CA `by` over
   * {@link endorsementMessage}(id).
   */
  endorsement?: {by: string; signature: string}
}

/** The newest ledger row of every node, by node name, in one pass over the ledger. */
export function currentCertificates(state: NetworkState): Map<string, CertificateRecord> {
  const newest = new Map<string, CertificateRecord>()
  for (const c of state.certificates) {
    const seen = newest.get(c.name)
    if (!seen || c.issuedAt >= seen.issuedAt) newest.set(c.name, c)
  }
  return newest
}

/** The newest ledger row of node `name`, or undefined. */
export function currentCertificate(state: NetworkState, name: string): CertificateRecord | undefined {
  let newest: CertificateRecord | undefined
  for (const c of state.certificates) if (c.name === name && (!newest || c.issuedAt >= newest.issuedAt)) newest = c
  return newest
}


/** The bytes a CA signs to vouch for its successor `caFingerprint` during a rotation. */
export function endorsementMessage(caFingerprint: string): Buffer {
  return Buffer.from(`tbmesh-ca-endorsement:v1:${caFingerprint}`, 'utf8')
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
  /** TruBudget access level: `trusted` (admin rights) or `managed` (basic rights); the certificate group `access:<level>`. */
  access: AccessLevel
  createdAt: string
  /** Set when the node was revoked: its every certificate is in the blocklist; its overlay IP is never reused. */
  revoked?: {at: string; reason?: string}
  /** Sequence number of the last bundle (join or update) exported for the node; updates must be newer. */
  sequence?: number
  /** True when the node's certificate or trust changed since its last exported bundle (rotation, renewal). */
  updatePending?: boolean
}

/** TruBudget's access levels for an approved organization: trusted = admin rights, managed = basic rights. */
export type AccessLevel = 'trusted' | 'managed'

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
  /** True when the host private key is held in this home (`keys/<name>.key`); false when the joiner holds it. */
  keyInHome: boolean
  /** Nonce of the join request this certificate answers (hex), when it was signed from one. */
  requestNonce?: string
  /** When a newer certificate for the same node replaced it (renewal, CA rotation). */
  supersededAt?: string
}

/**
 * A federated network, seen from one member organization's home (see descriptor.ts). The home's one organization
 * (`organizations[0]`) is `self.slug`; its active CA is `self`'s CA and issues only for that organization.
 */
export interface FederationState {
  /** This organization as it appears (or will appear, once approved) among the descriptor's members. */
  self: Member
  /** The adopted descriptor version and its approvals; while pending, the version the membership request extends. */
  current: SignedDescriptor
  /**
   * The successor this organization approved of the version it holds (`federation approve`): one per version, so that
   * two competing successors cannot both gather a majority through the same member.
   */
  approved?: {version: number; digest: string}
  /** Sequence number of the last revocation list this organization published (`federation revocations`). */
  revocationSequence?: number
  /**
   * Revocations imported from other members, by slug: the sequence number of their newest list and the fingerprints
   * (hex SHA-256) of the certificates it revokes. Rendered into every node's `pki.blocklist`.
   */
  revocations?: Record<string, {sequence: number; fingerprints: string[]}>
}

/** Whether this organization is a member: the adopted descriptor version lists it (false while its membership is pending). */
export function isMember(f: FederationState): boolean {
  return f.current.descriptor.members.some((m) => m.slug === f.self.slug)
}

/** Everything in `state.json`. */
export interface NetworkState {
  schemaVersion: typeof SCHEMA_VERSION
  network: NetworkSettings
  cas: CaRecord[]
  organizations: OrganizationRecord[]
  nodes: NodeRecord[]
  certificates: CertificateRecord[]
  /** Present in a federated network's home; absent in single-CA mode. */
  federation?: FederationState
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
  /** Queues a host private key (0600), written durably before the commit. */
  writeHostKey(node: string, pem: string): Promise<void>
  /** PEM text of a host key: one queued by this transaction, or one already in the home. */
  readHostKey(node: string): Promise<string>
  /** Queues a certificate file: written before the commit as `certs/<fingerprint>.crt.pending`, renamed after it. */
  addCertificate(fingerprint: string, pem: string): void
  /** Writes a new CA's certificate and key (0600) now, before the commit; add its record to `state.cas` too. */
  writeCa(id: string, certificatePem: string, keyPem: string): Promise<void>
  /** PEM text of a certificate: one queued by this transaction, or one already in the home. */
  readCertificate(fingerprint: string): Promise<string>
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
    const created = await mkdir(dir, {recursive: true, mode: 0o700}).catch((error: unknown) => {
      throw fileError(error, `cannot create ${dir}`)
    })
    // A failed init-ca (a full disk, say) leaves nothing: the files it wrote and the directories it made go again.
    const written: string[] = []
    return withLock(dir, async (assertHeld) => {
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
      try {
        for (const [file, data, mode] of [
          [join(dir, 'ca', `${caId}.key`), files.caKeyPem, 0o600],
          [join(dir, 'ca', `${caId}.crt`), files.caCertificatePem, 0o644],
          [join(dir, SECRETS_FILE), json(files.secrets), 0o600],
        ] as const) {
          written.push(file)
          await writeAtomic(file, data, mode)
        }
        // state.json last: a home without it is not a home, so a crash before this point leaves nothing half-made.
        assertHeld()
        await writeAtomic(join(dir, STATE_FILE), json(files.state), 0o644)
      } catch (error) {
        for (const file of written) await rm(file, {force: true}).catch(() => {})
        throw error
      }
      return new Home(dir, files.state)
    }).catch(async (error: unknown) => {
      if (created && !(await exists(join(dir, STATE_FILE)))) await rm(created, {recursive: true, force: true}).catch(() => {})
      throw error
    })
  }

  /** True when `dir` holds a network (a state file), whether or not it is valid. */
  static async exists(dir: string): Promise<boolean> {
    return exists(join(dir, STATE_FILE))
  }

  /** Opens an existing home and loads its state. Throws UserError when it is missing or the state is invalid. */
  static async open(dir: string): Promise<Home> {
    const s = await stat(dir).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'EACCES' || error.code === 'EPERM') throw fileError(error, `cannot read ${dir}`)
      return undefined
    })
    if (!s?.isDirectory() || !(await exists(join(dir, STATE_FILE)))) {
      throw new UserError(`no tbmesh network in ${dir}`, {fix: 'run `tbmesh init-ca` first, or point --home / TBMESH_HOME at your network'})
    }
    return new Home(dir, await loadState(dir))
  }

  /**
   * Runs `fn` under the inter-process lock on a freshly loaded state (after finishing or undoing what a killed process
   * left, see {@link recover}), then validates and commits the state atomically. Order: host keys (during `fn`),
   * certificates as `certs/<fingerprint>.crt.pending`, `state.json` (the commit), then the certificates renamed into
   * place. If `fn` or the commit fails, nothing is committed and the files written for it are removed.
   * Throws UserError when the lock cannot be had (another tbmesh process holds it) or a file cannot be written.
   */
  async transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T> {
    return withLock(this.dir, async (assertHeld) => {
      const state = await loadState(this.dir)
      await recover(this.dir, state)
      const certificates = new Map<string, string>() // fingerprint → PEM, written as pending before the commit
      const keys = new Map<string, string>() // node → PEM, written before the commit
      const written: string[] = [] // new files of this transaction, removed unless it commits
      const tx: Transaction = {
        state,
        writeHostKey: async (node, pem) => void keys.set(node, pem),
        readHostKey: async (node) => keys.get(node) ?? this.readHostKey(node),
        addCertificate: (fingerprint, pem) => void certificates.set(fingerprint, pem),
        readCertificate: async (fingerprint) => certificates.get(fingerprint) ?? this.readCertificate(fingerprint),
        writeCa: async (id, certificatePem, keyPem) => {
          for (const [file, data, mode] of [[`${id}.key`, keyPem, 0o600], [`${id}.crt`, certificatePem, 0o644]] as const) {
            written.push(join(this.dir, 'ca', file))
            await writeAtomic(join(this.dir, 'ca', file), data, mode)
          }
        },
      }
      let committed = false
      try {
        const result = await fn(tx)
        validateState(state, join(this.dir, STATE_FILE))
        const files: Array<[string, string, number]> = []
        for (const [node, pem] of keys) {
          const file = join(this.dir, 'keys', `${node}.key`)
          if (!(await exists(file))) written.push(file)
          files.push([file, pem, 0o600])
        }
        for (const [fingerprint, pem] of certificates) {
          const pending = this.certificatePath(fingerprint) + PENDING
          written.push(pending)
          files.push([pending, pem, 0o644])
        }
        await writeAtomicMany(files)
        assertHeld()
        await writeAtomic(join(this.dir, STATE_FILE), json(state), 0o644)
        committed = true
        this.state = state
        // Committed: from here on a failure is not the caller's; the next transaction renames what is left.
        try {
          await inBatches([...certificates.keys()], (fp) => rename(this.certificatePath(fp) + PENDING, this.certificatePath(fp)))
          if (certificates.size > 0) await fsyncDir(join(this.dir, 'certs'))
        } catch {}
        return result
      } finally {
        if (!committed) for (const file of written) await rm(file, {force: true}).catch(() => {})
      }
    })
  }

  /** The network-wide secrets. Throws UserError when the file is missing or malformed. */
  async readSecrets(): Promise<NetworkSecrets> {
    this.secrets ??= this.loadSecrets()
    return this.secrets
  }

  /** Files that never change once written (the secrets; a CA certificate, named by its fingerprint), read once. */
  private secrets?: Promise<NetworkSecrets>
  private readonly caCertificates = new Map<string, Promise<string>>()

  private async loadSecrets(): Promise<NetworkSecrets> {
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
    let pem = this.caCertificates.get(ca.id)
    if (!pem) {
      pem = readText(join(this.dir, 'ca', `${ca.id}.crt`))
      pem.catch(() => this.caCertificates.delete(ca.id))
      this.caCertificates.set(ca.id, pem)
    }
    return pem
  }

  /** PEM text of a CA key (plain or encrypted; see `encrypted`). */
  readCaKey(ca: CaRecord): Promise<string> {
    return readText(join(this.dir, 'ca', `${ca.id}.key`))
  }

  /** PEM text of a host private key held in this home. */
  readHostKey(node: string): Promise<string> {
    return readText(join(this.dir, 'keys', `${node}.key`))
  }

  /** PEM text of an issued certificate (also one whose ledger row is committed but that a killed process left pending). */
  async readCertificate(fingerprint: string): Promise<string> {
    const file = this.certificatePath(fingerprint)
    if (this.state.certificates.some((c) => c.fingerprint === fingerprint) && !(await exists(file)) && (await exists(file + PENDING))) {
      return readText(file + PENDING)
    }
    return readText(file)
  }

  /** The CAs nodes must trust now: the active one and, during a rotation, the retiring one. */
  trustedCas(): CaRecord[] {
    return this.state.cas.filter((c) => c.status !== 'retired')
  }

  /** The current (newest) ledger row of a node, or undefined. */
  currentCertificate(node: string): CertificateRecord | undefined {
    return currentCertificate(this.state, node)
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
    throw fileError(error, `cannot read ${file}`, 'restore it from a backup')
  }
}

/**
 * A UserError for a failed file operation: `what (CODE)` and a fix that fits the code (`fallback` for codes that mean
 * the file itself is missing or wrong). Errors without an errno code (bugs) are returned unchanged.
 */
function fileError(error: unknown, what: string, fallback = 'check the disk and run the command again'): Error {
  const code = (error as NodeJS.ErrnoException)?.code
  if (typeof code !== 'string') return error as Error
  const fix =
    code === 'ENOSPC' || code === 'EDQUOT'
      ? 'free some disk space and run the command again'
      : code === 'EACCES' || code === 'EPERM'
        ? "check the permissions, or run tbmesh as the home's owner"
        : code === 'EROFS'
          ? 'the file system is read-only: use a writable --home'
          : code === 'ENOTDIR'
            ? 'a part of the path is not a directory: choose another path'
            : fallback
  return new UserError(`${what} (${code})`, {fix, cause: error})
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
 * organization's block, blocks inside the network and disjoint, unique names (DNS labels, as they name key files),
 * fingerprints that are SHA-256 hex (they name certificate files), at most one origin.
 * Throws UserError naming `file` and the first problem found, and nothing else, whatever `state` holds.
 */
export function validateState(state: NetworkState, file: string): void {
  const bad = (problem: string): never => {
    throw new UserError(`${file}: ${problem}`, {fix: 'restore it from a backup or undo the hand edit'})
  }
  if (typeof state !== 'object' || state === null || Array.isArray(state)) bad('not a tbmesh state')
  if (state.schemaVersion !== SCHEMA_VERSION) {
    const newer = typeof state.schemaVersion === 'number' && state.schemaVersion > SCHEMA_VERSION
    throw new UserError(`${file}: schema version ${JSON.stringify(state.schemaVersion) ?? 'missing'} is not supported (this tbmesh reads ${SCHEMA_VERSION})`, {
      fix: newer ? 'a newer tbmesh wrote it: upgrade tbmesh' : 'restore it from a backup or undo the hand edit',
    })
  }
  const {network} = state
  if (typeof network !== 'object' || network === null || typeof network.name !== 'string') bad('"network" is missing')
  if (typeof network.cidr !== 'string') bad('"network.cidr" is not a string')
  for (const key of ['cas', 'organizations', 'nodes', 'certificates'] as const) if (!Array.isArray(state[key])) bad(`"${key}" is not a list`)
  const net = guard(() => parseCidr(network.cidr, 'network.cidr'), bad)
  if (!Number.isInteger(network.orgPrefix) || network.orgPrefix < net.prefix || network.orgPrefix > 30) bad(`"network.orgPrefix" does not fit ${network.cidr}`)
  const fingerprints = new Set<string>()
  for (const ca of state.cas) {
    if (typeof ca?.id !== 'string' || !SHA256_HEX.test(ca.id)) bad('a CA has no valid id (SHA-256 hex)')
    if (fingerprints.has(ca.id)) bad(`CA ${ca.id} is listed twice`)
    fingerprints.add(ca.id)
  }
  const blocks = new Map<string, ReturnType<typeof parseCidr>>()
  for (const org of state.organizations) {
    if (typeof org?.slug !== 'string' || !DNS_LABEL.test(org.slug)) bad('an organization has no valid slug')
    if (typeof org.block !== 'string') bad(`the block of ${org.slug} is not a string`)
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
    if (typeof node?.name !== 'string' || !DNS_LABEL.test(node.name)) bad('a node has no valid name (a DNS label)')
    if (names.has(node.name)) bad(`node ${node.name} is listed twice`)
    names.add(node.name)
    const block = blocks.get(node.organization)
    if (!block) bad(`node ${node.name} belongs to unknown organization ${JSON.stringify(node.organization)}`)
    if (typeof node.overlayIp !== 'string') bad(`the overlay IP of ${node.name} is not a string`)
    const ip = guard(() => parseIp(node.overlayIp, `overlay IP of ${node.name}`), bad)
    if (!contains(block!, ip)) bad(`node ${node.name} (${node.overlayIp}) lies outside its organization's block ${formatCidr(block!)}`)
    const holder = ips.get(ip)
    if (holder) bad(`nodes ${holder} and ${node.name} share the overlay IP ${node.overlayIp}`)
    ips.set(ip, node.name)
    if (node.origin) origins++
  }
  if (origins > 1) bad('more than one origin node')
  if (state.federation !== undefined) {
    const f = state.federation
    if (typeof f !== 'object' || f === null || typeof f.self !== 'object' || f.self === null) bad('"federation" is malformed')
    if (!blocks.has(f.self.slug) || state.organizations.length !== 1) bad('"federation.self" is not the one organization of this home')
    const {descriptor} = guard(() => checkDescriptor(f.current, '"federation.current"'), bad)
    const ca = checkMemberCa(f.self, network.cidr)
    if (typeof ca === 'string' || f.self.caFingerprint !== fingerprintOf(ca)) bad(`"federation.self": ${typeof ca === 'string' ? ca : 'its CA fingerprint does not match'}`)
    const listed = descriptor.members.find((m) => m.slug === f.self.slug)
    if (listed !== undefined && canonicalJson(listed) !== canonicalJson(f.self)) bad('"federation.self" differs from its entry in the descriptor')
    if (f.revocationSequence !== undefined && !(Number.isInteger(f.revocationSequence) && f.revocationSequence >= 1)) bad('"federation.revocationSequence" is not a positive integer')
    if (f.approved !== undefined && !(Number.isInteger(f.approved?.version) && typeof f.approved.digest === 'string')) bad('"federation.approved" is malformed')
    if (!state.cas.some((ca) => ca.id === f.self.caFingerprint)) bad('"federation.self" names a CA this home does not hold')
    for (const [org, r] of Object.entries(f.revocations ?? {})) {
      if (!Number.isInteger(r?.sequence) || !Array.isArray(r.fingerprints) || !r.fingerprints.every((fp) => typeof fp === 'string' && SHA256_HEX.test(fp))) {
        bad(`the revocations imported from ${org} are malformed`)
      }
    }
  }
  for (const cert of state.certificates) {
    if (typeof cert?.fingerprint !== 'string' || !SHA256_HEX.test(cert.fingerprint)) bad('a ledger row has no valid fingerprint (SHA-256 hex)')
    if (fingerprints.has(cert.fingerprint)) bad(`fingerprint ${cert.fingerprint} is listed twice`)
    fingerprints.add(cert.fingerprint)
    if (typeof cert.name !== 'string' || !names.has(cert.name)) bad(`ledger row ${cert.fingerprint} names no known node`)
  }
}

const SHA256_HEX = /^[0-9a-f]{64}$/
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

function guard<T>(fn: () => T, bad: (problem: string) => never): T {
  try {
    return fn()
  } catch (error) {
    return bad((error as Error).message)
  }
}

/**
 * Writes several files atomically, like {@link writeAtomic} each, but concurrently and with one fsync per directory at
 * the end; when it returns, every file is durable.
 */
async function writeAtomicMany(files: Array<[file: string, data: string, mode: number]>): Promise<void> {
  const dirs = new Set<string>()
  for (const [file] of files) dirs.add(dirname(file))
  for (const dir of dirs) {
    const created = await mkdir(dir, {recursive: true, mode: 0o700}).catch((error: unknown) => {
      throw fileError(error, `cannot create ${dir}`)
    })
    if (created) await fsyncDir(dirname(created))
  }
  // Then all of them flushed at once, then their directories: durable before the caller commits, without a thread-pool
  // round trip and a flush per file. A new file is written under its own name (it is a pending certificate or the key
  // of a node not yet committed: recovery removes either if the commit never comes); an existing one is replaced
  // atomically.
  for (const [file, data, mode] of files) {
    try {
      try {
        fs.writeFileSync(file, data, {mode, flag: 'wx'})
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
        writeFileAtomic.sync(file, data, {mode, fsync: false})
      }
    } catch (error) {
      throw fileError(error, `cannot write ${file}`)
    }
  }
  await syncFiles(files.map(([file]) => file)).catch((error: unknown) => {
    throw fileError(error, `cannot flush ${dirname(files[0][0])}`)
  })
}
/** Runs `fn` over `items`, at most 32 at a time. */
async function inBatches<T>(items: T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += 32) await Promise.all(items.slice(i, i + 32).map(fn))
}

/**
 * Writes `data` to `file` atomically: a temporary file in the same directory, fsync, rename, fsync of the directory.
 * Creates the parent directory (0700) when missing. Throws UserError (naming the file and the errno) when it cannot.
 */
async function writeAtomic(file: string, data: string | Buffer, mode: number): Promise<void> {
  const dir = file.slice(0, file.lastIndexOf('/'))
  try {
    const created = await mkdir(dir, {recursive: true, mode: 0o700})
    if (created) await fsyncDir(dirname(created)) // the new directory's entry, too
    await writeFileAtomic(file, data, {mode, fsync: true})
    await fsyncDir(dir)
  } catch (error) {
    throw fileError(error, `cannot write ${file}`)
  }
}


/** Suffix of a certificate written before the commit of its ledger row (see {@link Home.transaction}). */
const PENDING = '.pending'
/** A temporary file of write-file-atomic (`<name>.<uint32>`) for one of the home's files. */
const TEMP_FILE = /\.(?:json|crt|key|pending)\.\d+$/

/**
 * Finishes or undoes, under the lock, what a process killed in the middle of a transaction left behind: pending
 * certificates whose ledger row was committed are renamed into place, the others removed; temporary files of
 * interrupted atomic writes are removed, and so are host keys of nodes that were never committed. A no-op on a clean
 * home.
 */
async function recover(dir: string, state: NetworkState): Promise<void> {
  const inLedger = new Set(state.certificates.map((c) => c.fingerprint))
  const nodes = new Set(state.nodes.map((n) => n.name))
  const list = (sub: string) => readdir(join(dir, sub)).catch(() => [] as string[])
  const changed = new Set<string>()
  const remove = async (sub: string, name: string) => {
    await rm(join(dir, sub, name), {force: true})
    changed.add(sub)
  }
  for (const sub of ['.', 'ca']) for (const name of await list(sub)) if (TEMP_FILE.test(name)) await remove(sub, name)
  // A CA written by a rotation that was killed before its commit.
  const cas = new Set(state.cas.map((c) => c.id))
  for (const name of await list('ca')) if (/^[0-9a-f]{64}\.(crt|key)$/.test(name) && !cas.has(name.slice(0, 64))) await remove('ca', name)
  for (const name of await list('certs')) {
    if (TEMP_FILE.test(name)) await remove('certs', name)
    else if (name.endsWith(`.crt${PENDING}`)) {
      const fingerprint = name.slice(0, -`.crt${PENDING}`.length)
      const final = join(dir, 'certs', `${fingerprint}.crt`)
      if (inLedger.has(fingerprint) && !(await exists(final))) {
        await rename(join(dir, 'certs', name), final)
        changed.add('certs')
      } else await remove('certs', name)
    }
  }
  for (const name of await list('keys')) {
    if (TEMP_FILE.test(name) || (name.endsWith('.key') && !nodes.has(name.slice(0, -4)))) await remove('keys', name)
  }
  for (const sub of changed) await fsyncDir(join(dir, sub))
}

/** Environment variable: how long to wait for another tbmesh process's lock on the home, in seconds (default 30). */
const LOCK_TIMEOUT_ENV = 'TBMESH_LOCK_TIMEOUT'

function lockWaitMs(): number {
  const text = process.env[LOCK_TIMEOUT_ENV]
  if (text === undefined || text === '') return 30_000
  if (!/^\d+(\.\d+)?$/.test(text)) throw new UsageError(`${LOCK_TIMEOUT_ENV}=${text} is not a number of seconds`, {fix: 'set it to e.g. 30, or unset it'})
  return Math.round(Number(text) * 1000)
}

/**
 * Runs `fn` holding the inter-process lock on the home (proper-lockfile: the directory `state.lock`, refreshed while
 * held, taken over when stale). `fn` gets `assertHeld`, to call right before committing: it throws if the lock was
 * lost meanwhile (the process stalled past the stale time and another took over), so that nothing is committed then.
 * Waits up to TBMESH_LOCK_TIMEOUT seconds (default 30) for another process; then throws a UserError naming it.
 */
async function withLock<T>(dir: string, fn: (assertHeld: () => void) => Promise<T>): Promise<T> {
  const lockDir = join(dir, LOCK_FILE)
  const waitMs = lockWaitMs()
  let compromised: Error | undefined
  let release: () => Promise<void>
  const lock = (wait: boolean) =>
    lockfile.lock(dir, {
      lockfilePath: lockDir,
      realpath: false,
      stale: LOCK_STALE_MS,
      retries: wait && waitMs > 0 ? {retries: 10_000, factor: 1.2, minTimeout: 20, maxTimeout: 500, randomize: true, maxRetryTime: waitMs} : 0,
      fs: lockFs(),
      onCompromised: (error) => {
        compromised = error
      },
    })
  // proper-lockfile retries whatever the error: wait only when the lock is taken (or being taken over), so that a
  // read-only or missing home fails at once.
  const busy = (error: unknown) => {
    const code = (error as NodeJS.ErrnoException).code
    return code === 'ELOCKED' || code === 'ENOTEMPTY' || (code === 'ENOENT' && fs.existsSync(dir)) // ENOENT: a takeover race
  }
  try {
    release = await lock(false).catch((error: unknown) => {
      if (!busy(error)) throw error
      return lock(true)
    })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ELOCKED' || code === 'ENOTEMPTY') {
      const holder = parseHolder(listHolders(lockDir)[0] ?? '')
      const who = holder ? ` (pid ${holder.pid}${holder.machine === machine() ? '' : ' on another machine'})` : ''
      throw new UserError(`another tbmesh process${who} is changing ${dir}`, {
        fix: `wait for it to finish and run the command again (waited ${waitMs / 1000} s; set ${LOCK_TIMEOUT_ENV} to wait longer)`,
      })
    }
    throw fileError(error, `cannot lock ${dir}`, 'check that the home exists and is writable')
  }
  const assertHeld = () => {
    if (compromised) throw new UserError(`lost the lock on ${dir} (${compromised.message})`, {fix: 'nothing was changed: run the command again'})
  }
  try {
    return await fn(assertHeld)
  } finally {
    await release().catch(() => {})
  }
}

// The lock's holder. proper-lockfile alone knows a lock is stale only when its mtime is LOCK_STALE_MS old, so a tbmesh
// killed with SIGKILL (OOM killer, CI timeout, `kill -9`) would block every other one for seconds. The holder therefore
// names itself with an empty file in the lock directory, `holder-<pid>-<start>-<machine>` (process id, its start time
// from /proc or 0, and a hash of the host name and PID namespace, within which process ids mean something). A waiter on
// the same machine that finds every holder gone reports the lock as stale to proper-lockfile at once, which then takes
// it over its usual way. Holders on other machines (a home on a network file system) and directories without a holder
// file fall back to the mtime. This goes through proper-lockfile's `fs` option, so its locking, refreshing and
// compromise detection are unchanged.

const HOLDER = /^holder-(\d+)-(\d+)-([0-9a-f]{8})$/

let machineId: string | undefined
/** This host and PID namespace, 8 hex digits. */
function machine(): string {
  if (machineId === undefined) {
    let ns = ''
    try {
      ns = fs.readlinkSync('/proc/self/ns/pid')
    } catch {}
    machineId = createHash('sha256').update(`${hostname()}\0${ns}`).digest('hex').slice(0, 8)
  }
  return machineId
}

/** A process's start time since boot in clock ticks (Linux), `0` when unknown, `Z` for a zombie. */
function processStart(pid: number): string {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[0] === 'Z' ? 'Z' : /^\d+$/.test(fields[19] ?? '') ? fields[19] : '0'
  } catch {
    return '0'
  }
}

function parseHolder(name: string): {pid: number; start: string; machine: string} | undefined {
  const m = HOLDER.exec(name)
  return m ? {pid: Number(m[1]), start: m[2], machine: m[3]} : undefined
}

/** True when the holder is known to be gone: same machine, and no such process (or a zombie, or another process since). */
function holderGone(name: string): boolean {
  const holder = parseHolder(name)
  if (!holder || holder.machine !== machine()) return false
  try {
    process.kill(holder.pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
  const start = processStart(holder.pid)
  return start === 'Z' || (start !== '0' && holder.start !== '0' && start !== holder.start)
}

function listHolders(lockDir: string): string[] {
  try {
    return fs.readdirSync(lockDir)
  } catch {
    return []
  }
}

/** The `fs` proper-lockfile locks with: names the holder in the lock directory and sees a gone holder's lock as stale. */
function lockFs() {
  const own = `holder-${process.pid}-${processStart(process.pid).replace('Z', '0')}-${machine()}`
  let stale: string[] = [] // holder files of a stale lock, removed together with it
  type Callback = (error: NodeJS.ErrnoException | null) => void
  return {
    realpath: fs.realpath,
    utimes: fs.utimes,
    mkdir(path: string, callback: Callback) {
      fs.mkdir(path, (error) => {
        if (error) return callback(error)
        // Name the holder before proper-lockfile reads the directory's mtime (creating the file changes it).
        fs.writeFile(join(path, own), '', {flag: 'wx'}, (error) => {
          if (error) {
            // ENOENT: a waiter that found the previous holder gone removed this directory in between: not ours.
            if (error.code !== 'ENOENT') fs.rmdir(path, () => callback(error))
            else callback(error)
            return
          }
          const holders = listHolders(path)
          if (holders.length === 1) return callback(null)
          // Two processes made it into one directory through a takeover race: neither may hold the lock.
          fs.unlink(join(path, own), () => callback(Object.assign(new Error('Lock file is already being held'), {code: 'ELOCKED'})))
        })
      })
    },
    stat(path: string, callback: (error: NodeJS.ErrnoException | null, stats?: fs.Stats) => void) {
      fs.stat(path, (error, stats) => {
        if (error) return callback(error)
        const holders = listHolders(path)
        if (stats.mtimeMs < Date.now() - LOCK_STALE_MS) {
          stale = holders.filter((h) => h !== own)
          return callback(null, stats)
        }
        if (holders.length > 0 && !holders.includes(own) && holders.every(holderGone)) {
          stale = holders
          return callback(null, Object.assign(Object.create(Object.getPrototypeOf(stats)), stats, {mtime: new Date(0), mtimeMs: 0}))
        }
        callback(null, stats)
      })
    },
    rmdir(path: string, callback: Callback) {
      for (const name of new Set([own, ...stale])) {
        try {
          fs.unlinkSync(join(path, name))
        } catch {}
      }
      stale = []
      fs.rmdir(path, callback)
    },
    rmdirSync(path: string) {
      try {
        fs.unlinkSync(join(path, own))
      } catch {}
      fs.rmdirSync(path)
    },
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Join requests made on this machine (the joiner's side). They need no network state: `requests/<nonce>.json` holds the
// request as sent, `requests/<nonce>.key` (0600) the host private key that never leaves this machine.

const REQUESTS_DIR = 'requests'

/** Stores a join request and its private key in the joiner's home (created 0700 if missing). */
export async function saveJoinRequest(homeDir: string, nonce: string, requestText: string, keyPem: string): Promise<void> {
  await mkdir(homeDir, {recursive: true, mode: 0o700})
  await writeAtomic(join(homeDir, REQUESTS_DIR, `${nonce}.key`), keyPem, 0o600)
  await writeAtomic(join(homeDir, REQUESTS_DIR, `${nonce}.json`), requestText, 0o644)
}

/** A pending join request of this machine: the request text and the host private key PEM; undefined when unknown. */
export async function loadJoinRequest(homeDir: string, nonce: string): Promise<{requestText: string; keyPem: string} | undefined> {
  if (!/^[0-9a-f]{32}$/.test(nonce)) return undefined
  const dir = join(homeDir, REQUESTS_DIR)
  const keyPem = await readFile(join(dir, `${nonce}.key`), 'utf8').catch(() => undefined)
  const requestText = await readFile(join(dir, `${nonce}.json`), 'utf8').catch(() => undefined)
  return keyPem === undefined || requestText === undefined ? undefined : {requestText, keyPem}
}
