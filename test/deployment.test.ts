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
import {addNode} from '../src/ca/add-node.js'
import {initCa, unlockCaKey} from '../src/ca/ca.js'
import {nodeProfile} from '../src/ca/node-profile.js'
import {UserError} from '../src/errors.js'
import {Home} from '../src/home/home.js'
import {composePorts} from '../src/node/compose-ports.js'
import {renderBundleReadme} from '../src/render/bundle-readme.js'
import {renderAdoptionOverride, renderDocumentsOverride, renderTrubudgetEnv} from '../src/render/compose-adoption.js'
import {renderComposeStack} from '../src/render/compose-stack.js'
import {NEBULA_IMAGE, renderNebulaCompose} from '../src/render/docker-compose-nebula.js'
import {renderGuardService} from '../src/render/guard-service.js'
import {INSTALL_DIR_PLACEHOLDER, placeInstallDir} from '../src/render/install-dir.js'
import {renderNebulaConfig} from '../src/render/nebula-config.js'
import {renderNebulaService} from '../src/render/nebula-service.js'
import type {NodeProfile} from '../src/render/profile.js'
import {NoOriginError} from '../src/render/template.js'
import {renderUnderlayGuard} from '../src/render/underlay-guard.js'
import {NEBULA_CERT, removeDir, tbmesh, tbmeshJson, tempDir} from './helpers.js'

const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0

/** acme-1: lighthouse and TruBudget origin. */
const origin: NodeProfile = {
  network: {name: 'tb-prod', cidr: '10.42.0.0/16'},
  node: {name: 'acme-1', organization: 'ACME Corp', overlayIp: '10.42.0.1', lighthouse: true, relay: true, origin: true, registrar: true, endpoint: '203.0.113.10:4242'},
  ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080, storage: 8090},
  lighthouses: [{overlayIp: '10.42.0.1', endpoint: '203.0.113.10:4242'}],
  relays: [{overlayIp: '10.42.0.1', endpoint: '203.0.113.10:4242'}],
  originOverlayIp: '10.42.0.1',
  rpc: {user: 'multichainrpc'},
  tun: {dev: 'nebula1', mtu: 1300},
  pki: {ca: '/etc/nebula/ca.crt', cert: '/etc/nebula/host.crt', key: '/etc/nebula/host.key'},
  blocklist: [],
  minNebulaVersion: '1.6.1',
}

