/**
 * The join flow's security through the real CLI (bin/run.js as real processes) on a real home made with init-ca and
 * add-node: every refusal of `tbmesh install` is fed a bad bundle built for real (unpacked, edited, repacked, re-signed
 * with the right or another CA's key) and must exit non-zero with exactly one line on stderr naming the reason, no
 * stack trace, and DIR untouched — absent, or holding a previous installation — with no staging directory left beside
 * it. Then the good paths of join requests, `--pubkey` and `--access`, interoperability with the real `age` CLI, and
 * a check that no secret ever shows up on argv or in any command's output.
 */

import {createHash, randomBytes} from 'node:crypto'
import {cp, mkdtemp, readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {gunzipSync} from 'node:zlib'

import {execa, type Result} from 'execa'
import {Header, Pack, Parser, ReadEntry} from 'tar'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BUNDLE_LAYOUT} from '../src/bundle/layout.js'
import {MEMBERS_PATH} from '../src/bundle/members.js'
import {parseNodeEnv} from '../src/bundle/node-env.js'
import {manifestMessage} from '../src/lib/messages.js'
import {
  certificateFromPem,
  certificateToPem,
  ed25519Sign,
  ed25519Verify,
  fingerprint,
  generateCaKeyPair,
  generateHostKeyPair,
  hostKeyMatchesCertificate,
  hostPrivateKeyFromPem,
  hostPublicKeyFromPem,
  hostPublicKeyToPem,
  readCaPrivateKey,
  signDetails,
} from '../src/nebula/index.js'
import {expectOneLineError, have, NEBULA_CERT, nebulaCertCheck, removeDir, snapshot, tbmesh, tempDir} from './helpers.js'

const AGE = have('age')
const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex')
/** `text` as a literal inside a RegExp. */
const re = (text: string): string => text.replaceAll(/[.*+?^${}()|[\]\\/]/g, '\\$&')

// ---------------------------------------------------------------------------------------------------------------------
// Running tbmesh, keeping a transcript of every command for the secrets check at the end

const transcript: Array<{args: string[]; env: Record<string, string>; stdout: string; stderr: string}> = []

async function run(args: string[], opts: {env?: Record<string, string>} = {}): Promise<Result> {
  const result = await tbmesh(args, opts)
  transcript.push({args, env: opts.env ?? {}, stdout: String(result.stdout), stderr: String(result.stderr)})
  return result
}

async function runJson<T = Record<string, any>>(args: string[], opts: {env?: Record<string, string>} = {}): Promise<T> {
  const result = await run([...args, '--json'], opts)
  if (result.exitCode !== 0) throw new Error(`tbmesh ${args.join(' ')} exited ${result.exitCode}: ${result.stderr}\n${result.stdout}`)
  return JSON.parse(String(result.stdout)) as T
}

// ---------------------------------------------------------------------------------------------------------------------
// Taking bundles apart and putting them back together with node-tar

interface Entry {
  path: string
  type: 'File' | 'Directory' | 'SymbolicLink' | 'Link'
  mode: number
  data: Buffer
  linkpath?: string
}

/** The entries of a (gzip) tar, in order, with their bytes. */
async function unpack(archive: Buffer): Promise<Entry[]> {
  const entries: Entry[] = []
  const parser = new Parser({strict: true})
  parser.on('entry', (e: ReadEntry) => {
    const entry: Entry = {path: e.path, type: e.type as Entry['type'], mode: e.mode ?? 0o644, data: Buffer.alloc(0)}
    entries.push(entry)
    const chunks: Buffer[] = []
    e.on('data', (chunk: Buffer) => chunks.push(chunk))
    e.on('end', () => {
      entry.data = Buffer.concat(chunks)
    })
  })
  await new Promise<void>((resolve, reject) => {
    parser.on('end', resolve)
    parser.on('error', reject)
    parser.end(gunzipSync(archive))
  })
  return entries
}

/** A gzip tar of exactly `entries`, in order (paths kept as given, even `../x` and `/etc/x`). */
async function pack(entries: Entry[]): Promise<Buffer> {
  const p = new Pack({gzip: true, portable: true, preservePaths: true})
  const out = p.concat()
  for (const e of entries) {
    const size = e.type === 'File' ? e.data.length : 0
    const entry = new ReadEntry(new Header({path: e.path, type: e.type, mode: e.mode, size, linkpath: e.linkpath, mtime: new Date(0)}))
    if (size > 0) entry.write(e.data)
    entry.end()
    p.add(entry)
  }
  p.end()
  return out
}

const get = (entries: Entry[], path: string): Entry => {
  const entry = entries.find((e) => e.path === path)
  if (!entry) throw new Error(`no entry ${path}`)
  return entry
}
/** `entries` with the data of `path` replaced (or the entry removed when `data` is undefined). */
const replaced = (entries: Entry[], path: string, data: Buffer | string | undefined): Entry[] =>
  data === undefined ? entries.filter((e) => e.path !== path) : entries.map((e) => (e.path === path ? {...e, data: Buffer.from(data)} : {...e}))

/**
 * `entries` with manifest.json's file hashes recomputed, `edit` applied to the manifest, and manifest.sig made anew with
 * `caKey` — what the holder of that key could produce.
 */
