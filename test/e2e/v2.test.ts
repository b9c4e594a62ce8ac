/**
 * v2 certificates and P256 on the newest Nebula build (Debian unstable's, `nebulaBuild('newest')`) in network
 * namespaces, built with the CLI only:
 *
 * - a v2 network and a v2 + P256 network carry TCP to the MultiChain P2P port and drop MultiChain RPC;
 * - a v1 network of three nodes of three organizations migrates to v2 in the three rounds of `rotate-ca`
 *   (`--cert-version 2`, `--switch`, `--finish`), each installed one node at a time in a different order with
 *   `install --reload`: after every single install, every node reaches every other one's P2P port; at the end every
 *   node holds only a v2 certificate and trusts no v1 CA.
 *
 * Connectivity is checked with short TCP connects between all pairs at once. Fails (never skips) when it cannot run.
 */

import {readFile, writeFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {certificatesFromPem, fingerprint} from '../../src/nebula/index.js'
import {removeDir, tbmeshJson, tempDir} from '../helpers.js'
import {type NebulaBuild, nebulaBuild} from './debian.js'
import {createLab, type Lab, type NebulaProcess, requireLab} from './netns.js'

const P2P = 7447
const RPC = 8000
const LABELS = ['v2a', 'v2b', 'pa', 'pb', 'acme', 'umbrella', 'initech'] as const
type Label = (typeof LABELS)[number]

interface Added {name: string; overlayIp: string}
interface InstallJson {manifest: {sequence: number}; receipt: string; nebulaTest: {ok: boolean}; reloaded?: {pid?: number}}

describe('v2 certificates and P256 on the newest Nebula', () => {
  let lab: Lab | undefined
  let dir = ''
  let build: NebulaBuild
  /** The environment of every tbmesh run: the newest nebula first on PATH (install runs `nebula -version` and `-test`). */
  let env: Record<string, string>
  const node = {} as Record<Label, Added>
  const nebula: Partial<Record<Label, NebulaProcess>> = {}
  const homeOf = (network: string) => ['--home', join(dir, `home-${network}`)]
  const installDir = (label: Label) => join(dir, label)
  const pidFile = (label: Label) => join(dir, `${label}.pid`)
  const tb = <T>(args: string[]) => tbmeshJson<T>(args, {env})

  async function start(label: Label): Promise<void> {
    const proc = await lab!.startNebula(label, join(installDir(label), 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1', binary: build.nebula})
    await writeFile(pidFile(label), `${proc.pid}\n`)
    nebula[label] = proc
  }

  /**
   * A network `network` made with `initArgs`: the first label's node is the origin and lighthouse of organization
   * ACME, the others one node each of the other `orgs`; every node installed and started.
   */
  async function network(network: string, cidr: string, labels: Label[], orgs: string[], initArgs: string[]): Promise<string> {
    const init = await tb<{caFingerprint: string}>(['init-ca', ...homeOf(network), '--network', network, '--cidr', cidr, '--no-passphrase', ...initArgs])
    for (const [i, label] of labels.entries()) {
      const roles = i === 0 ? ['--origin', '--lighthouse', '--endpoint', `${lab!.host(label).underlayIp}:4242`] : []
      node[label] = await tb<Added>(['add-node', ...homeOf(network), '--org', orgs[i]!, ...roles])
    }
    await Promise.all(labels.map(async (label) => {
      const bundle = join(dir, `${label}.tar.gz`)
      await tb(['export-bundle', ...homeOf(network), node[label].name, '--out', bundle, '--no-encrypt'])
      const installed = await tb<InstallJson>(['install', bundle, '--dir', installDir(label), '--ca-fingerprint', init.caFingerprint])
      expect(installed.nebulaTest.ok).toBe(true)
    }))
    await start(labels[0]!)
    await Promise.all(labels.slice(1).map((label) => start(label)))
    for (const label of labels) await lab!.listen(label, node[label].overlayIp, P2P)
    return init.caFingerprint
  }

  /** TCP from every node of `labels` to every other one's P2P port, all pairs at once (short connects, retried). */
  async function allPairs(labels: Label[], timeoutMs = 20_000): Promise<void> {
    await lab!.waitForMesh(labels.map((label) => ({host: label, ip: node[label].overlayIp})), P2P, {timeoutMs, attemptTimeoutMs: 1500})
  }

  beforeAll(async () => {
    requireLab()
    build = await nebulaBuild('newest')
    dir = await tempDir('tbmesh-e2e-v2-')
    env = {PATH: `${dirname(build.nebula)}:${process.env.PATH ?? ''}`}
    lab = await createLab([...LABELS])
  }, 180_000)

  afterAll(async () => {
    try {
      await lab?.cleanup()
    } finally {
      if (dir) await removeDir(dir)
    }
  })

  for (const [label, labels, cidr, args] of [
    ['a v2 network', ['v2a', 'v2b'], '10.81.0.0/16', ['--cert-version', '2']],
    ['a v2 + P256 network', ['pa', 'pb'], '10.82.0.0/16', ['--cert-version', '2', '--curve', 'P256']],
  ] as const) {
    it(`${label} carries TCP ${P2P} and drops MultiChain RPC (${RPC})`, async () => {
      const name = labels[0] === 'v2a' ? 'v2' : 'p256'
      await network(name, cidr, [...labels], ['ACME', 'Umbrella'], [...args])
      const hosts = certificatesFromPem(await readFile(join(installDir(labels[1]), 'nebula', 'host.crt')))
      expect(hosts.map((c) => [c.version, c.details.curve])).toEqual([[2, (args as readonly string[]).includes('P256') ? 'P256' : 'CURVE25519']])
      for (const l of labels) await lab!.listen(l, node[l].overlayIp, RPC)
      await allPairs([...labels])
      const [a, b] = labels
      const rpc = await Promise.all([lab!.connect(a, node[b].overlayIp, RPC, 2000), lab!.connect(b, node[a].overlayIp, RPC, 2000)])
      // dropped by the firewall: a timeout, not a refusal
      expect(rpc.map((r) => r.reason)).toEqual(['timeout', 'timeout'])
    }, 120_000)
  }

  it('a v1 network of three organizations migrates to v2 with every pair connected after every install of every round', async () => {
    const members: Label[] = ['acme', 'umbrella', 'initech']
    const oldCa = await network('mig', '10.83.0.0/16', members, ['ACME', 'Umbrella', 'Initech'], [])
    await allPairs(members)
    const rounds: Array<{args: string[]; order: Label[]}> = [
      {args: ['--cert-version', '2'], order: ['umbrella', 'acme', 'initech']},
      {args: ['--switch'], order: ['initech', 'umbrella', 'acme']},
      {args: ['--finish'], order: ['acme', 'initech', 'umbrella']},
    ]
    let newCa = ''
    for (const [i, round] of rounds.entries()) {
      const rotated = await tb<{caFingerprint: string}>(['rotate-ca', ...homeOf('mig'), ...round.args, ...(i === 0 ? ['--no-passphrase'] : [])])
      newCa = rotated.caFingerprint
      const updates = await tb<{bundles: Array<{path: string; manifest: {node: string}}>}>(['export-update', ...homeOf('mig'), '--all', '--out', join(dir, `round${i + 1}`)])
      const bundle = new Map(updates.bundles.map((b) => [b.manifest.node, b.path]))
      for (const label of round.order) {
        const proc = nebula[label]!
        const since = proc.outputLength()
        const installed = await tb<InstallJson>(['install', bundle.get(node[label].name)!, '--dir', installDir(label), '--reload', '--pid-file', pidFile(label)])
        expect(installed).toMatchObject({nebulaTest: {ok: true}, reloaded: {pid: proc.pid}})
        await proc.waitForLog(/Client cert(ificate\(s\))? refreshed from disk/, {since})
        expect(proc.output().slice(since - (proc.outputLength() - proc.output().length))).not.toMatch(/level=error|"level":"error"/)
        await allPairs(members)
        await tb(['confirm-install', ...homeOf('mig'), installed.receipt])
      }
    }
    for (const label of members) {
      const hosts = certificatesFromPem(await readFile(join(installDir(label), 'nebula', 'host.crt')))
      expect(hosts.map((c) => [c.version, c.details.issuer])).toEqual([[2, newCa]])
      const cas = certificatesFromPem(await readFile(join(installDir(label), 'nebula', 'ca.crt')))
      expect(cas.map((c) => [c.version, fingerprint(c)])).toEqual([[2, newCa]])
      expect(newCa).not.toBe(oldCa)
    }
  }, 300_000)
})
