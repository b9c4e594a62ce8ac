/**
 * Refusals an adversarial review found missing, each shown with the input that got through before:
 *
 * - child processes (`--reload-cmd`, `nebula -test`) see no passphrase tbmesh was given in its environment;
 * - organization names: one validator wherever names enter, whatever it accepts every renderer writes and reads back,
 *   and a name that would take another organization's slug (`Ａcme` for `ACME`) is refused naming both;
 * - verification codes of 100 bits; federation approvals that show what a change does and always need a majority;
 * - age encryption outside the home's lock, with sequence numbers committed before a bundle file exists;
 * - the mutants no test caught: a host certificate outliving the CA, a joiner's key readable by others, a federated
 *   firewall rule not scoped by CA and block.
 */

import {createHash} from 'node:crypto'
import {existsSync} from 'node:fs'
import {mkdir, readdir, readFile, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import fc from 'fast-check'
import {afterAll, beforeAll, describe, expect, it, vi} from 'vitest'
import yaml from 'yaml'

import {readBundle} from '../src/bundle/archive.js'
import {manifestProblem} from '../src/bundle/layout.js'
import {addNode} from '../src/ca/add-node.js'
import {initCa, unlockCaKey} from '../src/ca/ca.js'
import {exportBundle} from '../src/ca/export.js'
import {renew} from '../src/ca/lifecycle.js'
import {UsageError} from '../src/errors.js'
import {approvalsNeeded, approve, nextVersion} from '../src/federation/descriptor.js'
import {createMembershipRequest, federationStatus, foundFederation, importDescriptor, joinFederation} from '../src/federation/federation.js'
import {Home} from '../src/home/home.js'
import type {SignedDescriptor} from '../src/home/types.js'
import {createJoinRequest} from '../src/join/join-request.js'
import {requestMessage, VERIFICATION_CODE_BITS, verificationCode} from '../src/lib/messages.js'
import {checkOrganizationName, slugify, slugTwin} from '../src/lib/names.js'
import {caPrivateKeyFromPem, certificateFromPem, ed25519Sign} from '../src/nebula/index.js'
import {renderBundleReadme} from '../src/render/bundle-readme.js'
import {renderTrubudgetEnv} from '../src/render/compose-adoption.js'
import {renderHostEnv} from '../src/render/host-env.js'
import {renderNebulaConfig} from '../src/render/nebula-config.js'
import type {NodeProfile} from '../src/render/profile.js'
import {envValue} from '../src/render/trubudget.js'
import {expectOneLineError, NEBULA_CERT, nebulaCertCheck, removeDir, snapshot, tbmesh, tbmeshJson, tempDir} from './helpers.js'

/** Whether the home's lock (`state.lock`, a directory while held) existed each time a bundle was encrypted. */
const lockHeldWhileEncrypting: boolean[] = []
let lockWatched = ''
vi.mock('../src/bundle/age.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/bundle/age.js')>()
  return {
    ...real,
    async encryptWithPassphrase(...args: Parameters<typeof real.encryptWithPassphrase>) {
      if (lockWatched) lockHeldWhileEncrypting.push(existsSync(join(lockWatched, 'state.lock')))
      return real.encryptWithPassphrase(...args)
    },
  }
})

let work: string
beforeAll(async () => {
  work = await tempDir('tbmesh-hardening-')
})
afterAll(async () => removeDir(work))

/** A fresh single-CA network with an origin + lighthouse node: its home directory, opened home and CA key. */
async function network(name: string, opts: {durationSeconds?: number} = {}): Promise<{dir: string; home: Home; key: Buffer}> {
  const dir = join(work, name)
  await initCa(dir, {network: name, cidr: '10.42.0.0/16', passphrase: null, ...opts})
  const home = await Home.open(dir)
  const key = await unlockCaKey(home, null)
  await addNode(home, key, {org: 'ACME', origin: true, lighthouse: true, endpoint: '192.0.2.10:4242'})
  return {dir, home, key}
}

