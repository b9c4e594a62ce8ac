/**
 * tbmesh's compose files merged by real Docker Compose (v2 from Debian 13, `docker compose … config --format json`,
 * no engine needed), over operator-style TruBudget files in both layouts (test/fixtures/trubudget/, with `.env` public
 * example values), for an origin (ACME) and a joining node of another organization (Umbrella), each installed from its
 * bundle with `tbmesh install` as the operator would. The command lines are the README's, with `up -d` replaced by
 * `config --format json`.
 *
 * First the attack: TruBudget's files as operators run them give every node the example organization and RPC password,
 * publish P2P on every interface and leave the chain in the container; and the old env_file-only override loses to
 * TruBudget's `environment:`. Then, with tbmesh's files, in every layout: the node's ORGANIZATION, EXTERNAL_IP,
 * P2P_HOST and API_HOST; an RPC password per node (≥ 32 characters, not the example's, different on the two nodes, the
 * same in a node's api and blockchain, the one in its node.env); the host IP of every published port; the chain volume;
 * the restart policy; EXPOSE_MC; RPC_ALLOW_IP naming the pinned subnet exactly.
 */

import {readFile, writeFile} from 'node:fs/promises'
import {join, resolve} from 'node:path'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {installBundle} from '../src/bundle/install.js'
import {parseNodeEnv} from '../src/bundle/node-env.js'
import {addNode} from '../src/ca/add-node.js'
import {initCa, unlockCaKey} from '../src/ca/ca.js'
import {exportBundle} from '../src/ca/export.js'
import {Home} from '../src/home/home.js'
import {overlaps, parseCidr} from '../src/lib/ip.js'
import {composeBuild} from './e2e/debian.js'
import {removeDir, tempDir} from './helpers.js'

const FIXTURES = resolve(import.meta.dirname, 'fixtures', 'trubudget')
const OPERATION = join(FIXTURES, 'operation')
const SERVICES = join(FIXTURES, 'docker-compose')
const OVERLAY = '10.42.0.0/16'

interface Port {host_ip?: string; target: number; published: string; protocol: string}
interface Service {environment?: Record<string, string>; ports?: Port[]; volumes?: Array<{type: string; source: string; target: string}>; restart?: string; networks?: Record<string, unknown>}
interface Project {name: string; services: Record<string, Service>; networks?: Record<string, {ipam?: {config?: Array<{subnet: string}>}}>; volumes?: Record<string, {name: string}>}

let compose: string
let work: string
/** The installation directory and node.env of each node. */
const nodes: Record<'origin' | 'beta', {dir: string; ip: string; org: string; env: Record<string, string>}> = {} as never
/** TruBudget's public example values (the fixtures' .env). */
let example: Record<string, string>

/** Runs compose in `cwd` with `args`; its JSON, or the failure (exit code and stderr). */
async function run(cwd: string, args: string[]): Promise<{ok: true; project: Project} | {ok: false; exitCode?: number; stderr: string}> {
  // No engine: a bogus DOCKER_HOST, and nothing of this process's environment besides PATH.
  const r = await execa(compose, args, {cwd, reject: false, extendEnv: false, env: {PATH: process.env.PATH, DOCKER_HOST: 'unix:///nonexistent'}, stdin: 'ignore', timeout: 30_000})
  return r.exitCode === 0 ? {ok: true, project: JSON.parse(String(r.stdout)) as Project} : {ok: false, exitCode: r.exitCode, stderr: String(r.stderr)}
}

async function config(cwd: string, args: string[]): Promise<Project> {
  const r = await run(cwd, args)
  if (!r.ok) throw new Error(`compose ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`)
  return r.project
}

