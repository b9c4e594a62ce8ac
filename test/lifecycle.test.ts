/**
 * The certificate lifecycle: list (statuses, days left, update pending, expiry warnings), renew, revoke (blocklist,
 * IPs never reused), CA rotation in three rounds (endorsement, trust bundle, switch and re-issue, finish; each round
 * waiting for the previous one's installs) and the migration of a v1 network to v2 (install refused on an old nebula,
 * v1 + v2 certificates in round 2), update bundles installed onto a join installation (and every refusal leaving DIR
 * byte-identical), the rotation chain across rounds of updates, and `install --reload`. Module-level on temp homes with unencrypted or cheaply encrypted CA keys, and through the built
 * CLI as real processes. Issued and re-issued certificates are checked with the real nebula-cert (when installed).
 */

import {spawn} from 'node:child_process'
import {mkdir, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {basename, dirname, isAbsolute, join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import yaml from 'yaml'

import {readBundle, writeBundle} from '../src/bundle/archive.js'
import {installBundle, type InstallResult} from '../src/bundle/install.js'
import {type BundleMeta} from '../src/bundle/layout.js'
import {addNode} from '../src/ca/add-node.js'
import {initCa, unlockCaKey} from '../src/ca/ca.js'
import {exportBundle, exportUpdates} from '../src/ca/export.js'
import {expiryWarnings, listNodes, renew, revoke} from '../src/ca/lifecycle.js'
import {finishCaRotation, rotateCa, switchCa} from '../src/ca/rotation.js'
import {parseReceipt, recordInstalls} from '../src/ca/rounds.js'
import {UsageError, UserError} from '../src/errors.js'
import {Home} from '../src/home/home.js'
import {currentCertificate} from '../src/home/queries.js'
import {endorsementMessage} from '../src/lib/messages.js'
import {
  caPrivateKeyMatchesCertificate,
  caSignatureValid,
  certificateFromPem,
  certificatesFromPem,
  ed25519Sign,
  fingerprint,
  type NebulaCertificate,
  readCaPrivateKey,
  WrongPassphraseError,
} from '../src/nebula/index.js'
import {doctor} from '../src/node/doctor.js'
import {nebulaBuild} from './e2e/debian.js'
import {expectOneLineError, NEBULA_CERT, nebulaCertCheck, removeDir, snapshot, tbmesh, tbmeshJson, tempDir} from './helpers.js'

const DAY = 86_400
/** Cheap Argon2id parameters for CA keys encrypted by module-level tests. */
const ARGON2 = {memory: 1024, iterations: 1, parallelism: 1}
const now = (): number => Math.floor(Date.now() / 1000)

let root: string
beforeAll(async () => {
  root = await tempDir('tbmesh-lifecycle-')
})
afterAll(async () => removeDir(root))

/** A fresh directory below the suite's temp root. */
async function scratch(name: string): Promise<string> {
  const dir = join(root, name)
  await mkdir(dir, {recursive: true})
  return dir
}

// ---------------------------------------------------------------------------------------------------------------------
// Module-level networks

interface Net {
  dir: string
  home: Home
  /** The active CA's private key (refresh with {@link unlock} after a rotation). */
  caKey: Buffer
  caId: string
}

/** A network with an unencrypted CA and `acme-1` (origin, lighthouse) in `dir/home`. */
async function network(dir: string, opts: {name?: string} = {}): Promise<Net> {
  const init = await initCa(join(dir, 'home'), {network: opts.name ?? 'life', cidr: '10.50.0.0/16', passphrase: null})
  const home = await Home.open(join(dir, 'home'))
  const caKey = await unlockCaKey(home, null)
  await addNode(home, caKey, {org: 'ACME', origin: true, lighthouse: true, endpoint: '192.0.2.1:4242'})
  return {dir, home, caKey, caId: init.caFingerprint}
}

/** The active CA's key again (after a rotation), decrypted with `passphrase` when given. */
async function unlock(net: Net, passphrase: Buffer | null = null): Promise<void> {
  net.caKey = await unlockCaKey(net.home, passphrase)
  net.caId = net.home.activeCa().id
}

const caPem = (net: Net, id: string): Promise<string> => readFile(join(net.home.dir, 'ca', `${id}.crt`), 'utf8')
const certPem = (net: Net, fp: string): Promise<string> => net.home.readCertificate(fp)
const cert = async (net: Net, fp: string): Promise<NebulaCertificate> => certificateFromPem(await certPem(net, fp))
const current = (net: Net, name: string) => currentCertificate(net.home.state, name)!
const stateBytes = (net: Net): Promise<string> => readFile(join(net.home.dir, 'state.json'), 'utf8')

/** Exports `name`'s join bundle (unencrypted) and installs it into `dir` pinned to the active CA. */
async function joinNode(net: Net, name: string, dir: string): Promise<InstallResult> {
  const out = join(net.dir, `${name}.join-${Date.now()}.tar.gz`)
  await exportBundle(net.home, name, out, {caKey: net.caKey, passphrase: null})
  return installBundle(out, dir, {pin: net.caId})
}

/** Writes update bundles for `names` into a fresh directory and returns their paths by node. */
let updateRound = 0
async function updates(net: Net, names: string[] | 'all'): Promise<Record<string, string>> {
  const outDir = join(net.dir, `updates-${++updateRound}`)
  const result = await exportUpdates(net.home, net.caKey, names === 'all' ? {all: true, outDir} : {names, outDir})
  return Object.fromEntries(result.bundles.map((b) => [b.manifest.node, b.path]))
}

/** A config.yml (installed or from a bundle), parsed. */
const configOf = (text: string | Buffer): any => yaml.parse(text.toString())

/** The fingerprints of the CAs in a PEM trust bundle. */
const caIds = (pem: string | Buffer): string[] => certificatesFromPem(pem).map((c) => fingerprint(c)).sort()

/** Re-packs bundle `src` into `out` with `meta` changes, signed by `key` (a 64-byte CA key). */
async function repack(src: string, out: string, meta: Partial<BundleMeta>, key: Buffer): Promise<string> {
  const read = await readBundle(src)
  const files: Record<string, Buffer> = {}
  for (const [p, data] of read.files) if (p !== 'manifest.json' && p !== 'manifest.sig') files[p] = data
  const {files: _files, schemaVersion: _version, ...manifest} = read.manifest
  const written = await writeBundle(out, {...manifest, ...meta}, files, {sign: (bytes) => ed25519Sign(key, bytes)})
  return written.path
}

/** An installation's manifest. */
async function installedManifest(dir: string): Promise<Record<string, any>> {
  return JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'))
}

/** Every entry of `dir`'s parent (to see that no staging directory was left behind). */
const siblings = async (dir: string): Promise<string[]> => (await readdir(dirname(dir))).sort()

/** Runs a CLI refusal against DIR and checks it changed nothing there or beside it. */
async function expectRefusedInstall(args: string[], dir: string, reason: RegExp, exit?: number): Promise<void> {
  const before = await snapshot(dir)
  const around = await siblings(dir)
  const result = await tbmesh(args)
  expectOneLineError(result, reason, exit)
  expect(await snapshot(dir)).toEqual(before)
  expect(await siblings(dir)).toEqual(around)
}

// ---------------------------------------------------------------------------------------------------------------------

describe('list (module)', () => {
  let net: Net
  let t: number

  beforeAll(async () => {
    net = await network(await scratch('list'))
    t = now()
    const add = (org: string, durationSeconds?: number, name?: string) => addNode(net.home, net.caKey, {org, durationSeconds, name, now: t})
    await add('Umbrella', 10 * DAY) // umbrella-1: expiring
    await add('Initech', 30 * DAY) // initech-1: expiring, on the 30-day edge
    await add('Initech', 31 * DAY) // initech-2: valid, just past it
    await add('Hooli', 3600) // hooli-1: expires in an hour
    await add('Umbrella', 5 * DAY) // umbrella-2: revoked below
    await revoke(net.home, 'umbrella-2')
  })

  it('reports valid, expiring (≤ 30 days), revoked and whole days left', () => {
    const list = listNodes(net.home.state, {now: t})
    expect(list.network).toBe('life')
    const rows = Object.fromEntries(list.nodes.map((n) => [n.name, n]))
    expect(Object.keys(rows)).toEqual(['acme-1', 'umbrella-1', 'initech-1', 'initech-2', 'hooli-1', 'umbrella-2'])
    expect(Object.fromEntries(list.nodes.map((n) => [n.name, n.status]))).toEqual({
      'acme-1': 'valid',
      'umbrella-1': 'expiring',
      'initech-1': 'expiring',
      'initech-2': 'valid',
      'hooli-1': 'expiring',
      'umbrella-2': 'revoked',
    })
    expect(rows['umbrella-1'].daysLeft).toBe(10)
    expect(rows['initech-1'].daysLeft).toBe(30)
    expect(rows['initech-2'].daysLeft).toBe(31)
    expect(rows['hooli-1'].daysLeft).toBe(0)
    expect(rows['acme-1']).toMatchObject({organization: 'ACME', overlayIp: '10.50.0.1', roles: ['lighthouse', 'origin', 'relay'], access: 'trusted', issuer: net.caId})
    expect(rows['acme-1'].shortFingerprint).toBe(rows['acme-1'].fingerprint.slice(0, 12))
    expect(rows['acme-1'].fingerprint).toBe(current(net, 'acme-1').fingerprint)
    expect(list.cas).toEqual([expect.objectContaining({id: net.caId, status: 'active'})])
    expect(list.cas[0].daysLeft).toBeGreaterThanOrEqual(3649)
  })

  it('reports expired once not-after has passed, with negative days left', () => {
    const rows = Object.fromEntries(listNodes(net.home.state, {now: t + 7200}).nodes.map((n) => [n.name, n]))
    expect(rows['hooli-1']).toMatchObject({status: 'expired', daysLeft: -1})
    expect(rows['umbrella-1'].status).toBe('expiring')
    const later = Object.fromEntries(listNodes(net.home.state, {now: t + 20 * DAY}).nodes.map((n) => [n.name, n]))
    expect(later['umbrella-1']).toMatchObject({status: 'expired', daysLeft: -10})
    expect(later['initech-2']).toMatchObject({status: 'expiring', daysLeft: 11})
    expect(later['acme-1'].status).toBe('valid')
    expect([344, 345]).toContain(later['acme-1'].daysLeft) // signed a moment before t
    // a revoked node stays revoked, expired or not
    expect(later['umbrella-2'].status).toBe('revoked')
  })

  it('filters by organization name or slug, case-insensitively', () => {
    const names = (org: string) => listNodes(net.home.state, {org, now: t}).nodes.map((n) => n.name)
    expect(names('Initech')).toEqual(['initech-1', 'initech-2'])
    expect(names('INITECH')).toEqual(['initech-1', 'initech-2'])
    expect(names('umbrella')).toEqual(['umbrella-1', 'umbrella-2'])
    expect(names('Nobody')).toEqual([])
  })

  it('warns in one line about every non-revoked certificate expiring within 30 days, and about the CA', async () => {
    expect(expiryWarnings(net.home.state, t)).toEqual([
      'certificates of umbrella-1, initech-1, hooli-1 expire within 30 days: run `tbmesh renew --expiring-within 30d` and `tbmesh export-update`',
    ])
    expect(expiryWarnings(net.home.state, t - 2 * DAY)).toHaveLength(1)
    const ca = net.home.state.cas[0]
    const caEnd = Date.parse(ca.notAfter) / 1000
    const late = expiryWarnings(net.home.state, caEnd - 10 * DAY)
    expect(late[0]).toMatch(new RegExp(`^the CA ${ca.id.slice(0, 12)} expires on .*rotate-ca`))
    expect(expiryWarnings(net.home.state, caEnd + 1)[0]).toMatch(/expired on .*every tunnel fails/)
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('renew (module)', () => {
  let net: Net

  beforeAll(async () => {
    net = await network(await scratch('renew'))
    await addNode(net.home, net.caKey, {org: 'Umbrella', durationSeconds: 10 * DAY, groups: ['backup']})
    await addNode(net.home, net.caKey, {org: 'Initech', durationSeconds: 40 * DAY})
  })

  it('--expiring-within picks exactly the expiring nodes and re-signs them: same key, IP, groups; new validity', async () => {
    const before = current(net, 'umbrella-1')
    const old = await cert(net, before.fingerprint)
    const result = await renew(net.home, net.caKey, {expiringWithinSeconds: 30 * DAY})
    expect(result.renewed.map((r) => r.name)).toEqual(['umbrella-1'])
    const r = result.renewed[0]
    expect(r).toMatchObject({previous: before.fingerprint, issuer: net.caId})

    const row = current(net, 'umbrella-1')
    expect(row.fingerprint).toBe(r.fingerprint)
    expect(row.supersededAt).toBeUndefined()
    expect(row).toMatchObject({overlayIp: '10.50.1.1', groups: ['org:umbrella', 'access:managed', 'backup'], issuer: net.caId, notAfter: r.notAfter})
    const oldRow = net.home.state.certificates.find((c) => c.fingerprint === before.fingerprint)!
    expect(oldRow.supersededAt).toBeDefined()
    expect(Date.parse(oldRow.supersededAt!)).toBe(Date.parse(row.issuedAt))

    const fresh = await cert(net, r.fingerprint)
    expect(fresh.details.publicKey.equals(old.details.publicKey)).toBe(true)
    expect(fresh.details.ips).toEqual(old.details.ips)
    expect(fresh.details.groups).toEqual(old.details.groups)
    expect(fresh.details.name).toBe('umbrella-1')
    expect(fresh.details.issuer).toBe(net.caId)
    const days = (fresh.details.notAfter - now()) / DAY
    expect(days).toBeGreaterThan(364.9)
    expect(days).toBeLessThanOrEqual(365)
    expect(fresh.details.notAfter).toBeGreaterThan(old.details.notAfter)
    if (NEBULA_CERT) {
      const printed = await nebulaCertCheck(await caPem(net, net.caId), await certPem(net, r.fingerprint))
      expect(printed.fingerprint).toBe(r.fingerprint)
    }
    const list = Object.fromEntries(listNodes(net.home.state).nodes.map((n) => [n.name, n]))
    expect(list['umbrella-1']).toMatchObject({status: 'valid', fingerprint: r.fingerprint, updatePending: true})
    expect(list['initech-1'].status).toBe('valid')

    // nothing else expires within 30 days now
    expect((await renew(net.home, net.caKey, {expiringWithinSeconds: 30 * DAY})).renewed).toEqual([])
    // a wider horizon catches initech-1 (40 days)
    const wider = await renew(net.home, net.caKey, {expiringWithinSeconds: 45 * DAY, durationSeconds: 90 * DAY})
    expect(wider.renewed.map((x) => x.name)).toEqual(['initech-1'])
    expect(Math.round((Date.parse(wider.renewed[0].notAfter) / 1000 - now()) / DAY)).toBe(90)
  })

  it('renews named nodes, chaining supersessions', async () => {
    const first = current(net, 'acme-1').fingerprint
    const a = await renew(net.home, net.caKey, {names: ['acme-1'], durationSeconds: 60 * DAY})
    const b = await renew(net.home, net.caKey, {names: ['acme-1']})
    expect(b.renewed[0].previous).toBe(a.renewed[0].fingerprint)
    expect(a.renewed[0].previous).toBe(first)
    const rows = net.home.state.certificates.filter((c) => c.name === 'acme-1')
    expect(rows).toHaveLength(3)
    expect(rows.filter((c) => !c.supersededAt).map((c) => c.fingerprint)).toEqual([b.renewed[0].fingerprint])
  })

  it('refuses an unknown node, a revoked node and a duration past the CA, changing nothing', async () => {
    await addNode(net.home, net.caKey, {org: 'Hooli'})
    await revoke(net.home, 'hooli-1')
    const before = await stateBytes(net)
    await expect(renew(net.home, net.caKey, {names: ['nobody']})).rejects.toThrow(/no node named nobody/)
    await expect(renew(net.home, net.caKey, {names: ['nobody']})).rejects.toBeInstanceOf(UserError)
    const revoked = renew(net.home, net.caKey, {names: ['acme-1', 'hooli-1']})
    await expect(revoked).rejects.toThrow(/node hooli-1 is revoked/)
    const tooLong = renew(net.home, net.caKey, {names: ['acme-1'], durationSeconds: 20 * 365 * DAY})
    await expect(tooLong).rejects.toBeInstanceOf(UsageError)
    await expect(renew(net.home, net.caKey, {names: ['acme-1'], durationSeconds: 20 * 365 * DAY})).rejects.toThrow(/goes past the CA's expiry/)
    expect(await stateBytes(net)).toBe(before)
    // --expiring-within never picks a revoked node
    const all = await renew(net.home, net.caKey, {expiringWithinSeconds: 400 * DAY})
    expect(all.renewed.map((r) => r.name).sort()).toEqual(['acme-1', 'initech-1', 'umbrella-1'])
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('revoke (module)', () => {
  let net: Net

  beforeAll(async () => {
    net = await network(await scratch('revoke'))
    await addNode(net.home, net.caKey, {org: 'Umbrella'}) // umbrella-1 10.50.1.1
    await addNode(net.home, net.caKey, {org: 'Umbrella'}) // umbrella-2 10.50.1.2
    await addNode(net.home, net.caKey, {org: 'Initech'})
  })

  it('blocks every certificate ever issued to the node, superseded ones included, in other nodes\' update bundles', async () => {
    const first = current(net, 'umbrella-1').fingerprint
    const renewed = (await renew(net.home, net.caKey, {names: ['umbrella-1']})).renewed[0].fingerprint
    const result = await revoke(net.home, 'umbrella-1', {reason: 'laptop stolen'})
    expect(result.name).toBe('umbrella-1')
    expect(result.fingerprints).toEqual([first, renewed])
    expect(result.blocklistSize).toBe(2)
    const node = net.home.state.nodes.find((n) => n.name === 'umbrella-1')!
    expect(node.revoked).toMatchObject({reason: 'laptop stolen'})
    expect(listNodes(net.home.state).nodes.find((n) => n.name === 'umbrella-1')).toMatchObject({status: 'revoked', updatePending: false})
    // every other node needs the new blocklist
    expect(listNodes(net.home.state).nodes.filter((n) => n.updatePending).map((n) => n.name)).toEqual(['acme-1', 'umbrella-2', 'initech-1'])

    const bundles = await updates(net, 'all')
    expect(Object.keys(bundles).sort()).toEqual(['acme-1', 'initech-1', 'umbrella-2'])
    for (const file of Object.values(bundles)) {
      const read = await readBundle(file)
      expect(read.manifest.kind).toBe('update')
      expect(configOf(read.files.get('nebula/config.yml')!).pki.blocklist).toEqual([first, renewed].sort())
    }
    expect(listNodes(net.home.state).nodes.filter((n) => n.updatePending)).toEqual([])
  })

  it('never hands the overlay IP out again', async () => {
    const next = await addNode(net.home, net.caKey, {org: 'Umbrella'})
    expect(next.name).toBe('umbrella-3')
    expect(next.overlayIp).toBe('10.50.1.3')
    await expect(addNode(net.home, net.caKey, {org: 'Umbrella', ip: '10.50.1.1'})).rejects.toThrow(/10\.50\.1\.1 is already used/)
  })

  it('refuses export-bundle and export-update of the revoked node, and revoking it twice, changing nothing', async () => {
    const before = await stateBytes(net)
    const out = join(net.dir, 'revoked-out')
    await expect(exportBundle(net.home, 'umbrella-1', join(net.dir, 'umbrella-1.tar.gz'), {caKey: net.caKey, passphrase: null})).rejects.toThrow(
      /node umbrella-1 was revoked on/,
    )
    await expect(exportUpdates(net.home, net.caKey, {names: ['umbrella-1'], outDir: out})).rejects.toThrow(/node umbrella-1 was revoked on/)
    await expect(revoke(net.home, 'umbrella-1')).rejects.toThrow(/node umbrella-1 was already revoked on/)
    await expect(revoke(net.home, 'nobody')).rejects.toThrow(/no node named nobody/)
    expect(await stateBytes(net)).toBe(before)
    expect(await readdir(net.dir)).not.toContain('umbrella-1.tar.gz')
  })

  it('an export-update refused for one node writes no bundle for the others either', async () => {
    const out = join(net.dir, 'mixed-out')
    const before = await stateBytes(net)
    await expect(exportUpdates(net.home, net.caKey, {names: ['acme-1', 'umbrella-2', 'umbrella-1'], outDir: out})).rejects.toThrow(/revoked/)
    expect(await stateBytes(net)).toBe(before)
    expect(await readdir(out)).toEqual([])
    // and the next export goes through with the sequence numbers it would have had
    const ok = await exportUpdates(net.home, net.caKey, {names: ['acme-1', 'umbrella-2'], outDir: out})
    expect(ok.bundles.map((b) => b.manifest.sequence)).toEqual([2, 2])
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('rotate-ca (module): three rounds', () => {
  let net: Net
  let oldId: string
  let newId: string
  const newPass = Buffer.from('the new CA passphrase')
  let before: Record<string, string>

  beforeAll(async () => {
    net = await network(await scratch('rotate'))
    await addNode(net.home, net.caKey, {org: 'Umbrella', groups: ['backup']})
    await addNode(net.home, net.caKey, {org: 'Initech'})
    await revoke(net.home, 'initech-1')
    oldId = net.caId
    before = Object.fromEntries(['acme-1', 'umbrella-1', 'initech-1'].map((n) => [n, current(net, n).fingerprint]))
  })

  it('refuses --switch and --finish without a rotation', async () => {
    await expect(switchCa(net.home, net.caKey)).rejects.toThrow(/no CA rotation is in round 1/)
    await expect(finishCaRotation(net.home)).rejects.toThrow(/no CA rotation is in round 2/)
  })

  it('round 1: a new CA, endorsed by the old one, joins the trust bundle; the old one still signs; nodes keep their certificates', async () => {
    const result = await rotateCa(net.home, net.caKey, {passphrase: newPass, argon2: ARGON2, durationSeconds: 5 * 365 * DAY})
    newId = result.caFingerprint
    expect(result).toMatchObject({phase: 'started', previousCaFingerprint: oldId, keyEncrypted: true, caVersion: 1, caCurve: 'CURVE25519', reissued: [], forcedPast: []})
    const cas = Object.fromEntries(net.home.state.cas.map((c) => [c.id, c]))
    expect(cas[oldId].status).toBe('active')
    expect(cas[newId]).toMatchObject({status: 'incoming', encrypted: true, name: 'life', version: 1, curve: 'CURVE25519', endorsement: {by: oldId}})
    expect(net.home.activeCa().id).toBe(oldId)

    const oldCa = certificateFromPem(await caPem(net, oldId))
    const newCa = certificateFromPem(await caPem(net, newId))
    expect(newCa.details).toMatchObject({name: 'life', isCA: true, ips: oldCa.details.ips, issuer: ''})
    expect(Math.round((newCa.details.notAfter - now()) / DAY)).toBe(5 * 365)
    // the endorsement: by the old CA over endorsementMessage(newId), and over nothing else
    const signature = Buffer.from(cas[newId].endorsement!.signature, 'base64')
    expect(caSignatureValid(oldCa, endorsementMessage(newId), signature)).toBe(true)
    expect(caSignatureValid(oldCa, endorsementMessage(oldId), signature)).toBe(false)
    expect(caSignatureValid(newCa, endorsementMessage(newId), signature)).toBe(false)
    const keyPem = await readFile(join(net.home.dir, 'ca', `${newId}.key`), 'utf8')
    expect(caPrivateKeyMatchesCertificate(await readCaPrivateKey(keyPem, newPass), newCa)).toBe(true)

    // nodes keep presenting what they present; the revoked node is left alone
    for (const [name, fp] of Object.entries(before)) expect(current(net, name).fingerprint).toBe(fp)
    const list = listNodes(net.home.state)
    expect(list.cas.map((c) => [c.id, c.status])).toEqual([[oldId, 'active'], [newId, 'incoming']])
    expect(list.rotation).toEqual({round: 1, caFingerprint: newId, previousCaFingerprint: oldId, waitingFor: ['acme-1', 'umbrella-1']})
    expect(Object.fromEntries(list.nodes.map((n) => [n.name, [n.updatePending, n.roundPending]]))).toEqual({'acme-1': [true, true], 'umbrella-1': [true, true], 'initech-1': [false, false]})

    const round1 = await updates(net, ['umbrella-1'])
    const read = await readBundle(round1['umbrella-1'])
    expect(read.manifest.caFingerprint).toBe(oldId)
    expect(read.manifest.caEndorsement).toBeUndefined()
    expect(caIds(read.files.get('nebula/ca.crt')!)).toEqual([oldId, newId].sort())
    expect(fingerprint(certificateFromPem(read.files.get('nebula/host.crt')!))).toBe(before['umbrella-1'])
  })

  it('refuses a second rotation while one is under way, writing no CA', async () => {
    const state = await stateBytes(net)
    const files = await readdir(join(net.home.dir, 'ca'))
    await expect(rotateCa(net.home, net.caKey, {passphrase: null})).rejects.toThrow(/a CA rotation is already under way/)
    expect(await stateBytes(net)).toBe(state)
    expect(await readdir(join(net.home.dir, 'ca'))).toEqual(files)
  })

  it('round 2 waits until every node reported installing round 1, naming the others; a receipt must be a bundle sent', async () => {
    const newKey = await unlockCaKey(net.home, newPass, net.home.state.cas.find((c) => c.status === 'incoming'))
    await expect(switchCa(net.home, newKey)).rejects.toThrow(/cannot switch to the new CA: acme-1, umbrella-1 have not installed round 1 of the CA rotation/)
    // umbrella-1 was sent round 1 (sequence 1); acme-1 has not been sent anything yet
    await expect(recordInstalls(net.home, [{name: 'acme-1'}])).rejects.toThrow(/is not a bundle exported to acme-1 \(its last is none\)/)
    await expect(recordInstalls(net.home, [{name: 'umbrella-1', sequence: 2}])).rejects.toThrow(/its last is 1/)
    expect(await recordInstalls(net.home, [parseReceipt('umbrella-1@1')])).toEqual({confirmed: [{name: 'umbrella-1', installed: 1}], waitingFor: ['acme-1']})
    const state = await stateBytes(net)
    await expect(switchCa(net.home, newKey)).rejects.toThrow(/acme-1 has not installed round 1/)
    expect(await stateBytes(net)).toBe(state)
    await updates(net, ['acme-1'])
    await recordInstalls(net.home, [{name: 'acme-1'}])
    expect(listNodes(net.home.state).rotation?.waitingFor).toEqual([])
  })

  it('round 2: the new CA becomes active and re-issues every node (same key, IP, groups, not-after); both CAs stay trusted', async () => {
    const newKey = await unlockCaKey(net.home, newPass, net.home.state.cas.find((c) => c.status === 'incoming'))
    const previous = Object.fromEntries(['acme-1', 'umbrella-1'].map((n) => [n, current(net, n)]))
    const result = await switchCa(net.home, newKey)
    await unlock(net, newPass)
    expect(result).toMatchObject({phase: 'switched', caFingerprint: newId, previousCaFingerprint: oldId})
    expect(result.reissued.map((r) => r.name)).toEqual(['acme-1', 'umbrella-1'])
    expect(net.home.state.cas.map((c) => [c.id, c.status])).toEqual([[oldId, 'retiring'], [newId, 'active']])
    for (const r of result.reissued) {
      const old = previous[r.name]
      expect(r).toMatchObject({previous: old.fingerprint, issuer: newId})
      expect(current(net, r.name)).toMatchObject({fingerprint: r.fingerprint, issuer: newId, overlayIp: old.overlayIp, groups: old.groups, notAfter: old.notAfter, version: 1, curve: 'CURVE25519'})
      const [o, n] = [await cert(net, old.fingerprint), await cert(net, r.fingerprint)]
      expect(n.details.publicKey.equals(o.details.publicKey)).toBe(true)
      const printed = await nebulaCertCheck(await caPem(net, newId), await certPem(net, r.fingerprint))
      expect(printed.details.issuer).toBe(newId)
      await expect(nebulaCertCheck(await caPem(net, oldId), await certPem(net, r.fingerprint))).rejects.toThrow(/verify failed/)
    }
    expect(current(net, 'initech-1').fingerprint).toBe(before['initech-1'])
    const read = await readBundle((await updates(net, ['umbrella-1']))['umbrella-1'])
    expect(read.manifest).toMatchObject({caFingerprint: newId, caEndorsement: {by: oldId}})
    expect(caIds(read.files.get('nebula/ca.crt')!)).toEqual([oldId, newId].sort())
    // same version: one certificate, no initiating_version
    expect(certificatesFromPem(read.files.get('nebula/host.crt')!).map((c) => fingerprint(c))).toEqual([current(net, 'umbrella-1').fingerprint])
    expect(configOf(read.files.get('nebula/config.yml')!).pki.initiating_version).toBeUndefined()
    expect(configOf(read.files.get('nebula/config.yml')!).pki.blocklist).toEqual([before['initech-1']])
  })

  it('round 3 waits for round 2, then retires the old CA; the next rotation waits for round 3', async () => {
    await expect(finishCaRotation(net.home)).rejects.toThrow(/cannot finish the CA rotation: acme-1, umbrella-1 have not installed round 2/)
    await updates(net, ['acme-1'])
    await recordInstalls(net.home, [{name: 'acme-1'}, {name: 'umbrella-1'}])
    const finished = await finishCaRotation(net.home)
    expect(finished).toMatchObject({phase: 'finished', caFingerprint: newId, previousCaFingerprint: oldId, reissued: []})
    expect(net.home.state.cas.map((c) => c.status)).toEqual(['retired', 'active'])
    expect(listNodes(net.home.state).cas.map((c) => c.id)).toEqual([newId])
    await expect(finishCaRotation(net.home)).rejects.toThrow(/no CA rotation is in round 2/)
    const round3 = await updates(net, 'all')
    for (const file of Object.values(round3)) {
      const r = await readBundle(file)
      expect(caIds(r.files.get('nebula/ca.crt')!)).toEqual([newId])
      expect(r.manifest.caFingerprint).toBe(newId)
    }
    expect(await readdir(join(net.home.dir, 'ca'))).toContain(`${oldId}.key`)
    await expect(rotateCa(net.home, net.caKey, {passphrase: null})).rejects.toThrow(/cannot start a CA rotation: acme-1, umbrella-1 have not installed round 3/)
    const forced = await rotateCa(net.home, net.caKey, {passphrase: null, force: true})
    expect(forced.forcedPast).toEqual(['acme-1', 'umbrella-1'])
  })
})

describe('rotate-ca (module): a v1 network migrates to v2', () => {
  let net: Net
  let dir: string
  let oldId: string
  let newId: string
  let newest: string
  /** PATH with the newest nebula first (the default one is Nebula 1.6.1). */
  let newestPath: Record<string, string>
  const confirmAll = async (): Promise<void> => {
    await recordInstalls(net.home, net.home.state.nodes.filter((n) => !n.revoked && n.sequence).map((n) => ({name: n.name})))
  }

  beforeAll(async () => {
    net = await network(await scratch('migrate'))
    await addNode(net.home, net.caKey, {org: 'Umbrella'})
    await addNode(net.home, net.caKey, {org: 'Hooli'})
    dir = join(net.dir, 'nodes', 'umbrella-1')
    await joinNode(net, 'umbrella-1', dir)
    oldId = net.caId
    newest = (await nebulaBuild('newest')).nebula
    newestPath = {PATH: `${dirname(newest)}:${process.env.PATH}`}
  }, 120_000)

  it('round 1 to v2: nebula 1.6.1 refuses the update in one line (nothing written); the newest nebula takes it', async () => {
    const result = await rotateCa(net.home, net.caKey, {passphrase: null, version: 2})
    newId = result.caFingerprint
    expect(result).toMatchObject({caVersion: 2, caCurve: 'CURVE25519'})
    expect(certificateFromPem(await caPem(net, newId)).version).toBe(2)
    const round1 = await updates(net, 'all')
    await expectRefusedInstall(['install', round1['umbrella-1'], '--dir', dir], dir, /Refusing update bundle umbrella-1\.update-2\.tbmesh\.tar\.gz: it holds a v2 CA certificate, which nebula 1\.6\.1 \(.*\) cannot load \(1\.10\.0 or newer can\): upgrade nebula on this node to 1\.10\.0 or newer, then install it again/, 1)
    const installed = await tbmeshJson<any>(['install', round1['umbrella-1'], '--dir', dir], {env: newestPath})
    expect(installed).toMatchObject({nebulaTest: {ran: true, ok: true}, receipt: 'umbrella-1@2'})
    expect(caIds(await readFile(join(dir, 'nebula', 'ca.crt')))).toEqual([oldId, newId].sort())
    // doctor says the same: this installation needs a newer nebula than 1.6.1
    const checked = await doctor(dir)
    expect(checked.checks.find((c) => c.name === 'nebula')).toMatchObject({status: 'fail', detail: expect.stringMatching(/^nebula 1\.6\.1 .* is older than 1\.10\.0, which a v2 CA certificate here needs: upgrade it$/)})
  })

  it('round 2: the node presents its v1 certificate and a v2 one of the new CA for the same key, and opens tunnels with v2', async () => {
    await confirmAll()
    const v1 = current(net, 'umbrella-1')
    const newKey = await unlockCaKey(net.home, null, net.home.state.cas.find((c) => c.status === 'incoming'))
    await switchCa(net.home, newKey)
    await unlock(net)
    const v2 = current(net, 'umbrella-1')
    expect(v2).toMatchObject({version: 2, issuer: newId})
    const file = (await updates(net, 'all'))['umbrella-1']
    const read = await readBundle(file)
    const hosts = certificatesFromPem(read.files.get('nebula/host.crt')!)
    expect(hosts.map((c) => [c.version, fingerprint(c), c.details.issuer])).toEqual([[1, v1.fingerprint, oldId], [2, v2.fingerprint, newId]])
    expect(hosts[0]!.details.publicKey.equals(hosts[1]!.details.publicKey)).toBe(true)
    expect(configOf(read.files.get('nebula/config.yml')!).pki.initiating_version).toBe(2)
    // the newest nebula-cert verifies both blocks against the overlap trust bundle
    await nebulaCertCheck(read.files.get('nebula/ca.crt')!.toString(), read.files.get('nebula/host.crt')!.toString())
    expect(await tbmeshJson<any>(['install', file, '--dir', dir], {env: newestPath})).toMatchObject({nebulaTest: {ok: true}})
    expect(listNodes(net.home.state).nodes.find((n) => n.name === 'umbrella-1')).toMatchObject({version: 2, curve: 'CURVE25519'})
  })

  it('a revocation during the migration blocklists both the v1 and the v2 certificate of the node', async () => {
    const rows = net.home.state.certificates.filter((c) => c.name === 'hooli-1')
    expect(rows.map((c) => c.version ?? 1)).toEqual([1, 2])
    const revoked = await revoke(net.home, 'hooli-1')
    expect(revoked.fingerprints.sort()).toEqual(rows.map((c) => c.fingerprint).sort())
    const read = await readBundle((await updates(net, 'all'))['umbrella-1'])
    expect(configOf(read.files.get('nebula/config.yml')!).pki.blocklist).toEqual(rows.map((c) => c.fingerprint).sort())
  })

  it('round 3: v2 certificates only, no v1 CA, no initiating_version', async () => {
    await confirmAll()
    await finishCaRotation(net.home)
    const file = (await updates(net, 'all'))['umbrella-1']
    const read = await readBundle(file)
    expect(caIds(read.files.get('nebula/ca.crt')!)).toEqual([newId])
    expect(certificatesFromPem(read.files.get('nebula/host.crt')!).map((c) => c.version)).toEqual([2])
    expect(configOf(read.files.get('nebula/config.yml')!).pki.initiating_version).toBeUndefined()
    expect(await tbmeshJson<any>(['install', file, '--dir', dir], {env: newestPath})).toMatchObject({nebulaTest: {ok: true}})
    expect(listNodes(net.home.state).cas).toEqual([expect.objectContaining({id: newId, version: 2})])
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('install of update bundles', () => {
  let net: Net
  let other: Net
  let twin: Net
  let dir: string
  let hostKey: Buffer
  let joinFiles: Record<string, string>

  beforeAll(async () => {
    net = await network(await scratch('install'))
    await addNode(net.home, net.caKey, {org: 'Umbrella'})
    dir = join(net.dir, 'nodes', 'umbrella-1')
    await joinNode(net, 'umbrella-1', dir)
    hostKey = await readFile(join(dir, 'nebula', 'host.key'))
    joinFiles = await snapshot(dir)
    // another network ("other") and a twin of this one: same name, CIDR, organizations and nodes, another CA
    other = await network(await scratch('install-other'), {name: 'other'})
    await addNode(other.home, other.caKey, {org: 'Umbrella'})
    twin = await network(await scratch('install-twin'))
    await addNode(twin.home, twin.caKey, {org: 'Umbrella'})
  })

  it('applies a renewal onto the join installation: host.key kept, new host.crt, ca.crt and config.yml, sequence advanced', async () => {
    const renewed = (await renew(net.home, net.caKey, {names: ['umbrella-1']})).renewed[0]
    const file = (await updates(net, ['umbrella-1']))['umbrella-1']
    const bundle = await readBundle(file)
    expect(bundle.manifest.sequence).toBe(2)
    expect([...bundle.files.keys()].sort()).toEqual(['manifest.json', 'manifest.sig', 'nebula/ca.crt', 'nebula/config.yml', 'nebula/host.crt'])

    const result = await tbmeshJson<any>(['install', file, '--dir', dir])
    expect(result).toMatchObject({dir, previousSequence: 1, manifest: {kind: 'update', sequence: 2, node: 'umbrella-1'}})
    if (NEBULA_CERT) expect(result.nebulaTest).toMatchObject({ran: true, ok: true})

    expect((await readFile(join(dir, 'nebula', 'host.key'))).equals(hostKey)).toBe(true)
    const host = await readFile(join(dir, 'nebula', 'host.crt'))
    expect(host.equals(bundle.files.get('nebula/host.crt')!)).toBe(true)
    expect(fingerprint(certificateFromPem(host))).toBe(renewed.fingerprint)
    expect((await readFile(join(dir, 'nebula', 'ca.crt'))).equals(bundle.files.get('nebula/ca.crt')!)).toBe(true)
    expect((await installedManifest(dir)).sequence).toBe(2)

    const config = configOf(await readFile(join(dir, 'nebula', 'config.yml')))
    expect(config.pki).toMatchObject({ca: join(dir, 'nebula', 'ca.crt'), cert: join(dir, 'nebula', 'host.crt'), key: join(dir, 'nebula', 'host.key')})
    for (const p of [config.pki.ca, config.pki.cert, config.pki.key]) expect(isAbsolute(p)).toBe(true)
    const fromBundle = configOf(bundle.files.get('nebula/config.yml')!)
    expect({...config, pki: {...config.pki, ca: 0, cert: 0, key: 0}}).toEqual({...fromBundle, pki: {...fromBundle.pki, ca: 0, cert: 0, key: 0}})

    // the join bundle's other files are kept as they were, with their modes
    const after = await snapshot(dir)
    for (const f of ['/multichain/multichain.conf', '/trubudget/blockchain.env', '/README.md', '/nebula/host.key', '/multichain/', '/trubudget/', '/nebula/']) {
      expect(after[f], f).toBe(joinFiles[f])
    }
    expect(after['/nebula/host.crt']).not.toBe(joinFiles['/nebula/host.crt'])
    expect(await siblings(dir)).toEqual(['umbrella-1'])
    if (NEBULA_CERT) await nebulaCertCheck(await readFile(join(dir, 'nebula', 'ca.crt'), 'utf8'), host.toString())
  })

  it('refuses a replay (the same update twice) and a rollback (an older update after a newer one)', async () => {
    const again = (await updates(net, ['umbrella-1']))['umbrella-1'] // sequence 3
    const newer = (await updates(net, ['umbrella-1']))['umbrella-1'] // sequence 4
    await tbmeshJson(['install', again, '--dir', dir])
    await expectRefusedInstall(['install', again, '--dir', dir], dir, /has sequence 3, the one installed \(a replay\): install the newest update/, 1)
    await tbmeshJson(['install', newer, '--dir', dir])
    await expectRefusedInstall(['install', again, '--dir', dir], dir, /has sequence 3, older than the installed 4: installing it would roll back the node's certificates and blocklist: .*--allow-rollback/, 1)
    await expectRefusedInstall(['install', again, '--dir', dir, '--force'], dir, /older than the installed 4/, 1)
    await expect(installBundle(again, dir)).rejects.toThrow(/older than the installed 4/)
    expect((await installedManifest(dir)).sequence).toBe(4)
    // Named, it is done, with a warning; a replay stays refused even then.
    const rolledBack = await tbmesh(['install', again, '--dir', dir, '--allow-rollback'])
    expect(rolledBack.exitCode, String(rolledBack.stderr)).toBe(0)
    expect(String(rolledBack.stderr)).toBe('Warning: rolled back umbrella-1 from bundle sequence 4 to 3: its certificates and blocklist are those of the older bundle')
    expect((await installedManifest(dir)).sequence).toBe(3)
    await expectRefusedInstall(['install', again, '--dir', dir, '--allow-rollback'], dir, /a replay/, 1)
    await tbmeshJson(['install', newer, '--dir', dir])
    expect((await installedManifest(dir)).sequence).toBe(4)
  })

  it('refuses an update when DIR holds no installation', async () => {
    const file = (await updates(net, ['umbrella-1']))['umbrella-1']
    const empty = join(net.dir, 'nodes', 'empty')
    await mkdir(empty)
    await expectRefusedInstall(['install', file, '--dir', empty], empty, /holds no tbmesh installation to update: install the node's join bundle there first/, 1)
    const missing = join(net.dir, 'nodes', 'missing')
    await expectRefusedInstall(['install', file, '--dir', missing], missing, /holds no tbmesh installation to update/, 1)
    expect(await readdir(join(net.dir, 'nodes'))).not.toContain('missing')
    const junk = join(net.dir, 'nodes', 'junk')
    await mkdir(join(junk, 'nebula'), {recursive: true})
    await writeFile(join(junk, 'manifest.json'), '{"not": "a manifest"}\n')
    await writeFile(join(junk, 'nebula', 'ca.crt'), 'x')
    await expectRefusedInstall(['install', file, '--dir', junk], junk, /holds no tbmesh installation to update/, 1)
  })

  it('refuses an update for another node or another network', async () => {
    const forAcme = (await updates(net, ['acme-1']))['acme-1']
    await expectRefusedInstall(['install', forAcme, '--dir', dir], dir, /it is for acme-1 of network life, but .* holds umbrella-1 of life/, 1)
    const otherUpdate = (await updates(other, ['umbrella-1']))['umbrella-1']
    await expectRefusedInstall(['install', otherUpdate, '--dir', dir], dir, /it is for umbrella-1 of network other, but .* holds umbrella-1 of life/, 1)
  })

  it('refuses an update signed by a CA the installation does not trust, endorsed by nobody it trusts', async () => {
    // The twin network's genuine update for "umbrella-1" of "life", numbered past what is installed
    const genuine = (await updates(twin, ['umbrella-1']))['umbrella-1']
    const installed = (await installedManifest(dir)).sequence as number
    const out = (name: string) => join(twin.dir, `${name}.tar.gz`)
    const forged = await repack(genuine, out('unendorsed'), {sequence: installed + 10}, twin.caKey)
    const notTrusted = new RegExp(`is signed by CA ${twin.caId}, which did not sign this installation: install the earlier updates first`)
    await expectRefusedInstall(['install', forged, '--dir', dir], dir, notTrusted, 1)

    const endorsements: Record<string, {by: string; signature: string}> = {
      // random bytes where the installed CA's signature should be
      random: {by: net.caId, signature: Buffer.alloc(64, 7).toString('base64')},
      // not base64 at all
      garbled: {by: net.caId, signature: 'not a signature!!'},
      // empty
      empty: {by: net.caId, signature: ''},
      // the twin CA vouching for itself in the installed CA's name
      self: {by: net.caId, signature: ed25519Sign(twin.caKey, endorsementMessage(twin.caId)).toString('base64')},
      // a genuine signature by the installed CA, but for another CA's fingerprint
      other: {by: net.caId, signature: ed25519Sign(net.caKey, endorsementMessage(other.caId)).toString('base64')},
      // a genuine endorsement of the twin CA, by a CA the installation does not hold
      stranger: {by: other.caId, signature: ed25519Sign(other.caKey, endorsementMessage(twin.caId)).toString('base64')},
    }
    for (const [name, caEndorsement] of Object.entries(endorsements)) {
      const file = await repack(genuine, out(name), {sequence: installed + 10, caEndorsement}, twin.caKey)
      expect((await readBundle(file)).manifest.caEndorsement).toEqual(caEndorsement)
      await expectRefusedInstall(['install', file, '--dir', dir], dir, notTrusted, 1)
    }
    // the control: the same bundle with a real endorsement by the installed CA is accepted (into a copy)
    const endorsed = await repack(genuine, out('endorsed'), {sequence: installed + 10, caEndorsement: {by: net.caId, signature: ed25519Sign(net.caKey, endorsementMessage(twin.caId)).toString('base64')}}, twin.caKey)
    await expect(installBundle(endorsed, dir)).rejects.toThrow(/the host certificate does not match the installed private key/)
    expect((await installedManifest(dir)).sequence).toBe(installed)
  })

  it('refuses a join bundle into the existing installation without --force', async () => {
    const file = join(net.dir, 'umbrella-1.rejoin.tar.gz')
    await exportBundle(net.home, 'umbrella-1', file, {caKey: net.caKey, passphrase: null})
    await expectRefusedInstall(['install', file, '--dir', dir, '--ca-fingerprint', net.caId], dir, /already exists and is not empty: pass --force to replace the tbmesh installation in it/, 1)
  })
})

// ---------------------------------------------------------------------------------------------------------------------

describe('rotation chain', () => {
  let net: Net
  const dirs: Record<string, string> = {}
  let ca1: string
  let ca2: string
  const rounds: Array<Record<string, string>> = []

  beforeAll(async () => {
    net = await network(await scratch('chain'))
    for (const org of ['Umbrella', 'Initech', 'Hooli']) await addNode(net.home, net.caKey, {org})
    for (const name of ['umbrella-1', 'initech-1', 'hooli-1']) {
      dirs[name] = join(net.dir, 'nodes', name)
      await joinNode(net, name, dirs[name])
    }
    ca1 = net.caId
  })

  const trustIn = async (name: string) => caIds(await readFile(join(dirs[name], 'nebula', 'ca.crt')))
  const issuerIn = async (name: string) => certificateFromPem(await readFile(join(dirs[name], 'nebula', 'host.crt'))).details.issuer
  /** Exports the round to every node and records every node as having installed it (whether it did or not). */
  const shipRound = async (): Promise<Record<string, string>> => {
    const round = await updates(net, 'all')
    await recordInstalls(net.home, Object.keys(round).map((name) => ({name})))
    return round
  }
  const switchToIncoming = async (): Promise<void> => {
    await switchCa(net.home, await unlockCaKey(net.home, null, net.home.state.cas.find((c) => c.status === 'incoming')))
    await unlock(net)
  }

  it('a node installed before the rotation accepts round 1 (signed by the old CA), round 2 (the new CA, endorsed) and round 3', async () => {
    ca2 = (await rotateCa(net.home, net.caKey, {passphrase: null})).caFingerprint
    rounds.push(await shipRound())
    const r1 = await installBundle(rounds[0]!['umbrella-1']!, dirs['umbrella-1'])
    expect(r1).toMatchObject({previousSequence: 1, receipt: 'umbrella-1@2', manifest: {sequence: 2, caFingerprint: ca1}})
    expect(await trustIn('umbrella-1')).toEqual([ca1, ca2].sort())
    expect(await issuerIn('umbrella-1')).toBe(ca1)
    if (NEBULA_CERT) expect(r1.nebulaTest).toMatchObject({ran: true, ok: true})

    await switchToIncoming()
    rounds.push(await shipRound())
    const r2 = await tbmeshJson<any>(['install', rounds[1]!['umbrella-1']!, '--dir', dirs['umbrella-1']])
    expect(r2).toMatchObject({previousSequence: 2, manifest: {sequence: 3, caFingerprint: ca2, caEndorsement: {by: ca1}}})
    expect(await trustIn('umbrella-1')).toEqual([ca1, ca2].sort())
    expect(await issuerIn('umbrella-1')).toBe(ca2)

    await finishCaRotation(net.home)
    rounds.push(await shipRound())
    const r3 = await tbmeshJson<any>(['install', rounds[2]!['umbrella-1']!, '--dir', dirs['umbrella-1']])
    expect(r3).toMatchObject({previousSequence: 3, manifest: {sequence: 4, caFingerprint: ca2}})
    expect(await trustIn('umbrella-1')).toEqual([ca2])
  })

  it('a node that skipped rounds 1 and 2 still accepts round 3: it carries the old CA\'s endorsement of the new one', async () => {
    const r3 = await tbmeshJson<any>(['install', rounds[2]!['initech-1']!, '--dir', dirs['initech-1']])
    expect(r3).toMatchObject({previousSequence: 1, manifest: {sequence: 4, caFingerprint: ca2, caEndorsement: {by: ca1}}})
    expect(await trustIn('initech-1')).toEqual([ca2])
    expect(await issuerIn('initech-1')).toBe(ca2)
    // and round 1, now older than what is installed, is refused as a rollback
    await expectRefusedInstall(['install', rounds[0]!['initech-1']!, '--dir', dirs['initech-1']], dirs['initech-1'], /has sequence 2, older than the installed 4: installing it would roll back/, 1)
  })

  it('a node that missed a whole rotation refuses the next one\'s round 2 and is told to install the earlier updates first', async () => {
    const ca3 = (await rotateCa(net.home, net.caKey, {passphrase: null})).caFingerprint
    await shipRound()
    await switchToIncoming()
    const next = await shipRound()
    expect((await readBundle(next['hooli-1']!)).manifest).toMatchObject({caFingerprint: ca3, caEndorsement: {by: ca2}})
    // hooli-1 still trusts only CA 1; this update is signed by CA 3, endorsed by CA 2
    await expectRefusedInstall(
      ['install', next['hooli-1']!, '--dir', dirs['hooli-1']],
      dirs['hooli-1'],
      new RegExp(`is signed by CA ${ca3}, which did not sign this installation: install the earlier updates first, or ask the network operator for a new join bundle`),
      1,
    )
    // following that advice works: the first rotation's round 3 (CA 2, endorsed by CA 1), then this one
    await tbmeshJson(['install', rounds[2]!['hooli-1']!, '--dir', dirs['hooli-1']])
    expect(await trustIn('hooli-1')).toEqual([ca2])
    await tbmeshJson(['install', next['hooli-1']!, '--dir', dirs['hooli-1']])
    expect(await trustIn('hooli-1')).toEqual([ca2, ca3].sort())
    expect(await issuerIn('hooli-1')).toBe(ca3)
  })
})

// ---------------------------------------------------------------------------------------------------------------------

/** A `node -e` process that prints "ready", then on SIGHUP prints "got SIGHUP" and exits 0. */
async function hupListener(): Promise<{pid: number; exited: Promise<{code: number | null; signal: string | null; out: string}>; stop: () => void}> {
  const script = "process.on('SIGHUP', () => { process.stdout.write('got SIGHUP\\n'); process.exit(0) }); process.stdout.write('ready\\n'); setInterval(() => {}, 1000)"
  const child = spawn(process.execPath, ['-e', script], {stdio: ['ignore', 'pipe', 'inherit']})
  let out = ''
  const exited = new Promise<{code: number | null; signal: string | null; out: string}>((resolve) => {
    child.on('close', (code, signal) => resolve({code, signal, out}))
  })
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString()
      if (out.includes('ready')) resolve()
    })
    child.on('error', reject)
    child.on('exit', () => reject(new Error(`listener exited early: ${out}`)))
  })
  return {pid: child.pid!, exited, stop: () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }}
}

/** `promise`, or a rejection saying `what` after 10 s. */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within 10 s`)), 10_000)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

describe('install --reload', () => {
  let net: Net
  let dir: string
  let pidFile: string

  beforeAll(async () => {
    net = await network(await scratch('reload'))
    await addNode(net.home, net.caKey, {org: 'Umbrella'})
    dir = join(net.dir, 'nodes', 'umbrella-1')
    await joinNode(net, 'umbrella-1', dir)
    pidFile = join(net.dir, 'nebula.pid')
  })

  const nextUpdate = async () => (await updates(net, ['umbrella-1']))['umbrella-1']

  it('--pid-file: sends SIGHUP to the pid in the file after installing', async () => {
    const listener = await hupListener()
    try {
      await writeFile(pidFile, `${listener.pid}\n`)
      const file = await nextUpdate()
      const result = await tbmesh(['install', file, '--dir', dir, '--reload', '--pid-file', pidFile])
      expect(result.exitCode, String(result.stderr)).toBe(0)
      expect(String(result.stdout)).toContain(`Reloaded nebula (pid ${listener.pid})`)
      const done = await within(listener.exited, 'no SIGHUP')
      expect(done).toMatchObject({code: 0, signal: null})
      expect(done.out).toContain('got SIGHUP')
      expect((await installedManifest(dir)).sequence).toBe((await readBundle(file)).manifest.sequence)
    } finally {
      listener.stop()
    }
  })

  it('--pid-file --json reports the signalled pid', async () => {
    const listener = await hupListener()
    try {
      await writeFile(pidFile, String(listener.pid))
      const result = await tbmeshJson<any>(['install', await nextUpdate(), '--dir', dir, '--reload', '--pid-file', pidFile])
      expect(result.reloaded).toEqual({method: 'signal', pid: listener.pid})
      expect((await within(listener.exited, 'no SIGHUP')).out).toContain('got SIGHUP')
    } finally {
      listener.stop()
    }
  })

  it.each([
    ['garbage in the pid file', async () => writeFile(pidFile, 'nebula\n'), /--pid-file .* holds no process id/],
    ['an empty pid file', async () => writeFile(pidFile, ''), /--pid-file .* holds no process id/],
    [
      'a pid no process has',
      // above Linux's PID_MAX_LIMIT (2^22): certainly not running, and never some unrelated process that got a freed pid
      async () => writeFile(pidFile, `${2 ** 22 + 1}\n`),
      /cannot signal nebula \(pid \d+\): no such process/,
    ],
    ['a missing pid file', async () => rm(pidFile, {force: true}), /cannot read --pid-file .* \(ENOENT\)/],
  ])('%s: one line saying so and that the files are installed', async (_label, prepare, reason) => {
    await prepare()
    const file = await nextUpdate()
    const sequence = (await readBundle(file)).manifest.sequence
    const result = await tbmesh(['install', file, '--dir', dir, '--reload', '--pid-file', pidFile])
    expectOneLineError(result, reason, 1)
    expect(String(result.stderr)).toMatch(/the files are installed/)
    expect((await installedManifest(dir)).sequence).toBe(sequence)
    expect(String(result.stdout)).toContain(`Installed update ${sequence}`)
  })

  it('--reload-cmd runs the command after installing; a failing one is one line saying the files are installed', async () => {
    const marker = join(net.dir, 'reloaded')
    const file = await nextUpdate()
    const ok = await tbmeshJson<any>(['install', file, '--dir', dir, '--reload', '--reload-cmd', `echo "$PPID" > '${marker}'`])
    expect(ok.reloaded).toEqual({method: 'command'})
    expect((await readFile(marker, 'utf8')).trim()).toMatch(/^\d+$/)

    const next = await nextUpdate()
    const sequence = (await readBundle(next)).manifest.sequence
    const failed = await tbmesh(['install', next, '--dir', dir, '--reload', '--reload-cmd', 'echo nebula is not running >&2; exit 3'])
    expectOneLineError(failed, /reload command failed .*exited 3: nebula is not running/, 1)
    expect(String(failed.stderr)).toMatch(/the files are installed/)
    expect((await installedManifest(dir)).sequence).toBe(sequence)
  })

  it('--reload without --pid-file or --reload-cmd, and --pid-file without --reload, are usage errors that install nothing', async () => {
    const file = await nextUpdate()
    await expectRefusedInstall(['install', file, '--dir', dir, '--reload'], dir, /--reload needs --pid-file or --reload-cmd/, 2)
    await expectRefusedInstall(['install', file, '--dir', dir, '--pid-file', pidFile], dir, /--reload/, 2)
    await expectRefusedInstall(['install', file, '--dir', dir, '--reload', '--pid-file', pidFile, '--reload-cmd', 'true'], dir, /--pid-file|--reload-cmd/, 2)
  })
})

// ---------------------------------------------------------------------------------------------------------------------
// The CLI: list, renew, revoke, export-update, rotate-ca as users run them

describe('CLI: list, renew, revoke, export-update', () => {
  let dir: string
  let home: string
  const h = () => ['--home', home]

  beforeAll(async () => {
    dir = await scratch('cli')
    home = join(dir, 'home')
    await tbmeshJson(['init-ca', ...h(), '--network', 'cli', '--cidr', '10.60.0.0/16', '--no-passphrase'])
    await tbmeshJson(['add-node', ...h(), '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.1:4242'])
    await tbmeshJson(['add-node', ...h(), '--org', 'Umbrella', '--duration', '10d'])
    await tbmeshJson(['add-node', ...h(), '--org', 'Initech'])
  })

  it('list warns in one stderr line about a certificate expiring within 30 days; --json prints only the result', async () => {
    const text = await tbmesh(['list', ...h()])
    expect(text.exitCode).toBe(0)
    expect(String(text.stderr).split('\n')).toEqual([
      'Warning: certificates of umbrella-1 expire within 30 days: run `tbmesh renew --expiring-within 30d` and `tbmesh export-update`',
    ])
    const lines = String(text.stdout).split('\n')
    expect(lines[0]).toMatch(/^CA [0-9a-f]{12} \(active, v1 Curve25519\) valid until \S+ \(36(49|50) days\)$/)
    expect(lines[1]).toMatch(/^NAME +ORGANIZATION +OVERLAY IP +ROLES +CERTIFICATE +FINGERPRINT +NOT AFTER +DAYS +STATUS$/)
    expect(lines.find((l) => l.startsWith('umbrella-1'))).toMatch(/^umbrella-1 +Umbrella +10\.60\.1\.1 +- +v1 Curve25519 +[0-9a-f]{12} +\S+ +(9|10) +expiring$/)
    expect(lines.find((l) => l.startsWith('acme-1'))).toMatch(/ lighthouse,origin,relay .* 36[45] +valid$/)

    const json = await tbmesh(['list', ...h(), '--json'])
    expect(json.exitCode).toBe(0)
    expect(String(json.stderr)).toBe('')
    const result = JSON.parse(String(json.stdout))
    // whole days left, rounded down: 9 for a 10-day certificate once a second has passed since it was signed
    expect(result.nodes.map((n: any) => [n.name, n.status, n.updatePending])).toEqual([
      ['acme-1', 'valid', false],
      ['umbrella-1', 'expiring', false],
      ['initech-1', 'valid', false],
    ])
    expect([364, 365]).toContain(result.nodes[0].daysLeft)
    expect([9, 10]).toContain(result.nodes[1].daysLeft)
    const umbrella = await tbmeshJson<any>(['list', ...h(), '--org', 'umbrella'])
    expect(umbrella.nodes.map((n: any) => n.name)).toEqual(['umbrella-1'])
  })

  it('renew --expiring-within renews exactly the expiring nodes, and the warning goes away', async () => {
    const before = await tbmeshJson<any>(['list', ...h()])
    const result = await tbmeshJson<any>(['renew', ...h(), '--expiring-within', '30d'])
    expect(result.renewed.map((r: any) => r.name)).toEqual(['umbrella-1'])
    expect(result.renewed[0].previous).toBe(before.nodes[1].fingerprint)
    const list = await tbmesh(['list', ...h()])
    expect(String(list.stderr)).toBe('')
    const after = JSON.parse(String((await tbmesh(['list', ...h(), '--json'])).stdout))
    expect(after.nodes[1]).toMatchObject({name: 'umbrella-1', status: 'valid', updatePending: true, fingerprint: result.renewed[0].fingerprint})
    expect([364, 365]).toContain(after.nodes[1].daysLeft)
    if (NEBULA_CERT) {
      const ca = await readFile(join(home, 'ca', `${after.cas[0].id}.crt`), 'utf8')
      const printed = await nebulaCertCheck(ca, await readFile(join(home, 'certs', `${result.renewed[0].fingerprint}.crt`), 'utf8'))
      expect(printed.details).toMatchObject({name: 'umbrella-1', networks: ['10.60.1.1/16'], groups: ['org:umbrella', 'access:managed'], issuer: after.cas[0].id})
    }
    const nothing = await tbmesh(['renew', ...h(), '--expiring-within', '30d'])
    expect(nothing.exitCode).toBe(0)
    expect(String(nothing.stdout)).toContain('Nothing to renew.')
  })

  it.each([
    ['an unknown node', () => ['renew', ...h(), 'nobody'], 1, /no node named nobody: known nodes: acme-1, umbrella-1, initech-1/],
    ['a duration past the CA', () => ['renew', ...h(), 'acme-1', '--duration', '20y'], 2, /--duration 7300d goes past the CA's expiry/],
    ['names and --expiring-within', () => ['renew', ...h(), 'acme-1', '--expiring-within', '30d'], 2, /not both/],
    ['neither names nor --expiring-within', () => ['renew', ...h()], 2, /--expiring-within/],
    ['a bad --expiring-within', () => ['renew', ...h(), '--expiring-within', 'soon'], 2, /--expiring-within/],
  ])('renew refuses %s in one line, changing nothing', async (_label, args, exit, reason) => {
    const before = await snapshot(home)
    expectOneLineError(await tbmesh(args()), reason, exit)
    expect(await snapshot(home)).toEqual(before)
  })

  it('revoke blocks the node: once only, no renewal, no export, its IP never reused, in every other node\'s blocklist', async () => {
    const revoked = await tbmeshJson<any>(['revoke', ...h(), 'initech-1', '--reason', 'key lost'])
    expect(revoked).toMatchObject({name: 'initech-1', blocklistSize: 1})
    expect(revoked.fingerprints).toHaveLength(1)

    const refusals: Array<[string[], RegExp]> = [
      [['revoke', ...h(), 'initech-1'], /node initech-1 was already revoked on \S+: nothing to do/],
      [['renew', ...h(), 'initech-1'], /node initech-1 is revoked: add a new node instead/],
      [['export-bundle', ...h(), 'initech-1', '--out', join(dir, 'initech-1.tar.gz'), '--no-encrypt'], /node initech-1 was revoked on/],
      [['export-update', ...h(), 'initech-1', '--out', join(dir, 'refused')], /node initech-1 was revoked on/],
      [['export-update', ...h(), 'acme-1', 'initech-1', '--out', join(dir, 'refused')], /node initech-1 was revoked on/],
    ]
    for (const [args, reason] of refusals) {
      const before = await snapshot(home)
      expectOneLineError(await tbmesh(args), reason, 1)
      expect(await snapshot(home)).toEqual(before)
    }
    expect(await readdir(dir)).not.toContain('initech-1.tar.gz')
    expect(await readdir(join(dir, 'refused')).catch(() => [])).toEqual([])

    const next = await tbmeshJson<any>(['add-node', ...h(), '--org', 'Initech'])
    expect(next).toMatchObject({name: 'initech-2', overlayIp: '10.60.2.2'})
    expectOneLineError(await tbmesh(['add-node', ...h(), '--org', 'Initech', '--ip', '10.60.2.1']), /--ip 10\.60\.2\.1 is already used/, 2)

    const list = await tbmeshJson<any>(['list', ...h(), '--org', 'Initech'])
    expect(list.nodes.map((n: any) => [n.name, n.status])).toEqual([
      ['initech-1', 'revoked'],
      ['initech-2', 'valid'],
    ])

    const out = join(dir, 'updates')
    const exported = await tbmeshJson<any>(['export-update', ...h(), '--all', '--out', out])
    expect(exported.bundles.map((b: any) => b.manifest.node)).toEqual(['acme-1', 'umbrella-1', 'initech-2'])
    expect((await readdir(out)).sort()).toEqual(exported.bundles.map((b: any) => basename(b.path)).sort())
    for (const b of exported.bundles) {
      expect(b).toMatchObject({encrypted: false, containsPrivateKey: false, manifest: {kind: 'update'}})
      const read = await readBundle(b.path)
      expect(configOf(read.files.get('nebula/config.yml')!).pki.blocklist).toEqual(revoked.fingerprints)
    }
  })
})

describe('CLI: rotate-ca', () => {
  let dir: string
  let p1: string
  let p2: string
  const ids: Record<string, {old: string; new?: string}> = {}
  const homeOf = (name: string) => ['--home', join(dir, name)]
  const keyPem = (name: string, id: string) => readFile(join(dir, name, 'ca', `${id}.key`), 'utf8')
  const caCert = async (name: string, id: string) => certificateFromPem(await readFile(join(dir, name, 'ca', `${id}.crt`), 'utf8'))

  /**
   * A network whose CA key is encrypted with the passphrase in p1, made through the module with cheap Argon2
   * parameters (the CLI reads them from the key file); the key rotate-ca makes gets the real defaults.
   */
  async function setUp(name: string): Promise<string> {
    const init = await initCa(join(dir, name), {network: name, cidr: '10.70.0.0/16', passphrase: Buffer.from('the current passphrase'), argon2: ARGON2})
    const home = await Home.open(join(dir, name))
    const caKey = await unlockCaKey(home, Buffer.from('the current passphrase'))
    await addNode(home, caKey, {org: 'ACME', origin: true, lighthouse: true, endpoint: '192.0.2.1:4242'})
    await addNode(home, caKey, {org: 'Umbrella'})
    return init.caFingerprint
  }

  beforeAll(async () => {
    dir = await scratch('cli-rotate')
    p1 = join(dir, 'ca.pass')
    p2 = join(dir, 'new-ca.pass')
    await writeFile(p1, 'the current passphrase\n', {mode: 0o600})
    await writeFile(p2, 'the next passphrase\n', {mode: 0o600})
    ids.a = {old: await setUp('a')}
    ids.b = {old: await setUp('b')}
  })

  it('--switch and --finish without a rotation under way are refused; so is a curve change', async () => {
    const before = await snapshot(join(dir, 'a'))
    expectOneLineError(await tbmesh(['rotate-ca', ...homeOf('a'), '--finish']), /no CA rotation is in round 2: start one with `tbmesh rotate-ca`, then `tbmesh rotate-ca --switch`/, 1)
    expectOneLineError(await tbmesh(['rotate-ca', ...homeOf('a'), '--switch', '--passphrase-file', p1]), /no CA rotation is in round 1/, 1)
    expectOneLineError(await tbmesh(['rotate-ca', ...homeOf('a'), '--curve', 'P256', '--passphrase-file', p1]), /the CA uses Curve25519; a rotation cannot change the curve to P256: Nebula connects only nodes of one curve/, 1)
    expect(await snapshot(join(dir, 'a'))).toEqual(before)
  })

  it('round 1: new CA endorsed by the old, key under the current passphrase; nodes keep their certificates', async () => {
    const oldId = ids.a.old
    const started = await tbmeshJson<any>(['rotate-ca', ...homeOf('a'), '--passphrase-file', p1, '--duration', '5y'])
    expect(started).toMatchObject({phase: 'started', previousCaFingerprint: oldId, keyEncrypted: true, reissued: [], caVersion: 1})
    ids.a.new = started.caFingerprint as string
    const newId = ids.a.new
    const [oldCa, newCa] = [await caCert('a', oldId), await caCert('a', newId)]
    expect(caPrivateKeyMatchesCertificate(await readCaPrivateKey(await keyPem('a', newId), 'the current passphrase'), newCa)).toBe(true)
    expect(Math.round((newCa.details.notAfter - now()) / DAY)).toBe(1825)
    const state = JSON.parse(await readFile(join(dir, 'a', 'state.json'), 'utf8'))
    expect(state.cas.map((c: any) => [c.id, c.status])).toEqual([[oldId, 'active'], [newId, 'incoming']])
    const endorsement = state.cas.find((c: any) => c.id === newId).endorsement
    expect(caSignatureValid(oldCa, endorsementMessage(newId), Buffer.from(endorsement.signature, 'base64'))).toBe(true)
  })

  it('refuses a second rotation while one is under way, changing nothing', async () => {
    const before = await snapshot(join(dir, 'a'))
    expectOneLineError(await tbmesh(['rotate-ca', ...homeOf('a'), '--passphrase-file', p1]), /a CA rotation is already under way: ship its updates, then run `tbmesh rotate-ca --switch`/, 1)
    expect(await snapshot(join(dir, 'a'))).toEqual(before)
  })

  it('list shows the round and the nodes that have not installed it; --switch waits for them unless --force', async () => {
    const {old: oldId, new: newId} = ids.a
    const round1 = await tbmeshJson<any>(['export-update', ...homeOf('a'), '--all', '--out', join(dir, 'a-round1'), '--passphrase-file', p1])
    for (const b of round1.bundles) {
      expect(b.manifest.caFingerprint).toBe(oldId)
      const read = await readBundle(b.path)
      expect(caIds(read.files.get('nebula/ca.crt')!)).toEqual([oldId, newId].sort())
      await nebulaCertCheck(read.files.get('nebula/ca.crt')!.toString(), read.files.get('nebula/host.crt')!.toString())
    }
    const listed = await tbmeshJson<any>(['list', ...homeOf('a')])
    expect(listed.rotation).toEqual({round: 1, caFingerprint: newId, previousCaFingerprint: oldId, waitingFor: ['acme-1', 'umbrella-1']})
    expect(listed.nodes.map((n: any) => [n.name, n.version, n.curve, n.sequence, n.installed, n.roundPending])).toEqual([
      ['acme-1', 1, 'CURVE25519', 1, 0, true],
      ['umbrella-1', 1, 'CURVE25519', 1, 0, true],
    ])
    const text = String((await tbmesh(['list', ...homeOf('a')])).stdout)
    expect(text).toMatch(/^CA rotation round 1 \(\w{12} → \w{12}\): waiting for acme-1, umbrella-1$/m)
    expect(text).toMatch(/^umbrella-1 .* v1 Curve25519 .* valid \(round 1 not installed\)$/m)

    const before = await snapshot(join(dir, 'a'))
    expectOneLineError(await tbmesh(['rotate-ca', ...homeOf('a'), '--switch', '--passphrase-file', p1]), /cannot switch to the new CA: acme-1, umbrella-1 have not installed round 1 of the CA rotation: .*tbmesh confirm-install NODE.* or pass --force/, 1)
    expectOneLineError(await tbmesh(['confirm-install', ...homeOf('a'), 'umbrella-1@7']), /umbrella-1@7 is not a bundle exported to umbrella-1 \(its last is 1\)/, 2)
    expectOneLineError(await tbmesh(['confirm-install', ...homeOf('a'), 'Umbrella 1']), /is not a receipt NODE@SEQUENCE/, 2)
    expect(await snapshot(join(dir, 'a'))).toEqual(before)
    expect(await tbmeshJson<any>(['confirm-install', ...homeOf('a'), 'umbrella-1@1'])).toEqual({confirmed: [{name: 'umbrella-1', installed: 1}], waitingFor: ['acme-1']})

    const forced = await tbmesh(['rotate-ca', ...homeOf('a'), '--switch', '--force', '--passphrase-file', p1])
    expect(forced.exitCode).toBe(0)
    expect(String(forced.stderr)).toMatch(/started although acme-1 had not installed the previous round/)
    const state = JSON.parse(await readFile(join(dir, 'a', 'state.json'), 'utf8'))
    expect(state.cas.map((c: any) => [c.id, c.status])).toEqual([[oldId, 'retiring'], [newId, 'active']])
  })

  it('--finish after round 2 is installed retires the old CA, and the next updates trust only the new one', async () => {
    const {old: oldId, new: newId} = ids.a
    const round2 = await tbmeshJson<any>(['export-update', ...homeOf('a'), '--all', '--out', join(dir, 'a-round2'), '--passphrase-file', p1])
    for (const b of round2.bundles) expect(b.manifest).toMatchObject({caFingerprint: newId, caEndorsement: {by: oldId}})
    await tbmeshJson(['confirm-install', ...homeOf('a'), 'acme-1', 'umbrella-1'])
    const finished = await tbmeshJson<any>(['rotate-ca', ...homeOf('a'), '--finish'])
    expect(finished).toMatchObject({phase: 'finished', caFingerprint: newId, previousCaFingerprint: oldId, reissued: []})
    expectOneLineError(await tbmesh(['rotate-ca', ...homeOf('a'), '--finish']), /no CA rotation is in round 2/, 1)
    const listed = await tbmeshJson<any>(['list', ...homeOf('a')])
    expect(listed.cas.map((c: any) => c.id)).toEqual([newId])
    expect(listed.nodes.map((n: any) => n.updatePending)).toEqual([true, true])
    const round3 = await tbmeshJson<any>(['export-update', ...homeOf('a'), '--all', '--out', join(dir, 'a-round3'), '--passphrase-file', p1])
    for (const b of round3.bundles) expect(caIds((await readBundle(b.path)).files.get('nebula/ca.crt')!)).toEqual([newId])
  })

  it('--new-passphrase-file encrypts the new key with its own passphrase, which --switch then needs', async () => {
    const oldId = ids.b.old
    const started = await tbmeshJson<any>(['rotate-ca', ...homeOf('b'), '--passphrase-file', p1, '--new-passphrase-file', p2])
    const newId = started.caFingerprint
    const newPem = await keyPem('b', newId)
    expect(caPrivateKeyMatchesCertificate(await readCaPrivateKey(newPem, 'the next passphrase'), await caCert('b', newId))).toBe(true)
    await expect(readCaPrivateKey(newPem, 'the current passphrase')).rejects.toBeInstanceOf(WrongPassphraseError)
    expect(caPrivateKeyMatchesCertificate(await readCaPrivateKey(await keyPem('b', oldId), 'the current passphrase'), await caCert('b', oldId))).toBe(true)
    // round 1 is still signed by the current CA
    await tbmeshJson(['export-update', ...homeOf('b'), '--all', '--out', join(dir, 'b-round1'), '--passphrase-file', p1])
    await tbmeshJson(['confirm-install', ...homeOf('b'), 'acme-1', 'umbrella-1'])
    expectOneLineError(await tbmesh(['rotate-ca', ...homeOf('b'), '--switch', '--passphrase-file', p1]), /wrong CA passphrase/, 1)
    expect(await tbmeshJson<any>(['rotate-ca', ...homeOf('b'), '--switch', '--passphrase-file', p2])).toMatchObject({phase: 'switched', caFingerprint: newId})
  })

  it('an unencrypted network rotates with --no-passphrase, and without it is told the options', async () => {
    const name = 'c'
    await initCa(join(dir, name), {network: name, cidr: '10.71.0.0/16', passphrase: null})
    const home = await Home.open(join(dir, name))
    await addNode(home, await unlockCaKey(home, null), {org: 'ACME', origin: true, lighthouse: true, endpoint: '192.0.2.1:4242'})
    const before = await snapshot(join(dir, name))
    expectOneLineError(await tbmesh(['rotate-ca', ...homeOf(name)]), /no CA key passphrase and no terminal to ask on: use .*--no-passphrase/, 1)
    expect(await snapshot(join(dir, name))).toEqual(before)
    const started = await tbmeshJson<any>(['rotate-ca', ...homeOf(name), '--no-passphrase', '--cert-version', '2'])
    expect(started).toMatchObject({phase: 'started', keyEncrypted: false, caVersion: 2})
    expect(await readFile(join(dir, name, 'ca', `${started.caFingerprint}.key`), 'utf8')).toContain('NEBULA ED25519 PRIVATE KEY')
  })
})
