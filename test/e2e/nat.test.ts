/**
 * Organizations behind NAT, on real Nebula: the lighthouse (also the network's relay) on the public underlay, and
 * Umbrella's and Initech's nodes each behind its own NAT gateway that masquerades onto the public underlay and drops
 * unsolicited inbound UDP (test/e2e/netns.ts models the gateways). Mixed versions as users run them: the lighthouse on
 * the oldest build, the nodes on Debian 13's and the newest.
 *
 * - Port-preserving gateways (endpoint-independent mapping): the nodes hole-punch and talk directly. The proof is the
 *   relay's own interface counters: a 50 MB transfer between the nodes leaves the lighthouse's underlay link quiet
 *   (version-independent: no log or debug interface of Nebula is read).
 * - Symmetric gateways (a new public port per destination): punching cannot work; the nodes reach each other through
 *   the lighthouse, which forwards the 50 MB (its counters grow by at least that much each way).
 *
 * In both, TCP on the MultiChain P2P port works both ways and the 50 MB transfer completes intact (the overlay MTU
 * fits the path, relayed packets included). Both modes run at once, each in a lab of its own, from one set of
 * installations rendered by tbmesh. Fails (never skips) when it cannot run.
 */

import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {removeDir, tbmeshJson, tempDir} from '../helpers.js'
import {type NebulaBuild, nebulaBuild} from './debian.js'
import {createLab, type Lab, type NatMode, requireLab} from './netns.js'

const P2P = 7447
const MB = 1024 * 1024
const TRANSFER = 50 * MB
const LABELS = ['lighthouse', 'umbrella', 'initech'] as const
type Label = (typeof LABELS)[number]