/** The README's command lines of each way, for node `n` (`up -d` → `config --format json`). */
const commands = {
  stack: (d: string) => ['--env-file', `${d}/trubudget/node.env`, '-f', `${d}/docker/compose.yml`, 'config', '--format', 'json'],
  operation: (d: string, origin: boolean) => [
    '-f', 'docker-compose.yml', '-f', `${d}/docker/trubudget-operation.override.yml`, '-p', 'trubudget-operation',
    '--env-file', '.env', '--env-file', `${d}/docker/trubudget.env`, '--env-file', `${d}/trubudget/node.env`,
    'config', '--format', 'json', ...(origin ? ['alpha-node', 'alpha-api', 'frontend'] : ['beta-node', 'beta-api', 'beta-frontend']), 'storage-service', 'minio',
  ],
  services: (d: string, origin: boolean) => [
    '--project-directory', '.', '-f', `blockchain/docker-compose.${origin ? 'alphanode' : 'betanode'}.yml`, '-f', 'storage-service/docker-compose.yml',
    '-f', 'blockchain/persistence.docker-compose.yml', '-f', 'api/docker-compose.yml', '-f', 'frontend/docker-compose.yml',
    '-f', `${d}/docker/trubudget-services.override.yml`, '-f', `${d}/docker/trubudget-services-documents.override.yml`,
    '--env-file', '.env', '--env-file', `${d}/docker/trubudget.env`, '--env-file', `${d}/trubudget/node.env`, 'config', '--format', 'json',
  ],
}

beforeAll(async () => {
  const build = await composeBuild()
  compose = build.binary
  // The overrides' !override and !reset tags need Compose 2.24.4 or later.
  const [major, minor, patch] = build.version.split(/[.-]/).map(Number)
  expect(major * 1e6 + minor * 1e3 + patch).toBeGreaterThanOrEqual(2_024_004)
  example = parseNodeEnv(await readFile(join(SERVICES, '.env'), 'utf8'))
  work = await tempDir('tbmesh-compose-')
  const homeDir = join(work, 'home')
  const init = await initCa(homeDir, {network: 'tb', cidr: OVERLAY, passphrase: null})
  const home = await Home.open(homeDir)
  const caKey = await unlockCaKey(home, null)
  await addNode(home, caKey, {org: 'ACME', origin: true, lighthouse: true, endpoint: '192.0.2.10:4242'})
  await addNode(home, caKey, {org: 'Umbrella'})
  for (const [label, name, ip, org] of [['origin', 'acme-1', '10.42.0.1', 'ACME'], ['beta', 'umbrella-1', '10.42.1.1', 'Umbrella']] as const) {
    const bundle = join(work, `${name}.tar.gz`)
    await exportBundle(home, name, bundle, {caKey, passphrase: null})
    const dir = join(work, label)
    await installBundle(bundle, dir, {pin: init.caFingerprint})
    nodes[label] = {dir, ip, org, env: parseNodeEnv(await readFile(join(dir, 'trubudget', 'node.env'), 'utf8'))}
  }
}, 120_000)

afterAll(async () => {
  if (work) await removeDir(work)
})

