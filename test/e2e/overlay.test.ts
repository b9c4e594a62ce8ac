/**
 * The main job on real input: tbmesh creates a network, organizations' bundles are installed on real Nebula nodes in
 * network namespaces, the overlay forms, and TCP reaches the MultiChain P2P port across it. One node joins through
 * `join-request` → `add-node --request` → an encrypted bundle → `install --ca-fingerprint`, keeping its own key.
 *
 * On every Nebula build tested (Debian 12's 1.6.1, Debian 13's, Debian unstable's: test/e2e/debian.ts), and on a mixed
 * mesh as organizations that upgrade on their own schedules run it: the lighthouse on the oldest build, the other
 * nodes on the newer ones. The network and its bundles are made once; each variant installs them (`nebula -test` by
 * the build that will run the node) and runs them in a lab of its own.
 * Fails (never skips) when it cannot run: it needs root, iproute2, /dev/net/tun and nebula.
 */

import {readFile, writeFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {removeDir, tbmeshJson, tempDir} from '../helpers.js'
import {type NebulaBuild, nebulaBuilds} from './debian.js'
import {createLab, type Lab, requireLab} from './netns.js'

const P2P = 7447
const RPC = 8000
const LABELS = ['origin', 'umbrella', 'initech', 'globex'] as const
type Label = (typeof LABELS)[number]

const BUILDS = await nebulaBuilds()
const [OLDEST, DEBIAN13, NEWEST] = BUILDS
/** Which build runs which node, per variant. */
const VARIANTS: Array<{name: string; builds: Record<Label, NebulaBuild>}> = [
  ...BUILDS.map((b) => ({name: `${b.label} ${b.version}`, builds: {origin: b, umbrella: b, initech: b, globex: b}})),
  {name: `mixed: lighthouse ${OLDEST.version}, nodes ${DEBIAN13.version} and ${NEWEST.version}`, builds: {origin: OLDEST, umbrella: DEBIAN13, initech: NEWEST, globex: NEWEST}},
]

/** The network, made once for every variant: bundles to install, the CA pin, the overlay IPs. */
interface Network {
  dir: string
  pin: string
  bundles: Record<Label, string>
  ip: Record<Label, string>
  /** install's arguments for globex-1's encrypted bundle, whose key stays in the joiner's home. */
  globexArgs: string[]
}
let network: Network | undefined

beforeAll(async () => {
  requireLab()
  network = await makeNetwork()
}, 180_000)

afterAll(async () => {
  if (network) await removeDir(network.dir)
})

/** Environment whose PATH finds `build`'s nebula first (install runs `nebula -test` with it). */
const withBuild = (build: NebulaBuild): Record<string, string> => ({PATH: `${dirname(build.nebula)}:${process.env.PATH}`})

describe.each(VARIANTS)('a tbmesh network on real Nebula nodes: $name', ({builds}) => {
  let lab: Lab | undefined
  let dir: string
  const ip = {} as Record<Label, string>

  beforeAll(async () => {
    const net = network!
    Object.assign(ip, net.ip)
    dir = await tempDir('tbmesh-e2e-node-')
    const pin = ['--ca-fingerprint', net.pin]
    const [created] = await Promise.all([
      createLab([...LABELS]),
      ...LABELS.map(async (label) => {
        const extra = label === 'globex' ? net.globexArgs : []
        const installed = await tbmeshJson<{nebulaTest: {ok: boolean}; nebula: {version: string}; keyFromJoiner: boolean}>(
          ['install', net.bundles[label], '--dir', join(dir, label), ...pin, ...extra], {env: withBuild(builds[label])})
        expect(installed).toMatchObject({nebulaTest: {ok: true}, nebula: {version: builds[label].version}, keyFromJoiner: label === 'globex'})
      }),
    ])
    lab = created as Lab
    // The lighthouse first, then the others; nebula runs from / so relative paths could not work.
    await lab.startNebula('origin', join(dir, 'origin', 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1', binary: builds.origin.nebula})
    await Promise.all(LABELS.slice(1).map(async (label) =>
      lab!.startNebula(label, join(dir, label, 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1', binary: builds[label].nebula})))
  }, 180_000)

  afterAll(async () => {
    await lab?.cleanup()
    if (dir) await removeDir(dir)
  })

  it('gives every node its overlay IP on the tun device', async () => {
    for (const label of LABELS) {
      const addr = await lab!.run(label, ['ip', '-4', 'addr', 'show', 'nebula1'])
      expect(addr.stdout).toContain(`${ip[label]}/16`)
    }
  })

  it('carries TCP from every other organization to the origin\'s MultiChain P2P port', async () => {
    const listener = await lab!.listen('origin', ip.origin, P2P)
    try {
      for (const label of ['umbrella', 'initech', 'globex']) await lab!.waitForTcp(label, ip.origin, P2P)
      expect(listener.accepted().length).toBeGreaterThanOrEqual(3)
    } finally {
      await listener.close()
    }
  })

  it('lets two non-origin nodes find each other through the lighthouse', async () => {
    const listener = await lab!.listen('initech', ip.initech, P2P)
    try {
      await lab!.waitForTcp('umbrella', ip.initech, P2P)
      await lab!.waitForTcp('globex', ip.initech, P2P)
    } finally {
      await listener.close()
    }
  })

  it('drops MultiChain RPC on the overlay', async () => {
    const listener = await lab!.listen('origin', ip.origin, RPC)
    try {
      // The tunnel is up (P2P works), so a failure here is the firewall, not a missing path.
      const p2p = await lab!.listen('origin', ip.origin, P2P)
      await lab!.waitForTcp('umbrella', ip.origin, P2P)
      await p2p.close()
      const rpc = await lab!.connect('umbrella', ip.origin, RPC, 3000)
      expect(rpc.ok).toBe(false)
      expect(rpc.reason).toBe('timeout')
      expect(listener.accepted()).toHaveLength(0)
    } finally {
      await listener.close()
    }
  })
})

/**
 * The network every variant runs: ACME's origin and lighthouse (at 192.0.2.10, the first host of every lab), Umbrella
 * and Initech with keys made by the CA, and Globex, which joins with a request and keeps its key.
 */
async function makeNetwork(): Promise<Network> {
  const dir = await tempDir('tbmesh-e2e-')
  const home = ['--home', join(dir, 'home')]
  await writeFile(join(dir, 'ca.pass'), 'e2e passphrase\n', {mode: 0o600})
  await writeFile(join(dir, 'bundle.pass'), 'bundle passphrase\n', {mode: 0o600})
  const pass = ['--passphrase-file', join(dir, 'ca.pass')]
  const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home, ...pass, '--network', 'e2e', '--cidr', '10.42.0.0/16'])
  const added = {
    origin: await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242']),
    umbrella: await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'Umbrella']),
    initech: await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'Initech']),
  }
  const bundles = {} as Record<Label, string>
  const ip = {} as Record<Label, string>
  for (const label of ['origin', 'umbrella', 'initech'] as const) {
    ip[label] = added[label].overlayIp
    bundles[label] = join(dir, `${added[label].name}.tar.gz`)
    await tbmeshJson(['export-bundle', ...home, ...pass, added[label].name, '--out', bundles[label], '--no-encrypt'])
  }

  // Globex joins the way an organization keeping its own key does: the request travels, the key does not.
  const joinerHome = ['--home', join(dir, 'globex-home')]
  const request = join(dir, 'globex.request.json')
  await tbmeshJson(['join-request', ...joinerHome, '--org', 'Globex', '--name', 'globex-1', '--out', request])
  const globex = await tbmeshJson<{overlayIp: string; keyInHome: boolean}>(['add-node', ...home, ...pass, '--request', request, '--yes'])
  expect(globex.keyInHome).toBe(false)
  expect(await readFile(request, 'utf8')).not.toContain('PRIVATE KEY')
  ip.globex = globex.overlayIp
  bundles.globex = join(dir, 'globex-1.tbmesh.age')
  const exported = await tbmeshJson<{encrypted: boolean; containsPrivateKey: boolean}>(
    ['export-bundle', ...home, ...pass, 'globex-1', '--out', bundles.globex, '--bundle-passphrase-file', join(dir, 'bundle.pass')],
  )
  expect(exported).toMatchObject({encrypted: true, containsPrivateKey: false})
  return {dir, pin: init.caFingerprint, bundles, ip, globexArgs: [...joinerHome, '--bundle-passphrase-file', join(dir, 'bundle.pass')]}
}
