/**
 * Join bundles, through the module: write → read round trip, install + real `nebula -test`, trust (signature, pin,
 * host certificate, key, expiry, encryption), and refusals of archives crafted for real with node-tar — otherwise
 * valid and signed by the CA, so that each is refused for the intended reason — each leaving the target directory
 * exactly as it was. The CLI side of the same checks is in join-security.test.ts.
 */

import {spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {isAbsolute, join} from 'node:path'
import {gzipSync} from 'node:zlib'

import {execa} from 'execa'
import {Header, list, Pack, ReadEntry} from 'tar'
import {afterAll, beforeAll, beforeEach, describe, expect, it} from 'vitest'
import yaml from 'yaml'

import {readBundle, writeBundle} from '../src/bundle/archive.js'
import {installBundle} from '../src/bundle/install.js'
import {BUNDLE_LAYOUT, type BundleManifest, type BundleMeta, DEFAULT_MAX_ENTRY_BYTES, FILES, INSTALLATION_LAYOUT} from '../src/bundle/layout.js'
import {MEMBERS_PATH} from '../src/bundle/members.js'
import {UserError} from '../src/errors.js'
import {
  certificateToPem,
  ed25519Sign,
  ed25519Verify,
  fingerprint,
  generateCaKeyPair,
  generateHostKeyPair,
  hostPrivateKeyToPem,
  signDetails,
} from '../src/nebula/index.js'
import {renderBundleReadme} from '../src/render/bundle-readme.js'
import {renderHostEnv} from '../src/render/host-env.js'
import {renderMultichainConf} from '../src/render/multichain-conf.js'
import {renderNebulaConfig} from '../src/render/nebula-config.js'
import type {NodeProfile} from '../src/render/profile.js'
import {snapshot} from './helpers.js'

const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
const NEBULA = have('nebula')
const requireNebula = (): void => {
  if (!NEBULA && process.env.CI) throw new Error('nebula is required when CI is set')
}

const profile: NodeProfile = {
  network: {name: 'tb-prod', cidr: '10.42.0.0/16'},
  node: {name: 'umbrella-1', organization: 'Umbrella', overlayIp: '10.42.1.1', lighthouse: false, relay: false, origin: false, registrar: false},
  ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080, storage: 8090},
  lighthouses: [{overlayIp: '10.42.0.1', endpoint: '203.0.113.10:4242'}],
  relays: [{overlayIp: '10.42.0.1', endpoint: '203.0.113.10:4242'}],
  originOverlayIp: '10.42.0.1',
  rpc: {user: 'multichainrpc'},
  tun: {dev: 'tbmesh0', mtu: 1300},
  // As the CA renders it for the bundle: relative to nebula's working directory; install makes them absolute.
  pki: {ca: 'nebula/ca.crt', cert: 'nebula/host.crt', key: 'nebula/host.key'},
  blocklist: [],
  minNebulaVersion: '1.6.1',
}

let work: string
let files: Record<string, string>
let meta: BundleMeta
let good: string

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex')

const NOW = Math.floor(Date.now() / 1000)
/** `text` as a literal inside a RegExp. */
const re = (text: string): string => text.replaceAll(/[.*+?^${}()|[\]\\/]/g, '\\$&')

/** A Nebula CA made with the codec: its 64-byte Ed25519 key, PEM and fingerprint. */
function makeCa(name: string): {key: Buffer; publicKey: Buffer; pem: string; fingerprint: string} {
  const keys = generateCaKeyPair()
  const cert = signDetails(
    {name, ips: ['10.42.0.0/16'], subnets: [], groups: [], notBefore: NOW - 3600, notAfter: NOW + 10 * 365 * 86_400, publicKey: keys.publicKey, isCA: true, issuer: '', curve: 'CURVE25519'},
    keys.privateKey,
  )
  return {key: keys.privateKey, publicKey: keys.publicKey, pem: certificateToPem(cert), fingerprint: fingerprint(cert)}
}

/** A host certificate for `name`/`ip` signed by `ca`, for `keys` (default: a fresh key pair); PEMs. */
function makeHost(ca: ReturnType<typeof makeCa>, name: string, ip: string, keys = generateHostKeyPair()): {cert: string; key: string} {
  const cert = signDetails(
    {name, ips: [`${ip}/16`], subnets: [], groups: ['org:umbrella', 'access:managed'], notBefore: NOW - 60, notAfter: NOW + 365 * 86_400, publicKey: keys.publicKey, isCA: false, issuer: ca.fingerprint, curve: 'CURVE25519'},
    ca.key,
  )
  return {cert: certificateToPem(cert), key: hostPrivateKeyToPem(keys.privateKey)}
}

/** A host's certificate and key as bundle files. */
const hostFiles = (host: {cert: string; key: string}): Record<string, string> => ({'nebula/host.crt': host.cert, 'nebula/host.key': host.key})

/** The network's CA, and another one with the same name (what an impostor would make). */
let ca: ReturnType<typeof makeCa>
let otherCa: ReturnType<typeof makeCa>
/** Signs with the network's CA key, as export-bundle does. */
const sign = (manifest: Buffer): Buffer => ed25519Sign(ca.key, manifest)
/** installBundle's options with the right pin. */
const pinned = (extra: Parameters<typeof installBundle>[2] = {}): Parameters<typeof installBundle>[2] => ({pin: ca.fingerprint, ...extra})

interface Crafted {
  path: string
  type?: 'File' | 'Directory' | 'SymbolicLink' | 'Link' | 'FIFO' | 'CharacterDevice'
  data?: Buffer | string
  linkpath?: string
  mode?: number
}

/** Writes a tar (gzip unless told otherwise) of exactly `entries`, in order, with node-tar. */
async function craft(file: string, entries: Crafted[], opts: {gzip?: boolean} = {}): Promise<string> {
  const pack = new Pack({gzip: opts.gzip ?? true, portable: true, preservePaths: true})
  const out = pack.concat()
  for (const e of entries) {
    const data = e.data === undefined ? undefined : Buffer.from(e.data)
    const entry = new ReadEntry(
      new Header({path: e.path, type: e.type ?? 'File', mode: e.mode ?? 0o644, size: data?.length ?? 0, linkpath: e.linkpath, mtime: new Date(0)}),
    )
    if (data) entry.write(data)
    entry.end()
    pack.add(entry)
  }
  pack.end()
  await writeFile(file, await out)
  return file
}