/** umbrella-1: a plain node of another organization. */
const plain: NodeProfile = {...origin, node: {name: 'umbrella-1', organization: 'Umbrella', overlayIp: '10.42.1.1', lighthouse: false, relay: false, origin: false, registrar: false}}

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
  it('runs tbmesh up on the installation as a simple, always-restarted root service with CAP_NET_ADMIN only', () => {
    const text = renderNebulaService(plain)
    expect(text.split('\n')[0]).toMatch(/^# .*umbrella-1.*10\.42\.1\.1/)
    const unit = parseUnit(text)
    expect(Object.keys(unit)).toEqual(['Unit', 'Service', 'Install'])
    // After nftables.service (its start flushes every table), before Docker.
    expect(unit.Unit).toMatchObject({Wants: ['network-online.target'], After: ['network-online.target', 'nftables.service'], Before: ['docker.service']})
    expect(unit.Service).toMatchObject({
      Type: ['simple'],
      User: ['root'],
      CapabilityBoundingSet: ['CAP_NET_ADMIN'],
      NoNewPrivileges: ['yes'],
      ExecStart: ['/usr/bin/env tbmesh up --dir "/etc/tbmesh" --run-dir /run/tbmesh'],
      ExecReload: ['/bin/kill -HUP $MAINPID'],
      KillMode: ['mixed'],
      RuntimeDirectory: ['tbmesh'],
      RuntimeDirectoryMode: ['0700'],
      // /etc stays writable for the evidence records up writes into the installation.
      ProtectSystem: ['true'],
      Restart: ['always'],
    })
    expect(unit.Install).toEqual({WantedBy: ['multi-user.target']})
  })

  it('names the given directory, escaped for systemd', () => {
    const unit = parseUnit(renderNebulaService(plain, {installDir: '/srv/tb mesh/100%/$HOME'}))
    expect(unit.Service.ExecStart).toEqual(['/usr/bin/env tbmesh up --dir "/srv/tb mesh/100%%/$$HOME" --run-dir /run/tbmesh'])
  })

  const itSystemd = have('systemd-analyze') && have('nebula') ? it : it.skip
  itSystemd('passes systemd-analyze verify, also for a directory with blanks, quotes, % and $', async () => {
    const dir = await tempDir('tbmesh-unit-')
    try {
      for (const installDir of [INSTALL_DIR_PLACEHOLDER, '/srv/tb mesh/"q"/100%/$x']) {
        for (const [name, text] of [
          ['nebula.service', renderNebulaService(plain, {installDir})],
          ['tbmesh-guard.service', renderGuardService({node: 'umbrella-1', network: 'tb-prod', overlayIps: ['10.42.1.1']}, {installDir})],
        ]) {
          const file = join(dir, name)
          await writeFile(file, text)
          const verify = spawnSync('systemd-analyze', ['verify', file], {encoding: 'utf8'})
          expect(verify.status, `${verify.stdout}${verify.stderr}`).toBe(0)
          // No complaint about this unit (unknown keys and bad values are warnings, with exit status 0).
          expect(verify.stderr.split('\n').filter((l) => l.includes(name))).toEqual([])
        }
      }
    } finally {
      await removeDir(dir)
    }
  })
})

describe('renderGuardService', () => {
  it('loads the underlay guard once, before Docker, after nftables.service, with CAP_NET_ADMIN only; Docker requires it', () => {
    const text = renderGuardService({node: 'umbrella-1', network: 'tb-prod', overlayIps: ['10.42.1.1']}, {installDir: '/srv/tb mesh/100%'})
    const unit = parseUnit(text)
    expect(Object.keys(unit)).toEqual(['Unit', 'Service', 'Install'])
    expect(unit.Unit).toMatchObject({After: ['nftables.service'], Before: ['docker.service']})
    expect(unit.Service).toMatchObject({
      Type: ['oneshot'],
      RemainAfterExit: ['yes'],
      CapabilityBoundingSet: ['CAP_NET_ADMIN'],
      ExecStart: ['/usr/sbin/nft -f "/srv/tb mesh/100%%/host/underlay-guard.nft"'],
      ExecReload: ['/usr/sbin/nft -f "/srv/tb mesh/100%%/host/underlay-guard.nft"'],
    })
    expect(unit.Service.ExecStop).toBeUndefined() // stopping the unit leaves the guard in place
    expect(unit.Install).toEqual({WantedBy: ['multi-user.target'], RequiredBy: ['docker.service']})
  })
})

