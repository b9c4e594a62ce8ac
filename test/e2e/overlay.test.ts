/**
 * The main job on real input: tbmesh creates a network, three organizations' bundles are installed on three real
 * Nebula 1.6.1 nodes in network namespaces, the overlay forms, and TCP reaches the MultiChain P2P port across it.
 * Fails (never skips) when it cannot run: it needs root, iproute2, /dev/net/tun and nebula.
 */
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {removeDir, tbmeshJson, tempDir} from '../helpers.js'
import {createLab, requireLab, type Lab} from './netns.js'

const P2P = 7447
const RPC = 8000

describe('a tbmesh network on real Nebula nodes', () => {
  let lab: Lab | undefined
  let dir: string
  const ip: Record<string, string> = {}

  beforeAll(async () => {
    requireLab()
    dir = await tempDir('tbmesh-e2e-')
    lab = await createLab(['origin', 'umbrella', 'initech'])
    const home = ['--home', join(dir, 'home')]
    await writeFile(join(dir, 'ca.pass'), 'e2e passphrase\n', {mode: 0o600})
    const pass = ['--passphrase-file', join(dir, 'ca.pass')]

    await tbmeshJson(['init-ca', ...home, ...pass, '--network', 'e2e', '--cidr', '10.42.0.0/16'])
    const origin = lab.host('origin')
    const nodes = [
      await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', `${origin.underlayIp}:4242`]),
      await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'Umbrella']),
      await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...pass, '--org', 'Initech']),
    ]
    for (const [label, node] of [['origin', nodes[0]], ['umbrella', nodes[1]], ['initech', nodes[2]]] as const) {
      ip[label] = node.overlayIp
      const bundle = join(dir, `${node.name}.tar.gz`)
      await tbmeshJson(['export-bundle', ...home, node.name, '--out', bundle])
      const installed = await tbmeshJson<{nebulaTest: {ok: boolean}}>(['install', bundle, '--dir', join(dir, label)])
      expect(installed.nebulaTest.ok).toBe(true)
    }
    // The lighthouse first, then the others; nebula runs from / so relative paths could not work.
    for (const label of ['origin', 'umbrella', 'initech']) {
      await lab.startNebula(label, join(dir, label, 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1'})
    }
  }, 120_000)

  afterAll(async () => {
    await lab?.cleanup()
    if (dir) await removeDir(dir)
  })

  it('gives every node its overlay IP on the tun device', async () => {
    for (const label of ['origin', 'umbrella', 'initech']) {
      const addr = await lab!.run(label, ['ip', '-4', 'addr', 'show', 'nebula1'])
      expect(addr.stdout).toContain(`${ip[label]}/16`)
    }
  })

  it('carries TCP from every other organization to the origin\'s MultiChain P2P port', async () => {
    const listener = await lab!.listen('origin', ip.origin, P2P)
    try {
      await lab!.waitForTcp('umbrella', ip.origin, P2P)
      await lab!.waitForTcp('initech', ip.origin, P2P)
      expect(listener.accepted().length).toBeGreaterThanOrEqual(2)
    } finally {
      await listener.close()
    }
  })

  it('lets two non-origin nodes find each other through the lighthouse', async () => {
    const listener = await lab!.listen('initech', ip.initech, P2P)
    try {
      await lab!.waitForTcp('umbrella', ip.initech, P2P)
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
