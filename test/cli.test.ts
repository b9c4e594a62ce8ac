/**
 * The CLI as users run it: real processes through bin/run.js on a real home, certificates checked by nebula-cert.
 * (Every error case is in test/bad-input.test.ts.)
 */

import {readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {certificateFromPem, fingerprint} from '../src/nebula/index.js'
import {NEBULA_CERT, nebulaCertCheck, removeDir, tbmesh, tbmeshJson, tempDir} from './helpers.js'

let dir: string
let home: string
let passFile: string

beforeAll(async () => {
  dir = await tempDir()
  home = join(dir, 'home')
  passFile = join(dir, 'ca.pass')
  await writeFile(passFile, 'correct horse battery staple\n', {mode: 0o600})
})
afterAll(async () => removeDir(dir))

const h = () => ['--home', home]
const pass = () => ['--passphrase-file', passFile]

describe('init-ca → add-node → export-bundle → install', () => {
  let init: Record<string, any>
  const nodes: Record<string, Record<string, any>> = {}

  it('init-ca creates an encrypted CA and a private home', async () => {
    init = await tbmeshJson(['init-ca', ...h(), '--network', 'demo', '--cidr', '10.42.0.0/16', ...pass()])
    expect(init).toMatchObject({network: 'demo', cidr: '10.42.0.0/16', orgPrefix: 24, ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080, storage: 8090}, keyEncrypted: true, caLifetime: '3650d'})
    expect(init.caFingerprint).toMatch(/^[0-9a-f]{64}$/)
    expect((await stat(home)).mode & 0o777).toBe(0o700)
    expect((await stat(join(home, 'secrets.json'))).mode & 0o777).toBe(0o600)
    const keyFile = join(home, 'ca', `${init.caFingerprint}.key`)
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600)
    expect(await readFile(keyFile, 'utf8')).toContain('NEBULA ED25519 ENCRYPTED PRIVATE KEY')
    const ca = certificateFromPem(await readFile(join(home, 'ca', `${init.caFingerprint}.crt`), 'utf8'))
    expect(fingerprint(ca)).toBe(init.caFingerprint)
    expect(ca.details).toMatchObject({name: 'demo', isCA: true, ips: ['10.42.0.0/16']})
    // No TruBudget secret on the CA: each node makes its own at install.
    expect(JSON.parse(await readFile(join(home, 'secrets.json'), 'utf8'))).toEqual({schemaVersion: 1})
  })

  it('add-node gives each organization its own block and each node a signed certificate', async () => {
    nodes.origin = await tbmeshJson(['add-node', ...h(), ...pass(), '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
    nodes.umbrella = await tbmeshJson(['add-node', ...h(), '--org', 'Umbrella Bank'], {env: {TBMESH_CA_PASSPHRASE: 'correct horse battery staple'}})
    nodes.acme2 = await tbmeshJson(['add-node', ...h(), ...pass(), '--org', 'ACME', '--groups', 'backup,monitoring', '--duration', '30d'])
    nodes.fixed = await tbmeshJson(['add-node', ...h(), ...pass(), '--org', 'Umbrella Bank', '--name', 'umbrella-berlin', '--ip', '10.42.1.77'])

    expect(nodes.origin).toMatchObject({name: 'acme-1', organization: 'ACME', overlayIp: '10.42.0.1', lighthouse: true, origin: true, groups: ['org:acme', 'access:trusted', 'role:lighthouse', 'role:origin']})
    expect(nodes.umbrella).toMatchObject({name: 'umbrella-bank-1', overlayIp: '10.42.1.1', lighthouse: false, origin: false, groups: ['org:umbrella-bank', 'access:managed']})
    expect(nodes.acme2).toMatchObject({name: 'acme-2', organization: 'ACME', overlayIp: '10.42.0.2', groups: ['org:acme', 'access:managed', 'backup', 'monitoring']})
    expect(nodes.fixed).toMatchObject({name: 'umbrella-berlin', overlayIp: '10.42.1.77'})
    const days = (Date.parse(nodes.acme2.notAfter) - Date.now()) / 86_400_000
    expect(days).toBeGreaterThan(29.9)
    expect(days).toBeLessThan(30.1)

    const state = JSON.parse(await readFile(join(home, 'state.json'), 'utf8'))
    expect(state.organizations.map((o: any) => [o.slug, o.block])).toEqual([['acme', '10.42.0.0/24'], ['umbrella-bank', '10.42.1.0/24']])
    expect(state.certificates).toHaveLength(4)
    expect((await stat(join(home, 'keys', 'acme-1.key'))).mode & 0o777).toBe(0o600)
  })

  it.runIf(NEBULA_CERT)('every issued certificate passes nebula-cert verify, with the same fields', async () => {
    const caPem = await readFile(join(home, 'ca', `${init.caFingerprint}.crt`), 'utf8')
    for (const node of Object.values(nodes)) {
      const printed = await nebulaCertCheck(caPem, await readFile(join(home, 'certs', `${node.fingerprint}.crt`), 'utf8'))
      expect(printed.fingerprint).toBe(node.fingerprint)
      expect(printed.details.name).toBe(node.name)
      expect(printed.details.networks).toEqual([`${node.overlayIp}/16`])
      expect(printed.details.groups).toEqual(node.groups)
      expect(printed.details.issuer).toBe(init.caFingerprint)
      expect(Date.parse(printed.details.notAfter)).toBe(Date.parse(node.notAfter))
    }
  })

  it('export-bundle writes a signed 0600 bundle and install lays it out so that nebula -test passes', async () => {
    const bundle = join(dir, 'umbrella.tar.gz')
    const exported = await tbmeshJson<any>(['export-bundle', ...h(), ...pass(), 'umbrella-bank-1', '--out', bundle, '--no-encrypt'])
    expect(exported.manifest).toMatchObject({network: 'demo', node: 'umbrella-bank-1', organization: 'Umbrella Bank', overlayIp: '10.42.1.1', caFingerprint: init.caFingerprint})
    expect(Object.keys(exported.manifest.files).sort()).toEqual([
      'README.md',
      'docker/compose.yml',
      'docker/docker-compose.nebula.yml',
      'docker/trubudget-operation.override.yml',
      'docker/trubudget-services-documents.override.yml',
      'docker/trubudget-services.override.yml',
      'docker/trubudget.env',
      'host/tbmesh-sysctl.conf',
      'multichain/multichain.conf',
      'nebula/ca.crt',
      'nebula/config.yml',
      'nebula/host.crt',
      'nebula/host.key',
      'systemd/nebula.service',
      'trubudget/api.env',
      'trubudget/blockchain.env',
    ])
    expect((await stat(bundle)).mode & 0o777).toBe(0o600)

    expect(exported).toMatchObject({encrypted: false, containsPrivateKey: true, secrets: ["the node's private key"]})
    const days = (Date.parse(exported.manifest.expiresAt) - Date.now()) / 86_400_000
    expect(days).toBeGreaterThan(13.9)
    expect(days).toBeLessThan(14.1)

    const again = await tbmesh(['export-bundle', ...h(), ...pass(), 'umbrella-bank-1', '--out', bundle, '--no-encrypt'])
    expect(again.exitCode).not.toBe(0)
    expect(again.stderr).toContain('--force')

    const target = join(dir, 'node-umbrella')
    const installed = await tbmeshJson<any>(['install', bundle, '--dir', target, '--ca-fingerprint', init.caFingerprint])
    expect(installed.manifest.node).toBe('umbrella-bank-1')
    const env = await readFile(join(target, 'trubudget', 'blockchain.env'), 'utf8')
    expect(env).toMatch(/^P2P_HOST=10\.42\.0\.1$/m)
    expect(env).toMatch(/^EXTERNAL_IP=10\.42\.1\.1$/m)
    const conf = await readFile(join(target, 'multichain', 'multichain.conf'), 'utf8')
    expect(conf).toMatch(/^bind=10\.42\.1\.1$/m)
    if (NEBULA_CERT) expect(installed.nebulaTest).toMatchObject({ran: true, ok: true})
  })
})