/** The manifest for `content` (path → bytes, manifest excluded), with `overrides`. */
function manifestFor(content: Record<string, Buffer | string>, overrides: Partial<BundleManifest> = {}): string {
  const m = {
    schemaVersion: 1,
    ...meta,
    files: Object.fromEntries(Object.entries(content).map(([p, d]) => [p, sha256(d)])),
    ...overrides,
  }
  return `${JSON.stringify(m, null, 2)}\n`
}

/**
 * Bundle entries (manifest and its signature first) for `content`, optionally with another manifest text, signed
 * with `signer` (default: the network's CA key).
 */
function entriesFor(content: Record<string, Buffer | string>, manifest = manifestFor(content), signer: Buffer = ca.key): Crafted[] {
  return [
    {path: 'manifest.json', data: manifest},
    {path: 'manifest.sig', data: `${ed25519Sign(signer, Buffer.from(manifest)).toString('base64')}\n`},
    ...Object.entries(content).map(([path, data]) => ({path, data})),
  ]
}

/** The layout of a single-CA bundle: everything but what only federated networks have. */
const SINGLE_CA_LAYOUT = BUNDLE_LAYOUT.filter((e) => e.path !== MEMBERS_PATH)

let counter = 0
const craftedPath = (): string => join(work, `crafted-${++counter}.tar.gz`)

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tbmesh-bundle-'))
  ca = makeCa('tb-prod')
  otherCa = makeCa('tb-prod')
  const host = makeHost(ca, 'umbrella-1', '10.42.1.1')
  // createdAt is fixed (it is the archive members' mtime); expiresAt lies ahead so that the bundle installs today.
  const expiresAt = new Date((NOW + 14 * 86_400) * 1000).toISOString()
  meta = {kind: 'join', sequence: 1, network: 'tb-prod', node: 'umbrella-1', organization: 'Umbrella', overlayIp: '10.42.1.1', caFingerprint: ca.fingerprint, createdAt: '2025-01-31T12:00:00.000Z', expiresAt}
  files = {
    'nebula/ca.crt': ca.pem,
    'nebula/host.crt': host.cert,
    'nebula/host.key': host.key,
    'nebula/config.yml': renderNebulaConfig(profile),
    'multichain/multichain.conf': renderMultichainConf(profile),
    'trubudget/blockchain.env': renderHostEnv(profile, 'blockchain'),
    // A federated organization's own vault secret: the bundle then holds every entry of the layout.
    'trubudget/vault-secret.env': 'ORGANIZATION_VAULT_SECRET=Vx3kP9mQ2wRt7YbN5cHjL8dFg4AeUz6S\n',
    'README.md': renderBundleReadme(profile, {createdAt: meta.createdAt, caFingerprint: meta.caFingerprint}),
  }
  // Any other file of a single-CA join bundle (deployment files, …): a stand-in naming the default installation directory.
  for (const spec of BUNDLE_LAYOUT) {
    if (spec.type === 'file' && spec.listed && spec.path !== MEMBERS_PATH && !(spec.path in files)) files[spec.path] = `# ${spec.description}\n# /etc/tbmesh/nebula/config.yml\n`
  }
  good = join(work, 'umbrella-1.tbmesh.tar.gz')
  await writeBundle(good, meta, files, {sign})
})

afterAll(async () => {
  await rm(work, {recursive: true, force: true})
})

