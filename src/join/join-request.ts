/**
 * Join requests: how a joining organization asks for a certificate without its host private key ever leaving its
 * machine. The joiner generates an X25519 key pair, keeps the private key in its own home, and sends the request file
 * (JSON, below) to the network's CA admin, who checks the verification code with the joiner by phone before signing.
 */

import {randomBytes} from 'node:crypto'
import {mkdir, readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'

import {UsageError, UserError} from '../errors.js'
import {writeAtomic, writeNewFile} from '../lib/files.js'
import {checkEndpoint} from '../lib/ip.js'
import {verificationCode} from '../lib/messages.js'
import {checkNodeName, checkOrganizationName, organizationNameProblem} from '../lib/names.js'
import {isIsoTime, NONCE_HEX} from '../lib/text.js'
import {type Curve, generateHostKeyPair, hostPrivateKeyToPem, hostPublicKeyToPem, KeyFormatError, readHostPublicKey} from '../nebula/index.js'

/** The request file's `type` and version. */
export const JOIN_REQUEST_TYPE = 'tbmesh-join-request'
export const JOIN_REQUEST_VERSION = 1

/** A join request as written to the request file (JSON, UTF-8, two-space indentation, trailing newline). */
export interface JoinRequest {
  type: typeof JOIN_REQUEST_TYPE
  version: typeof JOIN_REQUEST_VERSION
  /** Organization name as TruBudget knows it. */
  organization: string
  /** Requested node name (DNS label), if any. */
  name?: string
  /** Public underlay `host:port` of the joining node, if it has one. */
  endpoint?: string
  /** The joiner's Nebula X25519 public key, PEM (`NEBULA X25519 PUBLIC KEY`). */
  publicKey: string
  /** 16 random bytes, hex: binds the bundle that answers this request to it. */
  nonce: string
  /** ISO 8601 creation time. */
  createdAt: string
}

/** What `tbmesh join-request` reports. No secret is in it. */
export interface JoinRequestResult {
  /** Absolute or given path of the request file. */
  path: string
  request: JoinRequest
  /** Code derived from the request file's bytes (`verificationCode` in `lib/messages.ts`), grouped for reading aloud, e.g. `K7QD-2M4X-PZ9T-W3NE-8RVA`. */
  verificationCode: string
}

/**
 * Creates a join request: generates the key pair, stores the private key (0600) and the request in the joiner's home
 * (`requests/<nonce>.*`), and writes the request file to `out` (refusing to overwrite it).
 * Throws UsageError for bad values, UserError when `out` exists or cannot be written.
 */
export async function createJoinRequest(
  homeDir: string,
  opts: {org: string; name?: string; endpoint?: string; out: string; curve?: Curve; now?: Date},
): Promise<JoinRequestResult> {
  const organization = checkOrganizationName(opts.org)
  if (opts.name !== undefined) checkNodeName(opts.name)
  const endpoint = opts.endpoint === undefined ? undefined : checkEndpoint(opts.endpoint)
  const curve = opts.curve ?? 'CURVE25519'
  const keys = generateHostKeyPair(curve)
  const request: JoinRequest = {
    type: JOIN_REQUEST_TYPE,
    version: JOIN_REQUEST_VERSION,
    organization,
    ...(opts.name ? {name: opts.name} : {}),
    ...(endpoint ? {endpoint} : {}),
    publicKey: hostPublicKeyToPem(keys.publicKey),
    nonce: randomBytes(16).toString('hex'),
    createdAt: (opts.now ?? new Date()).toISOString(),
  }
  const text = `${JSON.stringify(request, null, 2)}\n`
  // The request file first: it refuses an existing file, and then no key is left behind in the home for nothing.
  await writeNewFile(opts.out, text, {mode: 0o644, what: 'the request file'})
  try {
    await saveJoinRequest(homeDir, request.nonce, text, hostPrivateKeyToPem(keys.privateKey, curve))
  } catch (error) {
    await rm(opts.out, {force: true})
    throw error
  }
  return {path: opts.out, request, verificationCode: verificationCode('join-request', text)}
}

/** A request file read on the CA side, with its verification code and the decoded public key (32 bytes). */
export interface ReceivedJoinRequest {
  request: JoinRequest
  verificationCode: string
  publicKey: Buffer
}

/**
 * Reads and checks a request file: JSON of the right type and version, valid organization, name, endpoint, nonce and
 * X25519 public key. Throws UserError naming the file and the problem.
 */
export async function readJoinRequest(file: string): Promise<ReceivedJoinRequest> {
  let bytes: Buffer
  try {
    bytes = await readFile(file)
  } catch (error) {
    throw new UserError(`cannot read request ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {fix: 'check the path'})
  }
  const bad = (problem: string): never => {
    throw new UserError(`request ${file} ${problem}`, {fix: 'ask the joining organization for a new request (tbmesh join-request)'})
  }
  let request: JoinRequest
  try {
    request = JSON.parse(bytes.toString('utf8')) as JoinRequest
  } catch {
    return bad('is not JSON')
  }
  if (typeof request !== 'object' || request === null || request.type !== JOIN_REQUEST_TYPE) bad('is not a tbmesh join request')
  if (request.version !== JOIN_REQUEST_VERSION) bad(`has version ${JSON.stringify(request.version)}; this tbmesh reads ${JOIN_REQUEST_VERSION}`)
  if (typeof request.nonce !== 'string' || !NONCE_HEX.test(request.nonce)) bad('has no valid nonce')
  // Strict ISO 8601: Date.parse alone accepts e.g. "Jan 1 2025 (<newlines, escape sequences>)", which the approval
  // summary would print — a fake "Verification code:" line above the real one.
  if (!isIsoTime(request.createdAt)) bad('has no valid creation time')
  const allowed = new Set(['type', 'version', 'organization', 'name', 'endpoint', 'publicKey', 'nonce', 'createdAt'])
  for (const key of Object.keys(request)) if (!allowed.has(key)) bad(`has an unknown field ${JSON.stringify(key)}`)
  const nameProblem = organizationNameProblem(request.organization)
  if (nameProblem) bad(`holds "${String(request.organization)}" is not a valid organization name (it ${nameProblem})`)
  try {
    if (request.name !== undefined) checkNodeName(String(request.name))
    if (request.endpoint !== undefined) checkEndpoint(String(request.endpoint))
  } catch (error) {
    if (error instanceof UsageError) bad(`holds ${error.message.replace(/^--\S+ /, '')}`)
    throw error
  }
  let publicKey: Buffer
  try {
    publicKey = readHostPublicKey(String(request.publicKey)).key
  } catch (error) {
    if (error instanceof KeyFormatError) return bad(`has no valid Nebula X25519 or P256 public key (${error.message})`)
    throw error
  }
  return {request, verificationCode: verificationCode('join-request', bytes), publicKey}
}

/**
 * Reads a bare Nebula public key file (`NEBULA X25519 PUBLIC KEY` or `NEBULA P256 PUBLIC KEY` PEM, as `nebula-cert
 * keygen` writes it) and returns the key (32 or 65 bytes). Throws UserError naming the file.
 */
export async function readPublicKeyFile(file: string): Promise<Buffer> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    throw new UserError(`cannot read --pubkey ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`, {fix: 'check the path'})
  }
  try {
    return readHostPublicKey(text).key
  } catch (error) {
    if (error instanceof KeyFormatError) throw new UserError(`--pubkey ${file} is not a Nebula X25519 or P256 public key (${error.message})`, {fix: 'make one with `nebula-cert keygen` or `tbmesh join-request`'})
    throw error
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Join requests made on this machine (the joiner's side). They need no network state: `requests/<nonce>.json` holds the
// request as sent, `requests/<nonce>.key` (0600) the host private key that never leaves this machine.

const REQUESTS_DIR = 'requests'

/** Stores a join request and its private key in the joiner's home (created 0700 if missing). */
async function saveJoinRequest(homeDir: string, nonce: string, requestText: string, keyPem: string): Promise<void> {
  await mkdir(homeDir, {recursive: true, mode: 0o700})
  await writeAtomic(join(homeDir, REQUESTS_DIR, `${nonce}.key`), keyPem, 0o600)
  await writeAtomic(join(homeDir, REQUESTS_DIR, `${nonce}.json`), requestText, 0o644)
}

/** A pending join request of this machine: the request text and the host private key PEM; undefined when unknown. */
export async function loadJoinRequest(homeDir: string, nonce: string): Promise<{requestText: string; keyPem: string} | undefined> {
  if (!NONCE_HEX.test(nonce)) return undefined
  const dir = join(homeDir, REQUESTS_DIR)
  const keyPem = await readFile(join(dir, `${nonce}.key`), 'utf8').catch(() => undefined)
  const requestText = await readFile(join(dir, `${nonce}.json`), 'utf8').catch(() => undefined)
  return keyPem === undefined || requestText === undefined ? undefined : {requestText, keyPem}
}
