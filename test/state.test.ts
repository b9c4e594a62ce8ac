/**
 * The home as src/state.ts keeps it, called directly on real temp dirs: corrupted or inconsistent state files are
 * refused with one line naming the file and nothing is written; failed transactions leave nothing behind; what a killed
 * process leaves is finished or removed by the next transaction; a full disk is a one-line error that changes nothing.
 */

import {spawnSync} from 'node:child_process'
import {chmod, mkdir, readdir, readFile, rename, rm, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {execa} from 'execa'
import fc from 'fast-check'
import {afterAll, afterEach, beforeEach, describe, expect, it} from 'vitest'

import {addNode} from '../src/ca/add-node.js'
import {initCa, unlockCaKey} from '../src/ca/ca.js'
import {UserError} from '../src/errors.js'
import {Home} from '../src/home/home.js'
import {type NetworkState} from '../src/home/types.js'
import {validateState} from '../src/home/validate.js'
import {BIN, removeDir, snapshot, tbmesh, tempDir} from './helpers.js'

let dir: string
let home: string

/** A home with nodes acme-1 (origin, lighthouse), umbrella-1 and acme-2 (unencrypted CA, so no Argon2 cost). */
async function makeHome(): Promise<{home: Home; caKey: Buffer}> {
  await initCa(home, {network: 'state-test', cidr: '10.42.0.0/16', passphrase: null})
  const h = await Home.open(home)
  const caKey = await unlockCaKey(h, null)
  await addNode(h, caKey, {org: 'ACME', origin: true, lighthouse: true, endpoint: '192.0.2.1:4242'})
  await addNode(h, caKey, {org: 'Umbrella'})
  await addNode(h, caKey, {org: 'ACME'})
  return {home: h, caKey}
}

const stateFile = () => join(home, 'state.json')
const readState = async (): Promise<NetworkState> => JSON.parse(await readFile(stateFile(), 'utf8'))

/** Expects `promise` to reject with a UserError whose printed line is one line containing every needle. */
async function expectOneLine(promise: Promise<unknown>, ...needles: string[]): Promise<UserError> {
  const error = await promise.then(
    () => undefined,
    (error_: unknown) => error_,
  )
  expect(error).toBeInstanceOf(UserError)
  const line = (error as UserError).line
  expect(line.split('\n')).toHaveLength(1)
  for (const needle of needles) expect(line).toContain(needle)
  return error as UserError
}

beforeEach(async () => {
  dir = await tempDir('tbmesh-state-')
  home = join(dir, 'home')
})
afterEach(async () => removeDir(dir))

describe('a state file that is unreadable, malformed or inconsistent is refused with one line, and nothing is written', () => {
  const corruptions: Array<[string, (s: any) => unknown, string]> = [
    ['truncated JSON', () => '{"schemaVersion": 1, "network": {', 'is not valid JSON'],
    ['an empty file', () => '', 'is not valid JSON'],
    ['YAML instead of JSON', () => 'schemaVersion: 1\nnetwork:\n  name: x\n', 'is not valid JSON'],
    ['a JSON list', () => [], 'not a tbmesh state'],
    ['a newer schema version', (s) => ({...s, schemaVersion: 2}), 'upgrade tbmesh'],
    ['an unknown schema version', (s) => ({...s, schemaVersion: 'one'}), 'schema version "one" is not supported'],
    ['no schema version', ({schemaVersion: _, ...s}) => s, 'schema version missing'],
    ['nodes that is not a list', (s) => ({...s, nodes: {}}), '"nodes" is not a list'],
    ['an IPv6 network', (s) => ({...s, network: {...s.network, cidr: 'fd00::/64'}}), 'IPv6'],
    ['no network CIDR', (s) => ({...s, network: {...s.network, cidr: undefined}}), '"network.cidr" is not a string'],
    ['two nodes with one IP', (s) => withNode(s, 2, {overlayIp: s.nodes[0].overlayIp}), 'nodes acme-1 and acme-2 share the overlay IP 10.42.0.1'],
    ['a node outside its organization\'s block', (s) => withNode(s, 1, {overlayIp: '10.42.7.1'}), 'lies outside its organization\'s block 10.42.1.0/24'],
    ['overlapping blocks', (s) => withOrg(s, 1, {block: '10.42.0.0/23'}), 'overlap'],
    ['a block outside the network', (s) => withOrg(s, 1, {block: '10.43.0.0/24'}), 'lies outside 10.42.0.0/16'],
    ['a node of an unknown organization', (s) => withNode(s, 1, {organization: 'initech'}), 'unknown organization "initech"'],
    ['two nodes with one name', (s) => withNode(s, 1, {name: s.nodes[0].name}), 'listed twice'],
    ['a node name that is a path', (s) => withNode(s, 1, {name: '../../etc/cron.d/x'}), 'no valid name'],
    ['a fingerprint that is a path', (s) => ({...s, certificates: [{...s.certificates[0], fingerprint: '../../x'}]}), 'no valid fingerprint'],
    ['a ledger row of an unknown node', (s) => ({...s, certificates: [...s.certificates, {...s.certificates[0], fingerprint: 'f'.repeat(64), name: 'ghost'}]}), 'names no known node'],
    ['one fingerprint twice in the ledger', (s) => ({...s, certificates: [...s.certificates, s.certificates[0]]}), 'listed twice'],
    ['two origins', (s) => withNode(s, 1, {origin: true}), 'more than one origin'],
    ['an org prefix that does not fit', (s) => ({...s, network: {...s.network, orgPrefix: 8}}), 'network.orgPrefix'],
    ['an overlay IP with a line break', (s) => withNode(s, 1, {overlayIp: '10.42.1.1\nError: forged'}), 'overlay IP of umbrella-1 "10.42.1.1\\u000aError: forged"'],
  ]

  it.each(corruptions)('%s', async (_label, corrupt, needle) => {
    const {home: opened, caKey} = await makeHome()
    const changed = corrupt(await readState())
    await writeFile(stateFile(), typeof changed === 'string' ? changed : `${JSON.stringify(changed, null, 2)}\n`)
    const before = await snapshot(home)
    // reading: open refuses it
    await expectOneLine(Home.open(home), stateFile(), needle)
    // changing: a transaction on an already opened home reloads the file under the lock and refuses it too
    await expectOneLine(addNode(opened, caKey, {org: 'Initech'}), stateFile(), needle)
    expect(await snapshot(home)).toEqual(before)
  })

  it('an unreadable state file (a directory where the file should be) names the file and the error', async () => {
    await makeHome()
    await rm(stateFile())
    await mkdir(stateFile())
    const before = await snapshot(home)
    await expectOneLine(Home.open(home), `cannot read ${stateFile()} (EISDIR)`)
    expect(await snapshot(home)).toEqual(before)
  })

  it('an unreadable state file (mode 000) names the file and the error', async (ctx) => {
    await makeHome()
    await chmod(stateFile(), 0o000)
    if (process.getuid?.() !== 0) {
      const before = await snapshot(home)
      await expectOneLine(Home.open(home), `cannot read ${stateFile()} (EACCES)`)
      expect(await snapshot(home)).toEqual(before)
      return
    }
    // root reads through mode 000: run the real CLI as nobody, on a home it may traverse but not read
    const asNobody = {uid: 65_534, gid: 65_534}
    if (spawnSync('node', ['-e', `require('fs').accessSync(${JSON.stringify(BIN)})`], asNobody).status !== 0) ctx.skip() // checkout not readable by nobody
    await chmod(dir, 0o755)
    await chmod(home, 0o755)
    const before = await snapshot(home)
    const result = await tbmesh(['add-node', '--home', home, '--org', 'X'], {...asNobody, env: {HOME: dir}})
    expect(result.exitCode).toBe(1)
    expect(String(result.stderr).trim()).toBe(`Error: cannot read ${stateFile()} (EACCES): check the permissions, or run tbmesh as the home's owner`)
    expect(await snapshot(home)).toEqual(before)
  })

  it('property: validateState throws nothing but a one-line UserError naming the file, whatever the JSON', () => {
    const file = '/x/state.json'
    const check = (value: unknown) => {
      try {
        validateState(value as NetworkState, file)
      } catch (error) {
        expect(error).toBeInstanceOf(UserError)
        expect((error as UserError).line.startsWith(`${file}: `)).toBe(true)
        expect((error as UserError).line).not.toMatch(/[\n\r]/)
      }
    }
    fc.assert(fc.property(fc.jsonValue(), check), {numRuns: 500})
    // and mutations of a valid state: any field replaced by any JSON value
    const valid = validStateFixture()
    const paths = leafPaths(valid)
    fc.assert(
      fc.property(fc.constantFrom(...paths), fc.jsonValue({maxDepth: 2}), (path, value) => {
        const copy = structuredClone(valid) as any
        let target = copy
        for (const key of path.slice(0, -1)) target = target[key]
        target[path.at(-1)!] = value
        check(copy)
      }),
      {numRuns: 2000},
    )
  })

  it('property: a state that breaks an invariant is refused, naming the problem', () => {
    const file = '/x/state.json'
    const refused = (state: unknown, problem: RegExp): void => {
      let error: unknown
      try {
        validateState(state as NetworkState, file)
      } catch (error_) {
        error = error_
      }
      expect(error, JSON.stringify(state)).toBeInstanceOf(UserError)
      expect((error as UserError).line).toMatch(new RegExp(`^${file}: ${problem.source}`))
    }
    const set = (path: Array<string | number>, value: unknown): any => {
      const copy = structuredClone(validStateFixture()) as any
      let target = copy
      for (const key of path.slice(0, -1)) target = target[key]
      target[path.at(-1)!] = value
      return copy
    }
    // The fields the invariants rest on, replaced by a value of another type.
    const guarded: Array<[Array<string | number>, RegExp]> = [
      [['schemaVersion'], /schema version/],
      [['network', 'cidr'], /"network\.cidr" is not a string/],
      [['cas', 0, 'id'], /a CA has no valid id/],
      [['organizations', 1, 'slug'], /an organization has no valid slug/],
      [['organizations', 1, 'block'], /the block of umbrella is not a string/],
      [['nodes', 2, 'name'], /a node has no valid name/],
      [['nodes', 2, 'overlayIp'], /the overlay IP of umbrella-1 is not a string/],
      [['certificates', 2, 'fingerprint'], /a ledger row has no valid fingerprint/],
    ]
    const notString = fc.jsonValue({maxDepth: 1}).filter((v) => typeof v !== 'string' && v !== 1) // 1: the schema version
    fc.assert(
      fc.property(fc.constantFrom(...guarded), notString, ([path, problem], value) => refused(set(path, value), problem)),
      {numRuns: 500, examples: [[guarded[1], 42]]},
    )
    // An overlay IP outside its organization's block (10.42.1.0/24 for umbrella-1), or another node's.
    fc.assert(
      fc.property(fc.ipV4().filter((ip) => !ip.startsWith('10.42.1.') && !/(^|\.)0\d/.test(ip)), (ip) => {
        refused(set(['nodes', 2, 'overlayIp'], ip), /node umbrella-1 \(.*\) lies outside its organization's block 10\.42\.1\.0\/24/)
      }),
      {numRuns: 300},
    )
    refused(set(['nodes', 1, 'overlayIp'], '10.42.0.1'), /nodes acme-1 and acme-2 share the overlay IP 10\.42\.0\.1/)
    // Blocks outside the network or over another's, a second origin, a ledger row for no node.
    fc.assert(
      fc.property(fc.integer({min: 0, max: 255}), (third) => {
        const block = `10.${third === 42 ? 43 : third}.0.0/24`
        refused(set(['organizations', 1, 'block'], block), new RegExp(`block ${block.replaceAll('.', '\\.')} of umbrella lies outside 10\\.42\\.0\\.0/16`))
      }),
      {numRuns: 100},
    )
    refused(set(['organizations', 1, 'block'], '10.42.0.0/23'), /blocks of acme and umbrella overlap/)
    refused(set(['nodes', 1, 'origin'], true), /more than one origin node/)
    refused(set(['certificates', 1, 'name'], 'nobody-1'), /ledger row b+ names no known node/)
  })
})

describe('transactions', () => {
  it('a transaction that fails writes nothing: its host key is removed, the state is unchanged', async () => {
    const {home: opened} = await makeHome()
    const before = await snapshot(home)
    await expect(
      opened.transaction(async (tx) => {
        await tx.writeHostKey('doomed-1', 'not a key\n')
        tx.addCertificate('a'.repeat(64), 'not a certificate\n')
        throw new UserError('changed my mind')
      }),
    ).rejects.toThrow('changed my mind')
    expect(await snapshot(home)).toEqual(before)
  })

  it('a commit that would break an invariant is refused and writes nothing', async () => {
    const {home: opened} = await makeHome()
    const before = await snapshot(home)
    await expectOneLine(
      opened.transaction(async (tx) => {
        await tx.writeHostKey('twin', 'key\n')
        tx.addCertificate('b'.repeat(64), 'cert\n')
        tx.state.nodes.push({...tx.state.nodes[0], name: 'twin'}) // same IP as acme-1
      }),
      'share the overlay IP',
    )
    expect(await snapshot(home)).toEqual(before)
  })

  it('the next transaction finishes or removes what a killed one left behind', async () => {
    const {home: opened, caKey} = await makeHome()
    const state = await readState()
    const committed = state.certificates[1].fingerprint // ledger row committed, certificate not yet renamed
    await rename(join(home, 'certs', `${committed}.crt`), join(home, 'certs', `${committed}.crt.pending`))
    const leftovers = [
      `certs/${'c'.repeat(64)}.crt.pending`, // certificate of a transaction that never committed
      `certs/${'c'.repeat(64)}.crt.pending.1234567`, // temporary files of interrupted atomic writes
      'state.json.3141592653',
      'secrets.json.42',
      'keys/acme-1.key.2718281828',
      'keys/never-committed-1.key', // host key of a node that was never committed
    ]
    for (const file of leftovers) await writeFile(join(home, file), 'leftover\n')

    // the state loads, and the committed certificate can be read before anything is repaired
    const reopened = await Home.open(home)
    expect(await reopened.readCertificate(committed)).toContain('NEBULA CERTIFICATE')
    expect(await reopened.certificateFiles()).not.toContain(committed)

    await addNode(opened, caKey, {org: 'Initech'})
    const after = await readState()
    const certs = (await readdir(join(home, 'certs'))).sort()
    expect(certs).toEqual(after.certificates.map((c) => `${c.fingerprint}.crt`).sort())
    expect((await readdir(join(home, 'keys'))).sort()).toEqual(after.nodes.map((n) => `${n.name}.key`).sort())
    expect(await readdir(home)).not.toContain('state.json.3141592653')
    expect(await readdir(home)).not.toContain('secrets.json.42')
    expect(await readdir(home)).not.toContain('state.lock')
  })
})

describe('file errors are one line and change nothing', () => {
  it('init-ca under a regular file', async () => {
    await writeFile(join(dir, 'file'), 'x')
    const before = await snapshot(dir)
    await expectOneLine(initCa(join(dir, 'file', 'home'), {network: 'n', cidr: '10.42.0.0/16', passphrase: null}), 'cannot create', 'ENOTDIR')
    expect(await snapshot(dir)).toEqual(before)
  })

  // Real full and read-only disks: a small tmpfs (needs root and mount; CI runs as root). Skipped elsewhere.
  const mounts: string[] = []
  afterAll(async () => {
    for (const mnt of mounts) await execa('umount', [mnt], {reject: false})
  })
  async function smallDisk(ctx: {skip: () => void}): Promise<string> {
    const mnt = join(dir, 'small-disk')
    await mkdir(mnt)
    const mount = process.getuid?.() === 0 ? await execa('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt], {reject: false}) : undefined
    if (mount?.exitCode !== 0) {
      if (process.env.CI) throw new Error(`cannot mount a tmpfs: ${mount?.stderr ?? 'not root'}`)
      ctx.skip()
    }
    mounts.push(mnt)
    return mnt
  }
  async function unmount(mnt: string): Promise<void> {
    await execa('umount', [mnt], {reject: false})
    mounts.splice(mounts.indexOf(mnt), 1)
  }

  it('a full disk: add-node and init-ca fail with one line, change nothing, and work once there is space', async (ctx) => {
    const mnt = await smallDisk(ctx)
    try {
      home = join(mnt, 'home')
      const {home: opened, caKey} = await makeHome()
      // fill the disk to the last byte
      const filler = join(mnt, 'filler')
      await writeFile(filler, '')
      for (let size = 64 * 1024; size >= 1; size = Math.floor(size / 2)) {
        for (;;) {
          const ok = await writeFile(filler, Buffer.alloc(size), {flag: 'a'}).then(
            () => true,
            () => false,
          )
          if (!ok) break
        }
      }
      const before = await snapshot(home)
      await expectOneLine(addNode(opened, caKey, {org: 'Initech'}), 'ENOSPC', 'free some disk space')
      expect(await snapshot(home)).toEqual(before)
      const cli = await tbmesh(['add-node', '--home', home, '--org', 'Initech'])
      expect(cli.exitCode).toBe(1)
      expect(String(cli.stderr).trim().split('\n')).toHaveLength(1)
      expect(String(cli.stderr)).toContain('(ENOSPC): free some disk space')
      expect(await snapshot(home)).toEqual(before)
      // init-ca on the full disk: one line, and no half-made home left behind
      const entries = await readdir(mnt)
      const init = await tbmesh(['init-ca', '--home', join(mnt, 'other', 'home'), '--network', 'n', '--cidr', '10.9.0.0/16', '--no-passphrase'])
      expect(init.exitCode).toBe(1)
      expect(String(init.stderr).trim().split('\n')).toHaveLength(1)
      expect(String(init.stderr)).toContain('(ENOSPC): free some disk space')
      expect(await readdir(mnt)).toEqual(entries)

      await rm(filler)
      const added = await addNode(await Home.open(home), caKey, {org: 'Initech'})
      expect(added.overlayIp).toBe('10.42.2.1')
      expect((await stat(join(home, 'certs', `${added.fingerprint}.crt`))).isFile()).toBe(true)
    } finally {
      await unmount(mnt)
    }
  })

  it('a read-only home: add-node fails at once with one line', async (ctx) => {
    const mnt = await smallDisk(ctx)
    try {
      home = join(mnt, 'home')
      await makeHome()
      await execa('mount', ['-o', 'remount,ro', mnt])
      const before = await snapshot(home)
      const started = Date.now()
      const cli = await tbmesh(['add-node', '--home', home, '--org', 'Initech'])
      expect(cli.exitCode).toBe(1)
      expect(String(cli.stderr).trim()).toBe(`Error: cannot lock ${home} (EROFS): the file system is read-only: use a writable --home`)
      expect(Date.now() - started).toBeLessThan(10_000) // not after TBMESH_LOCK_TIMEOUT's 30 s
      expect(await snapshot(home)).toEqual(before)
    } finally {
      await unmount(mnt)
    }
  })
})

function withNode(state: any, index: number, change: Record<string, unknown>): unknown {
  return {...state, nodes: state.nodes.map((n: any, i: number) => (i === index ? {...n, ...change} : n))}
}

function withOrg(state: any, index: number, change: Record<string, unknown>): unknown {
  return {...state, organizations: state.organizations.map((o: any, i: number) => (i === index ? {...o, ...change} : o))}
}

/** A valid state (two organizations, three nodes, three ledger rows), without touching the disk. */
function validStateFixture(): NetworkState {
  const fp = (c: string) => c.repeat(64)
  const node = (name: string, organization: string, overlayIp: string, origin = false) => ({
    name,
    organization,
    overlayIp,
    lighthouse: origin,
    origin,
    groups: [],
    access: 'managed' as const,
    createdAt: '2026-01-01T00:00:00Z',
  })
  const row = (fingerprint: string, name: string, organization: string, overlayIp: string) => ({
    fingerprint,
    name,
    organization,
    overlayIp,
    groups: [`org:${organization}`],
    roles: [],
    notBefore: '2026-01-01T00:00:00Z',
    notAfter: '2027-01-01T00:00:00Z',
    issuer: fp('0'),
    issuedAt: '2026-01-01T00:00:00Z',
    keyInHome: true,
  })
  const state: NetworkState = {
    schemaVersion: 1,
    network: {name: 'n', cidr: '10.42.0.0/16', orgPrefix: 24, createdAt: '2026-01-01T00:00:00Z', ports: {nebula: 4242, p2p: 7447, rpc: 8000, api: 8080}, tun: {dev: 'nebula1', mtu: 1300}},
    cas: [{id: fp('0'), name: 'n', notBefore: '2026-01-01T00:00:00Z', notAfter: '2036-01-01T00:00:00Z', encrypted: false, organization: null, status: 'active'}],
    organizations: [
      {name: 'ACME', slug: 'acme', block: '10.42.0.0/24', createdAt: '2026-01-01T00:00:00Z'},
      {name: 'Umbrella', slug: 'umbrella', block: '10.42.1.0/24', createdAt: '2026-01-01T00:00:00Z'},
    ],
    nodes: [node('acme-1', 'acme', '10.42.0.1', true), node('acme-2', 'acme', '10.42.0.2'), node('umbrella-1', 'umbrella', '10.42.1.1')],
    certificates: [row(fp('a'), 'acme-1', 'acme', '10.42.0.1'), row(fp('b'), 'acme-2', 'acme', '10.42.0.2'), row(fp('c'), 'umbrella-1', 'umbrella', '10.42.1.1')],
  }
  validateState(state, 'fixture') // the fixture itself is valid
  return state
}

/** Every path to a leaf or a container in `value`, e.g. ['nodes', 0, 'overlayIp']. */
function leafPaths(value: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  if (typeof value !== 'object' || value === null) return prefix.length > 0 ? [prefix] : []
  const entries: Array<[string | number, unknown]> = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value)
  return [...(prefix.length > 0 ? [prefix] : []), ...entries.flatMap(([k, v]) => leafPaths(v, [...prefix, k]))]
}