describe('renderUnderlayGuard', () => {
  const line = (family: string, ips: string, dev = 'nebula1'): string => `\t\t${family} daddr { ${ips} } iifname != { "${dev}", "lo" } counter drop comment "tbmesh underlay guard"`
  it("drops packets for the node's own overlay address(es) that did not arrive on the tun device or lo, before conntrack and NAT", () => {
    const text = renderUnderlayGuard({node: 'umbrella-1', network: 'tb', overlayIps: ['10.42.1.1'], tunDev: 'nebula1', installDir: '/srv/tb'})
    const body = text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))
    expect(body).toEqual([
      'table inet tbmesh_guard {}', // creates it when missing, so that the delete always works: loading is idempotent
      'delete table inet tbmesh_guard',
      'table inet tbmesh_guard {',
      '\tchain prerouting {',
      '\t\ttype filter hook prerouting priority raw; policy accept;',
      line('ip', '10.42.1.1'),
      '\t}',
      '}',
    ])
    expect(text).toContain('nft -f "/srv/tb/host/underlay-guard.nft"')
    // Only the node's own address, never the overlay CIDR (a container's traffic to other nodes passes this host).
    expect(text).not.toMatch(/daddr[^\n]*\/16/)
  })

  it('writes an ip6 line only for IPv6 addresses (`ip daddr { }` does not parse)', () => {
    const both = renderUnderlayGuard({node: 'n', network: 'tb', overlayIps: ['10.42.1.1', 'fd42::1', '10.42.1.2'], tunDev: 'tb_0.x-1'})
    expect(both).toContain(`${line('ip', '10.42.1.1, 10.42.1.2', 'tb_0.x-1')}\n${line('ip6', 'fd42::1', 'tb_0.x-1')}\n`)
    expect(renderUnderlayGuard({node: 'n', network: 'tb', overlayIps: ['fd42::1'], tunDev: 'nebula1'})).not.toMatch(/\tip daddr/)
  })

  it('refuses a tun device that is not an interface name, an address that is not one, and no address at all', () => {
    for (const tunDev of ['', 'nebula1", "eth0', 'a'.repeat(16), 'neb ula', 'nébula']) {
      expect(() => renderUnderlayGuard({node: 'n', network: 'tb', overlayIps: ['10.42.1.1'], tunDev}), tunDev).toThrow(/is not an interface name/)
    }
    expect(() => renderUnderlayGuard({node: 'n', network: 'tb', overlayIps: ['10.42.1.1 } accept; ip daddr { 1.2.3.4'], tunDev: 'nebula1'})).toThrow(/neither IPv4 nor IPv6/)
    expect(() => renderUnderlayGuard({node: 'n', network: 'tb', overlayIps: [], tunDev: 'nebula1'})).toThrow(/at least one overlay IP/)
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
    expect(nebula.image).toBe(NEBULA_IMAGE)
    expect(NEBULA_IMAGE).toBe('nebulaoss/nebula:1.11.1')
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

describe('the compose files (structure; merged with real Compose in compose.test.ts)', () => {
  const overrides = {
    operation: (p: NodeProfile) => renderAdoptionOverride(p, 'operation'),
    services: (p: NodeProfile) => renderAdoptionOverride(p, 'services'),
    documents: (p: NodeProfile) => renderDocumentsOverride(p),
  }
  for (const [name, render] of Object.entries(overrides)) {
    it(`${name} override: every port list replaces TruBudget's (!override) or removes it (!reset)`, () => {
      for (const p of [plain, origin]) {
        const doc = parseCompose(render(p))
        for (const [service, spec] of Object.entries(doc.services as Record<string, Doc>)) {
          if (spec.ports === undefined) continue
          expect(['!override', '!reset'], `${service}`).toContain(spec.ports.tag)
          for (const mapping of spec.ports.value as string[]) expect(['', '0.0.0.0', '::'], `${service} ${mapping}`).not.toContain(hostOf(mapping))
        }
      }
    })
  }

  it("doctor's reading of each file agrees: P2P on the overlay IP only", () => {
    for (const p of [plain, origin]) {
      expect(composePorts('stack', renderComposeStack(p), p.node.overlayIp, 7447, {override: false})).toEqual(['pass', `stack publishes MultiChain P2P port 7447 on the overlay IP ${p.node.overlayIp} only`])
      for (const layout of ['operation', 'services'] as const) {
        expect(composePorts(layout, renderAdoptionOverride(p, layout), p.node.overlayIp, 7447)).toEqual(['pass', `${layout} publishes MultiChain P2P port 7447 on the overlay IP ${p.node.overlayIp} only`])
      }
    }
  })

  it('throws NoOriginError for a node of a network without origin', () => {
    const p = {...plain, originOverlayIp: undefined}
    expect(() => renderComposeStack(p)).toThrow(NoOriginError)
    expect(() => renderAdoptionOverride(p, 'services')).toThrow(NoOriginError)
  })
})

describe('the install directory: one function for rendering and installing', () => {
  const dirs = ['/etc/tbmesh', '/srv/tb', '/srv/tb mesh/', '/opt/x/$HOME/"q"/100%/a\\b', '/etc/tbmesh2', '/', '/srv/Ünïcode']
  const renderers = [
    ['systemd', renderNebulaService],
    ['compose', renderNebulaCompose],
    ['compose', renderComposeStack],
    ['compose', (p: NodeProfile, extra?: {installDir?: string}) => renderAdoptionOverride(p, 'operation', extra)],
    ['compose', (p: NodeProfile, extra?: {installDir?: string}) => renderAdoptionOverride(p, 'services', extra)],
    ['compose', renderDocumentsOverride],
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
      'sudo tbmesh up --dir /srv/tb',
      'sudo cp /srv/tb/systemd/tbmesh-guard.service /etc/systemd/system/tbmesh-guard.service',
      'sudo systemctl enable --now tbmesh-guard',
      'docker compose -f /srv/tb/docker/docker-compose.nebula.yml up -d',
      'sudo cp /srv/tb/host/tbmesh-sysctl.conf /etc/sysctl.d/60-tbmesh.conf && sudo sysctl --system',
      'docker compose --env-file /srv/tb/trubudget/node.env -f /srv/tb/docker/compose.yml up -d',
      'docker compose --project-directory . -f blockchain/docker-compose.betanode.yml -f blockchain/persistence.docker-compose.yml -f api/docker-compose.yml -f frontend/docker-compose.yml -f /srv/tb/docker/trubudget-services.override.yml --env-file .env --env-file /srv/tb/docker/trubudget.env --env-file /srv/tb/trubudget/node.env up -d',
      'docker cp trubudget-operation-beta-node-1:/root/. - | docker run --rm -i -v trubudget-operation_beta1Volume:/chain busybox tar -x -C /chain',
      'tbmesh doctor --dir /srv/tb',
      '| `systemd/nebula.service` |',
      '| `docker/compose.yml` |',
      '| `docker/trubudget-operation.override.yml` |',
    ]) {
      expect(text).toContain(line)
    }
    expect(renderBundleReadme(origin)).toContain('-f blockchain/docker-compose.alphanode.yml')
  })

  it('in a federated network runs the image under tbmesh up, never with the compose file', () => {
    const federated: NodeProfile = {...plain, members: [{organization: 'umbrella', name: 'Umbrella', block: '10.42.1.0/24', caFingerprint: 'a'.repeat(64)}]}
    const text = renderBundleReadme(federated, {installDir: '/srv/tb'})
    expect(text).toContain('ExecStart=/usr/bin/env tbmesh up --dir "/srv/tb" --docker nebulaoss/nebula:')
    expect(text).toContain('sudo tbmesh up --dir /srv/tb')
    expect(text).not.toContain('docker-compose.nebula.yml')
  })
})