describe('child processes get no secret', () => {
  const secrets = {TBMESH_CA_PASSPHRASE: 'ca-secret-17', TBMESH_BUNDLE_PASSPHRASE: 'bundle-secret-17', TBMESH_NEW_CA_PASSPHRASE: 'new-ca-secret-17'}

  it('--reload-cmd runs without TBMESH_*PASSPHRASE in its environment, with the rest of it', async () => {
    const dir = join(work, 'reload')
    const home = ['--home', join(dir, 'home')]
    const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home, '--network', 'reload', '--cidr', '10.42.0.0/16', '--no-passphrase'])
    await tbmeshJson(['add-node', ...home, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
    await tbmeshJson(['export-bundle', ...home, 'acme-1', '--out', join(dir, 'join.tar.gz'), '--no-encrypt'])
    await tbmeshJson(['install', join(dir, 'join.tar.gz'), '--dir', join(dir, 'node'), '--ca-fingerprint', init.caFingerprint])
    const update = await tbmeshJson<{bundles: Array<{path: string}>}>(['export-update', ...home, 'acme-1', '--out', join(dir, 'updates')])
    const seen = join(dir, 'reload-env.txt')
    await tbmeshJson(['install', update.bundles[0].path, '--dir', join(dir, 'node'), '--reload', '--reload-cmd', `env > '${seen}'`], {
      env: {...secrets, TBMESH_PROBE: 'visible'},
    })
    const env = await readFile(seen, 'utf8')
    expect(env).toMatch(/^TBMESH_PROBE=visible$/m)
    for (const [name, value] of Object.entries(secrets)) {
      expect(env).not.toContain(value)
      expect(env).not.toMatch(new RegExp(`^${name}=`, 'm'))
    }
  })

  it('nebula -test (run by install, which read the bundle passphrase from the environment) does not see it', async () => {
    const {dir, home, key} = await network('nebula-env')
    const bundle = join(dir, 'acme-1.tbmesh.age')
    await exportBundle(home, 'acme-1', bundle, {caKey: key, passphrase: Buffer.from(secrets.TBMESH_BUNDLE_PASSPHRASE), scryptWorkFactor: 10})
    // A stand-in `nebula` first on PATH that records the environment it was started with.
    const bin = join(dir, 'bin')
    await mkdir(bin)
    await writeFile(join(bin, 'nebula'), `#!/bin/sh\nenv > '${join(dir, 'nebula-env.txt')}'\n`, {mode: 0o755})
    const installed = await tbmeshJson<{nebulaTest: {ran: boolean; ok: boolean}}>(['install', bundle, '--dir', join(dir, 'node'), '--ca-fingerprint', home.activeCa().id], {
      env: {...secrets, PATH: `${bin}:${process.env.PATH}`},
    })
    expect(installed.nebulaTest).toMatchObject({ran: true, ok: true})
    const env = await readFile(join(dir, 'nebula-env.txt'), 'utf8')
    expect(env).toMatch(/^PATH=/m)
    for (const value of Object.values(secrets)) expect(env).not.toContain(value)
  })
})

