/**
 * The main job on real input: tbmesh creates a network, organizations' bundles are installed on real Nebula 1.6.1 nodes
 * in network namespaces, the overlay forms, and TCP reaches the MultiChain P2P port across it. One node joins through
 * `join-request` → `add-node --request` → an encrypted bundle → `install --ca-fingerprint`, keeping its own key.
 * Fails (never skips) when it cannot run: it needs root, iproute2, /dev/net/tun and nebula.
 */

import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {removeDir, tbmeshJson, tempDir} from '../helpers.js'
import {createLab, type Lab, requireLab} from './netns.js'

const P2P = 7447
const RPC = 8000
const LABELS = ['origin', 'umbrella', 'initech', 'globex'] as const

describe('a tbmesh network on real Nebula nodes', () => {
  let lab: Lab | undefined
  let dir: string
  const ip: Record<string, string> = {}

  beforeAll(async () => {
    requireLab()
    dir = await tempDir('tbmesh-e2e-')
    lab = await createLab([...LABELS])
    const home = ['--home', join(dir, 'home')]
    await writeFile(join(dir, 'ca.pass'), 'e2e passphrase\n', {mode: 0o600})
    await writeFile(join(dir, 'bundle.pass'), 'bundle passphrase\n', {mode: 0o600})
    const pass = ['--passphrase-file', join(dir, 'ca.pass')]

    const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home, ...pass, '--network', 'e2e', '--cidr', '10.42.0.0/16'])
    const pin = ['--ca-fingerprint', init.caFingerprint]
    const origin = lab.host('origin')
    const added = {
      origin: await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', `${origin.underlayIp}:4242`]),
      umbrella: await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'Umbrella']),
      initech: await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'Initech']),
    }
    for (const label of ['origin', 'umbrella', 'initech'] as const) {
      const node = added[label]
      ip[label] = node.overlayIp
      const bundle = join(dir, `${node.name}.tar.gz`)
      await tbmeshJson(['export-bundle', ...home, ...pass, node.name, '--out', bundle, '--no-encrypt'])
      const installed = await tbmeshJson<{nebulaTest: {ok: boolean}}>(['install', bundle, '--dir', join(dir, label), ...pin])
      expect(installed.nebulaTest.ok).toBe(true)
    }

    // Globex joins the way an organization keeping its own key does: the request travels, the key does not.
    const joinerHome = ['--home', join(dir, 'globex-home')]
    const request = join(dir, 'globex.request.json')
    await tbmeshJson(['join-request', ...joinerHome, '--org', 'Globex', '--name', 'globex-1', '--out', request])
    const globex = await tbmeshJson<{overlayIp: string; keyInHome: boolean}>(['add-node', ...home, ...pass, '--request', request, '--yes'])
    expect(globex.keyInHome).toBe(false)
    ip.globex = globex.overlayIp
    const bundle = join(dir, 'globex-1.tbmesh.age')
    const exported = await tbmeshJson<{encrypted: boolean; containsPrivateKey: boolean}>(
      ['export-bundle', ...home, ...pass, 'globex-1', '--out', bundle, '--bundle-passphrase-file', join(dir, 'bundle.pass')],
    )
    expect(exported).toMatchObject({encrypted: true, containsPrivateKey: false})
    const installed = await tbmeshJson<{nebulaTest: {ok: boolean}; keyFromJoiner: boolean}>(
      ['install', bundle, '--dir', join(dir, 'globex'), ...pin, ...joinerHome, '--bundle-passphrase-file', join(dir, 'bundle.pass')],
    )
    expect(installed).toMatchObject({keyFromJoiner: true, nebulaTest: {ok: true}})
    expect(await readFile(request, 'utf8')).not.toContain('PRIVATE KEY')

    // The lighthouse first, then the others; nebula runs from / so relative paths could not work.
    for (const label of LABELS) await lab.startNebula(label, join(dir, label, 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1'})
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
