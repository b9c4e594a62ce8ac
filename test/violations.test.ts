/**
 * Evidence that travels, and what a federated installation carries for `tbmesh up`, through the CLI on three member
 * homes (ACME, Umbrella, Globex):
 *
 * - Globex reports a certificate that ACME's CA issued for an address in Umbrella's block; Umbrella imports the report
 *   and its nodes' next update blocklists it; Globex's own nodes too. A second import changes nothing.
 * - Refused: a report of a certificate inside its issuer's block (no violation, so no member can block another's
 *   well-behaved node), a changed report, a report naming another reporter's CA, one's own report.
 * - install checks `nebula/members.json` against the trust bundle and the host, and carries `evidence/` over to an
 *   update of the same network, not to another network's bundle; doctor checks the members file and warns about
 *   evidence.
 */

import {mkdir, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import yaml from 'yaml'

import {readBundle, writeBundle} from '../src/bundle/archive.js'
import {installBundle} from '../src/bundle/install.js'
import type {BundleMeta} from '../src/bundle/layout.js'
import {violationReportMessage} from '../src/lib/messages.js'
import {caPrivateKeyFromPem, certificateToPem, ed25519Sign, fingerprint, generateHostKeyPair, signDetails} from '../src/nebula/index.js'
import {doctor} from '../src/node/doctor.js'
import type {EvidenceRecord} from '../src/runtime/evidence.js'
import {type AddedNode, expectOneLineError, type MemberHome, removeDir, tbmesh, tbmeshJson, tempDir, threeMembers} from './helpers.js'

const CIDR = '10.81.0.0/16'

describe('violation reports and what federated installations carry', () => {
  let dir: string
  const ca = {} as Record<string, MemberHome>
  const node = {} as Record<string, AddedNode>
  const home = (org: string) => ['--home', join(dir, `home-${org}`)]
  const caKey = async (org: string) => caPrivateKeyFromPem(await readFile(join(dir, `home-${org}`, 'ca', `${ca[org].caFingerprint}.key`), 'utf8'))

  /** An evidence record as `tbmesh up` writes it, for a certificate ACME's CA signs for `ip`. */
  async function evidence(name: string, ip: string): Promise<{file: string; fingerprint: string}> {
    const keys = generateHostKeyPair()
    const now = Math.floor(Date.now() / 1000)
    const cert = signDetails(
      {name, ips: [`${ip}/16`], subnets: [], groups: ['org:acme'], notBefore: now - 60, notAfter: now + 3600, publicKey: keys.publicKey, isCA: false, issuer: ca.acme.caFingerprint, curve: 'CURVE25519'},
      await caKey('acme'),
    )
    const record: EvidenceRecord = {
      type: 'tbmesh-violation-evidence',
      formatVersion: 1,
      network: 'fed',
      observer: {node: node.globex.name, overlayIp: node.globex.overlayIp},
      observedAt: new Date().toISOString(),
      fingerprint: fingerprint(cert),
      issuer: {caFingerprint: ca.acme.caFingerprint, organization: 'ACME', slug: 'acme', blocks: [ca.acme.block]},
      addresses: [ip],
      outside: [ip],
      underlay: '192.0.2.66:4242',
      relays: [],
      certificateDetails: {name, networks: [`${ip}/16`], unsafeNetworks: [], groups: ['org:acme'], notBefore: '', notAfter: ''},
      certificate: certificateToPem(cert),
    }
    const file = join(dir, `${name}.evidence.json`)
    await writeFile(file, JSON.stringify(record, null, 2))
    return {file, fingerprint: record.fingerprint}
  }

  const blocklistOf = async (org: string, name: string): Promise<string[]> => {
    const out = join(dir, 'updates', `${org}-${Date.now()}`)
    const result = await tbmeshJson<{bundles: Array<{path: string; manifest: {node: string}}>}>(['export-update', ...home(org), name, '--out', out])
    const read = await readBundle(result.bundles[0].path)
    return (yaml.parse(read.files.get('nebula/config.yml')!.toString('utf8')) as {pki: {blocklist: string[]}}).pki.blocklist
  }

  beforeAll(async () => {
    dir = await tempDir('tbmesh-violations-')
    const built = await threeMembers(dir, CIDR, '192.0.2.1:4242')
    Object.assign(ca, built.members)
    Object.assign(node, built.nodes)
  }, 120_000)

  afterAll(async () => {
    if (dir) await removeDir(dir)
  })

  it('carries a reported certificate to every member\'s nodes, the reporter\'s included', async () => {
    const caught = await evidence('rogue', node.umbrella.overlayIp)
    const report = join(dir, 'globex.violations.json')
    const made = await tbmeshJson<{violations: unknown[]; nodesToUpdate: string[]}>(['federation', 'report', caught.file, ...home('globex'), '--out', report])
    expect(made.violations).toEqual([{fingerprint: caught.fingerprint, issuer: 'acme', block: ca.acme.block, outside: [`${node.umbrella.overlayIp}/16`]}])
    expect(made.nodesToUpdate).toEqual([node.globex.name])
    expect(await tbmeshJson(['federation', 'import', report, ...home('umbrella')])).toEqual({
      kind: 'violations',
      organization: 'globex',
      violations: made.violations,
      added: [caught.fingerprint],
      nodesToUpdate: [node.umbrella.name],
    })
    expect(await blocklistOf('umbrella', node.umbrella.name)).toContain(caught.fingerprint)
    expect(await blocklistOf('globex', node.globex.name)).toContain(caught.fingerprint)
    // Even ACME, whose CA issued it, takes it.
    expect(await tbmeshJson(['federation', 'import', report, ...home('acme')])).toMatchObject({added: [caught.fingerprint]})
    // A second import changes nothing.
    expect(await tbmeshJson(['federation', 'import', report, ...home('umbrella')])).toMatchObject({added: [], nodesToUpdate: []})
  })

  it('refuses to report a certificate that lies inside its issuer\'s block', async () => {
    const fine = await evidence('acme-fine', '10.81.0.77')
    expectOneLineError(await tbmesh(['federation', 'report', fine.file, ...home('globex'), '--out', join(dir, 'no.json')]), /lies inside the block 10\.81\.0\.0\/24 of its issuer ACME: no violation/)
    expect(await readdir(dir)).not.toContain('no.json')
  })

  it('refuses a report that was changed, that names another member\'s CA, that is one\'s own, or whose certificate its issuer did not sign', async () => {
    const caught = await evidence('rogue2', node.umbrella.overlayIp)
    const report = join(dir, 'globex.violations2.json')
    await tbmeshJson(['federation', 'report', caught.file, ...home('globex'), '--out', report])
    const signed = JSON.parse(await readFile(report, 'utf8')) as {report: {createdAt: string; caFingerprint: string; violations: Array<{certificate: string}>}}
    const write = async (name: string, value: unknown) => {
      await writeFile(join(dir, name), JSON.stringify(value))
      return join(dir, name)
    }
    const changed = await write('changed.json', {...signed, report: {...signed.report, createdAt: '2020-01-01T00:00:00.000Z'}})
    expectOneLineError(await tbmesh(['federation', 'import', changed, ...home('umbrella')]), /signature does not verify/)
    const otherCa = await write('other-ca.json', {...signed, report: {...signed.report, caFingerprint: ca.acme.caFingerprint}})
    expectOneLineError(await tbmesh(['federation', 'import', otherCa, ...home('umbrella')]), /names another CA than Globex's/)
    expectOneLineError(await tbmesh(['federation', 'import', report, ...home('globex')]), /is Globex's own report/)
    // A well-behaved node's certificate, slipped into a validly signed report, is refused.
    const lighthouse = await readFile(join(dir, 'home-acme', 'certs', `${node.lighthouse.fingerprint}.crt`), 'utf8')
    const body = {...signed.report, violations: [{...signed.report.violations[0], certificate: lighthouse}]}
    const forged = await write('forged.json', {report: body, signature: ed25519Sign(await caKey('globex'), violationReportMessage(body)).toString('base64')})
    expectOneLineError(await tbmesh(['federation', 'import', forged, ...home('umbrella')]), /lies inside the block .* no violation/)
    // A certificate naming ACME's CA as issuer but signed by another key proves nothing about ACME.
    const keys = generateHostKeyPair()
    const now = Math.floor(Date.now() / 1000)
    const framed = signDetails(
      {name: 'framed', ips: [`${node.umbrella.overlayIp}/16`], subnets: [], groups: ['org:acme'], notBefore: now - 60, notAfter: now + 3600, publicKey: keys.publicKey, isCA: false, issuer: ca.acme.caFingerprint, curve: 'CURVE25519'},
      await caKey('globex'),
    )
    const framedBody = {...signed.report, violations: [{...signed.report.violations[0], certificate: certificateToPem(framed)}]}
    const framing = await write('framing.json', {report: framedBody, signature: ed25519Sign(await caKey('globex'), violationReportMessage(framedBody)).toString('base64')})
    expectOneLineError(await tbmesh(['federation', 'import', framing, ...home('umbrella')]), /does not carry a valid signature of ACME's CA/)
  })

  describe('install', () => {
    let bundle: string
    beforeAll(async () => {
      bundle = join(dir, 'umbrella-1.tar.gz')
      await tbmeshJson(['export-bundle', ...home('umbrella'), node.umbrella.name, '--out', bundle, '--no-encrypt'])
    })

    it('installs nebula/members.json and refuses one that does not fit the trust bundle or the host', async () => {
      const target = join(dir, 'installed')
      await installBundle(bundle, target, {pin: ca.umbrella.caFingerprint})
      const members = JSON.parse(await readFile(join(target, 'nebula', 'members.json'), 'utf8')) as {members: Array<{slug: string; block: string; caFingerprint: string}>}
      expect(members.members.map((m) => [m.slug, m.block, m.caFingerprint])).toEqual(['acme', 'umbrella', 'globex'].map((org) => [org, ca[org].block, ca[org].caFingerprint]))

      // A federated node's Nebula runs under tbmesh up only: no compose file runs it bare.
      const read = await readBundle(bundle)
      expect([...read.files.keys()]).not.toContain('docker/docker-compose.nebula.yml')
      // The same bundle, validly signed by Umbrella's CA, with Umbrella's block given to Globex's CA.
      const swapped = {...members, members: members.members.map((m) => (m.slug === 'umbrella' ? {...m, caFingerprint: ca.globex.caFingerprint} : m.slug === 'globex' ? {...m, caFingerprint: ca.umbrella.caFingerprint} : m))}
      const files = Object.fromEntries([...read.files].filter(([p]) => p !== 'manifest.json' && p !== 'manifest.sig'))
      files['nebula/members.json'] = Buffer.from(JSON.stringify(swapped))
      const {files: _files, schemaVersion: _v, ...meta} = read.manifest
      const tampered = join(dir, 'tampered.tar.gz')
      const key = await caKey('umbrella')
      await writeBundle(tampered, meta as BundleMeta, files, {sign: (m) => ed25519Sign(key, m)})
      await expect(installBundle(tampered, join(dir, 'never'), {pin: ca.umbrella.caFingerprint})).rejects.toThrow(/holds 10\.81\.1\.\d+\/16, outside its organization's block/)
    })

    it('doctor checks the members file and warns about evidence', async () => {
      const target = join(dir, 'doctored')
      await installBundle(bundle, target, {pin: ca.umbrella.caFingerprint})
      const checkOf = async (name: string) => (await doctor(target)).checks.find((c) => c.name === name)
      expect(await checkOf('peer-policy')).toMatchObject({status: 'pass', detail: expect.stringMatching(/3 member block\(s\)/)})
      expect(await checkOf('evidence')).toMatchObject({status: 'pass'})
      await mkdir(join(target, 'evidence'))
      await writeFile(join(target, 'evidence', 'x.json'), await readFile((await evidence('seen', node.umbrella.overlayIp)).file))
      expect(await checkOf('evidence')).toMatchObject({status: 'warn', detail: expect.stringMatching(/caught 1 certificate/)})
      await rm(join(target, 'nebula', 'members.json'))
      expect(await checkOf('peer-policy')).toMatchObject({status: 'fail', detail: expect.stringMatching(/tbmesh up refuses to run it/)})
    })

    it('keeps evidence/ across an update of the same network, not across another network\'s bundle', async () => {
      const target = join(dir, 'carried')
      await installBundle(bundle, target, {pin: ca.umbrella.caFingerprint})
      await mkdir(join(target, 'evidence'))
      await writeFile(join(target, 'evidence', 'record.json'), '{"kept": true}\n')
      const updates = await tbmeshJson<{bundles: Array<{path: string}>}>(['export-update', ...home('umbrella'), node.umbrella.name, '--out', join(dir, 'carried-updates')])
      await installBundle(updates.bundles[0].path, target, {})
      expect(await readFile(join(target, 'evidence', 'record.json'), 'utf8')).toBe('{"kept": true}\n')
      // The join bundle again (older than the update: a deliberate rollback), with --force.
      await installBundle(bundle, target, {pin: ca.umbrella.caFingerprint, force: true, allowRollback: true})
      expect(await readdir(join(target, 'evidence'))).toEqual(['record.json'])

      // Another network's node installed over it with --force starts without it.
      const other = join(dir, 'home-other')
      const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', '--home', other, '--network', 'other', '--cidr', '10.82.0.0/16', '--no-passphrase'])
      await tbmeshJson(['add-node', '--home', other, '--org', 'O', '--origin', '--lighthouse', '--endpoint', '192.0.2.2:4242'])
      await tbmeshJson(['export-bundle', '--home', other, 'o-1', '--out', join(dir, 'o-1.tar.gz'), '--no-encrypt'])
      await installBundle(join(dir, 'o-1.tar.gz'), target, {pin: init.caFingerprint, force: true})
      expect(await readdir(target)).not.toContain('evidence')
    })
  })
})
