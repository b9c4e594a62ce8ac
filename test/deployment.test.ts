/**
 * Deployment files of join bundles: the systemd unit, Nebula's compose file and the override for TruBudget's compose
 * files. Parsed output of each renderer (YAML, unit sections), the install-time directory rewrite (one function for
 * rendering and installing, escaping for each syntax), and the real chain: init-ca → add-node → export-bundle →
 * install into a directory with a blank in its name, then an update on top.
 */

import {spawnSync} from 'node:child_process'
import {mkdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import yaml from 'yaml'

import {readBundle} from '../src/bundle/archive.js'
import {BUNDLE_LAYOUT} from '../src/bundle/layout.js'
import {UserError} from '../src/errors.js'
import {composePorts} from '../src/node/compose-ports.js'
import {renderBundleReadme} from '../src/render/bundle-readme.js'
import {renderNebulaCompose} from '../src/render/docker-compose-nebula.js'
import {COMPOSE_RPC_ALLOW_IP, renderTrubudgetOverride, TRUBUDGET_BLOCKCHAIN_SERVICE} from '../src/render/docker-compose-trubudget.js'
import {INSTALL_DIR_PLACEHOLDER, placeInstallDir} from '../src/render/install-dir.js'
import {renderNebulaService} from '../src/render/nebula-service.js'
import type {NodeProfile} from '../src/render/profile.js'
import {NoOriginError} from '../src/render/template.js'
import {NEBULA_CERT, removeDir, tbmeshJson, tempDir} from './helpers.js'

const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0

/** acme-1: lighthouse and TruBudget origin. */
const origin: NodeProfile = {
  network: {name: 'tb-prod', cidr: '10.42.0.0/16'},
  node: {name: 'acme-1', organization: 'ACME Corp', overlayIp: '10.42.0.1', lighthouse: true, relay: true, origin: true, endpoint: '203.0.113.10:4242'},
  ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080},
  lighthouses: [{overlayIp: '10.42.0.1', endpoint: '203.0.113.10:4242'}],
  relays: [{overlayIp: '10.42.0.1', endpoint: '203.0.113.10:4242'}],
  originOverlayIp: '10.42.0.1',
  rpc: {user: 'multichainrpc', password: 'Zq8vN3kP0sLx7WmR2tYb5HcJ9dFg4AeU'},
  tun: {dev: 'nebula1', mtu: 1300},
  pki: {ca: '/etc/nebula/ca.crt', cert: '/etc/nebula/host.crt', key: '/etc/nebula/host.key'},
  blocklist: [],
}

/** umbrella-1: a plain node of another organization. */
const plain: NodeProfile = {...origin, node: {name: 'umbrella-1', organization: 'Umbrella', overlayIp: '10.42.1.1', lighthouse: false, relay: false, origin: false}}

type Doc = Record<string, any>

/** YAML with compose's merge tags: `!override` / `!reset` values come back as {tag, value}. */
const COMPOSE_TAGS: Array<yaml.ScalarTag | yaml.CollectionTag> = (['!override', '!reset'] as const).flatMap((tag): Array<yaml.ScalarTag | yaml.CollectionTag> => [
  {tag, collection: 'seq', nodeClass: yaml.YAMLSeq, resolve: (value) => ({tag, value: value.toJSON()}) as never},
  {tag, collection: 'map', nodeClass: yaml.YAMLMap, resolve: (value) => ({tag, value: value.toJSON()}) as never},
  {tag, resolve: (value: string) => ({tag, value})},
])
const parseCompose = (text: string): Doc => yaml.parse(text, {customTags: COMPOSE_TAGS}) as Doc

/** A unit file as section → key → values (keys may repeat); comments and blank lines dropped. */
function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {}
  let section = ''
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const header = /^\[(.+)\]$/.exec(line)
    if (header) {
      section = header[1]
      out[section] = {}
      continue
    }
    const eq = line.indexOf('=')
    expect(eq, line).toBeGreaterThan(0)
    const key = line.slice(0, eq);
(out[section][key] ??= []).push(line.slice(eq + 1))
  }
  return out
}

/** The IPv4 host address of a short-syntax compose port mapping `HOST:PUBLISHED:TARGET`, '' when there is none. */
const hostOf = (mapping: string): string => /^(\d+\.\d+\.\d+\.\d+):[^:]/.exec(mapping)?.[1] ?? ''