function resigned(entries: Entry[], caKey: Buffer, edit: (manifest: Record<string, any>) => void = () => {}): Entry[] {
  const out = entries.map((e) => ({...e}))
  const manifest = get(out, 'manifest.json')
  const m = JSON.parse(manifest.data.toString('utf8')) as Record<string, any>
  m.files = Object.fromEntries(out.filter((e) => e.type === 'File' && !e.path.startsWith('manifest.')).map((e) => [e.path, sha256(e.data)]))
  edit(m)
  manifest.data = Buffer.from(`${JSON.stringify(m, null, 2)}\n`)
  get(out, 'manifest.sig').data = Buffer.from(`${ed25519Sign(caKey, manifestMessage(manifest.data, JSON.parse(manifest.data.toString()).schemaVersion)).toString('base64')}\n`)
  return out
}

/** Flips one bit of the byte in the middle of `data`. */
const flipMiddleByte = (data: Buffer): Buffer => {
  const edited = Buffer.from(data)
  edited[Math.floor(edited.length / 2)] ^= 0x01
  return edited
}

/** A CA made with the codec, as another network (or an impostor) would have: same name and CIDR, another key. */
function otherCa(name: string, cidr: string): {key: Buffer; pem: string; fingerprint: string} {
  const now = Math.floor(Date.now() / 1000)
  const keys = generateCaKeyPair()
  const cert = signDetails(
    {name, ips: [cidr], subnets: [], groups: [], notBefore: now - 60, notAfter: now + 365 * 86_400, publicKey: keys.publicKey, isCA: true, issuer: '', curve: 'CURVE25519'},
    keys.privateKey,
  )
  return {key: keys.privateKey, pem: certificateToPem(cert), fingerprint: fingerprint(cert)}
}

/** A host certificate for `name`/`cidr` and `publicKey`, signed by `ca`. */
function hostCertificate(ca: {key: Buffer; fingerprint: string}, name: string, cidr: string, publicKey: Buffer): string {
  const now = Math.floor(Date.now() / 1000)
  return certificateToPem(
    signDetails(
      {name, ips: [cidr], subnets: [], groups: ['org:umbrella', 'access:managed'], notBefore: now - 60, notAfter: now + 30 * 86_400, publicKey, isCA: false, issuer: ca.fingerprint, curve: 'CURVE25519'},
      ca.key,
    ),
  )
}

// ---------------------------------------------------------------------------------------------------------------------
// The network: a CA home with an origin/lighthouse (ACME), umbrella-1 and hooli-1, and a joiner (Initech) that made a
// join request; their bundles.

let work: string
let home: string
let caPassFile: string
let bundlePassFile: string
let caPassphrase: string
let bundlePassphrase: string
let caFingerprint: string
let caKey: Buffer
let caPem: string
let rogue: ReturnType<typeof otherCa>
const nodes: Record<string, Record<string, any>> = {}
/** umbrella-1's bundle, unencrypted and encrypted (export-bundle --json results). */
let plain: Record<string, any>
let encrypted: Record<string, any>
let expiring: Record<string, any>
/** The joiner's side. */
let joinerHome: string
let joinRequest: Record<string, any>
let joinBundle: Record<string, any>
/** A previous installation of umbrella-1, copied into each refusal case's DIR. */
let previous: string

/** Every secret of this file: none may appear on argv or in any output. */
const secrets: Array<{what: string; value: string}> = []
/** The base64 body of a PEM (the key material), without banners and line breaks. */
const pemBody = (pem: string): string => pem.replaceAll(/-----[A-Z0-9 ]+-----/g, '').replaceAll(/\s+/g, '')

const h = (): string[] => ['--home', home]
const caPass = (): string[] => ['--passphrase-file', caPassFile]
const pin = (): string[] => ['--ca-fingerprint', caFingerprint]

