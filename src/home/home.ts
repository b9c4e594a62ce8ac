/**
 * The network state ("home"): the one module that reads and writes a tbmesh home's files. Nothing else touches them.
 * Their types are in `types.ts`, their invariants in `validate.ts`.
 *
 * Layout of a home (directory 0700):
 * - `state.json`: schema version, network settings, CAs, organizations with their IP blocks, nodes, and the ledger of
 *   every certificate issued. Public data, 0644.
 * - `secrets.json` (0600): a federated organization's ORGANIZATION_VAULT_SECRET (node secrets are made on the nodes).
 * - `ca/<fingerprint>.crt` and `ca/<fingerprint>.key` (0600, encrypted unless created with --no-passphrase): each CA.
 *   Several CAs fit (rotation, one CA per organization) without a change of layout.
 * - `certs/<fingerprint>.crt`: every certificate issued, named by its fingerprint.
 * - `keys/<node>.key` (0600): host private keys generated on the CA side.
 * - `state.lock`: the inter-process lock (`lock.ts`).
 *
 * Guarantees: every write is atomic (temporary file in the same directory, fsync, rename, fsync of the directory);
 * every read-modify-write runs under the inter-process lock on a freshly loaded state. A transaction writes its host
 * keys and its certificates (as `certs/<fingerprint>.crt.pending`) first, then commits `state.json`, then renames the
 * certificates into place; the next transaction finishes or removes what a killed one left (pending certificates,
 * temporary files, keys of nodes that were never committed). So a crash at any point leaves a state that loads, in
 * which every certificate file is in the ledger and every ledger row's certificate is on disk (at worst still pending).
 */

import {mkdir, readdir, readFile, rename, rm, stat} from 'node:fs/promises'
import {join} from 'node:path'

import {UserError} from '../errors.js'
import {exists, fileError, type FileErrorFixes, fsyncDir, writeAtomic, writeAtomicMany} from '../lib/files.js'
import {withLock} from './lock.js'
import {type CaRecord, type NetworkSecrets, type NetworkState, SCHEMA_VERSION} from './types.js'
import {validateState} from './validate.js'

const STATE_FILE = 'state.json'
const SECRETS_FILE = 'secrets.json'
const LOCK_FILE = 'state.lock'

/** What to tell the user when a home file cannot be read or written. */
const HOME_FIXES: FileErrorFixes = {denied: "check the permissions, or run tbmesh as the home's owner", readOnly: 'the file system is read-only: use a writable --home'}
/** The same for the lock on the home. */
const LOCK_FIXES: FileErrorFixes = {...HOME_FIXES, other: 'check that the home exists and is writable'}

/** {@link withLock} on the home's `state.lock`, with the home's fixes for file errors. */
function lockHome<T>(dir: string, fn: (assertHeld: () => void) => Promise<T>): Promise<T> {
  return withLock(dir, LOCK_FILE, fn, LOCK_FIXES)
}

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
      throw fileError(error, `cannot create ${dir}`, HOME_FIXES)
    })
    // A failed init-ca (a full disk, say) leaves nothing: the files it wrote and the directories it made go again.
    const written: string[] = []
    return lockHome(dir, async (assertHeld) => {
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
          await writeAtomic(file, data, mode, HOME_FIXES)
        }
        // state.json last: a home without it is not a home, so a crash before this point leaves nothing half-made.
        assertHeld()
        await writeAtomic(join(dir, STATE_FILE), json(files.state), 0o644, HOME_FIXES)
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
      if (error.code === 'EACCES' || error.code === 'EPERM') throw fileError(error, `cannot read ${dir}`, HOME_FIXES)
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
    return lockHome(this.dir, async (assertHeld) => {
      const state = await loadState(this.dir)
      await recover(this.dir, state)
      const certificates = new Map<string, string>() // fingerprint → PEM, written as pending before the commit
      const keys = new Map<string, string>() // node → PEM, written before the commit
      const written: string[] = [] // new files of this transaction, removed unless it commits
      const tx: Transaction = {
        state,
        async writeHostKey(node, pem) {
          keys.set(node, pem)
        },
        readHostKey: async (node) => keys.get(node) ?? this.readHostKey(node),
        addCertificate(fingerprint, pem) {
          certificates.set(fingerprint, pem)
        },
        readCertificate: async (fingerprint) => certificates.get(fingerprint) ?? this.readCertificate(fingerprint),
        writeCa: async (id, certificatePem, keyPem) => {
          for (const [file, data, mode] of [[`${id}.key`, keyPem, 0o600], [`${id}.crt`, certificatePem, 0o644]] as const) {
            written.push(join(this.dir, 'ca', file))
            await writeAtomic(join(this.dir, 'ca', file), data, mode, HOME_FIXES)
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
        await writeAtomicMany(files, HOME_FIXES)
        assertHeld()
        await writeAtomic(join(this.dir, STATE_FILE), json(state), 0o644, HOME_FIXES)
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

  /** The home's secrets (`secrets.json`). Throws UserError when the file is missing or malformed. */
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
    if (data?.schemaVersion !== SCHEMA_VERSION || !['undefined', 'string'].includes(typeof data.organizationVaultSecret)) {
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

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (error) {
    throw fileError(error, `cannot read ${file}`, {...HOME_FIXES, other: 'restore it from a backup'})
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

/** Runs `fn` over `items`, at most 32 at a time. */
async function inBatches<T>(items: T[], fn: (item: T) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += 32) await Promise.all(items.slice(i, i + 32).map((item) => fn(item)))
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