/** The deployment files a bundle carries for Docker Compose, installed with the directory put in. */
const COMPOSE_FILES = [
  'docker/docker-compose.nebula.yml',
  'docker/compose.yml',
  'docker/trubudget-operation.override.yml',
  'docker/trubudget-services.override.yml',
  'docker/trubudget-services-documents.override.yml',
]

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
    expect(installed.files).toEqual(expect.arrayContaining(['systemd/nebula.service', ...COMPOSE_FILES]))
    if (NEBULA_CERT) expect(installed.nebulaTest).toMatchObject({ran: true, ok: true})
  }, 120_000)

  afterAll(async () => {
    await removeDir(work)
  })

  it('the bundle carries them, rendered for the placeholder directory', async () => {
    const {manifest, files} = await readBundle(bundle)
    for (const path of ['systemd/nebula.service', ...COMPOSE_FILES]) {
      expect(Object.keys(manifest.files)).toContain(path)
      expect(files.get(path)!.toString('utf8')).toContain(INSTALL_DIR_PLACEHOLDER)
    }
    expect(BUNDLE_LAYOUT.filter((e) => e.path.startsWith('systemd/') || e.path.startsWith('docker/')).map((e) => e.path)).toEqual([
      'systemd/',
      'systemd/nebula.service',
      'docker/',
      'docker/docker-compose.nebula.yml',
      'docker/compose.yml',
      'docker/trubudget.env',
      'docker/trubudget-operation.override.yml',
      'docker/trubudget-services.override.yml',
      'docker/trubudget-services-documents.override.yml',
    ])
  })

  it("installs them 0644 in 0755 directories, each equal to the bundle's with the directory put in", async () => {
    const {files} = await readBundle(bundle)
    const mode = async (p: string): Promise<number> => (await stat(join(dir, p))).mode & 0o777
    expect(await mode('systemd')).toBe(0o755)
    expect(await mode('docker')).toBe(0o755)
    for (const [path, syntax] of [['systemd/nebula.service', 'systemd'] as const, ...COMPOSE_FILES.map((f) => [f, 'compose'] as const)]) {
      expect(await mode(path), path).toBe(0o644)
      const installed = await readFile(join(dir, path), 'utf8')
      expect(installed, path).toBe(placeInstallDir(files.get(path)!.toString('utf8'), syntax, dir))
      expect(installed, path).not.toContain(INSTALL_DIR_PLACEHOLDER)
    }
  })

  it("the unit runs tbmesh up, which loads the installed underlay guard, rendered for this node's overlay IP and tun device", async () => {
    const guard = join(dir, 'host', 'underlay-guard.nft')
    expect(await readFile(guard, 'utf8')).toContain('\t\tip daddr { 10.42.1.1 } iifname != { "nebula1", "lo" } counter drop')
    expect(parseUnit(await readFile(join(dir, 'systemd', 'nebula.service'), 'utf8')).Service.ExecStart).toEqual([`/usr/bin/env tbmesh up --dir "${dir}" --run-dir /run/tbmesh`])
    expect(parseUnit(await readFile(join(dir, 'systemd', 'tbmesh-guard.service'), 'utf8')).Service.ExecStart).toEqual([`/usr/sbin/nft -f "${guard}"`])
  })

  it("the unit's ExecStart runs tbmesh up on the installation, whose config's pki paths are the installed files", async () => {
    const unit = parseUnit(await readFile(join(dir, 'systemd', 'nebula.service'), 'utf8'))
    const config = join(dir, 'nebula', 'config.yml')
    expect(unit.Service.ExecStart).toEqual([`/usr/bin/env tbmesh up --dir "${dir}" --run-dir /run/tbmesh`])
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

  it("the complete stack includes the installed Nebula file and publishes 7447 on the node's overlay IP only", async () => {
    const stack = parseCompose(await readFile(join(dir, 'docker', 'compose.yml'), 'utf8'))
    expect(stack.include).toEqual(['docker-compose.nebula.yml'])
    expect(stack.services.blockchain.environment).toMatchObject({EXTERNAL_IP: '10.42.1.1', P2P_HOST: '10.42.0.1'})
    expect(stack.services.blockchain.ports).toEqual(['10.42.1.1:7447:7447'])
  })

  it("an update keeps them as installed (no second rewrite), keeps the node's secrets, and rewrites only its config.yml", async () => {
    const kept = ['systemd/nebula.service', 'docker/docker-compose.nebula.yml', 'trubudget/node.env', 'multichain/multichain.conf']
    const before = await Promise.all(kept.map((p) => readFile(join(dir, p), 'utf8')))
    const out = join(work, 'updates')
    await mkdir(out)
    const update = await tbmeshJson<{bundles: Array<{path: string}>}>(['export-update', ...home(), 'umbrella-1', '--out', out])
    await tbmeshJson(['install', update.bundles[0].path, '--dir', dir])
    const after = await Promise.all(kept.map((p) => readFile(join(dir, p), 'utf8')))
    expect(after).toEqual(before)
    expect((await stat(join(dir, 'trubudget', 'node.env'))).mode & 0o777).toBe(0o600)
    const pki = (yaml.parse(await readFile(join(dir, 'nebula', 'config.yml'), 'utf8')) as Doc).pki
    expect(pki.ca).toBe(join(dir, 'nebula', 'ca.crt'))
  })
})