describe('writeBundle', () => {
  it('writes the layout, deterministically, mode 0600, refusing to overwrite without force', async () => {
    const out = join(work, 'w.tar.gz')
    const result = await writeBundle(out, meta, files, {sign})
    expect(result.path).toBe(out)
    expect(result.bytes).toBe((await stat(out)).size)
    expect(result.encrypted).toBe(false)
    expect((await stat(out)).mode & 0o777).toBe(0o600)
    expect(result.manifest).toEqual({schemaVersion: 2, ...meta, files: Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha256(d)]))})

    const listed: Array<{path: string; type: string; mode: number; uid?: number; uname?: string; mtime?: Date}> = []
    await list({file: out, onReadEntry: (e) => listed.push({path: e.path, type: e.type, mode: e.mode!, uid: e.uid, uname: e.uname, mtime: e.mtime})})
    // Every layout entry (the bundle has them all but the federated networks' members file), in layout order: the
    // manifest and its signature first, each directory before its files.
    expect(listed.map((e) => e.path)).toEqual(SINGLE_CA_LAYOUT.map((e) => e.path))
    expect(listed.map((e) => e.path).slice(0, 7)).toEqual(['manifest.json', 'manifest.sig', 'nebula/', 'nebula/ca.crt', 'nebula/host.crt', 'nebula/host.key', 'nebula/config.yml'])
    expect(listed.map((e) => e.path)).toEqual(expect.arrayContaining(['multichain/', 'multichain/multichain.conf', 'trubudget/', 'trubudget/blockchain.env', 'README.md']))
    for (const e of listed) {
      expect(e.mode, e.path).toBe(e.type === 'Directory' ? 0o755 : ['nebula/host.key', 'trubudget/vault-secret.env'].includes(e.path) ? 0o600 : 0o644)
      expect(e.uid ?? 0).toBe(0)
      expect(e.uname ?? '').toBe('')
      if (e.type === 'File') expect(e.mtime?.toISOString()).toBe('2025-01-31T12:00:00.000Z')
    }

    // manifest.sig: the CA's Ed25519 signature, base64, of the exact bytes of manifest.json under the manifest's
    // domain prefix (schema version 2) — never of the bare bytes, which another protocol could have had signed.
    const read = await readBundle(out)
    const signature = Buffer.from(read.files.get('manifest.sig')!.toString('utf8').trim(), 'base64')
    expect(signature).toHaveLength(64)
    const manifestBytes = read.files.get('manifest.json')!
    expect(ed25519Verify(ca.publicKey, Buffer.concat([Buffer.from('tbmesh-bundle-manifest:v2:'), manifestBytes]), signature)).toBe(true)
    expect(ed25519Verify(ca.publicKey, manifestBytes, signature)).toBe(false)
    expect(ed25519Verify(otherCa.publicKey, Buffer.concat([Buffer.from('tbmesh-bundle-manifest:v2:'), manifestBytes]), signature)).toBe(false)

    const before = await readFile(out)
    await expect(writeBundle(out, meta, files, {sign})).rejects.toThrow(/already exists/)
    await writeBundle(out, meta, files, {sign}).catch((error: UserError) => {
      expect(error).toBeInstanceOf(UserError)
      expect(error.line).toMatch(/--force/)
    })
    expect(await readFile(out)).toEqual(before)
    await writeBundle(out, meta, files, {sign, force: true})
    expect(await readFile(out)).toEqual(before) // same input, same bytes
    expect((await readdir(work)).filter((f) => f.endsWith('.tmp'))).toEqual([])
  })

  it('leaves host.key out when it is not given', async () => {
    const {'nebula/host.key': _key, ...rest} = files
    const out = join(work, 'nokey.tar.gz')
    const result = await writeBundle(out, meta, rest, {sign})
    expect(Object.keys(result.manifest.files)).not.toContain('nebula/host.key')
    const read = await readBundle(out)
    expect(read.files.has('nebula/host.key')).toBe(false)
  })

  it('throws on entries outside the layout or a missing required one', async () => {
    await expect(writeBundle(join(work, 'x.tar.gz'), meta, {...files, 'extra.txt': 'x'}, {sign})).rejects.toThrow(/not a listed entry/)
    await expect(writeBundle(join(work, 'x.tar.gz'), meta, {...files, 'manifest.sig': 'x'}, {sign})).rejects.toThrow(/not a listed entry/)
    const {'README.md': _readme, ...rest} = files
    await expect(writeBundle(join(work, 'x.tar.gz'), meta, rest, {sign})).rejects.toThrow(/README.md is missing/)
    await expect(writeBundle(join(work, 'x.tar.gz'), {...meta, createdAt: 'yesterday'}, files, {sign})).rejects.toThrow(/createdAt/)
    await expect(writeBundle(join(work, 'x.tar.gz'), {...meta, expiresAt: 'in two weeks'}, files, {sign})).rejects.toThrow(/expiresAt/)
    await expect(writeBundle(join(work, 'x.tar.gz'), {...meta, nonce: 'abc'}, files, {sign})).rejects.toThrow(/nonce/)
    expect(await readdir(work)).not.toContain('x.tar.gz')
  })
})

describe('readBundle', () => {
  it('round-trips', async () => {
    const {manifest, files: read} = await readBundle(good)
    expect(manifest.node).toBe('umbrella-1')
    expect(manifest.caFingerprint).toBe(meta.caFingerprint)
    expect([...read.keys()]).toEqual(SINGLE_CA_LAYOUT.filter((e) => e.type === 'file').map((e) => e.path))
    for (const [path, data] of Object.entries(files)) expect(read.get(path)?.toString('utf8'), path).toBe(data)
    expect(JSON.parse(read.get('manifest.json')!.toString('utf8'))).toEqual(manifest)
  })
})

