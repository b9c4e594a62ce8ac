/**
 * Relays: lighthouses relay by default, `add-node --no-relay` takes one out, `--relay` (with an endpoint) makes another
 * node one, and every other node lists the network's relays with `use_relays`. The same through `apply` and, in a
 * federated network, through the descriptor (a relay is a role node, checked like a lighthouse). What Nebula does with
 * that configuration behind NAT is the end-to-end suite's business (test/e2e/nat.test.ts).
 */

import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import yaml from 'yaml'

import {addNode} from '../src/ca/add-node.js'
import {initCa, unlockCaKey} from '../src/ca/ca.js'
import {nodeProfile} from '../src/ca/node-profile.js'
import {approve, checkDescriptor, checkSuccessor, descriptorRelays, nextVersion} from '../src/federation/descriptor.js'
import {federationStatus, foundFederation} from '../src/federation/federation.js'
import {Home} from '../src/home/home.js'
import type {NetworkDescriptor, SignedDescriptor} from '../src/home/types.js'
import {validateState} from '../src/home/validate.js'
import {caPrivateKeyFromPem} from '../src/nebula/index.js'
import {renderNebulaConfig} from '../src/render/nebula-config.js'
import {expectOneLineError, removeDir, snapshot, tbmesh, tbmeshJson, tempDir} from './helpers.js'

let root: string
beforeAll(async () => {
  root = await tempDir('tbmesh-relay-')
})
afterAll(async () => removeDir(root))

type Doc = Record<string, any>
/** The parsed config.yml tbmesh renders for `node`. */
const config = async (home: Home, node: string): Promise<Doc> => yaml.parse(renderNebulaConfig(nodeProfile(home.state, node))) as Doc

describe('a single-CA network', () => {
  let home: Home

  beforeAll(async () => {
    const dir = join(root, 'single')
    await initCa(dir, {network: 'relays', cidr: '10.60.0.0/16', passphrase: null})
    home = await Home.open(dir)
    const key = await unlockCaKey(home, null)
    await addNode(home, key, {org: 'ACME', name: 'lh-1', lighthouse: true, endpoint: '192.0.2.1:4242'})
    await addNode(home, key, {org: 'ACME', name: 'lh-2', lighthouse: true, relay: false, endpoint: '192.0.2.2:4242'})
    await addNode(home, key, {org: 'Initech', name: 'relay-1', relay: true, endpoint: '192.0.2.3:4242'})
    await addNode(home, key, {org: 'Umbrella', name: 'plain-1'})
    home = await Home.open(dir)
  })

  it('relays through every lighthouse but the one taken out, and through the node made a relay', async () => {
    const plain = await config(home, 'plain-1')
    expect(plain.relay).toEqual({am_relay: false, relays: ['10.60.0.1', '10.60.1.1'], use_relays: true})
    expect(plain.lighthouse.hosts).toEqual(['10.60.0.1', '10.60.0.2'])
    // Every relay is reachable at its endpoint without asking a lighthouse.
    expect(plain.static_host_map).toEqual({'10.60.0.1': ['192.0.2.1:4242'], '10.60.0.2': ['192.0.2.2:4242'], '10.60.1.1': ['192.0.2.3:4242']})
    expect(plain.listen.port).toBe(0)
  })

  it('configures relays as relays (listing none of their own) and the lighthouse taken out as a client of the others', async () => {
    const lighthouse = await config(home, 'lh-1')
    expect(lighthouse.relay).toEqual({am_relay: true, relays: [], use_relays: true})
    const notRelaying = await config(home, 'lh-2')
    expect(notRelaying.relay).toEqual({am_relay: false, relays: ['10.60.0.1', '10.60.1.1'], use_relays: true})
    expect(notRelaying.lighthouse.am_lighthouse).toBe(true)
    const relay = await config(home, 'relay-1')
    expect(relay.relay).toEqual({am_relay: true, relays: [], use_relays: true})
    // Its endpoint names the port it listens on.
    expect(relay.listen.port).toBe(4242)
    expect(relay.lighthouse).toMatchObject({am_lighthouse: false, hosts: ['10.60.0.1', '10.60.0.2']})
  })

  it('records the choice only where it differs from the default, and list shows the role', async () => {
    const byName = Object.fromEntries(home.state.nodes.map((n) => [n.name, n]))
    expect(byName['lh-1'].relay).toBeUndefined()
    expect(byName['lh-2'].relay).toBe(false)
    expect(byName['relay-1'].relay).toBe(true)
    expect(byName['plain-1'].relay).toBeUndefined()
    const listed = await tbmeshJson<{nodes: Array<{name: string; roles: string[]}>}>(['list', '--home', join(root, 'single')])
    expect(Object.fromEntries(listed.nodes.map((n) => [n.name, n.roles]))).toEqual({
      'lh-1': ['lighthouse', 'relay'],
      'lh-2': ['lighthouse'],
      'relay-1': ['relay'],
      'plain-1': [],
    })
  })

  it('refuses a state with a relay that has no endpoint, or a relay flag that is not a boolean', () => {
    const broken = structuredClone(home.state)
    delete broken.nodes.find((n) => n.name === 'relay-1')!.endpoint
    expect(() => validateState(broken, 'state.json')).toThrow(/state\.json: node relay-1 is a relay without an endpoint/)
    const odd = structuredClone(home.state) as any
    odd.nodes[0].relay = 'yes'
    expect(() => validateState(odd, 'state.json')).toThrow(/"relay" of lh-1 is not true or false/)
  })
})

