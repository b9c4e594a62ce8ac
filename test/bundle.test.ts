/**
 * Join bundles: write → read round trip, install + real `nebula -test`, and refusals of archives crafted for real
 * with node-tar, each leaving the target directory exactly as it was.
 */
import {createHash} from 'node:crypto'
import {spawnSync} from 'node:child_process'
import {mkdir, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {isAbsolute, join} from 'node:path'
import {gzipSync} from 'node:zlib'

import {execa} from 'execa'
import yaml from 'js-yaml'
import {Header, Pack, ReadEntry, list} from 'tar'
import {afterAll, beforeAll, beforeEach, describe, expect, it} from 'vitest'

import {
  BUNDLE_LAYOUT,
  DEFAULT_MAX_ENTRY_BYTES,
  type BundleManifest,
  type BundleMeta,
  installBundle,
  readBundle,
  writeBundle,
} from '../src/bundle.js'
import {UserError} from '../src/errors.js'
import {renderBlockchainEnv} from '../src/render/blockchain-env.js'
import {renderBundleReadme} from '../src/render/bundle-readme.js'
import {renderMultichainConf} from '../src/render/multichain-conf.js'
import {renderNebulaConfig} from '../src/render/nebula-config.js'
import type {NodeProfile} from '../src/render/profile.js'

const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
const NEBULA = have('nebula')
if (!have('nebula-cert')) throw new Error('these tests make certificates with nebula-cert: install nebula')
const requireNebula = (): void => {
  if (!NEBULA && process.env.CI) throw new Error('nebula is required when CI is set')
}

const profile: NodeProfile = {
  network: {name: 'tb-prod', cidr: '10.42.0.0/16'},
  node: {name: 'umbrella-1', organization: 'Umbrella', overlayIp: '10.42.1.1', lighthouse: false, origin: false},
  ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080},
  lighthouses: [{overlayIp: '10.42.0.1', endpoint: '203.0.113.10:4242'}],
  originOverlayIp: '10.42.0.1',
  rpc: {user: 'multichainrpc', password: 'Zq8vN3kP0sLx7WmR2tYb5HcJ9dFg4AeU'},
  tun: {dev: 'tbmesh0', mtu: 1300},
  // As the CA renders it for the bundle: relative to nebula's working directory; install makes them absolute.
  pki: {ca: 'nebula/ca.crt', cert: 'nebula/host.crt', key: 'nebula/host.key'},
  blocklist: [],
}

let work: string
let files: Record<string, string>
let meta: BundleMeta
let good: string

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex')

/** path → mode and content hash of everything below `dir` (directories included); {} when it does not exist. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const walk = async (d: string): Promise<void> => {
    let entries
    try {
      entries = await readdir(d, {withFileTypes: true})
    } catch {
      return
    }
    for (const e of entries) {
      const p = join(d, e.name)
      const s = await stat(p)
      const mode = (s.mode & 0o7777).toString(8)
      if (e.isDirectory()) {
        out[`${p.slice(dir.length)}/`] = mode
        await walk(p)
      } else {
        out[p.slice(dir.length)] = `${mode} ${sha256(await readFile(p))}`
      }
    }
  }
  await walk(dir)
  return out
}

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
    kind: 'join',
    ...meta,
    files: Object.fromEntries(Object.entries(content).map(([p, d]) => [p, sha256(d)])),
    ...overrides,
  }
  return JSON.stringify(m, null, 2)
}

/** Valid bundle entries (manifest first) for `content`, optionally with another manifest text. */
function entriesFor(content: Record<string, Buffer | string>, manifest = manifestFor(content)): Crafted[] {
  return [{path: 'manifest.json', data: manifest}, ...Object.entries(content).map(([path, data]) => ({path, data}))]
}