describe('ports chosen at init-ca, and an overlay Docker would have used', () => {
  it('carries the ports to the firewall, every compose file and env file; the compose subnet avoids the overlay', async () => {
    const work = await tempDir('tbmesh-ports-')
    try {
      const ports = {p2p: 7500, api: 8443, storage: 9100}
      const refused = await initCa(join(work, 'refused'), {network: 'p', cidr: '172.31.0.0/16', passphrase: null}).catch((error: unknown) => error)
      expect(refused).toBeInstanceOf(UserError)
      const init = await initCa(join(work, 'home'), {network: 'p', cidr: '172.31.0.0/16', passphrase: null, ports, allowDockerOverlap: true})
      expect(init.ports).toEqual({nebula: 4242, rpc: 8000, ...ports})
      const home = await Home.open(join(work, 'home'))
      const caKey = await unlockCaKey(home, null)
      await addNode(home, caKey, {org: 'ACME', origin: true, lighthouse: true, endpoint: '192.0.2.10:4242'})
      await addNode(home, caKey, {org: 'Umbrella', registrar: true})
      await addNode(home, caKey, {org: 'Globex', registerAt: 'umbrella-1'})
      const registrar = nodeProfile(home.state, 'umbrella-1')
      const joiner = nodeProfile(home.state, 'globex-1')
      expect((yaml.parse(renderNebulaConfig(registrar)) as Doc).firewall.inbound.map((r: Doc) => r.port)).toEqual(['any', 7500, 9100, 8443])
      expect((yaml.parse(renderNebulaConfig(joiner)) as Doc).firewall.inbound.map((r: Doc) => r.port)).toEqual(['any', 7500, 9100])
      const stack = parseCompose(renderComposeStack(joiner))
      expect(stack.networks.trubudget.ipam.config).toEqual([{subnet: '192.168.247.0/24'}])
      expect(stack.services.blockchain.environment).toMatchObject({P2P_PORT: '7500', P2P_HOST: '172.31.1.1', API_HOST: '172.31.1.1', API_PORT: '8443', RPC_ALLOW_IP: '192.168.247.0/24'})
      expect(stack.services.blockchain.ports).toEqual(['172.31.2.1:7500:7500'])
      expect(stack.services.api.ports).toEqual(['127.0.0.1:8443:8443'])
      expect(stack.services['storage-service'].ports).toEqual(['172.31.2.1:9100:9100'])
      expect(parseCompose(renderComposeStack(registrar)).services.api.ports).toEqual(['127.0.0.1:8443:8443', '172.31.1.1:8443:8443'])
      const services = parseCompose(renderAdoptionOverride(joiner, 'services'))
      expect(services.services.blockchain.ports.value).toEqual(['172.31.2.1:7500:7500'])
      expect(renderTrubudgetEnv(joiner)).toContain('\nEXTERNAL_ALPHA_API_PORT=8443\n')
    } finally {
      await removeDir(work)
    }
  })
})