describe('add-node through the CLI', () => {
  const dir = () => join(root, 'cli')
  beforeAll(async () => {
    await tbmeshJson(['init-ca', '--home', dir(), '--network', 'cli', '--cidr', '10.61.0.0/16', '--no-passphrase'])
  })

  it('--relay needs --endpoint: one line, nothing written', async () => {
    const before = await snapshot(dir())
    expectOneLineError(await tbmesh(['add-node', '--home', dir(), '--org', 'ACME', '--relay']), /--relay needs --endpoint/, 2)
    expect(await snapshot(dir())).toEqual(before)
  })

  it('reports the relay role in the JSON result: --relay on a node, --no-relay on a lighthouse, the default on a lighthouse', async () => {
    const relay = await tbmeshJson(['add-node', '--home', dir(), '--org', 'ACME', '--relay', '--endpoint', '192.0.2.20:4242'])
    expect(relay).toMatchObject({lighthouse: false, relay: true, endpoint: '192.0.2.20:4242', groups: ['org:acme', 'access:managed']})
    const quiet = await tbmeshJson(['add-node', '--home', dir(), '--org', 'ACME', '--lighthouse', '--no-relay', '--endpoint', '192.0.2.21:4242'])
    expect(quiet).toMatchObject({lighthouse: true, relay: false})
    const lighthouse = await tbmeshJson(['add-node', '--home', dir(), '--org', 'ACME', '--lighthouse', '--endpoint', '192.0.2.22:4242'])
    expect(lighthouse).toMatchObject({lighthouse: true, relay: true})
  })
})