describe('installBundle', () => {
  let parent: string
  beforeEach(async () => {
    parent = await mkdtemp(join(work, 'install-'))
  })

  it('installs with absolute pki paths, private modes, and nebula -test passes', async () => {
    requireNebula()
    const dir = join(parent, 'tbmesh')
    const result = await installBundle(good, dir, pinned())
    expect(result.dir).toBe(dir)
    expect(result.keyFromJoiner).toBe(false)
    expect(result.encrypted).toBe(false)
    // Every file of the installation table but the vault secret, which install moves into node.env (the node's own
    // secrets, made here), then what install renders for this host; a single-CA bundle has no members file.
    expect(result.files).toEqual(INSTALLATION_LAYOUT.filter((e) => e.type === 'file' && e.path !== MEMBERS_PATH).map((e) => e.path))
    expect(result.files).not.toContain('trubudget/vault-secret.env')
    expect(result.files).toContain('trubudget/node.env')
    expect(result.guard).toBe(join(dir, 'host', 'underlay-guard.nft'))
    expect(result.nodeEnv).toMatchObject({path: join(dir, 'trubudget', 'node.env'), vault: 'bundle'})
    expect(await readdir(parent)).toEqual(['tbmesh'])

    const configText = await readFile(join(dir, 'nebula', 'config.yml'), 'utf8')
    expect(configText.split('\n')[0]).toMatch(/^# Nebula config.yml for node umbrella-1/)
    expect(configText).toContain('# Installed by tbmesh install')
    const config = yaml.parse(configText) as {pki: Record<string, string>}
    expect(config.pki).toMatchObject({ca: join(dir, 'nebula', 'ca.crt'), cert: join(dir, 'nebula', 'host.crt'), key: join(dir, 'nebula', 'host.key')})
    for (const p of Object.values(config.pki).slice(0, 3)) expect(isAbsolute(p)).toBe(true)
    expect(await readFile(join(dir, 'nebula', 'host.key'), 'utf8')).toBe(files['nebula/host.key'])
    expect(await readFile(join(dir, 'trubudget', 'blockchain.env'), 'utf8')).toBe(files['trubudget/blockchain.env'])

    const mode = async (p: string): Promise<number> => (await stat(join(dir, p))).mode & 0o777
    // The secrets, by name (a table that made them readable would fail here), then every entry as the table says.
    expect(await mode('.')).toBe(0o700)
    expect(await mode('nebula')).toBe(0o700)
    expect(await mode('nebula/host.key')).toBe(0o600)
    expect(await mode('multichain/multichain.conf')).toBe(0o600)
    expect(await mode('trubudget')).toBe(0o700)
    expect(await mode('trubudget/node.env')).toBe(0o600)
    expect(await mode('trubudget/blockchain.env')).toBe(0o644)
    const nodeEnv = await readFile(join(dir, 'trubudget', 'node.env'), 'utf8')
    expect(nodeEnv).toContain('ORGANIZATION_VAULT_SECRET=Vx3kP9mQ2wRt7YbN5cHjL8dFg4AeUz6S\n')
    const rpcPassword = /^MULTICHAIN_RPC_PASSWORD=(.+)$/m.exec(nodeEnv)?.[1]
    expect(rpcPassword).toHaveLength(44)
    expect(await readFile(join(dir, 'multichain', 'multichain.conf'), 'utf8')).toBe(`${files['multichain/multichain.conf']}rpcpassword=${rpcPassword}\n`)
    expect(await mode('README.md')).toBe(0o644)
    for (const entry of INSTALLATION_LAYOUT.filter((e) => e.path !== MEMBERS_PATH)) expect(await mode(entry.path), entry.path).toBe(entry.installMode)

    // The underlay guard, from the host certificate's overlay IP and config.yml's tun.dev (tbmesh0 here).
    const guard = await readFile(result.guard, 'utf8')
    expect(guard).toContain('\t\tip daddr { 10.42.1.1 } iifname != { "tbmesh0", "lo" } counter drop comment "tbmesh underlay guard"\n')
    expect(guard).toContain(`nft -f "${dir}/host/underlay-guard.nft"`)
    expect(await readFile(join(dir, 'systemd', 'tbmesh-guard.service'), 'utf8')).toContain(`ExecStart=/usr/sbin/nft -f "${dir}/host/underlay-guard.nft"`)

    if (NEBULA) {
      expect(result.nebulaTest.ran).toBe(true)
      expect(result.nebulaTest.ok, result.nebulaTest.output).toBe(true)
      // From any working directory.
      const again = await execa('nebula', ['-test', '-config', join(dir, 'nebula', 'config.yml')], {cwd: '/', reject: false, all: true})
      expect(again.exitCode, String(again.all)).toBe(0)
    } else if (!have('nebula')) {
      expect(result.nebulaTest).toEqual({ran: false})
    }
  })

  it('reports that nebula -test did not run when nebula is not on PATH', async () => {
    const path = process.env.PATH
    process.env.PATH = join(work, 'no-such-bin')
    try {
      const result = await installBundle(good, join(parent, 'nopath'), pinned())
      expect(result.nebulaTest).toEqual({ran: false})
    } finally {
      process.env.PATH = path
    }
  })

  it('installs into an existing empty directory', async () => {
    const dir = join(parent, 'empty')
    await mkdir(dir)
    const result = await installBundle(good, dir, pinned())
    expect(result.files).toContain('nebula/config.yml')
  })

  it('refuses an existing non-empty directory without force; with force, replaces only a tbmesh installation', async () => {
    const dir = join(parent, 'old')
    await mkdir(dir)
    await writeFile(join(dir, 'keep.txt'), 'not tbmesh\'s')
    const before = await snapshot(parent)
    const error = await installBundle(good, dir, pinned()).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(UserError)
    expect((error as UserError).line).toMatch(/not empty.*--force/)
    expect(await snapshot(parent)).toEqual(before)

    // Anything but a tbmesh installation (/etc/nebula, say) is refused with --force too, and nothing in it deleted.
    const forced = await installBundle(good, dir, pinned({force: true})).catch((e: unknown) => e)
    expect((forced as UserError).line).toBe(`${dir} is not empty and holds no tbmesh installation (no valid manifest.json), so tbmesh will not replace it: choose another --dir, or empty it yourself`)
    expect(await snapshot(parent)).toEqual(before)
    await writeFile(join(dir, 'manifest.json'), '{"schemaVersion": 2, "kind": "join"}\n') // not a valid manifest
    await expect(installBundle(good, dir, pinned({force: true}))).rejects.toThrow(/holds no tbmesh installation/)

    // A tbmesh installation is replaced with --force, whole.
    const installation = join(parent, 'tbmesh')
    await installBundle(good, installation, pinned())
    await writeFile(join(installation, 'stray.txt'), 'left by hand')
    await installBundle(good, installation, pinned({force: true}))
    expect((await readdir(installation)).sort()).toEqual([...new Set(INSTALLATION_LAYOUT.map((e) => e.path.split('/')[0]))].sort())
    expect(await readdir(parent)).toEqual(['old', 'tbmesh'])
  })

  it('refuses a bundle older than the installation of the same node, with force too, unless allowRollback', async () => {
    const dir = join(parent, 'node')
    const newer = join(work, 'newer.tar.gz')
    await writeBundle(newer, {...meta, sequence: 5}, files, {sign, force: true})
    await installBundle(newer, dir, pinned())
    const before = await snapshot(parent)
    // `good` is the same node's join bundle with sequence 1: installing it would bring back its certificate and blocklist.
    const refused = await installBundle(good, dir, pinned({force: true})).catch((e: unknown) => e)
    expect((refused as UserError).line).toBe(
      'umbrella-1.tbmesh.tar.gz has sequence 1, older than the installed 5: installing it would roll back the node\'s certificates and blocklist: install the newest bundle from the network operator, or pass --allow-rollback if you mean to go back',
    )
    expect(await snapshot(parent)).toEqual(before)
    // The same sequence again (a reinstall) is no rollback; another node's bundle replaces the installation.
    await installBundle(newer, dir, pinned({force: true}))
    const other = join(work, 'other-node.tar.gz')
    await writeBundle(other, {...meta, node: 'umbrella-2', overlayIp: '10.42.1.2', sequence: 1}, {...files, ...hostFiles(makeHost(ca, 'umbrella-2', '10.42.1.2'))}, {sign, force: true})
    expect((await installBundle(other, dir, pinned({force: true}))).rollback).toBeUndefined()
    await installBundle(newer, dir, pinned({force: true}))

    const rolledBack = await installBundle(good, dir, pinned({force: true, allowRollback: true}))
    expect(rolledBack.rollback).toEqual({installed: 5, sequence: 1})
    expect(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')).sequence).toBe(1)
  })

  it('creates DIR 0700 and its missing parents 0755 at most, under umask 000 too', async () => {
    const old = process.umask(0)
    try {
      const dir = join(parent, 'a', 'b', 'tbmesh')
      await installBundle(good, dir, pinned())
      const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o777
      expect(await mode(join(parent, 'a'))).toBe(0o755)
      expect(await mode(join(parent, 'a', 'b'))).toBe(0o755)
      expect(await mode(dir)).toBe(0o700)
      for (const entry of INSTALLATION_LAYOUT.filter((e) => e.path !== MEMBERS_PATH)) expect(await mode(join(dir, entry.path)), entry.path).toBe(entry.installMode)
    } finally {
      process.umask(old)
    }
  })

  it('refuses a file or a symbolic link as DIR', async () => {
    const file = join(parent, 'file')
    await writeFile(file, 'x')
    await expect(installBundle(good, file, pinned({force: true}))).rejects.toThrow(/not a directory/)
    const real = join(parent, 'real')
    await mkdir(real)
    await symlink(real, join(parent, 'link'))
    await expect(installBundle(good, join(parent, 'link'), pinned({force: true}))).rejects.toThrow(/symbolic link/)
    expect(await readdir(real)).toEqual([])
  })
})

describe('refusals', () => {
  /**
   * `files` with `changes` (undefined removes an entry), listed in a manifest with `manifest` overrides and signed with
   * `signer` (default: the network's CA key): what a CA key holder could write.
   */
  const signed = (
    f: string,
    changes: Record<string, Buffer | string | undefined>,
    opts: {manifest?: Partial<BundleManifest>; signer?: Buffer} = {},
  ): Promise<string> => {
    const content: Record<string, Buffer | string> = {...files}
    for (const [path, data] of Object.entries(changes)) {
      if (data === undefined) delete content[path]
      else content[path] = data
    }
    return craft(f, entriesFor(content, manifestFor(content, opts.manifest), opts.signer))
  }
  /** Valid entries, then `edit` applied to the (already signed) entry at `path`. */
  const editedAfterSigning = (f: string, path: string, edit: (data: Buffer) => Buffer): Promise<string> =>
    craft(f, entriesFor(files).map((e) => (e.path === path ? {...e, data: edit(Buffer.from(e.data!))} : e)))
  const flipMiddleByte = (data: Buffer): Buffer => {
    const edited = Buffer.from(data)
    edited[Math.floor(edited.length / 2)] ^= 0x01
    return edited
  }

  /**
   * Each case: how to make the file, what the one-line message must say, and which step refuses it: `read` (layout and
   * hashes, readBundle), `trust` (signature, pin, certificate, key, expiry: before install looks at DIR) or `install`.
   */
  const cases: Array<{name: string; make: (file: string) => Promise<string>; message: RegExp | (() => RegExp); stage?: 'read' | 'trust' | 'install'}> = [
    {name: '../x', make: (f) => craft(f, [...entriesFor(files), {path: '../x', data: 'x'}]), message: /entry "\.\.\/x" has a "\.\." path segment/},
    {name: 'nebula/../../x', make: (f) => craft(f, [{path: 'nebula/../../x', data: 'x'}, ...entriesFor(files)]), message: /entry "nebula\/\.\.\/\.\.\/x" has a "\.\." path segment/},
    {name: '/etc/x', make: (f) => craft(f, [...entriesFor(files), {path: '/etc/x', data: 'x'}]), message: /entry "\/etc\/x" has an absolute path/},
    {
      name: 'symlink',
      make: (f) => craft(f, [...entriesFor(files).filter((e) => e.path !== 'nebula/ca.crt'), {path: 'nebula/ca.crt', type: 'SymbolicLink', linkpath: '/etc/passwd'}]),
      message: /entry "nebula\/ca.crt" is a symbolic link/,
    },
    {
      name: 'hard link',
      make: (f) => craft(f, [...entriesFor(files).filter((e) => e.path !== 'README.md'), {path: 'README.md', type: 'Link', linkpath: 'manifest.json'}]),
      message: /entry "README.md" is a hard link/,
    },
    {name: 'fifo', make: (f) => craft(f, [{path: 'nebula/host.key', type: 'FIFO'}, ...entriesFor(files)]), message: /entry "nebula\/host.key" is a FIFO/},
    {name: 'device', make: (f) => craft(f, [{path: 'nebula/host.key', type: 'CharacterDevice'}, ...entriesFor(files)]), message: /entry "nebula\/host.key" is a device file/},
    {name: 'duplicate', make: (f) => craft(f, [...entriesFor(files), {path: 'README.md', data: files['README.md']!}]), message: /entry "README.md" appears more than once/},
    {
      name: 'duplicate manifest (a second, unsigned one appended)',
      make: (f) => craft(f, [...entriesFor(files), {path: 'manifest.json', data: manifestFor(files, {node: 'acme-1'})}]),
      message: /entry "manifest.json" appears more than once/,
    },
    {name: 'duplicate directory', make: (f) => craft(f, [{path: 'nebula/', type: 'Directory'}, {path: 'nebula', type: 'Directory'}, ...entriesFor(files)]), message: /entry "nebula" appears more than once/},
    {name: 'unknown entry', make: (f) => craft(f, [...entriesFor(files), {path: 'extra.sh', data: 'rm -rf /'}]), message: /entry "extra.sh" is not part of the bundle layout/},
    {name: 'unknown directory', make: (f) => craft(f, [...entriesFor(files), {path: 'cron.d/', type: 'Directory'}]), message: /entry "cron.d\/" is not part of the bundle layout/},
    {name: './manifest.json', make: (f) => craft(f, [{path: './manifest.json', data: '{}'}]), message: /entry "\.\/manifest.json" is not part of the bundle layout/},
    {
      name: 'oversize member',
      make: (f) => {
        const content = {...files, 'README.md': 'x'.repeat(DEFAULT_MAX_ENTRY_BYTES + 1)}
        return craft(f, entriesFor(content))
      },
      message: new RegExp(`entry "README.md" is larger than ${DEFAULT_MAX_ENTRY_BYTES} bytes`),
    },
    {name: 'truncated (half)', make: async (f) => writeFile(f, (await readFile(good)).subarray(0, 600)).then(() => f), message: /not a tbmesh bundle, or truncated/},
    {name: 'truncated (gzip trailer)', make: async (f) => writeFile(f, (await readFile(good)).subarray(0, -4)).then(() => f), message: /not a tbmesh bundle, or truncated/},
    {name: 'not gzip', make: async (f) => writeFile(f, 'hello, world\n'.repeat(100)).then(() => f), message: /not a tbmesh bundle, or truncated/},
    {name: 'empty file', make: async (f) => writeFile(f, '').then(() => f), message: /not a tbmesh bundle, or truncated/},
    {
      name: 'tar without end marker',
      make: async (f) => {
        const tar = await readFile(await craft(f, entriesFor(files), {gzip: false}))
        await writeFile(f, gzipSync(tar.subarray(0, -1024)))
        return f
      },
      message: /not a tbmesh bundle, or truncated \(tar: no end-of-archive marker\)/,
    },
    {
      name: 'decompression bomb',
      make: async (f) => {
        const tar = await readFile(await craft(f, entriesFor(files), {gzip: false}))
        await writeFile(f, gzipSync(Buffer.concat([tar, Buffer.alloc(64 * 1024 * 1024)])))
        return f
      },
      message: /larger than a bundle can be/,
    },
    {name: 'no manifest', make: (f) => craft(f, entriesFor(files).slice(1)), message: /required entry "manifest.json" is missing/},
    {name: 'no signature', make: (f) => craft(f, entriesFor(files).filter((e) => e.path !== 'manifest.sig')), message: /required entry "manifest.sig" is missing/},
    {name: 'manifest not JSON', make: (f) => craft(f, entriesFor(files, '{"schemaVersion": 1,')), message: /entry "manifest.json" is not valid JSON/},
    {name: 'manifest wrong shape', make: (f) => craft(f, entriesFor(files, manifestFor(files, {caFingerprint: 'nope'}))), message: /entry "manifest.json" is not a tbmesh join manifest \(caFingerprint/},
    {name: 'manifest unknown field', make: (f) => craft(f, entriesFor(files, JSON.stringify({...JSON.parse(manifestFor(files)), signature: 'x'}))), message: /unknown field "signature"/},
    {name: 'manifest without expiry', make: (f) => craft(f, entriesFor(files, JSON.stringify({...JSON.parse(manifestFor(files)), expiresAt: undefined}))), message: /\(expiresAt is not an ISO 8601 time\)/},
    {name: 'manifest schemaVersion 3', make: (f) => craft(f, entriesFor(files, manifestFor(files, {schemaVersion: 3 as 1}))), message: /schemaVersion 3.*upgrade tbmesh/},
    {
      name: 'missing required entry',
      make: (f) => {
        const {'nebula/ca.crt': _ca, ...rest} = files
        return craft(f, entriesFor(rest))
      },
      message: /required entry "nebula\/ca.crt" is missing/,
    },
    {
      name: 'listed but absent',
      make: (f) => craft(f, entriesFor(files).filter((e) => e.path !== 'nebula/host.key')),
      message: /entry "nebula\/host.key" is listed in manifest.json but missing/,
    },
    {
      name: 'present but not listed',
      make: (f) => {
        const {'nebula/host.key': _key, ...rest} = files
        return craft(f, entriesFor(files, manifestFor(rest)))
      },
      message: /entry "nebula\/host.key" is not listed in manifest.json/,
    },
    // An edited byte in each listed file of the layout (after signing): the manifest names it. (A federated network's
    // members file is not in this single-CA bundle: test/violations.test.ts edits it.)
    ...FILES.filter((e) => e.listed && e.path !== MEMBERS_PATH).map(({path: target}) => ({
      name: `edited byte in ${target}`,
      make: (f: string) => editedAfterSigning(f, target, flipMiddleByte),
      message: new RegExp(`entry "${re(target)}" does not match its SHA-256 in manifest.json`),
    })),

    // Trust: the archive is well-formed and its hashes match; who signed it, and what it certifies, is wrong.
    {
      name: 'edited byte in manifest.json',
      make: (f) => editedAfterSigning(f, 'manifest.json', (d) => Buffer.from(d.toString('utf8').replace('"network": "tb-prod"', '"network": "tb-prud"'))),
      message: /manifest\.sig is not a valid signature of manifest\.json by its CA/,
      stage: 'trust',
    },
    {
      // The signature covers the manifest under its domain prefix: the CA's signature of the bare bytes (what a
      // schema version 1 manifest carries, or what another protocol might get signed) does not pass for version 2.
      name: 'schema version 2 manifest signed without its domain prefix',
      make: async (f) => craft(f, entriesFor(files, manifestFor(files, {schemaVersion: 2}))),
      message: /manifest\.sig is not a valid signature of manifest\.json by its CA/,
      stage: 'trust',
    },
    {
      name: 'edited byte in manifest.sig',
      make: (f) => editedAfterSigning(f, 'manifest.sig', (d) => Buffer.from(d.toString('utf8').replace(/^(.{10})(.)/, (_m, head: string, c: string) => head + (c === 'A' ? 'B' : 'A')))),
      message: /manifest\.sig is not a valid signature of manifest\.json by its CA/,
      stage: 'trust',
    },
    {
      name: 'manifest signed with another CA key',
      make: (f) => signed(f, {}, {signer: otherCa.key}),
      message: /manifest\.sig is not a valid signature of manifest\.json by its CA/,
      stage: 'trust',
    },
    {
      // ca.crt may hold several CAs (a federated trust bundle, a rotation): only the one the manifest names may sign.
      name: 'ca.crt holds the pinned CA and another; the manifest names the pinned one and is signed by the other',
      make: (f) => signed(f, {'nebula/ca.crt': ca.pem + otherCa.pem}, {signer: otherCa.key}),
      message: /manifest\.sig is not a valid signature of manifest\.json by its CA/,
      stage: 'trust',
    },
    {
      name: 'manifest names a CA that ca.crt does not hold',
      make: (f) => signed(f, {}, {manifest: {caFingerprint: otherCa.fingerprint}, signer: otherCa.key}),
      message: () => new RegExp(`nebula/ca\\.crt does not hold the CA ${otherCa.fingerprint} named in manifest\\.json`),
      stage: 'trust',
    },
    {
      name: 'a whole bundle from another CA (re-signed by it)',
      make: (f) => {
        const host = makeHost(otherCa, 'umbrella-1', '10.42.1.1')
        return signed(f, {'nebula/ca.crt': otherCa.pem, 'nebula/host.crt': host.cert, 'nebula/host.key': host.key}, {manifest: {caFingerprint: otherCa.fingerprint}, signer: otherCa.key})
      },
      message: () => new RegExp(`signed by CA ${otherCa.fingerprint}, not the pinned ${ca.fingerprint}: do not install it`),
      stage: 'trust',
    },
    {
      name: 'host certificate from another CA',
      make: (f) => {
        const host = makeHost(otherCa, 'umbrella-1', '10.42.1.1')
        return signed(f, {'nebula/host.crt': host.cert, 'nebula/host.key': host.key})
      },
      message: /the host certificate is not valid \(certificate "umbrella-1" was issued by an unknown CA/,
      stage: 'trust',
    },
    {
      name: 'host certificate of another node',
      make: (f) => {
        const host = makeHost(ca, 'acme-1', '10.42.0.1')
        return signed(f, {'nebula/host.crt': host.cert, 'nebula/host.key': host.key})
      },
      message: /the host certificate is for acme-1 \(10\.42\.0\.1\/16\), not umbrella-1 \(10\.42\.1\.1\)/,
      stage: 'trust',
    },
    {
      name: 'private key that does not match',
      make: (f) => signed(f, {'nebula/host.key': hostPrivateKeyToPem(generateHostKeyPair().privateKey)}),
      message: /the host certificate does not match the bundle's private key/,
      stage: 'trust',
    },
    {name: 'host key that does not parse', make: (f) => signed(f, {'nebula/host.key': 'not a key\n'}), message: /the host key does not parse/, stage: 'trust'},
    {name: 'no host key and no join request', make: (f) => signed(f, {'nebula/host.key': undefined}), message: /carries no host key and answers no join request: give the node's private key with --key FILE/, stage: 'trust'},
    {
      name: 'expired',
      make: (f) => signed(f, {}, {manifest: {expiresAt: '2025-02-14T12:00:00.000Z'}}),
      message: /bundle crafted-\d+\.tar\.gz expired on 2025-02-14T12:00:00\.000Z: ask the network operator to export a new one$/,
      stage: 'trust',
    },
    {
      name: 'config without pki (detected before staging)',
      make: (f) => signed(f, {'nebula/config.yml': 'listen: {port: 0}\n'}),
      message: /entry "nebula\/config.yml" has no pki section/,
      stage: 'install',
    },
    {
      // Written into the underlay guard's quoted nftables string: anything but an interface name is refused.
      name: 'config with a tun device that is not an interface name',
      make: (f) => signed(f, {'nebula/config.yml': files['nebula/config.yml']!.replace('dev: tbmesh0', 'dev: \'x", "eth0\'')}),
      message: /entry "nebula\/config.yml" names the tun device "x\\", \\"eth0", which is not an interface name/,
      stage: 'install',
    },
    {
      name: 'config without tun.dev',
      make: (f) => signed(f, {'nebula/config.yml': files['nebula/config.yml']!.replace(/^ {2}dev: tbmesh0\n/m, '')}),
      message: /entry "nebula\/config.yml" names no tun.dev, which the underlay guard needs/,
      stage: 'install',
    },
  ]

  it.each(cases)('$name: refused with one line naming it, DIR untouched', async ({make, message: expected, stage = 'read'}) => {
    const message = typeof expected === 'function' ? expected() : expected
    const file = await make(craftedPath())

    const read = await readBundle(file).catch((e: unknown) => e)
    if (stage === 'read') {
      expect(read).toBeInstanceOf(UserError)
      const error = read as UserError
      expect(error.line).toMatch(message)
      expect(error.line).not.toContain('\n')
      expect(error.line).toMatch(/^Refusing bundle crafted-\d+\.tar\.gz: .*: (ask the network's operator for a new bundle|upgrade tbmesh)$/)
    } else {
      // Refused for the intended reason: the archive itself is fine.
      expect(read).not.toBeInstanceOf(Error)
    }

    // A pre-existing DIR (even with force) and an absent one are left exactly as they were; no staging remains.
    const parent = await mkdtemp(join(work, 'refuse-'))
    const existing = join(parent, 'existing')
    await mkdir(join(existing, 'nebula'), {recursive: true})
    await writeFile(join(existing, 'nebula', 'host.key'), 'old key', {mode: 0o600})
    const before = await snapshot(parent)
    for (const [dir, force] of [[existing, true], [existing, false], [join(parent, 'absent'), false]] as const) {
      const failure = await installBundle(file, dir, pinned({force})).catch((e: unknown) => e)
      expect(failure).toBeInstanceOf(UserError)
      expect((failure as UserError).line).toMatch(message)
      expect((failure as UserError).line).not.toContain('\n')
      expect(await snapshot(parent)).toEqual(before)
    }
  })

  it('honours maxEntryBytes', async () => {
    await expect(readBundle(good, {maxEntryBytes: 100})).rejects.toThrow(/entry "manifest.json" is larger than 100 bytes/)
  })

  it('refuses a missing file with a plain message', async () => {
    await expect(readBundle(join(work, 'nope.tar.gz'))).rejects.toThrow(/does not exist/)
  })
})

describe('trust', () => {
  let parent: string
  beforeEach(async () => {
    parent = await mkdtemp(join(work, 'trust-'))
  })

  it('without a pin, asks confirmCa (with the fingerprint) and refuses unless it says yes, naming --ca-fingerprint', async () => {
    const shown: string[] = []
    const no = await installBundle(good, join(parent, 'a'), {confirmCa: async (fp) => (shown.push(fp), false)}).catch((e: unknown) => e)
    expect(no).toBeInstanceOf(UserError)
    expect((no as UserError).line).toMatch(new RegExp(`signed by CA ${ca.fingerprint}, which you have not confirmed: .*--ca-fingerprint`))
    await expect(installBundle(good, join(parent, 'a'))).rejects.toThrow(/not confirmed/)
    expect(await readdir(parent)).toEqual([])

    const yes = await installBundle(good, join(parent, 'b'), {confirmCa: async (fp) => (shown.push(fp), true)})
    expect(yes.manifest.caFingerprint).toBe(ca.fingerprint)
    expect(shown).toEqual([ca.fingerprint, ca.fingerprint])
  })

  it('takes the pin with colons and capitals; refuses another CA\'s pin', async () => {
    const colons = ca.fingerprint.toUpperCase().match(/../g)!.join(':')
    await installBundle(good, join(parent, 'a'), {pin: colons})
    const wrong = await installBundle(good, join(parent, 'b'), {pin: otherCa.fingerprint}).catch((e: unknown) => e)
    expect((wrong as UserError).line).toMatch(new RegExp(`signed by CA ${ca.fingerprint}, not the pinned ${otherCa.fingerprint}`))
    expect(await readdir(parent)).toEqual(['a'])
  })

  it('refuses a bundle once it has expired', async () => {
    const expiry = Date.parse(meta.expiresAt)
    const late = await installBundle(good, join(parent, 'late'), pinned({now: expiry + 1000})).catch((e: unknown) => e)
    expect((late as UserError).line).toMatch(new RegExp(`expired on ${re(meta.expiresAt)}`))
    await installBundle(good, join(parent, 'in-time'), pinned({now: expiry - 1000}))
    expect(await readdir(parent)).toEqual(['in-time'])
  })

  it('installs a bundle without host.key with the key of the join request it answers, and only that key', async () => {
    const keys = generateHostKeyPair()
    const host = makeHost(ca, 'umbrella-1', '10.42.1.1', keys)
    const nonce = '0123456789abcdef0123456789abcdef'
    const {'nebula/host.key': _key, ...rest} = files
    const file = join(work, 'joiner.tar.gz')
    await writeBundle(file, {...meta, nonce}, {...rest, 'nebula/host.crt': host.cert}, {sign})
    expect((await readBundle(file)).files.has('nebula/host.key')).toBe(false)

    const asked: string[] = []
    const result = await installBundle(file, join(parent, 'ok'), pinned({joinerKey: async (n) => (asked.push(n), n === nonce ? host.key : undefined)}))
    expect(asked).toEqual([nonce])
    expect(result.keyFromJoiner).toBe(true)
    expect(result.files).toContain('nebula/host.key')
    expect(await readFile(join(parent, 'ok', 'nebula', 'host.key'), 'utf8')).toBe(host.key)
    expect((await stat(join(parent, 'ok', 'nebula', 'host.key'))).mode & 0o777).toBe(0o600)

    const unknown = await installBundle(file, join(parent, 'unknown'), pinned({joinerKey: async () => undefined})).catch((e: unknown) => e)
    expect((unknown as UserError).line).toMatch(new RegExp(`answers join request ${nonce}, which this machine did not make: .*--home`))
    const other = await installBundle(file, join(parent, 'other'), pinned({joinerKey: async () => hostPrivateKeyToPem(generateHostKeyPair().privateKey)})).catch((e: unknown) => e)
    expect((other as UserError).line).toMatch(/the host certificate does not match the join request's private key/)
    expect(await readdir(parent)).toEqual(['ok'])
  })
})

describe('encryption (age, passphrase)', () => {
  const passphrase = Buffer.from('correct horse battery staple')
  let encrypted: string
  beforeAll(async () => {
    encrypted = join(work, 'umbrella-1.tbmesh.tar.gz.age')
    // A low work factor keeps the test fast; the default (18) is what the CLI and `age` use.
    const result = await writeBundle(encrypted, meta, files, {sign, passphrase, scryptWorkFactor: 10})
    expect(result.encrypted).toBe(true)
  })

  it('writes the age format and reads it back with the passphrase', async () => {
    const data = await readFile(encrypted)
    expect(data.subarray(0, 22).toString('latin1')).toBe('age-encryption.org/v1\n')
    expect(data.includes(Buffer.from(files['trubudget/vault-secret.env']!))).toBe(false)
    expect((await stat(encrypted)).mode & 0o777).toBe(0o600)
    const read = await readBundle(encrypted, {passphrase: async () => passphrase})
    expect(read.encrypted).toBe(true)
    expect(read.files).toEqual((await readBundle(good)).files)
    const installed = await installBundle(encrypted, join(work, 'enc-install'), pinned({passphrase: async () => passphrase}))
    expect(installed.encrypted).toBe(true)
  })

  it('refuses it without a passphrase, with a wrong one, or truncated', async () => {
    await expect(readBundle(encrypted)).rejects.toThrow(/is encrypted/)
    const wrong = await readBundle(encrypted, {passphrase: async () => Buffer.from('Tr0ub4dor&3')}).catch((e: unknown) => e)
    expect((wrong as UserError).line).toMatch(/^wrong passphrase for bundle umbrella-1\.tbmesh\.tar\.gz\.age: /)
    expect((wrong as UserError).line).not.toContain('Tr0ub4dor')
    const truncated = join(work, 'truncated.age')
    await writeFile(truncated, (await readFile(encrypted)).subarray(0, -100))
    const cut = await readBundle(truncated, {passphrase: async () => passphrase}).catch((e: unknown) => e)
    expect((cut as UserError).line).toMatch(/^Refusing bundle truncated\.age: it is not a valid age file/)
    expect((cut as UserError).line).not.toContain('\n')
  })
})