describe("TruBudget's files as operators run them (the attack tbmesh's files answer)", () => {
  it('the per-service layout: example organization and RPC password, P2P on every interface, no restart', async () => {
    const p = await config(SERVICES, ['--project-directory', '.', '-f', 'blockchain/docker-compose.betanode.yml', '-f', 'api/docker-compose.yml', '-f', 'frontend/docker-compose.yml', 'config', '--format', 'json'])
    const blockchain = p.services.blockchain
    expect(blockchain.environment).toMatchObject({ORGANIZATION: example.ORGANIZATION, MULTICHAIN_RPC_PASSWORD: example.MULTICHAIN_RPC_PASSWORD, RPC_ALLOW_IP: '0.0.0.0/0'})
    expect(blockchain.ports!.find((port) => port.target === 7447)?.host_ip).toBeUndefined()
    expect(blockchain.volumes).toBeUndefined()
    expect(blockchain.restart).toBeUndefined()
  })

  it('scripts/operation: the alpha chain in the container, every port on every interface', async () => {
    const p = await config(OPERATION, ['-f', 'docker-compose.yml', '-p', 'trubudget-operation', '--env-file', '.env', 'config', '--format', 'json', 'alpha-node', 'alpha-api'])
    expect(p.services['alpha-node'].volumes).toBeUndefined()
    for (const service of Object.values(p.services)) for (const port of service.ports ?? []) expect(port.host_ip).toBeUndefined()
  })

  it("an override that brings the node's values with env_file: loses to TruBudget's environment:", async () => {
    const envFile = join(work, 'node-values.env')
    await writeFile(envFile, `ORGANIZATION=Umbrella\nEXTERNAL_IP=${nodes.beta.ip}\n`)
    const override = join(work, 'env-file.override.yml')
    await writeFile(override, `services:\n  blockchain:\n    env_file: ["${envFile}"]\n`)
    const p = await config(SERVICES, ['--project-directory', '.', '-f', 'blockchain/docker-compose.betanode.yml', '-f', override, 'config', '--format', 'json'])
    expect(p.services.blockchain.environment).toMatchObject({ORGANIZATION: example.ORGANIZATION})
  })
})