describe('apply', () => {
  const file = (text: string) => async (): Promise<string> => {
    const path = join(root, `network-${text.length}.yaml`)
    await writeFile(path, text)
    return path
  }
  const NETWORK = `network:
  name: applied
  cidr: 10.62.0.0/16
organizations:
  - name: ACME
    nodes:
      - name: acme-1
        roles: [origin, lighthouse]
        endpoint: 192.0.2.10:4242
      - name: acme-2
        roles: [lighthouse]
        relay: false
        endpoint: 192.0.2.11:4242
      - name: acme-relay
        relay: true
        endpoint: 192.0.2.12:4242
`
  const home = () => join(root, 'applied')
  beforeAll(async () => {
    await tbmeshJson(['init-ca', '--home', home(), '--network', 'applied', '--cidr', '10.62.0.0/16', '--no-passphrase'])
  })

  it('creates relays as the file says, and a second run changes nothing', async () => {
    const path = await file(NETWORK)()
    const applied = await tbmeshJson<{plan: {add: Array<{name: string; roles: string[]}>}}>(['apply', '--home', home(), '-f', path])
    expect(applied.plan.add).toEqual([
      {name: 'acme-1', organization: 'ACME', roles: ['origin', 'lighthouse', 'relay']},
      {name: 'acme-2', organization: 'ACME', roles: ['lighthouse']},
      {name: 'acme-relay', organization: 'ACME', roles: ['relay']},
    ])
    const again = await tbmeshJson<{applied: boolean; plan: {unchanged: string[]}}>(['apply', '--home', home(), '-f', path])
    expect(again).toMatchObject({applied: false, plan: {unchanged: ['acme-1', 'acme-2', 'acme-relay']}})
  })

  it('refuses a file that changes whether a node relays (nodes are never changed in place)', async () => {
    const path = await file(NETWORK.replace('        relay: false\n', ''))()
    expectOneLineError(await tbmesh(['apply', '--home', home(), '-f', path]), /node acme-2 differs from the file: relay: false → true/, 2)
  })
})