let counter = 0
const craftedPath = (): string => join(work, `crafted-${++counter}.tar.gz`)

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tbmesh-bundle-'))
  const pki = join(work, 'pki')
  await mkdir(pki)
  await execa('nebula-cert', ['ca', '-name', 'tb-prod', '-out-crt', join(pki, 'ca.crt'), '-out-key', join(pki, 'ca.key')])
  await execa('nebula-cert', ['sign', '-ca-crt', join(pki, 'ca.crt'), '-ca-key', join(pki, 'ca.key'), '-name', 'umbrella-1', '-ip', '10.42.1.1/16', '-out-crt', join(pki, 'host.crt'), '-out-key', join(pki, 'host.key')])
  const printed = JSON.parse(String((await execa('nebula-cert', ['print', '-json', '-path', join(pki, 'ca.crt')])).stdout)) as {fingerprint: string}
  meta = {network: 'tb-prod', node: 'umbrella-1', organization: 'Umbrella', overlayIp: '10.42.1.1', caFingerprint: printed.fingerprint, createdAt: '2025-01-31T12:00:00.000Z'}
  files = {
    'nebula/ca.crt': await readFile(join(pki, 'ca.crt'), 'utf8'),
    'nebula/host.crt': await readFile(join(pki, 'host.crt'), 'utf8'),
    'nebula/host.key': await readFile(join(pki, 'host.key'), 'utf8'),
    'nebula/config.yml': renderNebulaConfig(profile),
    'multichain/multichain.conf': renderMultichainConf(profile),
    'trubudget/blockchain.env': renderBlockchainEnv(profile),
    'README.md': renderBundleReadme(profile, {createdAt: meta.createdAt, caFingerprint: meta.caFingerprint}),
  }
  good = join(work, 'umbrella-1.tbmesh.tar.gz')
  await writeBundle(good, meta, files)
})

afterAll(async () => {
  await rm(work, {recursive: true, force: true})
})

describe('writeBundle', () => {
  it('writes the layout, deterministically, mode 0600, refusing to overwrite without force', async () => {
    const out = join(work, 'w.tar.gz')
    const result = await writeBundle(out, meta, files)
    expect(result.path).toBe(out)
    expect(result.bytes).toBe((await stat(out)).size)
    expect((await stat(out)).mode & 0o777).toBe(0o600)
    expect(result.manifest).toEqual({schemaVersion: 1, kind: 'join', ...meta, files: Object.fromEntries(Object.entries(files).map(([p, d]) => [p, sha256(d)]))})

    const listed: Array<{path: string; type: string; mode: number; uid?: number; uname?: string; mtime?: Date}> = []
    await list({file: out, onReadEntry: (e) => listed.push({path: e.path, type: e.type, mode: e.mode!, uid: e.uid, uname: e.uname, mtime: e.mtime})})
    expect(listed.map((e) => e.path)).toEqual([
      'manifest.json',
      'nebula/',
      'nebula/ca.crt',
      'nebula/host.crt',
      'nebula/host.key',
      'nebula/config.yml',
      'multichain/',
      'multichain/multichain.conf',
      'trubudget/',
      'trubudget/blockchain.env',
      'README.md',
    ])
    for (const e of listed) {
      expect(e.mode, e.path).toBe(e.type === 'Directory' ? 0o755 : e.path === 'nebula/host.key' ? 0o600 : 0o644)
      expect(e.uid ?? 0).toBe(0)
      expect(e.uname ?? '').toBe('')
      if (e.type === 'File') expect(e.mtime?.toISOString()).toBe('2025-01-31T12:00:00.000Z')
    }

    const before = await readFile(out)
    await expect(writeBundle(out, meta, files)).rejects.toThrow(/already exists/)
    await writeBundle(out, meta, files).catch((error: UserError) => {
      expect(error).toBeInstanceOf(UserError)
      expect(error.line).toMatch(/--force/)
    })
    expect(await readFile(out)).toEqual(before)
    await writeBundle(out, meta, files, {force: true})
    expect(await readFile(out)).toEqual(before) // same input, same bytes
    expect((await readdir(work)).filter((f) => f.endsWith('.tmp'))).toEqual([])
  })

  it('leaves host.key out when it is not given', async () => {
    const {['nebula/host.key']: _key, ...rest} = files
    const out = join(work, 'nokey.tar.gz')
    const result = await writeBundle(out, meta, rest)
    expect(Object.keys(result.manifest.files)).not.toContain('nebula/host.key')
    const read = await readBundle(out)
    expect(read.files.has('nebula/host.key')).toBe(false)
  })

  it('throws on entries outside the layout or a missing required one', async () => {
    await expect(writeBundle(join(work, 'x.tar.gz'), meta, {...files, 'extra.txt': 'x'})).rejects.toThrow(/not a listed entry/)
    const {'README.md': _readme, ...rest} = files
    await expect(writeBundle(join(work, 'x.tar.gz'), meta, rest)).rejects.toThrow(/README.md is missing/)
    await expect(writeBundle(join(work, 'x.tar.gz'), {...meta, createdAt: 'yesterday'}, files)).rejects.toThrow(/createdAt/)
  })
})