describe.each([
  ['the complete stack', 'stack'],
  ["scripts/operation with tbmesh's override", 'operation'],
  ["the per-service files with tbmesh's overrides", 'services'],
] as const)('%s', (_title, way) => {
  const projects: Partial<Record<'origin' | 'beta', Project>> = {}
  const names = (origin: boolean) =>
    way === 'operation'
      ? {blockchain: origin ? 'alpha-node' : 'beta-node', api: origin ? 'alpha-api' : 'beta-api', frontend: origin ? 'frontend' : 'beta-frontend'}
      : {blockchain: 'blockchain', api: 'api', frontend: 'frontend'}
  const chainVolume = (origin: boolean) => ({stack: 'chain', operation: origin ? 'alphaVolume' : 'beta1Volume', services: 'alpha-volume'})[way]

  beforeAll(async () => {
    for (const label of ['origin', 'beta'] as const) {
      const {dir} = nodes[label]
      const origin = label === 'origin'
      // The stack runs storage only with its profile "documents" (what install --documents sets in node.env).
      projects[label] =
        way === 'stack'
          ? await config(work, ['--profile', 'documents', ...commands.stack(dir)])
          : way === 'operation'
            ? await config(OPERATION, commands.operation(dir, origin))
            : await config(SERVICES, commands.services(dir, origin))
    }
  }, 60_000)

  it('gives each node its own organization, overlay IP and joining point (P2P_HOST, API_HOST)', () => {
    for (const label of ['origin', 'beta'] as const) {
      const n = nodes[label]
      const s = projects[label]!.services
      const {blockchain, api} = names(label === 'origin')
      const env = s[blockchain].environment!
      expect(env.ORGANIZATION).toBe(n.org)
      expect(s[api].environment!.ORGANIZATION).toBe(n.org)
      expect(env.EXTERNAL_IP).toBe(n.ip)
      expect(env.EXPOSE_MC).toBe('false')
      if (label === 'origin') {
        expect(env.P2P_HOST).toBeUndefined()
        expect(env.API_HOST).toBeUndefined()
      } else expect(env).toMatchObject({P2P_HOST: nodes.origin.ip, API_HOST: nodes.origin.ip, API_PORT: '8080', API_PROTOCOL: 'http', P2P_PORT: '7447'})
      expect(s[api].environment!.STORAGE_SERVICE_EXTERNAL_URL).toBe(`http://${n.ip}:8090`)
    }
  })

  it("uses each node's own RPC password and secrets: ≥ 32 characters, not the example's, the same in its api and blockchain", () => {
    const passwords: string[] = []
    for (const label of ['origin', 'beta'] as const) {
      const s = projects[label]!.services
      const {blockchain, api} = names(label === 'origin')
      const password = s[blockchain].environment!.MULTICHAIN_RPC_PASSWORD
      expect(password.length).toBeGreaterThanOrEqual(32)
      expect(password).not.toBe(example.MULTICHAIN_RPC_PASSWORD)
      expect(s[api].environment!.MULTICHAIN_RPC_PASSWORD).toBe(password)
      expect(password).toBe(nodes[label].env.MULTICHAIN_RPC_PASSWORD)
      for (const secret of ['ROOT_SECRET', 'ORGANIZATION_VAULT_SECRET', 'JWT_SECRET']) {
        expect(s[api].environment![secret], secret).toBe(nodes[label].env[secret])
        expect(s[api].environment![secret], secret).not.toBe(example[secret])
      }
      expect(s['storage-service'].environment!.MINIO_SECRET_KEY).toBe(nodes[label].env.MINIO_SECRET_KEY)
      passwords.push(password)
    }
    expect(passwords[0]).not.toBe(passwords[1])
  })

  it('publishes every port on a named address: P2P and storage on the overlay IP, the api on 127.0.0.1 (and the overlay IP on the origin)', () => {
    for (const label of ['origin', 'beta'] as const) {
      const {ip} = nodes[label]
      const s = projects[label]!.services
      const {blockchain, api, frontend} = names(label === 'origin')
      const published = (service: string) => (s[service].ports ?? []).map((port) => `${port.host_ip ?? '*'}:${port.published}:${port.target}`)
      expect(published(blockchain)).toEqual([`${ip}:7447:7447`])
      expect(published(api)).toEqual(label === 'origin' ? ['127.0.0.1:8080:8080', `${ip}:8080:8080`] : ['127.0.0.1:8080:8080'])
      expect(published(frontend)).toEqual([`127.0.0.1:${way === 'operation' && label === 'beta' ? 3005 : 3000}:80`])
      expect(published('storage-service')).toEqual([`${ip}:8090:8090`])
      expect(published('minio')).toEqual([])
      for (const [name, service] of Object.entries(s)) {
        for (const port of service.ports ?? []) expect([ip, '127.0.0.1'], `${name} ${port.published}`).toContain(port.host_ip)
      }
    }
  })

  it('keeps the chain on a volume, restarts every service unless stopped, and pins a subnet RPC_ALLOW_IP names exactly', () => {
    for (const label of ['origin', 'beta'] as const) {
      const p = projects[label]!
      const {blockchain} = names(label === 'origin')
      const volume = chainVolume(label === 'origin')
      expect(p.services[blockchain].volumes).toEqual([expect.objectContaining({type: 'volume', source: volume, target: '/root'})])
      expect(p.services[blockchain].environment!.MULTICHAIN_DIR).toBe('/root')
      expect(p.volumes?.[volume]?.name).toBe(`${p.name}_${volume}`)
      for (const [name, service] of Object.entries(p.services)) expect(service.restart, name).toBe('unless-stopped')
      const subnets = Object.values(p.networks ?? {}).flatMap((n) => n.ipam?.config ?? []).map((c) => c.subnet)
      expect(subnets).toHaveLength(1)
      expect(p.services[blockchain].environment!.RPC_ALLOW_IP).toBe(subnets[0])
      expect(overlaps(parseCidr(subnets[0]), parseCidr(OVERLAY))).toBe(false)
    }
  })
})

describe('a command without node.env', () => {
  it('fails at once instead of running on the example secrets', async () => {
    const d = nodes.beta.dir
    const withoutNodeEnv = commands.services(d, false).filter((a, i, all) => a !== `${d}/trubudget/node.env` && !(a === '--env-file' && all[i + 1] === `${d}/trubudget/node.env`))
    const r = await run(SERVICES, withoutNodeEnv)
    expect(r.ok).toBe(false)
    expect(r.ok ? '' : r.stderr).toContain('TBMESH_NODE is missing a value: is made by tbmesh install: pass its trubudget/node.env with --env-file')
  })
})