describe("the organization's ORGANIZATION_VAULT_SECRET in single-CA mode: from the admin, never from the CA", () => {
  it('install takes it from --vault-secret-file, keeps it on reinstall, and refuses to change it', async () => {
    const work = await tempDir('tbmesh-vault-')
    try {
      const home = ['--home', join(work, 'home')]
      const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home, '--network', 'v', '--cidr', '10.42.0.0/16', '--no-passphrase'])
      await tbmeshJson(['add-node', ...home, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
      await tbmeshJson(['add-node', ...home, '--org', 'Umbrella'])
      await tbmeshJson(['add-node', ...home, '--org', 'Umbrella'])
      const pin = ['--ca-fingerprint', init.caFingerprint]
      for (const n of ['umbrella-1', 'umbrella-2']) await tbmeshJson(['export-bundle', ...home, n, '--out', join(work, `${n}.tar.gz`), '--no-encrypt'])
      // The first node of the organization makes one (and says to pass it on); the second is given it.
      const first = await tbmesh(['install', join(work, 'umbrella-1.tar.gz'), '--dir', join(work, 'u1'), ...pin])
      expect(first.exitCode, String(first.stderr)).toBe(0)
      expect(String(first.stderr)).toContain('made a new ORGANIZATION_VAULT_SECRET for Umbrella')
      const vault = /^ORGANIZATION_VAULT_SECRET=(.+)$/m.exec(await readFile(join(work, 'u1', 'trubudget', 'node.env'), 'utf8'))![1]
      await writeFile(join(work, 'umbrella.vault'), `${vault}\n`, {mode: 0o600})
      const second = await tbmeshJson<{nodeEnv: {vault: string; generated: string[]}}>(['install', join(work, 'umbrella-2.tar.gz'), '--dir', join(work, 'u2'), ...pin, '--vault-secret-file', join(work, 'umbrella.vault')])
      expect(second.nodeEnv.vault).toBe('file')
      expect(second.nodeEnv.generated).not.toContain('ORGANIZATION_VAULT_SECRET')
      const env2 = await readFile(join(work, 'u2', 'trubudget', 'node.env'), 'utf8')
      expect(env2).toContain(`\nORGANIZATION_VAULT_SECRET=${vault}\n`)
      // Its own RPC password, ROOT_SECRET and JWT_SECRET, though: per node.
      const secret = (text: string, name: string) => new RegExp(`^${name}=(.+)$`, 'm').exec(text)![1]
      const env1 = await readFile(join(work, 'u1', 'trubudget', 'node.env'), 'utf8')
      for (const name of ['MULTICHAIN_RPC_PASSWORD', 'ROOT_SECRET', 'JWT_SECRET']) expect(secret(env2, name), name).not.toBe(secret(env1, name))
      // Reinstalling keeps every secret; a different vault secret is refused, changing nothing.
      const again = await tbmeshJson<{nodeEnv: {vault: string; generated: string[]}}>(['install', join(work, 'umbrella-2.tar.gz'), '--dir', join(work, 'u2'), ...pin, '--force'])
      expect(again.nodeEnv).toMatchObject({vault: 'installed', generated: []})
      expect(await readFile(join(work, 'u2', 'trubudget', 'node.env'), 'utf8')).toBe(env2)
      await writeFile(join(work, 'other.vault'), 'a-different-vault-secret-of-some-length\n', {mode: 0o600})
      const changed = await tbmesh(['install', join(work, 'umbrella-2.tar.gz'), '--dir', join(work, 'u2'), ...pin, '--force', '--vault-secret-file', join(work, 'other.vault')])
      expect(changed.exitCode).toBe(1)
      expect(String(changed.stderr)).toMatch(/already holds another ORGANIZATION_VAULT_SECRET/)
      expect(await readFile(join(work, 'u2', 'trubudget', 'node.env'), 'utf8')).toBe(env2)
      await writeFile(join(work, 'short.vault'), 'secret\n')
      const short = await tbmesh(['install', join(work, 'umbrella-2.tar.gz'), '--dir', join(work, 'u3'), ...pin, '--vault-secret-file', join(work, 'short.vault')])
      expect(String(short.stderr)).toMatch(/has 6 characters: use at least 16/)
    } finally {
      await removeDir(work)
    }
  })
})