describe('a federated network', () => {
  let dir: string
  let key: Buffer
  let caFingerprint: string

  beforeAll(async () => {
    dir = join(root, 'fed')
    const founded = await foundFederation(dir, {org: 'ACME', network: 'fed', cidr: '10.63.0.0/16', passphrase: null})
    caFingerprint = founded.caFingerprint
    const home = await Home.open(dir)
    key = caPrivateKeyFromPem(await home.readCaKey(home.activeCa()))
    await addNode(home, key, {org: 'ACME', name: 'lighthouse', lighthouse: true, relay: false, endpoint: '192.0.2.30:4242'})
    await addNode(await Home.open(dir), key, {org: 'ACME', name: 'relay', relay: true, endpoint: '192.0.2.31:4242'})
    await addNode(await Home.open(dir), key, {org: 'ACME', name: 'plain'})
  })

  const current = async (): Promise<SignedDescriptor> => (await Home.open(dir)).state.federation!.current
  /** `d` signed by the founder alone (enough while it is the only member). */
  const signed = (d: NetworkDescriptor): SignedDescriptor => ({descriptor: d, approvals: [approve(d, 'acme', caFingerprint, key)]})

  it('lists a relay in the descriptor as a role node, in a version of its own, and renders it for every node', async () => {
    const {descriptor: d} = await current()
    expect(d.version).toBe(3)
    expect(d.change).toEqual({kind: 'add-role-node', organization: 'acme', overlayIp: '10.63.0.2', lighthouse: false, origin: false, relay: true})
    expect(d.lighthouses).toEqual([{organization: 'acme', overlayIp: '10.63.0.1', endpoint: '192.0.2.30:4242'}])
    expect(d.relays).toEqual([{organization: 'acme', overlayIp: '10.63.0.2', endpoint: '192.0.2.31:4242'}])
    expect((await federationStatus(await Home.open(dir))).relays).toEqual(d.relays)
    const plain = await config(await Home.open(dir), 'plain')
    expect(plain.relay).toEqual({am_relay: false, relays: ['10.63.0.2'], use_relays: true})
    expect(checkDescriptor(await current(), 'v3')).toBeTruthy()
  })

  it('refuses a relay outside its organization\'s block, listed twice, or without an endpoint', async () => {
    const base = (await current()).descriptor
    const cases: Array<[string, (d: NetworkDescriptor) => void, RegExp]> = [
      ['outside the block', (d) => (d.relays![0].overlayIp = '10.63.9.9'), /the relay 10\.63\.9\.9 lies outside the block of acme/],
      ['twice', (d) => d.relays!.push({...d.relays![0]}), /the relay 10\.63\.0\.2 is listed twice/],
      ['no endpoint', (d) => (d.relays![0].endpoint = undefined as never), /the relay 10\.63\.0\.2 has no endpoint/],
      ['of no member', (d) => (d.relays![0].organization = 'globex'), /the relay belongs to "globex", which is not a member/],
    ]
    for (const [what, mutate, problem] of cases) {
      const d = structuredClone(base)
      mutate(d)
      expect(() => checkDescriptor(signed(d), what), what).toThrow(problem)
    }
  })

  it('refuses a successor that removes a relay, adds one its change does not name, or drops the list', async () => {
    const v3 = (await current()).descriptor
    const change = {kind: 'add-role-node', organization: 'acme', overlayIp: '10.63.0.9', lighthouse: false, origin: false, relay: true} as const
    const good = nextVersion(v3, change, (next) => next.relays!.push({organization: 'acme', overlayIp: '10.63.0.9', endpoint: '192.0.2.39:4242'}))
    expect(() => checkSuccessor(v3, good, 'v4')).not.toThrow()
    const removes = nextVersion(v3, change, (next) => (next.relays = [{organization: 'acme', overlayIp: '10.63.0.9', endpoint: '192.0.2.39:4242'}]))
    expect(() => checkSuccessor(v3, removes, 'v4')).toThrow(/changes or removes a relay/)
    const unnamed = nextVersion(v3, {...change, relay: false, lighthouse: true}, (next) => {
      next.lighthouses.push({organization: 'acme', overlayIp: '10.63.0.9', endpoint: '192.0.2.39:4242'})
      next.relays!.push({organization: 'acme', overlayIp: '10.63.0.9', endpoint: '192.0.2.39:4242'})
    })
    expect(() => checkSuccessor(v3, unnamed, 'v4')).toThrow(/more changes than its "change"/)
    const dropped = nextVersion(v3, {kind: 'add-member', organization: 'globex'}, (next) => delete next.relays)
    expect(() => checkSuccessor(v3, dropped, 'v4')).toThrow(/changes or removes a relay/)
  })

  it('reads versions made before relays were listed: their lighthouses relay, and the next role node lists them', async () => {
    // Version 1 and 2 as tbmesh wrote them before relays: no `relays`, and a change without `relay`.
    const v1: NetworkDescriptor = {...structuredClone((await current()).descriptor), version: 1, previous: null, change: {kind: 'found', organization: 'acme'}, lighthouses: [], origin: null}
    delete v1.relays
    const v2 = nextVersion(v1, {kind: 'add-role-node', organization: 'acme', overlayIp: '10.63.0.1', lighthouse: true, origin: false}, (next) => {
      next.lighthouses.push({organization: 'acme', overlayIp: '10.63.0.1', endpoint: '192.0.2.30:4242'})
    })
    expect(() => checkDescriptor(signed(v2), 'v2')).not.toThrow()
    expect(() => checkSuccessor(v1, v2, 'v2')).not.toThrow()
    expect(descriptorRelays(v2)).toEqual(v2.lighthouses)
    // The next role node lists the relays explicitly, the old lighthouse first.
    const v3 = nextVersion(v2, {kind: 'add-role-node', organization: 'acme', overlayIp: '10.63.0.2', lighthouse: false, origin: false, relay: true}, (next) => {
      next.relays = [...descriptorRelays(next), {organization: 'acme', overlayIp: '10.63.0.2', endpoint: '192.0.2.31:4242'}]
    })
    expect(() => checkSuccessor(v2, v3, 'v3')).not.toThrow()
    expect(() => checkDescriptor(signed(v3), 'v3')).not.toThrow()
    // A lighthouse added as a non-relay to a version that does not list relays would relay after all: refused.
    const sneaky = nextVersion(v1, {kind: 'add-role-node', organization: 'acme', overlayIp: '10.63.0.1', lighthouse: true, origin: false, relay: false}, (next) => {
      next.lighthouses.push({organization: 'acme', overlayIp: '10.63.0.1', endpoint: '192.0.2.30:4242'})
    })
    expect(() => checkSuccessor(v1, sneaky, 'v2')).toThrow(/more changes than its "change"/)
  })
})