describe('renderNebulaService', () => {
  it('runs nebula with the installed config.yml as a simple, always-restarted root service with CAP_NET_ADMIN only', () => {
    const text = renderNebulaService(plain)
    expect(text.split('\n')[0]).toMatch(/^# .*umbrella-1.*10\.42\.1\.1/)
    const unit = parseUnit(text)
    expect(Object.keys(unit)).toEqual(['Unit', 'Service', 'Install'])
    expect(unit.Unit).toMatchObject({Wants: ['network-online.target'], After: ['network-online.target'], Before: ['docker.service']})
    expect(unit.Service).toMatchObject({
      Type: ['simple'],
      User: ['root'],
      CapabilityBoundingSet: ['CAP_NET_ADMIN'],
      NoNewPrivileges: ['yes'],
      ExecStart: ['/usr/bin/nebula -config "/etc/tbmesh/nebula/config.yml"'],
      ExecReload: ['/bin/kill -HUP $MAINPID'],
      Restart: ['always'],
    })
    expect(unit.Install).toEqual({WantedBy: ['multi-user.target']})
  })

  it('names the given directory, escaped for systemd', () => {
    const unit = parseUnit(renderNebulaService(plain, {installDir: '/srv/tb mesh/100%/$HOME'}))
    expect(unit.Service.ExecStart).toEqual(['/usr/bin/nebula -config "/srv/tb mesh/100%%/$$HOME/nebula/config.yml"'])
  })

  const itSystemd = have('systemd-analyze') && have('nebula') ? it : it.skip
  itSystemd('passes systemd-analyze verify, also for a directory with blanks, quotes, % and $', async () => {
    const dir = await tempDir('tbmesh-unit-')
    try {
      for (const installDir of [INSTALL_DIR_PLACEHOLDER, '/srv/tb mesh/"q"/100%/$x']) {
        const file = join(dir, 'nebula.service')
        await writeFile(file, renderNebulaService(plain, {installDir}))
        const verify = spawnSync('systemd-analyze', ['verify', file], {encoding: 'utf8'})
        expect(verify.status, `${verify.stdout}${verify.stderr}`).toBe(0)
        // No complaint about this unit (unknown keys and bad values are warnings, with exit status 0).
        expect(verify.stderr.split('\n').filter((l) => l.includes('nebula.service'))).toEqual([])
      }
    } finally {
      await removeDir(dir)
    }
  })
})

describe('renderNebulaCompose', () => {
  it('runs nebulaoss/nebula on the host network with NET_ADMIN, /dev/net/tun and DIR/nebula read-only at the same path', () => {
    const text = renderNebulaCompose(plain, {installDir: '/srv/tb'})
    expect(text.split('\n')[0]).toMatch(/^# .*umbrella-1/)
    const doc = parseCompose(text)
    expect(doc.name).toBe('tbmesh-nebula')
    expect(Object.keys(doc.services)).toEqual(['nebula'])
    const nebula = doc.services.nebula
    // The newest release by default: it has every security fix doctor checks for.
    expect(nebula.image).toBe('nebulaoss/nebula:1.11.1')
    expect(nebula.network_mode).toBe('host')
    expect(nebula.cap_add).toEqual(['NET_ADMIN'])
    expect(nebula.devices).toEqual(['/dev/net/tun:/dev/net/tun'])
    expect(nebula.restart).toBe('unless-stopped')
    expect(nebula.volumes).toEqual([{type: 'bind', source: '/srv/tb/nebula', target: '/srv/tb/nebula', read_only: true}])
    expect(nebula.command).toEqual(['-config', '/srv/tb/nebula/config.yml'])
    expect(nebula.ports).toBeUndefined()
    expect(nebula.privileged).toBeUndefined()
  })

  it('escapes $ (compose interpolation), quotes and backslashes of the directory', () => {
    const dir = '/srv/a b/$HOME/"q"/back\\slash'
    const nebula = parseCompose(renderNebulaCompose(plain, {installDir: dir})).services.nebula
    // What compose reads after interpolation ($$ → $) is the directory itself.
    const interpolated = (s: string): string => s.replaceAll('$$', '$')
    expect(nebula.volumes[0].source).toBe('/srv/a b/$$HOME/"q"/back\\slash/nebula')
    expect(interpolated(nebula.volumes[0].source)).toBe(`${dir}/nebula`)
    expect(interpolated(nebula.command[1])).toBe(`${dir}/nebula/config.yml`)
  })
})

describe('renderTrubudgetOverride', () => {
  for (const [label, p] of [['plain node', plain], ['origin', origin]] as const) {
    it(`${label}: env_file blockchain.env, overlay settings that win, and P2P published on the overlay IP only`, () => {
      const doc = parseCompose(renderTrubudgetOverride(p, {installDir: '/srv/tb'}))
      expect(Object.keys(doc)).toEqual(['services'])
      expect(Object.keys(doc.services)).toEqual([TRUBUDGET_BLOCKCHAIN_SERVICE])
      const blockchain = doc.services.blockchain
      expect(blockchain.env_file).toEqual(['/srv/tb/trubudget/blockchain.env'])
      expect(blockchain.network_mode).toBeUndefined()
      expect(blockchain.volumes).toBeUndefined() // multichain.conf is not mounted (see the file's comment)
      const joining = p.node.origin ? {} : {P2P_HOST: '10.42.0.1', API_PROTOCOL: 'http', API_HOST: '10.42.0.1', API_PORT: '8080'}
      expect(blockchain.environment).toEqual({EXTERNAL_IP: p.node.overlayIp, P2P_PORT: '7447', ...joining, RPC_ALLOW_IP: COMPOSE_RPC_ALLOW_IP})

      // The list replaces TruBudget's (which publishes everything on every interface) instead of merging with it.
      expect(blockchain.ports.tag).toBe('!override')
      const ports = blockchain.ports.value as string[]
      expect(ports).toEqual([`${p.node.overlayIp}:7447:7447`, '127.0.0.1:8000:8000', '127.0.0.1:${BLOCKCHAIN_PORT:-8085}:${BLOCKCHAIN_PORT:-8085}'])
      for (const mapping of ports) expect(['', '0.0.0.0', '::']).not.toContain(hostOf(mapping))
      const p2p = ports.filter((m) => m.split(':').slice(1).includes('7447'))
      expect(p2p).toEqual([`${p.node.overlayIp}:7447:7447`])

      // doctor's reading of it agrees.
      expect(composePorts('override', renderTrubudgetOverride(p), p.node.overlayIp, 7447)).toEqual([
        'pass',
        `override publishes MultiChain P2P port 7447 on the overlay IP ${p.node.overlayIp} only`,
      ])
    })
  }

  it("names TruBudget's compose file for the node's role in its instructions", () => {
    expect(renderTrubudgetOverride(plain)).toContain('-f blockchain/docker-compose.betanode.yml')
    expect(renderTrubudgetOverride(origin)).toContain('-f blockchain/docker-compose.alphanode.yml')
  })

  it('throws NoOriginError for a node of a network without origin', () => {
    expect(() => renderTrubudgetOverride({...plain, originOverlayIp: undefined})).toThrow(NoOriginError)
  })
})

describe('the install directory: one function for rendering and installing', () => {
  const dirs = ['/etc/tbmesh', '/srv/tb', '/srv/tb mesh/', '/opt/x/$HOME/"q"/100%/a\\b', '/etc/tbmesh2', '/', '/srv/Ünïcode']
  const renderers = [
    ['systemd', renderNebulaService],
    ['compose', renderNebulaCompose],
    ['compose', renderTrubudgetOverride],
  ] as const

  it('rendering for DIR equals rendering with the placeholder and installing into DIR', () => {
    for (const installDir of dirs) {
      for (const [syntax, render] of renderers) {
        expect(placeInstallDir(render(plain), syntax, installDir), `${render.name} ${installDir}`).toBe(render(plain, {installDir}))
      }
    }
  })

  it('replaces the placeholder as a whole path prefix only, and leaves the text otherwise unchanged', () => {
    expect(placeInstallDir('"/etc/tbmesh/x" "/etc/tbmesh" /etc/tbmesh\n/etc/tbmeshy /etc/tbmesh2/x', 'compose', '/srv')).toBe('"/srv/x" "/srv" /srv\n/etc/tbmeshy /etc/tbmesh2/x')
    const rendered = renderNebulaService(plain, {installDir: '/srv/tb'})
    expect(rendered).not.toContain(INSTALL_DIR_PLACEHOLDER)
    expect(rendered.replaceAll('/srv/tb', INSTALL_DIR_PLACEHOLDER)).toBe(renderNebulaService(plain))
  })

  it('refuses a directory with a line break or control character', () => {
    for (const bad of ['/srv/a\nExecStartPre=/bin/sh', '/srv/\u0000', '/srv/\u2028']) {
      expect(() => renderNebulaService(plain, {installDir: bad})).toThrow(UserError)
      expect(() => placeInstallDir(renderNebulaCompose(plain), 'compose', bad)).toThrow(/control character or line break/)
    }
  })
})

describe('bundle README', () => {
  it('walks through systemd and docker compose with the exact commands', () => {
    const text = renderBundleReadme(plain, {installDir: '/srv/tb'})
    for (const line of [
      'sudo cp /srv/tb/systemd/nebula.service /etc/systemd/system/nebula.service',
      'sudo systemctl daemon-reload',
      'sudo systemctl enable --now nebula',
      'docker compose -f /srv/tb/docker/docker-compose.nebula.yml up -d',
      'docker compose --project-directory . -f blockchain/docker-compose.betanode.yml -f api/docker-compose.yml -f frontend/docker-compose.yml -f /srv/tb/docker/docker-compose.trubudget.override.yml up -d',
      'tbmesh doctor --dir /srv/tb',
      '| `systemd/nebula.service` |',
      '| `docker/docker-compose.nebula.yml` |',
      '| `docker/docker-compose.trubudget.override.yml` |',
    ]) {
      expect(text).toContain(line)
    }
    expect(renderBundleReadme(origin)).toContain('-f blockchain/docker-compose.alphanode.yml')
  })
})

describe('export-bundle → install: the deployment files name the installed directory', () => {
  let work: string
  let bundle: string
  let dir: string
  let pin: string
  const home = (): string[] => ['--home', join(work, 'home')]

  beforeAll(async () => {
    work = await tempDir('tbmesh-deploy-')
    const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home(), '--network', 'demo', '--cidr', '10.42.0.0/16', '--no-passphrase'])
    pin = init.caFingerprint
    await tbmeshJson(['add-node', ...home(), '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
    await tbmeshJson(['add-node', ...home(), '--org', 'Umbrella'])
    bundle = join(work, 'umbrella-1.tar.gz')
    await tbmeshJson(['export-bundle', ...home(), 'umbrella-1', '--out', bundle, '--no-encrypt'])
    await mkdir(join(work, 'srv'))
    dir = join(work, 'srv', 'tb mesh')
    const installed = await tbmeshJson<{files: string[]; nebulaTest: {ran: boolean; ok?: boolean}}>(['install', bundle, '--dir', dir, '--ca-fingerprint', pin])
    expect(installed.files).toEqual(expect.arrayContaining(['systemd/nebula.service', 'docker/docker-compose.nebula.yml', 'docker/docker-compose.trubudget.override.yml']))
    if (NEBULA_CERT) expect(installed.nebulaTest).toMatchObject({ran: true, ok: true})
  }, 120_000)

  afterAll(async () => {
    await removeDir(work)
  })

  it('the bundle carries them, rendered for the placeholder directory', async () => {
    const {manifest, files} = await readBundle(bundle)
    for (const path of ['systemd/nebula.service', 'docker/docker-compose.nebula.yml', 'docker/docker-compose.trubudget.override.yml']) {
      expect(Object.keys(manifest.files)).toContain(path)
      expect(files.get(path)!.toString('utf8')).toContain(INSTALL_DIR_PLACEHOLDER)
    }
    expect(BUNDLE_LAYOUT.filter((e) => e.path.startsWith('systemd/') || e.path.startsWith('docker/')).map((e) => e.path)).toEqual([
      'systemd/',
      'systemd/nebula.service',
      'docker/',
      'docker/docker-compose.nebula.yml',
      'docker/docker-compose.trubudget.override.yml',
    ])
  })

  it("installs them 0644 in 0755 directories, each equal to the bundle's with the directory put in", async () => {
    const {files} = await readBundle(bundle)
    const mode = async (p: string): Promise<number> => (await stat(join(dir, p))).mode & 0o777
    expect(await mode('systemd')).toBe(0o755)
    expect(await mode('docker')).toBe(0o755)
    for (const [path, syntax] of [
      ['systemd/nebula.service', 'systemd'],
      ['docker/docker-compose.nebula.yml', 'compose'],
      ['docker/docker-compose.trubudget.override.yml', 'compose'],
    ] as const) {
      expect(await mode(path), path).toBe(0o644)
      const installed = await readFile(join(dir, path), 'utf8')
      expect(installed, path).toBe(placeInstallDir(files.get(path)!.toString('utf8'), syntax, dir))
      expect(installed, path).not.toContain(INSTALL_DIR_PLACEHOLDER)
    }
  })

  it("the unit's ExecStart runs nebula with the installed config.yml, whose pki paths are the installed files", async () => {
    const unit = parseUnit(await readFile(join(dir, 'systemd', 'nebula.service'), 'utf8'))
    const config = join(dir, 'nebula', 'config.yml')
    expect(unit.Service.ExecStart).toEqual([`/usr/bin/nebula -config "${config}"`])
    expect((await stat(config)).isFile()).toBe(true)
    const pki = (yaml.parse(await readFile(config, 'utf8')) as Doc).pki
    expect(pki).toMatchObject({ca: join(dir, 'nebula', 'ca.crt'), cert: join(dir, 'nebula', 'host.crt'), key: join(dir, 'nebula', 'host.key')})
  })

  it('the nebula container sees config.yml and every pki path at the same path as the host', async () => {
    const nebula = parseCompose(await readFile(join(dir, 'docker', 'docker-compose.nebula.yml'), 'utf8')).services.nebula
    const [mount] = nebula.volumes as Array<{source: string; target: string; read_only: boolean}>
    expect(mount).toEqual({type: 'bind', source: join(dir, 'nebula'), target: join(dir, 'nebula'), read_only: true})
    const config = nebula.command[1] as string
    expect(nebula.command).toEqual(['-config', join(dir, 'nebula', 'config.yml')])
    const pki = (yaml.parse(await readFile(config, 'utf8')) as Doc).pki as Record<string, string>
    for (const key of ['ca', 'cert', 'key']) expect(pki[key].startsWith(`${mount.target}/`), key).toBe(true)
  })

  it("the TruBudget override reads the installed blockchain.env and publishes 7447 on the node's overlay IP only", async () => {
    const blockchain = parseCompose(await readFile(join(dir, 'docker', 'docker-compose.trubudget.override.yml'), 'utf8')).services.blockchain
    expect(blockchain.env_file).toEqual([join(dir, 'trubudget', 'blockchain.env')])
    const env = await readFile(blockchain.env_file[0], 'utf8')
    expect(env).toMatch(/^EXTERNAL_IP=10\.42\.1\.1$/m)
    expect(blockchain.environment).toMatchObject({EXTERNAL_IP: '10.42.1.1', P2P_HOST: '10.42.0.1'})
    expect(blockchain.ports.tag).toBe('!override')
    expect((blockchain.ports.value as string[]).filter((m) => m.includes(':7447'))).toEqual(['10.42.1.1:7447:7447'])
  })

  it('an update keeps them as installed (no second rewrite) and rewrites only its config.yml', async () => {
    const before = await Promise.all(['systemd/nebula.service', 'docker/docker-compose.nebula.yml'].map((p) => readFile(join(dir, p), 'utf8')))
    const out = join(work, 'updates')
    await mkdir(out)
    const update = await tbmeshJson<{bundles: Array<{path: string}>}>(['export-update', ...home(), 'umbrella-1', '--out', out])
    await tbmeshJson(['install', update.bundles[0].path, '--dir', dir])
    const after = await Promise.all(['systemd/nebula.service', 'docker/docker-compose.nebula.yml'].map((p) => readFile(join(dir, p), 'utf8')))
    expect(after).toEqual(before)
    const pki = (yaml.parse(await readFile(join(dir, 'nebula', 'config.yml'), 'utf8')) as Doc).pki
    expect(pki.ca).toBe(join(dir, 'nebula', 'ca.crt'))
  })
})
