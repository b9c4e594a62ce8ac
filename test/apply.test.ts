/**
 * `tbmesh apply` through the real CLI: plan, dry run, creation in one run, idempotence, refusal of silent changes,
 * schema errors with line and key; and the non-TTY behaviour of commands missing a required value.
 */

import {readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {expectOneLineError, removeDir, snapshot, tbmesh, tbmeshJson, tempDir} from './helpers.js'

let dir: string
let home: string
const pass = () => ['--passphrase-file', join(dir, 'ca.pass')]

const NETWORK = `network:
  name: demo
  cidr: 10.42.0.0/16
organizations:
  - name: ACME
    access: trusted
    nodes:
      - name: acme-1
        roles: [origin, lighthouse]
        endpoint: 192.0.2.10:4242
      - name: acme-2
        groups: [backup]
  - name: Umbrella Bank
    nodes:
      - name: umbrella-1
        ip: 10.42.1.10
`

async function networkFile(name: string, text: string): Promise<string> {
  const file = join(dir, name)
  await writeFile(file, text)
  return file
}

beforeAll(async () => {
  dir = await tempDir('tbmesh-apply-')
  home = join(dir, 'home')
  await writeFile(join(dir, 'ca.pass'), 'apply passphrase\n', {mode: 0o600})
})
afterAll(async () => removeDir(dir))

describe('apply', () => {
  it('--dry-run prints the plan and creates nothing', async () => {
    const file = await networkFile('network.yaml', NETWORK)
    const result = await tbmesh(['apply', '--home', home, '-f', file, '--dry-run', ...pass()])
    expect(result.exitCode).toBe(0)
    expect(String(result.stdout)).toContain('+ create the network')
    expect(String(result.stdout)).toContain('+ add umbrella-1 (Umbrella Bank)')
    expect(await snapshot(home)).toEqual({})
  })

  it('creates the network, its nodes and their join bundles in one run', async () => {
    const file = join(dir, 'network.yaml')
    const out = join(dir, 'bundles')
    const result = await tbmeshJson<any>(['apply', '--home', home, '-f', file, '--out', out, '--no-encrypt', ...pass()])
    expect(result.applied).toBe(true)
    expect(result.plan.createNetwork).toBe(true)
    expect(result.added.map((n: any) => [n.name, n.overlayIp, n.access])).toEqual([
      ['acme-1', '10.42.0.1', 'trusted'],
      ['acme-2', '10.42.0.2', 'trusted'],
      ['umbrella-1', '10.42.1.10', 'managed'],
    ])
    expect(result.added[1].groups).toEqual(['org:acme', 'access:trusted', 'backup'])
    expect((await readdir(out)).sort()).toEqual(['acme-1.tbmesh.tar.gz', 'acme-2.tbmesh.tar.gz', 'umbrella-1.tbmesh.tar.gz'])
    const state = JSON.parse(await readFile(join(home, 'state.json'), 'utf8'))
    expect(state.nodes).toHaveLength(3)
    expect(state.network).toMatchObject({name: 'demo', cidr: '10.42.0.0/16'})
  })

  it('is idempotent: a second run changes nothing and says so', async () => {
    const before = await snapshot(home)
    const result = await tbmesh(['apply', '--home', home, '-f', join(dir, 'network.yaml'), ...pass()])
    expect(result.exitCode).toBe(0)
    expect(String(result.stdout)).toContain('= 3 node(s) unchanged')
    expect(String(result.stdout)).toContain('Nothing to do')
    expect(await snapshot(home)).toEqual(before)
  })

  it('adds only what is missing and leaves nodes not in the file alone', async () => {
    const file = await networkFile('more.yaml', NETWORK.replace('        ip: 10.42.1.10\n', '        ip: 10.42.1.10\n      - name: umbrella-2\n'))
    const result = await tbmeshJson<any>(['apply', '--home', home, '-f', file, ...pass()])
    expect(result.added.map((n: any) => n.name)).toEqual(['umbrella-2'])
    expect(result.plan.unchanged).toHaveLength(3)
    const back = await tbmeshJson<any>(['apply', '--home', home, '-f', join(dir, 'network.yaml'), '--dry-run'])
    expect(back.plan.notInFile).toEqual(['umbrella-2'])
    expect(back.plan.add).toEqual([])
  })

  it('adds a registrar and a node that registers there, with the ports of the file; a second run changes nothing', async () => {
    const text = `network:
  name: reg
  cidr: 10.43.0.0/16
  ports: {p2p: 7500, api: 8443}
organizations:
  - name: ACME
    nodes:
      - {name: acme-1, roles: [origin, lighthouse], endpoint: 192.0.2.10:4242}
  - name: Umbrella
    nodes:
      - {name: umbrella-1, roles: [registrar]}
  - name: Globex
    nodes:
      - {name: globex-1, registerAt: umbrella-1}
`
    const file = await networkFile('registrars.yaml', text)
    const regHome = ['--home', join(dir, 'registrars')]
    const result = await tbmeshJson<any>(['apply', ...regHome, '-f', file, ...pass()])
    expect(result.added.map((n: any) => [n.name, n.registrar, n.registerAt, n.access])).toEqual([
      ['acme-1', true, undefined, 'trusted'],
      ['umbrella-1', true, undefined, 'trusted'],
      ['globex-1', false, '10.43.1.1', 'managed'],
    ])
    const state = JSON.parse(await readFile(join(dir, 'registrars', 'state.json'), 'utf8'))
    expect(state.network.ports).toEqual({nebula: 4242, p2p: 7500, rpc: 8000, api: 8443, storage: 8090})
    const again = await tbmeshJson<any>(['apply', ...regHome, '-f', file, ...pass()])
    expect(again.plan.unchanged).toEqual(['acme-1', 'umbrella-1', 'globex-1'])
    const otherPorts = await tbmesh(['apply', ...regHome, '-f', await networkFile('ports.yaml', text.replace('api: 8443', 'api: 8080')), ...pass()])
    expectOneLineError(otherPorts, /network\.ports\.api 8080, but the network uses 8443/)
  })

  it.each([
    ['an endpoint', (t: string) => t.replace('192.0.2.10:4242', '192.0.2.11:4242'), /acme-1 differs from the file: endpoint: 192\.0\.2\.10:4242 → 192\.0\.2\.11:4242/],
    ['groups', (t: string) => t.replace('groups: [backup]', 'groups: [backup, audit]'), /acme-2 differs from the file: groups: backup → backup,audit/],
    ['roles', (t: string) => t.replace('roles: [origin, lighthouse]', 'roles: [origin]'), /acme-1 differs from the file: roles: lighthouse,origin → origin/],
    ['the access level', (t: string) => t.replace('    access: trusted\n', ''), /acme-2 differs from the file: access: trusted → managed/],
  ])('refuses to change %s silently: exit 2, one line with what differs and how, nothing written', async (_what, edit, reason) => {
    const file = await networkFile('changed.yaml', edit(NETWORK))
    const before = await snapshot(home)
    const result = await tbmesh(['apply', '--home', home, '-f', file, ...pass()])
    expectOneLineError(result, reason, 2)
    expect(String(result.stderr)).toMatch(/revoke it and add it under a new name/)
    expect(String(result.stdout)).toMatch(/^! /m)
    expect(await snapshot(home)).toEqual(before)
  })

  it('refuses a file for another network', async () => {
    const file = await networkFile('other.yaml', NETWORK.replace('cidr: 10.42.0.0/16', 'cidr: 10.43.0.0/16'))
    expectOneLineError(await tbmesh(['apply', '--home', home, '-f', file, ...pass()]), /describes network demo \(10\.43\.0\.0\/16\), but the home holds demo \(10\.42\.0\.0\/16\)/)
  })

  it.each([
    ['an unknown key', (t: string) => t.replace('        groups: [backup]', '        groups: [backup]\n        colour: blue'), /other\.yaml:13: organizations\[0\]\.nodes\[1\]\.colour is not a known key/],
    ['a role that does not exist', (t: string) => t.replace('[origin, lighthouse]', '[origin, lighthous]'), /other\.yaml:9: organizations\[0\]\.nodes\[0\]\.roles\[1\] must be one of lighthouse, origin, registrar/],
    ['a node without a name', (t: string) => t.replace('      - name: acme-2\n', '      - groups: [x]\n').replace('        groups: [backup]\n', ''), /other\.yaml:11: organizations\[0\]\.nodes\[1\] needs "name"/],
    ['a name that is not a DNS label', (t: string) => t.replace('name: acme-2', 'name: Acme_2'), /other\.yaml:11: organizations\[0\]\.nodes\[1\]\.name must match pattern/],
    ['YAML that does not parse', (t: string) => t.replace('    nodes:\n      - name: acme-1', '    nodes:\n      - name: [acme-1'), /other\.yaml:\d+: /],
    ['a duplicate key', (t: string) => t.replace('  cidr: 10.42.0.0/16\n', '  cidr: 10.42.0.0/16\n  cidr: 10.42.0.0/16\n'), /other\.yaml:4: /],
  ])('names the line and the key of a schema error: %s', async (_what, edit, reason) => {
    const file = await networkFile('other.yaml', edit(NETWORK))
    const before = await snapshot(home)
    expectOneLineError(await tbmesh(['apply', '--home', home, '-f', file, ...pass()]), reason, 1)
    expect(await snapshot(home)).toEqual(before)
  })

  it('ships its JSON Schema in the package', async () => {
    const pkg = JSON.parse(await readFile(join(import.meta.dirname, '..', 'package.json'), 'utf8'))
    expect(pkg.files).toContain('templates')
    const schema = JSON.parse(await readFile(join(import.meta.dirname, '..', 'templates', 'network.schema.json'), 'utf8'))
    expect(schema.required).toEqual(['network', 'organizations'])
  })
})

describe('without a terminal, commands never prompt: they name the flag to pass', () => {
  it.each([
    ['init-ca without --network', () => ['init-ca', '--home', join(dir, 'fresh'), '--cidr', '10.9.0.0/16', '--no-passphrase'], /--network is required: pass --network VALUE/, 2],
    ['init-ca without --cidr', () => ['init-ca', '--home', join(dir, 'fresh'), '--network', 'x', '--no-passphrase'], /--cidr is required/, 2],
    ['init-ca without a passphrase source', () => ['init-ca', '--home', join(dir, 'fresh'), '--network', 'x', '--cidr', '10.9.0.0/16'], /--passphrase-file FILE or the TBMESH_CA_PASSPHRASE environment variable or --no-passphrase/, 1],
    ['add-node without --org', () => ['add-node', '--home', home, ...pass()], /--org is required/, 2],
    ['export-bundle without a node name', () => ['export-bundle', '--home', home, ...pass()], /NAME is required/, 2],
    ['export-bundle without a bundle passphrase', () => ['export-bundle', 'acme-1', '--home', home, ...pass(), '--out', join(dir, 'x.age')], /--bundle-passphrase-file FILE or the TBMESH_BUNDLE_PASSPHRASE environment variable or --no-encrypt/, 1],
    ['install without --dir', () => ['install', join(dir, 'bundles', 'acme-1.tbmesh.tar.gz')], /--dir is required/, 2],
    ['join-request without --org', () => ['join-request', '--home', join(dir, 'joiner'), '--out', join(dir, 'r.json')], /--org is required/, 2],
  ])('%s', async (_what, args, reason, exit) => {
    const before = await snapshot(dir)
    expectOneLineError(await tbmesh(args()), reason, exit)
    expect(await snapshot(dir)).toEqual(before)
  })

  it('also with CI set, even when stdin is a pipe', async () => {
    expectOneLineError(await tbmesh(['init-ca', '--home', join(dir, 'fresh'), '--cidr', '10.9.0.0/16', '--no-passphrase'], {env: {CI: 'true'}}), /--network is required/, 2)
  })
})