describe('two organizations behind NAT gateways', () => {
  let dir: string | undefined
  const labs: Lab[] = []
  const ip = {} as Record<Label, string>
  const builds = {} as Record<Label, NebulaBuild>

  beforeAll(async () => {
    requireLab()
    const [oldest, debian13, newest] = await Promise.all([nebulaBuild('oldest'), nebulaBuild('debian13'), nebulaBuild('newest')])
    Object.assign(builds, {lighthouse: oldest, umbrella: debian13, initech: newest})
    dir = await tempDir('tbmesh-e2e-nat-')
    const home = ['--home', join(dir, 'home')]
    const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home, '--network', 'nat', '--cidr', '10.42.0.0/16', '--no-passphrase'])
    // The lighthouse is the first host of every lab: 192.0.2.10 on the public underlay. It relays by default.
    const added = {
      lighthouse: await tbmeshJson<{name: string; overlayIp: string; relay: boolean}>(['add-node', ...home, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242']),
      umbrella: await tbmeshJson<{name: string; overlayIp: string; relay: boolean}>(['add-node', ...home, '--org', 'Umbrella']),
      initech: await tbmeshJson<{name: string; overlayIp: string; relay: boolean}>(['add-node', ...home, '--org', 'Initech']),
    }
    expect(added.lighthouse.relay).toBe(true)
    await Promise.all(LABELS.map(async (label) => {
      ip[label] = added[label].overlayIp
      const bundle = join(dir!, `${label}.tar.gz`)
      await tbmeshJson(['export-bundle', ...home, added[label].name, '--out', bundle, '--no-encrypt'])
      await tbmeshJson(['install', bundle, '--dir', join(dir!, label), '--ca-fingerprint', init.caFingerprint])
    }))
  }, 120_000)

  afterAll(async () => {
    try {
      await Promise.all(labs.map(async (lab) => lab.cleanup()))
    } finally {
      if (dir) await removeDir(dir)
    }
  })

  /** A lab for `mode`: the lighthouse on the public underlay, each node behind its own gateway, nebula running. */
  async function natLab(mode: NatMode): Promise<Lab> {
    const lab = await createLab([...LABELS], {gateways: [{label: 'gwumbrella', hosts: ['umbrella'], mode}, {label: 'gwinitech', hosts: ['initech'], mode}]})
    labs.push(lab)
    expect(lab.host('lighthouse').underlayIp).toBe('192.0.2.10')
    await lab.startNebula('lighthouse', join(dir!, 'lighthouse', 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1', binary: builds.lighthouse.nebula})
    await Promise.all((['umbrella', 'initech'] as const).map(async (label) =>
      lab.startNebula(label, join(dir!, label, 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1', binary: builds[label].nebula})))
    return lab
  }

  /** TCP on the P2P port both ways between the two nodes. */
  async function connected(lab: Lab): Promise<void> {
    const listeners = await Promise.all([lab.listen('umbrella', ip.umbrella, P2P), lab.listen('initech', ip.initech, P2P)])
    try {
      await lab.waitForTcp('umbrella', ip.initech, P2P, {timeoutMs: 30_000})
      await lab.waitForTcp('initech', ip.umbrella, P2P, {timeoutMs: 30_000})
    } finally {
      for (const l of listeners) await l.close()
    }
  }

  /** What `bytes` from Umbrella to Initech cost the lighthouse's and Initech's gateway's public links. */
  async function measuredTransfer(lab: Lab, bytes: number): Promise<{lighthouse: {rx: number; tx: number}; gateway: {rx: number}}> {
    const before = await Promise.all([lab.linkBytes('lighthouse'), lab.linkBytes('gwinitech')])
    await lab.transfer('umbrella', 'initech', ip.initech, P2P, bytes, {timeoutMs: 120_000})
    const after = await Promise.all([lab.linkBytes('lighthouse'), lab.linkBytes('gwinitech')])
    return {lighthouse: {rx: after[0].rx - before[0].rx, tx: after[0].tx - before[0].tx}, gateway: {rx: after[1].rx - before[1].rx}}
  }

  it.concurrent('behind port-preserving gateways, the nodes punch through and talk directly', async ({onTestFailed}) => {
    const lab = await natLab('port-preserving')
    onTestFailed(async () => console.error(await lab.diagnostics()))
    await connected(lab)
    // Nebula tries the relay alongside the direct path and moves the tunnel to the direct path once the punch gets
    // through (it logs a roam): wait for that with small transfers, then measure a large one.
    const deadline = Date.now() + 30_000
    while ((await measuredTransfer(lab, MB)).lighthouse.tx > MB / 4) {
      if (Date.now() > deadline) throw new Error('the tunnel between the nodes still runs through the lighthouse after 30 s')
      await sleep(500)
    }
    const cost = await measuredTransfer(lab, TRANSFER)
    // The 50 MB crossed the gateways (Initech's received them from the public side) and not the lighthouse, which saw
    // only its own small talk with the nodes.
    expect(cost.gateway.rx, "bytes Initech's gateway received from the public side").toBeGreaterThanOrEqual(TRANSFER)
    expect(cost.lighthouse.rx, 'bytes the lighthouse received during the transfer').toBeLessThan(MB)
    expect(cost.lighthouse.tx, 'bytes the lighthouse sent during the transfer').toBeLessThan(MB)
  }, 180_000)

  it.concurrent('behind symmetric gateways, the nodes talk through the lighthouse as relay', async ({onTestFailed}) => {
    const lab = await natLab('symmetric')
    onTestFailed(async () => console.error(await lab.diagnostics()))
    await connected(lab)
    const cost = await measuredTransfer(lab, TRANSFER)
    // Every byte went to the lighthouse and on from there.
    expect(cost.gateway.rx, "bytes Initech's gateway received from the public side").toBeGreaterThanOrEqual(TRANSFER)
    expect(cost.lighthouse.rx, 'bytes the lighthouse received during the transfer').toBeGreaterThanOrEqual(TRANSFER)
    expect(cost.lighthouse.tx, 'bytes the lighthouse sent during the transfer').toBeGreaterThanOrEqual(TRANSFER)
  }, 180_000)
})