describe('organization names', () => {
  const base: NodeProfile = {
    network: {name: 'tb', cidr: '10.42.0.0/16'},
    node: {name: 'x-1', organization: 'X', overlayIp: '10.42.1.1', lighthouse: false, relay: false, origin: false, registrar: false},
    ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080, storage: 8090},
    lighthouses: [{overlayIp: '10.42.0.1', endpoint: '203.0.113.10:4242'}],
    relays: [],
    originOverlayIp: '10.42.0.1',
    rpc: {user: 'multichainrpc'},
    tun: {dev: 'nebula1', mtu: 1300},
    pki: {ca: 'ca.crt', cert: 'host.crt', key: 'host.key'},
    blocklist: [],
    minNebulaVersion: '1.6.1',
  }
  /** Characters the validator must refuse, wherever they are in a name. */
  const FORBIDDEN = ['"', "'", '`', '$', '#', '\\', '%', '\n', '\r', '\t', '\u0000', '\u001b', '\u007f', '\u0085', '\u00a0', '\u200b', '\u200e', '\u202e', '\u2028', '\u2066', '\ufeff', '\ue000', '\u3000']
  /** Names made of characters that matter to one renderer or another, and any text. */
  const names = fc.oneof(
    fc.string({unit: fc.constantFrom(...'aZ9 -_.,:;&()<>|*+=!?/@%~[]{}^', 'é', 'Ａ', 'ß', 'İ', 'ﬁ', 'e\u0301', '日', ...FORBIDDEN), maxLength: 24}),
    fc.string({unit: 'binary', maxLength: 24}),
  )

  it('property: whatever the validator accepts, every renderer writes, and reads back as the same name', () => {
    fc.assert(
      fc.property(names, (raw) => {
        let name: string
        try {
          name = checkOrganizationName(raw)
        } catch (error) {
          expect(error).toBeInstanceOf(UsageError)
          return
        }
        expect(name).toBe(name.normalize('NFC').trim())
        expect(envValue('ORGANIZATION', name)).toBe(name)
        const p = {...base, node: {...base.node, organization: name}}
        // blockchain.env, api.env and trubudget.env, read as docker compose and systemd read env files (no quotes, no
        // comments, no interpolation left).
        for (const env of [renderHostEnv(p, 'blockchain'), renderHostEnv(p, 'api'), renderTrubudgetEnv(p)]) {
          expect(env.split('\n').filter((l) => l.startsWith('ORGANIZATION='))).toEqual([`ORGANIZATION=${name}`])
        }
        // config.yml: its header names it in a comment; the YAML still parses to the same document.
        const config = renderNebulaConfig(p)
        expect(yaml.parse(config)).toEqual(yaml.parse(renderNebulaConfig(base)))
        // the README (Markdown) and the manifest.
        expect(renderBundleReadme(p)).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/)
        expect(manifestProblem({schemaVersion: 2, kind: 'join', sequence: 1, network: 'tb', node: 'x-1', organization: name, overlayIp: '10.42.1.1', caFingerprint: 'a'.repeat(64), createdAt: '2025-01-01T00:00:00Z', expiresAt: '2025-01-02T00:00:00Z', files: {}})).toBeUndefined()
      }),
      {numRuns: 3000},
    )
  })

  it('property: a name holding a quote, $, #, backslash, %, or an unprintable or unusual blank is refused, naming why', () => {
    fc.assert(
      fc.property(fc.string({maxLength: 10}), fc.constantFrom(...FORBIDDEN), fc.string({maxLength: 10}), (before, bad, after) => {
        const raw = `Acme${before}${bad}${after}1`
        let refused: unknown
        try {
          checkOrganizationName(raw)
        } catch (error) {
          refused = error
        }
        expect(refused, JSON.stringify(raw)).toBeInstanceOf(UsageError)
        const message = (refused as UsageError).message
        const reason = /is not a valid organization name \(it contains (?:the unprintable character (U\+[0-9A-F]{4})|the blank (U\+[0-9A-F]{4}), not a plain space|(".+"), which TruBudget's env files cannot hold)\)$/.exec(message)
        expect(reason, message).not.toBeNull()
        // The first refused character is named: `bad` itself when the rest holds none.
        if (!FORBIDDEN.some((c) => `${before}${after}`.includes(c)) && !/[\p{C}\p{Z}]/u.test(`${before}${after}`.replaceAll(' ', ''))) {
          expect([reason![1], reason![2], reason![3]]).toContain(/["'`$#\\%]/.test(bad) ? JSON.stringify(bad) : `U+${bad.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`)
        }
      }),
      {numRuns: 2000},
    )
  })

  it('property: two different names with one slug are refused as twins', () => {
    // Variants of a name that keep its slug: case, fullwidth letters, accents.
    const variant = fc.tuple(fc.stringMatching(/^[A-Za-z][A-Za-z0-9 ]{0,10}[A-Za-z0-9]$/), fc.array(fc.constantFrom('upper', 'lower', 'fullwidth', 'accent', 'same'), {minLength: 1, maxLength: 12}))
    fc.assert(
      fc.property(variant, ([name, changes]) => {
        const other = [...name]
          .map((c, i) => {
            const change = changes[i % changes.length]
            if (!/[A-Za-z]/.test(c)) return c
            if (change === 'upper') return c.toUpperCase()
            if (change === 'lower') return c.toLowerCase()
            if (change === 'fullwidth') return String.fromCodePoint(c.codePointAt(0)! + 0xfee0)
            if (change === 'accent') return `${c}\u0301`.normalize('NFC')
            return c
          })
          .join('')
        const known = [{name, slug: slugify(name)}]
        expect(slugify(other)).toBe(slugify(name))
        expect(slugTwin(known, other)?.name).toBe(other === name ? undefined : name)
      }),
      {numRuns: 1000},
    )
  })

  it('add-node refuses "Ａcme" (fullwidth A) next to ACME, naming both, and the join request asking for it', async () => {
    const dir = join(work, 'twins')
    const home = ['--home', join(dir, 'home')]
    await tbmeshJson(['init-ca', ...home, '--network', 'twins', '--cidr', '10.42.0.0/16', '--no-passphrase'])
    await tbmeshJson(['add-node', ...home, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
    const before = await snapshot(join(dir, 'home'))
    const fix = 'write "ACME" exactly for that organization, or choose a name that differs in its letters or digits'
    for (const org of ['Ａcme', 'acme', 'ACMÉ']) {
      expectOneLineError(await tbmesh(['add-node', ...home, '--org', org]), new RegExp(`^Error: organization "${org}" is not "ACME", but both have the slug acme: ${fix}$`), 1)
    }
    const request = join(dir, 'acme.request.json')
    await tbmeshJson(['join-request', '--home', join(dir, 'joiner'), '--org', 'Ａcme', '--out', request])
    const approved = await tbmesh(['add-node', ...home, '--request', request, '--yes'])
    expect(approved.exitCode).toBe(1)
    expect(String(approved.stderr).split('\n').at(-1)).toBe(`Error: organization "Ａcme" is not "ACME", but both have the slug acme: ${fix}`)
    expect(await snapshot(join(dir, 'home'))).toEqual(before)
    // The same name, spelled as stored, joins the organization.
    expect(await tbmeshJson(['add-node', ...home, '--org', 'ACME'])).toMatchObject({organization: 'ACME', overlayIp: '10.42.0.2'})
  })

  it('"O\'Reilly & Sons" is refused where it enters, before anything is written (its exports could not be)', async () => {
    const dir = join(work, 'oreilly')
    const home = ['--home', join(dir, 'home')]
    await tbmeshJson(['init-ca', ...home, '--network', 'oreilly', '--cidr', '10.42.0.0/16', '--no-passphrase'])
    const before = await snapshot(join(dir, 'home'))
    const why = /"O'Reilly & Sons" is not a valid organization name \(it contains "'", which TruBudget's env files cannot hold\)/
    expectOneLineError(await tbmesh(['add-node', ...home, '--org', "O'Reilly & Sons"]), why, 2)
    expectOneLineError(await tbmesh(['join-request', '--home', join(dir, 'joiner'), '--org', "O'Reilly & Sons", '--out', join(dir, 'r.json')]), why, 2)
    expectOneLineError(await tbmesh(['init-ca', '--home', join(dir, 'fed'), '--federated', '--org', "O'Reilly & Sons", '--network', 'f', '--cidr', '10.9.0.0/16', '--no-passphrase']), why, 2)
    const file = join(dir, 'network.yaml')
    await writeFile(file, "network: {name: oreilly, cidr: 10.42.0.0/16}\norganizations:\n  - name: ACME\n    nodes: [{name: acme-1, roles: [origin, lighthouse], endpoint: '192.0.2.1:4242'}]\n  - name: \"O'Reilly & Sons\"\n    nodes: [{name: or-1}]\n")
    expectOneLineError(await tbmesh(['apply', ...home, '-f', file, '--dry-run']), new RegExp(`network\\.yaml:5: organizations\\[1\\]\\.name ${why.source}`), 1)
    expect(await snapshot(join(dir, 'home'))).toEqual(before)
    expect(await readdir(dir)).toEqual(['home', 'network.yaml'])
    // Other punctuation goes through, and through every export.
    expect(await tbmeshJson(['add-node', ...home, '--org', 'Reilly & Sons (Ltd.)', '--origin', '--lighthouse', '--endpoint', '192.0.2.1:4242'])).toMatchObject({organization: 'Reilly & Sons (Ltd.)'})
    await tbmeshJson(['export-bundle', ...home, 'reilly-sons-ltd-1', '--out', join(dir, 'b.tar.gz'), '--no-encrypt'])
    expect((await readBundle(join(dir, 'b.tar.gz'))).files.get('trubudget/blockchain.env')!.toString()).toMatch(/^ORGANIZATION=Reilly & Sons \(Ltd\.\)$/m)
  })
})

describe('verification codes', () => {
  it(`carry ${VERIFICATION_CODE_BITS} bits of SHA-256 over a domain prefix, in five groups of four Crockford base32 characters`, () => {
    const alphabet = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
    fc.assert(
      fc.property(fc.uint8Array({maxLength: 64}), fc.constantFrom('join-request', 'membership') as fc.Arbitrary<'join-request' | 'membership'>, (payload, purpose) => {
        const digest = createHash('sha256').update(`tbmesh-code:${purpose}:v2:`).update(payload).digest()
        const bits = [...digest].map((b) => b.toString(2).padStart(8, '0')).join('').slice(0, 100)
        const expected = bits.match(/.{5}/g)!.map((five) => alphabet[Number.parseInt(five, 2)]).join('')
        const code = verificationCode(purpose, payload)
        expect(code).toMatch(/^([0-9A-HJKMNP-TV-Z]{4}-){4}[0-9A-HJKMNP-TV-Z]{4}$/)
        expect(code.replaceAll('-', '')).toBe(expected)
      }),
      {numRuns: 200},
    )
  })
})

describe('federation', () => {
  let acmeDir: string
  let umbrellaDir: string
  let acmeKey: Buffer

  beforeAll(async () => {
    acmeDir = join(work, 'fed-acme')
    umbrellaDir = join(work, 'fed-umbrella')
    await foundFederation(acmeDir, {org: 'ACME', network: 'fed', cidr: '10.77.0.0/16', passphrase: null})
    const acme = await Home.open(acmeDir)
    acmeKey = caPrivateKeyFromPem(await acme.readCaKey(acme.activeCa()))
    await addNode(acme, acmeKey, {org: 'ACME', name: 'lighthouse', lighthouse: true, endpoint: '192.0.2.10:4242'})
    await addNode(await Home.open(acmeDir), acmeKey, {org: 'ACME', origin: true})
    const v3 = join(work, 'fed-v3.json')
    await federationStatus(await Home.open(acmeDir), {out: v3})
    await joinFederation(umbrellaDir, {org: 'Umbrella', passphrase: null, descriptorFile: v3})
    const umbrella = await Home.open(umbrellaDir)
    const umbrellaKey = caPrivateKeyFromPem(await umbrella.readCaKey(umbrella.activeCa()))
    await createMembershipRequest(umbrella, umbrellaKey, join(work, 'fed-umbrella.request.json'))
    await tbmeshJson(['federation', 'approve', join(work, 'fed-umbrella.request.json'), '--home', acmeDir, '--out', join(work, 'fed-v4.json'), '--yes'])
    await importDescriptor(await Home.open(umbrellaDir), join(work, 'fed-v4.json'))
  }, 120_000)

  it('approve shows the address, endpoint and roles of a new lighthouse and relay, not just the kind of change', async () => {
    // ACME proposes version 5: its node 10.77.0.9 becomes a lighthouse and relay at 198.51.100.9:4242 (needs Umbrella's
    // approval too).
    const current = (await Home.open(acmeDir)).state.federation!.current.descriptor
    const d = nextVersion(current, {kind: 'add-role-node', organization: 'acme', overlayIp: '10.77.0.9', lighthouse: true, origin: false, relay: true}, (next) => {
      next.lighthouses.push({organization: 'acme', overlayIp: '10.77.0.9', endpoint: '198.51.100.9:4242'})
      next.relays = [...(next.relays ?? []), {organization: 'acme', overlayIp: '10.77.0.9', endpoint: '198.51.100.9:4242'}]
    })
    const proposal: SignedDescriptor = {descriptor: d, approvals: [approve(d, 'acme', (await Home.open(acmeDir)).state.federation!.self.caFingerprint, acmeKey)]}
    const file = join(work, 'fed-v5.json')
    await writeFile(file, JSON.stringify(proposal))
    const run = await tbmesh(['federation', 'approve', file, '--home', umbrellaDir, '--out', join(work, 'fed-v5.approved.json'), '--yes'])
    expect(run.exitCode, String(run.stderr)).toBe(0)
    const shown = String(run.stderr)
    expect(shown).toContain('Version 5 makes 10.77.0.9 of acme the network\'s lighthouse and relay')
    expect(shown).toContain('lighthouse 10.77.0.9 at endpoint 198.51.100.9:4242')
    expect(shown).toContain('relay 10.77.0.9 at endpoint 198.51.100.9:4242: nodes that cannot reach each other directly will talk through it')
  })

  it('a hand-made membership request whose organization name holds control characters is refused', async () => {
    const dir = join(work, 'fed-mallory')
    await joinFederation(dir, {org: 'Mallory', passphrase: null, descriptorFile: join(work, 'fed-v4.json'), block: '10.77.9.0/24'})
    const home = await Home.open(dir)
    const key = caPrivateKeyFromPem(await home.readCaKey(home.activeCa()))
    const made = join(work, 'fed-mallory.request.json')
    await createMembershipRequest(home, key, made)
    const signed = JSON.parse(await readFile(made, 'utf8'))
    const request = {...signed.request, organization: 'Mallory\u001b[2J\nVersion 5 admits "Trusted Bank"'}
    // Signed with its own CA, as a hand-made file can be: the signature is fine, the name is not.
    await writeFile(made, JSON.stringify({request, signature: ed25519Sign(key, requestMessage(request)).toString('base64')}))
    const before = await snapshot(acmeDir)
    const run = await tbmesh(['federation', 'approve', made, '--home', acmeDir, '--out', join(work, 'fed-mallory.v5.json'), '--yes'])
    expectOneLineError(run, /is not a valid organization name \(it contains the unprintable character U\+001B\)/, 1)
    expect(String(run.stderr)).not.toMatch(/[\u001b]/)
    expect(await snapshot(acmeDir)).toEqual(before)

    // A hand-made descriptor listing such a name is refused too, before its approvals are looked at.
    const v4 = JSON.parse(await readFile(join(work, 'fed-v4.json'), 'utf8')) as SignedDescriptor
    v4.descriptor.members[1].organization = 'Umbrella\u202e'
    await writeFile(join(work, 'fed-v4.edited.json'), JSON.stringify(v4))
    expectOneLineError(
      await tbmesh(['init-ca', '--home', join(work, 'fed-edited'), '--federated', '--org', 'Globex', '--descriptor', join(work, 'fed-v4.edited.json'), '--no-passphrase']),
      /the name "Umbrella\\u202e" of member umbrella is not a valid organization name \(it contains the unprintable character U\+202E\)/,
      1,
    )
  })

  it('every change needs more than half of the members; --approvals below that is refused at init-ca', async () => {
    // Two disjoint sets of approvers can never both complete a version: 2 × needed > members, whatever the rule.
    fc.assert(
      fc.property(fc.integer({min: 1, max: 200}), fc.oneof(fc.constant('majority' as const), fc.integer({min: 1, max: 300})), (members, rule) => {
        const needed = approvalsNeeded(rule, members)
        expect(2 * needed).toBeGreaterThan(members)
        expect(needed).toBeLessThanOrEqual(members)
      }),
    )
    for (const n of ['1', '2']) {
      expectOneLineError(
        await tbmesh(['init-ca', '--home', join(work, `fed-approvals-${n}`), '--federated', '--org', 'A', '--network', 'f', '--cidr', '10.9.0.0/16', '--approvals', n, '--no-passphrase']),
        new RegExp(`^Error: --approvals ${n} is below a majority: every change needs the approval of more than half of the members: leave --approvals out`),
        2,
      )
    }
    expect(await tbmeshJson(['init-ca', '--home', join(work, 'fed-approvals-3'), '--federated', '--org', 'A', '--network', 'f', '--cidr', '10.9.0.0/16', '--approvals', '3', '--no-passphrase'])).toMatchObject({member: true})
  })
})

describe('age encryption outside the home lock', () => {
  it('export-bundle encrypts after its transaction committed; the file carries the committed sequence number', async () => {
    const {dir, home, key} = await network('age-lock')
    lockWatched = dir
    try {
      const out = join(dir, 'acme-1.tbmesh.age')
      const result = await exportBundle(home, 'acme-1', out, {caKey: key, passphrase: Buffer.from('p'), scryptWorkFactor: 10})
      expect(lockHeldWhileEncrypting).toEqual([false])
      const committed = (await Home.open(dir)).state.nodes.find((n) => n.name === 'acme-1')!.sequence
      expect(result.manifest.sequence).toBe(committed)
      // A bundle in the way is refused before anything is signed or committed: the sequence stays.
      await expect(exportBundle(home, 'acme-1', out, {caKey: key, passphrase: Buffer.from('p'), scryptWorkFactor: 10})).rejects.toThrow(/acme-1\.tbmesh\.age already exists$/)
      expect((await Home.open(dir)).state.nodes.find((n) => n.name === 'acme-1')!.sequence).toBe(committed)
      expect(lockHeldWhileEncrypting).toEqual([false])
    } finally {
      lockWatched = ''
    }
  })
})

describe('what no test caught before', () => {
  it('host certificates of a 30-day CA end before the CA, with the default lifetimes of add-node and renew', async () => {
    const {dir, home, key} = await network('short-ca', {durationSeconds: 30 * 86_400})
    const caPem = await home.readCaCertificate(home.activeCa())
    const ca = certificateFromPem(caPem)
    const added = await addNode(await Home.open(dir), key, {org: 'Umbrella'})
    const renewed = await renew(await Home.open(dir), key, {names: ['acme-1', added.name]})
    const after = await Home.open(dir)
    for (const fp of [added.fingerprint, ...renewed.renewed.map((r) => r.fingerprint)]) {
      const cert = certificateFromPem(await after.readCertificate(fp))
      expect(cert.details.notAfter).toBeLessThan(ca.details.notAfter)
      expect(cert.details.notAfter).toBeGreaterThan(ca.details.notAfter - 86_400) // capped there, not years short
      if (NEBULA_CERT) await nebulaCertCheck(caPem, await after.readCertificate(fp))
    }
  })

  it("a joiner's private key is kept 0600 under requests/, whatever the umask", async () => {
    const old = process.umask(0)
    try {
      const dir = join(work, 'joiner-home')
      const made = await createJoinRequest(dir, {org: 'Globex', out: join(work, 'globex.request.json')})
      const mode = async (p: string): Promise<number> => (await stat(p)).mode & 0o777
      expect(await mode(join(dir, 'requests', `${made.request.nonce}.key`))).toBe(0o600)
      expect(await readFile(join(dir, 'requests', `${made.request.nonce}.key`), 'utf8')).toMatch(/^-----BEGIN NEBULA X25519 PRIVATE KEY-----/)
      expect(await mode(dir)).toBe(0o700)
    } finally {
      process.umask(old)
    }
  })

  it("in a federated network every rule, the origin's included, is scoped by cidr and ca_sha, never host", () => {
    const members = [
      {organization: 'acme', name: 'ACME', block: '10.77.0.0/24', caFingerprint: 'a'.repeat(64)},
      {organization: 'umbrella', name: 'Umbrella', block: '10.77.1.0/24', caFingerprint: 'b'.repeat(64)},
    ]
    const origin: NodeProfile = {
      network: {name: 'fed', cidr: '10.77.0.0/16'},
      node: {name: 'acme-1', organization: 'ACME', overlayIp: '10.77.0.2', lighthouse: false, relay: false, origin: true, registrar: true},
      ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080, storage: 8090},
      lighthouses: [{overlayIp: '10.77.0.1', endpoint: '192.0.2.10:4242'}],
      relays: [],
      rpc: {user: 'multichainrpc'},
      tun: {dev: 'nebula1', mtu: 1300},
      pki: {ca: 'ca.crt', cert: 'host.crt', key: 'host.key'},
      blocklist: [],
      members,
      minNebulaVersion: '1.6.1',
    }
    const firewall = (yaml.parse(renderNebulaConfig(origin)) as {firewall: {inbound: Array<Record<string, unknown>>; outbound: Array<Record<string, unknown>>}}).firewall
    const rules = [...firewall.inbound, ...firewall.outbound]
    expect(firewall.inbound.filter((r) => r.port === 8080)).toHaveLength(members.length) // the origin's API, per member
    for (const rule of rules) {
      expect(rule.host, JSON.stringify(rule)).toBeUndefined()
      expect(members.some((m) => m.block === rule.cidr && m.caFingerprint === rule.ca_sha), JSON.stringify(rule)).toBe(true)
    }
  })
})