beforeAll(async () => {
  work = await tempDir('tbmesh-join-')
  home = join(work, 'ca-home')
  joinerHome = join(work, 'joiner-home')
  caPassphrase = `ca ${randomBytes(12).toString('base64url')}`
  bundlePassphrase = `bundle ${randomBytes(12).toString('base64url')}`
  caPassFile = join(work, 'ca.pass')
  bundlePassFile = join(work, 'bundle.pass')
  await writeFile(caPassFile, `${caPassphrase}\n`, {mode: 0o600})
  await writeFile(bundlePassFile, `${bundlePassphrase}\n`, {mode: 0o600})
  secrets.push({what: 'CA passphrase', value: caPassphrase}, {what: 'bundle passphrase', value: bundlePassphrase})

  const init = await runJson(['init-ca', ...h(), '--network', 'tbnet', '--cidr', '10.42.0.0/16', ...caPass()])
  caFingerprint = init.caFingerprint
  nodes.acme = await runJson(['add-node', ...h(), ...caPass(), '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
  nodes.umbrella = await runJson(['add-node', ...h(), ...caPass(), '--org', 'Umbrella'])
  nodes.hooli = await runJson(['add-node', ...h(), ...caPass(), '--org', 'Hooli'])
  joinRequest = await runJson(['join-request', '--home', joinerHome, '--org', 'Initech', '--name', 'initech-1', '--out', join(work, 'initech.request.json')])
  nodes.initech = await runJson(['add-node', ...h(), ...caPass(), '--request', join(work, 'initech.request.json'), '--yes'])

  // One after the other: export-bundle takes the home's lock.
  const out = (name: string): string => join(work, name)
  expiring = await runJson(['export-bundle', 'umbrella-1', ...h(), ...caPass(), '--no-encrypt', '--expires-in', '1s', '--out', out('umbrella-1.expiring.tar.gz')])
  plain = await runJson(['export-bundle', 'umbrella-1', ...h(), ...caPass(), '--no-encrypt', '--out', out('umbrella-1.tar.gz')])
  // Passphrases from the environment this time (and --json): the secrets check covers this path too.
  encrypted = await runJson(['export-bundle', 'umbrella-1', ...h(), '--out', out('umbrella-1.tar.gz.age')], {env: {TBMESH_CA_PASSPHRASE: caPassphrase, TBMESH_BUNDLE_PASSPHRASE: bundlePassphrase}})
  joinBundle = await runJson(['export-bundle', 'initech-1', ...h(), ...caPass(), '--no-encrypt', '--out', out('initech-1.tar.gz')])

  previous = join(work, 'previous')
  await runJson(['install', plain.path, '--dir', join(previous, 'tbmesh'), ...pin()])

  caPem = await readFile(join(home, 'ca', `${caFingerprint}.crt`), 'utf8')
  const caKeyPem = await readFile(join(home, 'ca', `${caFingerprint}.key`), 'utf8')
  caKey = await readCaPrivateKey(caKeyPem, caPassphrase)
  rogue = otherCa('tbnet', '10.42.0.0/16')
  // The node's own secrets, made by install: they must never show either.
  const nodeEnv = parseNodeEnv(await readFile(join(previous, 'tbmesh', 'trubudget', 'node.env'), 'utf8'))
  secrets.push(
    ...['MULTICHAIN_RPC_PASSWORD', 'ROOT_SECRET', 'JWT_SECRET', 'ORGANIZATION_VAULT_SECRET'].map((name) => ({what: name, value: nodeEnv[name]})),
    {what: 'CA key PEM', value: pemBody(caKeyPem)},
    {what: 'CA key', value: caKey.toString('base64')},
    {what: 'umbrella-1 key PEM', value: pemBody(await readFile(join(home, 'keys', 'umbrella-1.key'), 'utf8'))},
    {what: 'hooli-1 key PEM', value: pemBody(await readFile(join(home, 'keys', 'hooli-1.key'), 'utf8'))},
    {what: 'joiner key PEM', value: pemBody(await readFile(join(joinerHome, 'requests', `${joinRequest.request.nonce}.key`), 'utf8'))},
  )
})

afterAll(async () => {
  if (work) await removeDir(work)
})

// ---------------------------------------------------------------------------------------------------------------------

describe.concurrent('install refuses bad bundles: one line, non-zero exit, DIR untouched', () => {
  let counter = 0
  /** Writes `data` as a new bundle file and returns its path. */
  const bundleFile = async (data: Buffer, ext = 'tar.gz'): Promise<string> => {
    const file = join(work, `bad-${++counter}.${ext}`)
    await writeFile(file, data, {mode: 0o600})
    return file
  }
  /** umbrella-1's plain bundle, unpacked. */
  const entries = async (): Promise<Entry[]> => unpack(await readFile(plain.path))

  /**
   * Installs `bundle` into an absent DIR and, with --force, into a DIR holding a previous installation (both beside each
   * other in a fresh parent); both must fail with one line matching `reason` and leave the parent exactly as it was.
   */
  async function expectRefused(bundle: string, reason: RegExp, opts: {args?: string[]; exit?: number} = {}): Promise<void> {
    const parent = await mkdtemp(join(work, 'case-'))
    await cp(join(previous, 'tbmesh'), join(parent, 'existing'), {recursive: true})
    const before = await snapshot(parent)
    expect(Object.keys(before)).toContain('/existing/nebula/host.key')
    const args = opts.args ?? [...pin(), '--home', join(work, 'installer-home')]
    const results = await Promise.all([
      run(['install', bundle, '--dir', join(parent, 'absent'), ...args]),
      run(['install', bundle, '--dir', join(parent, 'existing'), '--force', ...args]),
    ])
    for (const result of results) {
      expectOneLineError(result, reason, opts.exit)
      expect(String(result.stdout)).toBe('')
    }
    expect(await readdir(parent)).toEqual(['existing']) // no DIR created, no staging or moved-aside directory left
    expect(await snapshot(parent)).toEqual(before)
  }

  // An edited byte in each file of the bundle: the listed ones (every file of the layout but the manifest and its
  // signature, the vault secret only a federated organization's bundles carry, and the federated networks' members
  // file, whose edit `test/violations.test.ts` covers; umbrella-1's bundle has all the others) fail their SHA-256, the
  // manifest and its signature the signature check.
  for (const target of BUNDLE_LAYOUT.filter((e) => e.type === 'file' && e.listed && e.path !== 'trubudget/vault-secret.env' && e.path !== MEMBERS_PATH).map((e) => e.path)) {
    it(`an edited byte in ${target}`, async () => {
      const e = await entries()
      const file = await bundleFile(await pack(replaced(e, target, flipMiddleByte(get(e, target).data))))
      await expectRefused(file, new RegExp(`entry "${re(target)}" does not match its SHA-256 in manifest\\.json`))
    })
  }

  it('an edited byte in manifest.json', async () => {
    const e = await entries()
    const text = get(e, 'manifest.json').data.toString('utf8')
    expect(text).toContain('"organization": "Umbrella"')
    const file = await bundleFile(await pack(replaced(e, 'manifest.json', text.replace('"organization": "Umbrella"', '"organization": "Umbrellb"'))))
    await expectRefused(file, /Refusing bundle bad-\d+\.tar\.gz: manifest\.sig is not a valid signature of manifest\.json by its CA/)
  })

  it('an edited byte in manifest.sig', async () => {
    const e = await entries()
    const sig = get(e, 'manifest.sig').data.toString('utf8')
    const edited = `${sig.slice(0, 10)}${sig[10] === 'A' ? 'B' : 'A'}${sig.slice(11)}`
    const file = await bundleFile(await pack(replaced(e, 'manifest.sig', edited)))
    await expectRefused(file, /manifest\.sig is not a valid signature of manifest\.json by its CA/)
  })

  it('the manifest re-signed with another CA\'s key', async () => {
    const file = await bundleFile(await pack(resigned(await entries(), rogue.key)))
    await expectRefused(file, /manifest\.sig is not a valid signature of manifest\.json by its CA/)
  })

  it('a whole bundle re-made and re-signed by another CA: refused by the pin', async () => {
    let e = await entries()
    const key = hostPrivateKeyFromPem(get(e, 'nebula/host.key').data)
    const {publicKey} = certificateFromPem(get(e, 'nebula/host.crt').data).details
    expect(hostKeyMatchesCertificate(key, certificateFromPem(get(e, 'nebula/host.crt').data))).toBe(true)
    e = replaced(e, 'nebula/ca.crt', rogue.pem)
    e = replaced(e, 'nebula/host.crt', hostCertificate(rogue, 'umbrella-1', `${nodes.umbrella.overlayIp}/16`, publicKey))
    e = resigned(e, rogue.key, (m) => {
      m.caFingerprint = rogue.fingerprint
    })
    const file = await bundleFile(await pack(e))
    await expectRefused(file, new RegExp(`signed by CA ${rogue.fingerprint}, not the pinned ${caFingerprint}: do not install it`))
  })

  it('a host certificate for the same node and key, issued by another CA (manifest signed by the right one)', async () => {
    const e = await entries()
    const {publicKey} = certificateFromPem(get(e, 'nebula/host.crt').data).details
    const cert = hostCertificate(rogue, 'umbrella-1', `${nodes.umbrella.overlayIp}/16`, publicKey)
    const file = await bundleFile(await pack(resigned(replaced(e, 'nebula/host.crt', cert), caKey)))
    await expectRefused(file, /the host certificate is not valid \(certificate "umbrella-1" was issued by an unknown CA/)
  })

  it("another node's host certificate swapped in (hash fixed, re-signed by the CA)", async () => {
    const hooliCert = await readFile(join(home, 'certs', `${nodes.hooli.fingerprint}.crt`))
    const file = await bundleFile(await pack(resigned(replaced(await entries(), 'nebula/host.crt', hooliCert), caKey)))
    await expectRefused(file, new RegExp(`the host certificate is for hooli-1 \\(${re(nodes.hooli.overlayIp)}/16\\), not umbrella-1 \\(${re(nodes.umbrella.overlayIp)}\\)`))
  })

  it("another node's host certificate swapped in, manifest renamed to match: refused for the key", async () => {
    const hooliCert = await readFile(join(home, 'certs', `${nodes.hooli.fingerprint}.crt`))
    const e = resigned(replaced(await entries(), 'nebula/host.crt', hooliCert), caKey, (m) => {
      Object.assign(m, {node: 'hooli-1', organization: 'Hooli', overlayIp: nodes.hooli.overlayIp})
    })
    await expectRefused(await bundleFile(await pack(e)), /the host certificate does not match the bundle's private key/)
  })

  it('a private key that does not match the certificate (hash fixed, re-signed by the CA)', async () => {
    const hooliKey = await readFile(join(home, 'keys', 'hooli-1.key'))
    const file = await bundleFile(await pack(resigned(replaced(await entries(), 'nebula/host.key', hooliKey), caKey)))
    await expectRefused(file, /Refusing bundle bad-\d+\.tar\.gz: the host certificate does not match the bundle's private key/)
  })

  it('a truncated archive', async () => {
    const data = await readFile(plain.path)
    await expectRefused(await bundleFile(data.subarray(0, Math.floor(data.length / 2))), /not a tbmesh bundle, or truncated/)
  })

  it('a truncated encrypted bundle', async () => {
    const data = await readFile(encrypted.path)
    const file = await bundleFile(data.subarray(0, -200), 'tar.gz.age')
    await expectRefused(file, /Refusing bundle bad-\d+\.tar\.gz\.age: it is not a valid age file/, {args: [...pin(), '--bundle-passphrase-file', bundlePassFile]})
  })

  it('an entry ../x', async () => {
    const file = await bundleFile(await pack([...(await entries()), {path: '../x', type: 'File', mode: 0o644, data: Buffer.from('x')}]))
    await expectRefused(file, /entry "\.\.\/x" has a "\.\." path segment/)
  })

  it('an entry /etc/x', async () => {
    const file = await bundleFile(await pack([...(await entries()), {path: '/etc/x', type: 'File', mode: 0o644, data: Buffer.from('x')}]))
    await expectRefused(file, /entry "\/etc\/x" has an absolute path/)
  })

  it('a symbolic link', async () => {
    const e = (await entries()).map((x) => (x.path === 'nebula/ca.crt' ? {...x, type: 'SymbolicLink' as const, linkpath: '/etc/passwd', data: Buffer.alloc(0)} : x))
    await expectRefused(await bundleFile(await pack(e)), /entry "nebula\/ca\.crt" is a symbolic link/)
  })

  it('a hard link', async () => {
    const e = (await entries()).map((x) => (x.path === 'README.md' ? {...x, type: 'Link' as const, linkpath: 'manifest.json', data: Buffer.alloc(0)} : x))
    await expectRefused(await bundleFile(await pack(e)), /entry "README\.md" is a hard link/)
  })

  it('a duplicate entry (same bytes, so its hash matches)', async () => {
    const e = await entries()
    const file = await bundleFile(await pack([...e, {...get(e, 'nebula/host.key')}]))
    await expectRefused(file, /entry "nebula\/host\.key" appears more than once/)
  })

  it('a second manifest.json appended', async () => {
    const e = await entries()
    const second = get(e, 'manifest.json').data.toString('utf8').replace('"umbrella-1"', '"hooli-1"')
    const file = await bundleFile(await pack([...e, {...get(e, 'manifest.json'), data: Buffer.from(second)}]))
    await expectRefused(file, /entry "manifest\.json" appears more than once/)
  })

  it('an expired bundle (exported with --expires-in 1s)', async () => {
    const wait = Date.parse(expiring.manifest.expiresAt) + 100 - Date.now()
    if (wait > 0) await sleep(wait)
    await expectRefused(expiring.path, new RegExp(`bundle umbrella-1\\.expiring\\.tar\\.gz expired on ${re(expiring.manifest.expiresAt)}: ask the network operator to export a new one$`))
  })

  it('a wrong bundle passphrase', async () => {
    const wrong = join(work, 'wrong.pass')
    await writeFile(wrong, 'not the passphrase\n', {mode: 0o600})
    await expectRefused(encrypted.path, /^Error: wrong passphrase for bundle umbrella-1\.tar\.gz\.age: check --bundle-passphrase-file/, {args: [...pin(), '--bundle-passphrase-file', wrong]})
  })

  it('an encrypted bundle and no passphrase source (no terminal)', async () => {
    await expectRefused(encrypted.path, /no bundle passphrase and no terminal to ask on: use --bundle-passphrase-file FILE or the TBMESH_BUNDLE_PASSPHRASE/, {args: pin()})
  })

  it("a wrong pin (another CA's fingerprint)", async () => {
    await expectRefused(plain.path, new RegExp(`signed by CA ${caFingerprint}, not the pinned ${rogue.fingerprint}`), {args: ['--ca-fingerprint', rogue.fingerprint]})
  })

  it('no pin and no terminal: refused, naming --ca-fingerprint', async () => {
    await expectRefused(plain.path, new RegExp(`signed by CA ${caFingerprint}, which you have not confirmed: .*pass --ca-fingerprint HEX`), {args: []})
  })

  it('a pin that is not a fingerprint: usage error', async () => {
    await expectRefused(plain.path, /--ca-fingerprint "3f1c" is not a hex SHA-256/, {args: ['--ca-fingerprint', '3f1c'], exit: 2})
  })

  it('a bundle answering a join request this home did not make', async () => {
    const other = join(work, 'other-joiner')
    await run(['join-request', '--home', other, '--org', 'Initech', '--out', join(work, 'other.request.json')])
    await expectRefused(joinBundle.path, new RegExp(`answers join request ${joinRequest.request.nonce}, which this machine did not make: install it with the --home`), {args: [...pin(), '--home', other]})
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('good paths', () => {
  it('join-request → add-node --request --yes → export-bundle → install: the bundle has no key, the joiner\'s key is installed', async () => {
    expect(joinRequest.verificationCode).toMatch(/^([0-9A-Z]{4}-){4}[0-9A-Z]{4}$/)
    expect(nodes.initech).toMatchObject({name: 'initech-1', organization: 'Initech', keyInHome: false})
    expect(joinBundle.containsPrivateKey).toBe(false)
    expect(joinBundle.manifest.nonce).toBe(joinRequest.request.nonce)
    const names = (await unpack(await readFile(joinBundle.path))).map((e) => e.path)
    expect(names).toContain('nebula/host.crt')
    expect(names).not.toContain('nebula/host.key')
    expect(Object.keys(joinBundle.manifest.files)).not.toContain('nebula/host.key')

    const dir = join(work, 'initech-install')
    const installed = await runJson(['install', joinBundle.path, '--dir', dir, ...pin(), '--home', joinerHome])
    expect(installed).toMatchObject({keyFromJoiner: true, encrypted: false, nebulaTest: {ran: true, ok: true}})
    const key = await readFile(join(dir, 'nebula', 'host.key'), 'utf8')
    expect(key).toBe(await readFile(join(joinerHome, 'requests', `${joinRequest.request.nonce}.key`), 'utf8'))
    const cert = certificateFromPem(await readFile(join(dir, 'nebula', 'host.crt')))
    expect(hostKeyMatchesCertificate(hostPrivateKeyFromPem(key), cert)).toBe(true)
    expect(cert.details.publicKey.equals(hostPublicKeyFromPem(joinRequest.request.publicKey))).toBe(true)
  })

  it('export-bundle asks for no passphrase when the bundle holds no secret, and says so', async () => {
    // A bundle with the node's key needs one: without a terminal or a passphrase source, it is refused.
    const withKey = await run(['export-bundle', 'hooli-1', ...h(), ...caPass(), '--out', join(work, 'hooli-1.nopass.tar.gz')])
    expectOneLineError(withKey, /--bundle-passphrase-file/)
    const out = join(work, 'initech-1.no-secret.tar.gz')
    const result = await run(['export-bundle', 'initech-1', ...h(), ...caPass(), '--out', out])
    expect(result.exitCode, String(result.stderr)).toBe(0)
    expect(String(result.stderr)).toBe('')
    expect(String(result.stdout)).toContain('Secrets:        none (the node keeps its own key and makes its TruBudget secrets at install): no passphrase needed')
    expect((await readFile(out)).subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b])) // a plain gzip tar
    const json = await runJson(['export-bundle', 'initech-1', ...h(), ...caPass(), '--out', `${out}.2`])
    expect(json).toMatchObject({encrypted: false, containsPrivateKey: false, secrets: []})
  })

  it.skipIf(!NEBULA_CERT)('add-node --pubkey signs a key made by nebula-cert keygen; the bundle carries no key', async () => {
    const key = join(work, 'piedpiper.key')
    const pub = join(work, 'piedpiper.pub')
    await execa('nebula-cert', ['keygen', '-out-key', key, '-out-pub', pub])
    const keyPem = await readFile(key, 'utf8')
    secrets.push({what: 'nebula-cert keygen key PEM', value: pemBody(keyPem)})

    const added = await runJson(['add-node', ...h(), ...caPass(), '--org', 'Pied Piper', '--pubkey', pub])
    expect(added).toMatchObject({name: 'pied-piper-1', keyInHome: false, access: 'managed'})
    const certPem = await readFile(join(home, 'certs', `${added.fingerprint}.crt`), 'utf8')
    const printed = await nebulaCertCheck(caPem, certPem)
    expect(printed.details.publicKey).toBe(hostPublicKeyFromPem(await readFile(pub, 'utf8')).toString('hex'))
    expect(hostKeyMatchesCertificate(hostPrivateKeyFromPem(keyPem), certificateFromPem(certPem))).toBe(true)

    const exported = await runJson(['export-bundle', 'pied-piper-1', ...h(), ...caPass(), '--no-encrypt', '--out', join(work, 'pied-piper-1.tar.gz')])
    expect(exported.containsPrivateKey).toBe(false)
    expect((await unpack(await readFile(exported.path))).map((e) => e.path)).not.toContain('nebula/host.key')

    // Without its key the bundle cannot be installed; with --key (the keygen key) it can, and the key is installed.
    const without = await run(['install', exported.path, '--dir', join(work, 'pied-piper-nokey'), ...pin()])
    expect(without.exitCode).toBe(1)
    expect(String(without.stderr).trim().split('\n')).toHaveLength(1)
    expect(String(without.stderr)).toContain('--key')
    const installed = await runJson(['install', exported.path, '--dir', join(work, 'pied-piper'), ...pin(), '--key', key])
    expect(installed.keyFromJoiner).toBe(true)
    expect(await readFile(join(work, 'pied-piper', 'nebula', 'host.key'), 'utf8')).toBe(keyPem)
  })

  it('add-node --request without --yes and no terminal: exit 2, one error line naming --yes, nothing added', async () => {
    const request = join(work, 'globex.request.json')
    const made = await runJson(['join-request', '--home', join(work, 'globex-home'), '--org', 'Globex', '--out', request])
    const before = await snapshot(home)
    const result = await run(['add-node', ...h(), ...caPass(), '--request', request])
    expect(result.exitCode).toBe(2)
    const stderr = String(result.stderr)
    const errors = stderr.split('\n').filter((l) => l.startsWith('Error:'))
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatch(/needs confirmation: .*--yes/)
    expect(stderr).not.toMatch(/\bat .*:\d+:\d+/)
    // It still shows the code to compare.
    expect(stderr).toContain(`Verification code: ${made.verificationCode}`)
    expect(await snapshot(home)).toEqual(before)
  })

  it('a request altered after it was made shows another verification code', async () => {
    const request = join(work, 'soylent.request.json')
    const made = await runJson(['join-request', '--home', join(work, 'soylent-home'), '--org', 'Soylent', '--out', request])
    const codeShown = async (file: string): Promise<string> => {
      const result = await run(['add-node', ...h(), ...caPass(), '--request', file])
      expect(result.exitCode).toBe(2)
      return /Verification code: (\S+)/.exec(String(result.stderr))![1]
    }
    expect(await codeShown(request)).toBe(made.verificationCode)

    // Someone on the way swaps in their own public key; the file is otherwise as made.
    const text = await readFile(request, 'utf8')
    const attacker = hostPublicKeyToPem(generateHostKeyPair().publicKey)
    const swapped = join(work, 'soylent.swapped.json')
    await writeFile(swapped, text.replace(JSON.stringify(made.request.publicKey), JSON.stringify(attacker)))
    expect(await readFile(swapped, 'utf8')).not.toBe(text)
    expect(await codeShown(swapped)).not.toBe(made.verificationCode)

    // A single changed byte does too.
    const edited = join(work, 'soylent.edited.json')
    await writeFile(edited, text.replace('"Soylent"', '"Soylenu"'))
    expect(await codeShown(edited)).not.toBe(made.verificationCode)
  })

  it('a request that smuggles lines or escape sequences into the approval summary is refused in one line', async () => {
    const request = join(work, 'mallory.request.json')
    const made = await runJson(['join-request', '--home', join(work, 'mallory-home'), '--org', 'Mallory', '--out', request])
    const original = JSON.parse(await readFile(request, 'utf8')) as Record<string, unknown>
    const fake = 'AAAA-BBBB-CCCC'
    const variants: Array<[Record<string, unknown>, RegExp]> = [
      // Date.parse accepts this (a parenthesized comment): it would print a fake code and hide the real one.
      [{...original, createdAt: `Jan 1 2025 (\nVerification code: ${fake}\u001b[8m)`}, /has no valid creation time/],
      [{...original, organization: `Mallory\nVerification code: ${fake}`}, /holds "Mallory\\u000aVerification code: AAAA-BBBB-CCCC" is not a valid organization name/],
      [{...original, [`x\nVerification code: ${fake}\u001b[1A`]: 1}, /has an unknown field "x\\nVerification code: AAAA-BBBB-CCCC\\u001b\[1A"/],
    ]
    await Promise.all(
      variants.map(async ([content, reason], i) => {
        const file = join(work, `mallory-${i}.request.json`)
        await writeFile(file, `${JSON.stringify(content, null, 2)}\n`)
        const result = await run(['add-node', ...h(), ...caPass(), '--request', file, '--yes'])
        expectOneLineError(result, reason)
        expect(String(result.stderr)).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/)
        expect(String(result.stderr)).not.toMatch(/^Verification code/m) // quoted (escaped) inside the error line at most
        expect(String(result.stdout)).toBe('')
      }),
    )
    expect(made.verificationCode).not.toBe(fake)
    expect(JSON.parse(await readFile(join(home, 'state.json'), 'utf8')).organizations.map((o: {name: string}) => o.name)).not.toContain('Mallory')
  })

  it.skipIf(!NEBULA_CERT)('--access trusted becomes the certificate group access:trusted (default for a non-origin node: managed)', async () => {
    const trusted = await runJson(['add-node', ...h(), ...caPass(), '--org', 'Initrode', '--access', 'trusted'])
    expect(trusted.access).toBe('trusted')
    const printed = await nebulaCertCheck(caPem, await readFile(join(home, 'certs', `${trusted.fingerprint}.crt`), 'utf8'))
    expect(printed.details.groups).toContain('access:trusted')
    expect(printed.details.groups).not.toContain('access:managed')

    const managed = await nebulaCertCheck(caPem, await readFile(join(home, 'certs', `${nodes.umbrella.fingerprint}.crt`), 'utf8'))
    expect(managed.details.groups).toEqual(['org:umbrella', 'access:managed'])
    const origin = await nebulaCertCheck(caPem, await readFile(join(home, 'certs', `${nodes.acme.fingerprint}.crt`), 'utf8'))
    expect(origin.details.groups).toContain('access:trusted')
  })

  it('an encrypted bundle installs with its passphrase (--json)', async () => {
    expect(encrypted).toMatchObject({encrypted: true, containsPrivateKey: true})
    expect((await readFile(encrypted.path)).subarray(0, 22).toString('latin1')).toBe('age-encryption.org/v1\n')
    const installed = await runJson(['install', encrypted.path, '--dir', join(work, 'encrypted-install'), ...pin(), '--bundle-passphrase-file', bundlePassFile])
    expect(installed).toMatchObject({encrypted: true, keyFromJoiner: false, nebulaTest: {ok: true}})
    expect(installed.manifest).toEqual(encrypted.manifest)
  })

  it('a refusal with --json is {"error": …} on stdout and nothing on stderr', async () => {
    const result = await run(['install', plain.path, '--dir', join(work, 'json-refusal'), '--ca-fingerprint', rogue.fingerprint, '--json'])
    expect(result.exitCode).toBe(1)
    expect(String(result.stderr)).toBe('')
    expect(JSON.parse(String(result.stdout))).toEqual({error: {name: 'UserError', message: expect.stringMatching(/not the pinned/), exit: 1}})
  })
})

// ---------------------------------------------------------------------------------------------------------------------

/**
 * Runs `command` in a pseudo-terminal (age reads passphrases from /dev/tty only) and types the passphrase, taken from
 * the environment (never argv), at every prompt that asks for one. Exits with the command's code; prints its terminal
 * output with the passphrase redacted.
 */
const PTY_DRIVER = `
import os, pty, select, sys
secret = os.environ['PTY_PASSPHRASE'].encode()
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
seen, answered = b'', 0
while True:
    ready, _, _ = select.select([fd], [], [], 60)
    if not ready:
        break
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    seen += chunk
    while seen.lower().count(b'passphrase') > answered:
        os.write(fd, secret + b'\\n')
        answered += 1
_, status = os.waitpid(pid, 0)
sys.stdout.write(seen.replace(secret, b'<redacted>').decode(errors='replace'))
sys.exit(os.waitstatus_to_exitcode(status))
`

/** Runs `args` under the PTY driver with `passphrase`. */
const withTty = (args: string[], passphrase: string) =>
  execa('python3', ['-c', PTY_DRIVER, ...args], {env: {...process.env, PTY_PASSPHRASE: passphrase}, reject: false, timeout: 60_000})

describe.skipIf(!AGE && !process.env.CI)('interoperability with the age CLI', () => {
  const requireAge = (): void => {
    if (!AGE) throw new Error('age is required when CI is set (apt-get install -y age)')
  }

  it('age -d opens an encrypted bundle: the gzip tar inside holds the signed manifest', async () => {
    requireAge()
    const out = join(work, 'decrypted-by-age.tar.gz')
    const age = await withTty(['age', '-d', '-o', out, encrypted.path], bundlePassphrase)
    expect(age.exitCode, String(age.stdout)).toBe(0)
    const tar = await readFile(out)
    expect(tar.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b])) // gzip
    const e = await unpack(tar)
    // The manifest, its signature, then every file it lists, in order (directories aside).
    expect(e.filter((x) => x.type === 'File').map((x) => x.path)).toEqual(['manifest.json', 'manifest.sig', ...Object.keys(encrypted.manifest.files)])
    expect(Object.keys(encrypted.manifest.files)).toEqual(expect.arrayContaining(['nebula/ca.crt', 'nebula/host.crt', 'nebula/host.key', 'nebula/config.yml', 'multichain/multichain.conf', 'trubudget/blockchain.env']))
    const manifest = get(e, 'manifest.json').data
    expect(JSON.parse(manifest.toString('utf8'))).toEqual(encrypted.manifest)
    const signature = Buffer.from(get(e, 'manifest.sig').data.toString('utf8').trim(), 'base64')
    // Signed under the manifest's domain prefix (schema version 2), never the bare bytes.
    expect(ed25519Verify(certificateFromPem(caPem).details.publicKey, manifestMessage(manifest, 2), signature)).toBe(true)
    expect(ed25519Verify(certificateFromPem(caPem).details.publicKey, manifest, signature)).toBe(false)
    for (const [path, hash] of Object.entries(encrypted.manifest.files as Record<string, string>)) expect(sha256(get(e, path).data), path).toBe(hash)

    // And a wrong passphrase fails in age too.
    const wrong = await withTty(['age', '-d', '-o', join(work, 'nope.tar.gz'), encrypted.path], 'not the passphrase')
    expect(wrong.exitCode).not.toBe(0)
  })

  it('a bundle encrypted with age -p installs with tbmesh install', async () => {
    requireAge()
    const out = join(work, 'encrypted-by-age.tar.gz.age')
    const age = await withTty(['age', '-p', '-o', out, plain.path], bundlePassphrase)
    expect(age.exitCode, String(age.stdout)).toBe(0)
    const installed = await runJson(['install', out, '--dir', join(work, 'age-install'), ...pin()], {env: {TBMESH_BUNDLE_PASSPHRASE: bundlePassphrase}})
    expect(installed).toMatchObject({encrypted: true, manifest: plain.manifest})
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('secrets', () => {
  it('a wrong CA passphrase is not echoed back', async () => {
    const wrong = `wrong ${randomBytes(12).toString('base64url')}`
    for (const json of [false, true]) {
      const result = await run(['export-bundle', 'umbrella-1', ...h(), '--no-encrypt', '--out', join(work, `never-${json}.tar.gz`), ...(json ? ['--json'] : [])], {env: {TBMESH_CA_PASSPHRASE: wrong}})
      expect(result.exitCode).toBe(1)
      const output = `${result.stdout}${result.stderr}`
      expect(output).toMatch(/wrong CA passphrase/)
      expect(output).not.toContain(wrong)
      expect(output).not.toContain(caPassphrase)
    }
  })

  it('never appear on argv, in the output of any command above, or in --json results', () => {
    // Runs last (describes and their tests run in order): everything this file ran is in the transcript.
    expect(transcript.length).toBeGreaterThan(40)
    expect(transcript.some((t) => t.args.includes('--json') && t.args[0] === 'export-bundle' && t.env.TBMESH_BUNDLE_PASSPHRASE)).toBe(true)
    expect(transcript.some((t) => t.args.includes('--json') && t.args[0] === 'install')).toBe(true)
    expect(secrets.length).toBeGreaterThanOrEqual(8)
    for (const {what, value} of secrets) {
      expect(value.length, what).toBeGreaterThanOrEqual(16)
      for (const t of transcript) {
        const where = `tbmesh ${t.args.join(' ')}`
        expect(t.args.some((a) => a.includes(value)), `${what} on argv of ${where}`).toBe(false)
        expect(t.stdout.includes(value), `${what} on stdout of ${where}`).toBe(false)
        expect(t.stderr.includes(value), `${what} on stderr of ${where}`).toBe(false)
      }
    }
  })
})