describe('readBundle', () => {
  it('round-trips', async () => {
    const {manifest, files: read} = await readBundle(good)
    expect(manifest.node).toBe('umbrella-1')
    expect(manifest.caFingerprint).toBe(meta.caFingerprint)
    expect([...read.keys()]).toEqual(BUNDLE_LAYOUT.filter((e) => e.type === 'file').map((e) => e.path))
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
    const result = await installBundle(good, dir)
    expect(result.dir).toBe(dir)
    expect(result.files).toEqual(BUNDLE_LAYOUT.filter((e) => e.type === 'file').map((e) => e.path))
    expect(await readdir(parent)).toEqual(['tbmesh'])

    const configText = await readFile(join(dir, 'nebula', 'config.yml'), 'utf8')
    expect(configText.split('\n')[0]).toMatch(/^# Nebula config.yml for node umbrella-1/)
    expect(configText).toContain('# Installed by tbmesh install')
    const config = yaml.load(configText) as {pki: Record<string, string>}
    expect(config.pki).toMatchObject({ca: join(dir, 'nebula', 'ca.crt'), cert: join(dir, 'nebula', 'host.crt'), key: join(dir, 'nebula', 'host.key')})
    for (const p of Object.values(config.pki).slice(0, 3)) expect(isAbsolute(p)).toBe(true)
    expect(await readFile(join(dir, 'nebula', 'host.key'), 'utf8')).toBe(files['nebula/host.key'])
    expect(await readFile(join(dir, 'trubudget', 'blockchain.env'), 'utf8')).toBe(files['trubudget/blockchain.env'])

    const mode = async (p: string): Promise<number> => (await stat(join(dir, p))).mode & 0o777
    expect(await mode('.')).toBe(0o755)
    expect(await mode('nebula')).toBe(0o700)
    expect(await mode('nebula/host.key')).toBe(0o600)
    expect(await mode('nebula/ca.crt')).toBe(0o644)
    expect(await mode('multichain/multichain.conf')).toBe(0o600)
    expect(await mode('trubudget/blockchain.env')).toBe(0o600)
    expect(await mode('README.md')).toBe(0o644)

    if (NEBULA) {
      expect(result.nebulaTest.ran).toBe(true)
      expect(result.nebulaTest.ok, result.nebulaTest.output).toBe(true)
      // From any working directory.
      const again = await execa('nebula', ['-test', '-config', join(dir, 'nebula', 'config.yml')], {cwd: '/', reject: false, all: true})
      expect(again.exitCode, String(again.all)).toBe(0)
    } else {
      expect(result.nebulaTest).toEqual({ran: false})
    }
  })

  it('reports that nebula -test did not run when nebula is not on PATH', async () => {
    const path = process.env.PATH
    process.env.PATH = join(work, 'no-such-bin')
    try {
      const result = await installBundle(good, join(parent, 'nopath'))
      expect(result.nebulaTest).toEqual({ran: false})
    } finally {
      process.env.PATH = path
    }
  })

  it('installs into an existing empty directory', async () => {
    const dir = join(parent, 'empty')
    await mkdir(dir)
    const result = await installBundle(good, dir)
    expect(result.files).toContain('nebula/config.yml')
  })

  it('refuses an existing non-empty directory without force, replaces it with force', async () => {
    const dir = join(parent, 'old')
    await mkdir(dir)
    await writeFile(join(dir, 'keep.txt'), 'old installation')
    const before = await snapshot(parent)
    const error = await installBundle(good, dir).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(UserError)
    expect((error as UserError).line).toMatch(/not empty.*--force/)
    expect(await snapshot(parent)).toEqual(before)

    await installBundle(good, dir, {force: true})
    expect(await readdir(parent)).toEqual(['old'])
    expect((await readdir(dir)).sort()).toEqual(['README.md', 'manifest.json', 'multichain', 'nebula', 'trubudget'])
  })

  it('refuses a file or a symbolic link as DIR', async () => {
    const file = join(parent, 'file')
    await writeFile(file, 'x')
    await expect(installBundle(good, file, {force: true})).rejects.toThrow(/not a directory/)
    const real = join(parent, 'real')
    await mkdir(real)
    await symlink(real, join(parent, 'link'))
    await expect(installBundle(good, join(parent, 'link'), {force: true})).rejects.toThrow(/symbolic link/)
    expect(await readdir(real)).toEqual([])
  })
})

describe('refusals', () => {
  /** Each case: the archive's entries (or a way to make the file) and what the one-line message must say. */
  const cases: Array<{name: string; make: (file: string) => Promise<string>; message: RegExp}> = [
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
    {name: 'duplicate directory', make: (f) => craft(f, [{path: 'nebula/', type: 'Directory'}, {path: 'nebula', type: 'Directory'}, ...entriesFor(files)]), message: /entry "nebula" appears more than once/},
    {name: 'unknown entry', make: (f) => craft(f, [...entriesFor(files), {path: 'extra.sh', data: 'rm -rf /'}]), message: /entry "extra.sh" is not part of the bundle layout/},
    {name: 'unknown directory', make: (f) => craft(f, [...entriesFor(files), {path: 'systemd/', type: 'Directory'}]), message: /entry "systemd\/" is not part of the bundle layout/},
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
        await writeFile(f, gzipSync(tar.subarray(0, tar.length - 1024)))
        return f
      },
      message: /not a tbmesh bundle, or truncated \(tar: no end-of-archive marker\)/,
    },
    {
      name: 'decompression bomb',
      make: async (f) => {
        const tar = await readFile(await craft(f, entriesFor(files), {gzip: false}))
        await writeFile(f, gzipSync(Buffer.concat([tar, Buffer.alloc(20 * 1024 * 1024)])))
        return f
      },
      message: /larger than a bundle can be/,
    },
    {name: 'no manifest', make: (f) => craft(f, entriesFor(files).slice(1)), message: /required entry "manifest.json" is missing/},
    {name: 'manifest not JSON', make: (f) => craft(f, entriesFor(files, '{"schemaVersion": 1,')), message: /entry "manifest.json" is not valid JSON/},
    {name: 'manifest wrong shape', make: (f) => craft(f, entriesFor(files, manifestFor(files, {caFingerprint: 'nope'}))), message: /entry "manifest.json" is not a tbmesh join manifest \(caFingerprint/},
    {name: 'manifest unknown field', make: (f) => craft(f, entriesFor(files, JSON.stringify({...JSON.parse(manifestFor(files)), expiresAt: 'x'}))), message: /unknown field "expiresAt"/},
    {name: 'manifest schemaVersion 2', make: (f) => craft(f, entriesFor(files, manifestFor(files, {schemaVersion: 2 as 1}))), message: /schemaVersion 2.*upgrade tbmesh/},
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
    {
      name: 'config without pki (detected before staging)',
      make: (f) => craft(f, entriesFor({...files, 'nebula/config.yml': 'listen: {port: 0}\n'})),
      message: /entry "nebula\/config.yml" has no pki section/,
    },
    // An edited byte in each listed file: the manifest names it.
    ...Object.keys({
      'nebula/ca.crt': 0,
      'nebula/host.crt': 0,
      'nebula/host.key': 0,
      'nebula/config.yml': 0,
      'multichain/multichain.conf': 0,
      'trubudget/blockchain.env': 0,
      'README.md': 0,
    }).map((target) => ({
      name: `edited byte in ${target}`,
      make: (f: string) => {
        const original = Buffer.from(files[target]!)
        const edited = Buffer.from(original)
        edited[Math.floor(edited.length / 2)] ^= 0x01
        return craft(f, entriesFor({...files, [target]: edited}, manifestFor(files)))
      },
      message: new RegExp(`entry "${target.replace(/[./]/g, (c) => `\\${c}`)}" does not match its SHA-256 in manifest.json`),
    })),
  ]

  it.each(cases)('$name: refused with one line naming it, DIR untouched', async ({make, message}) => {
    const file = await make(craftedPath())

    const error = await readBundle(file).catch((e: unknown) => e)
    const refusedByRead = error instanceof UserError
    if (!refusedByRead) {
      // The config check belongs to install; every other case is refused by readBundle already.
      expect(message.source).toContain('pki section')
    } else {
      expect(error.line).toMatch(message)
      expect(error.line).not.toContain('\n')
      expect(error.line).toMatch(/^Refusing bundle crafted-\d+\.tar\.gz: .*: (ask the network's operator for a new bundle|upgrade tbmesh)$/)
    }

    // A pre-existing DIR (even with force) and an absent one are left exactly as they were; no staging remains.
    const parent = await mkdtemp(join(work, 'refuse-'))
    const existing = join(parent, 'existing')
    await mkdir(join(existing, 'nebula'), {recursive: true})
    await writeFile(join(existing, 'nebula', 'host.key'), 'old key', {mode: 0o600})
    const before = await snapshot(parent)
    for (const [dir, force] of [[existing, true], [existing, false], [join(parent, 'absent'), false]] as const) {
      const failure = await installBundle(file, dir, {force}).catch((e: unknown) => e)
      expect(failure).toBeInstanceOf(UserError)
      expect((failure as UserError).line).toMatch(!refusedByRead && dir === existing && !force ? /not empty.*--force/ : message)
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
