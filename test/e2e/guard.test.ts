/**
 * The underlay guard on real Nebula 1.6.1 nodes in network namespaces, against the attacker the README names: a host
 * on the same underlay segment that routes the node's overlay IP to the node's underlay address.
 *
 * Each protection is shown twice: the attack succeeds without the guard (so the test proves the attack is real), and
 * fails with it, while a peer over Nebula still connects — for a listener on the overlay IP (multichain.conf's
 * `bind=`), one on 0.0.0.0, and a Docker-style DNAT of a port published on the overlay IP to a container (iptables-nft,
 * as Docker writes it). The guard under test is the file `tbmesh install` wrote, loaded by running the installed
 * guard unit's own `ExecStart=` line (systemd/tbmesh-guard.service, which a Docker host runs before Docker; `tbmesh up`
 * loads the same file, see up.test.ts) before Nebula starts; `tbmesh doctor` sees it missing, then loaded.
 * Fails (never skips) when it cannot run: it needs root, iproute2, nft, iptables, /dev/net/tun and nebula.
 */

import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import type {DoctorResult} from '../../src/node/doctor.js'
import {renderUnderlayGuard} from '../../src/render/underlay-guard.js'
import {removeDir, tbmesh, tbmeshJson, tempDir} from '../helpers.js'
import {createLab, type Lab, type Listener, type NebulaProcess, requireLab} from './netns.js'

const P2P = 7447
/** How long a connection attempt may take before it counts as dropped (a drop shows as a timeout). */
const DROPPED_AFTER_MS = 2000

/** `ExecStart=` of a unit file as argv: systemd's double quotes and `\\` escapes, `%%` → `%`, `$$` → `$`. */
function execStart(unit: string): string[] {
  const line = /^ExecStart=(.*)$/m.exec(unit)?.[1]
  if (!line) throw new Error('the unit has no ExecStart=')
  const argv: string[] = []
  for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)) {
    argv.push((m[1] ?? m[2]).replaceAll(/\\(.)/g, '$1').replaceAll('%%', '%').replaceAll('$$', '$'))
  }
  return argv
}

describe('the underlay guard on real Nebula nodes', () => {
  let lab: Lab | undefined
  let dir: string
  let nodeDir: string
  let overlayIp = ''
  let peerIp = ''
  let nebula: NebulaProcess | undefined
  let loadGuard: string[] = []
  let listener: Listener | undefined

  const node = (): string => lab!.host('node').name
  const unloadGuard = async (): Promise<void> => {
    await lab!.run('node', ['nft', 'table inet tbmesh_guard {}; delete table inet tbmesh_guard'])
  }
  const attack = async () => lab!.connect('attacker', overlayIp, P2P, DROPPED_AFTER_MS)
  const doctorGuard = async () => {
    const run = await tbmesh(['doctor', '--dir', nodeDir, '--json'], {netns: node()})
    return (JSON.parse(String(run.stdout)) as DoctorResult).checks.find((c) => c.name === 'underlay-guard')!
  }

  async function listen(host: 'node' | 'ctr', ip: string): Promise<void> {
    await listener?.close()
    listener = await lab!.listen(host, ip, P2P)
  }

  /** The attacker is dropped, and the peer, over Nebula, connects. */
  async function guarded(): Promise<void> {
    const refused = await attack()
    expect(refused, refused.detail).toMatchObject({ok: false, reason: 'timeout'})
    await lab!.waitForTcp('peer', overlayIp, P2P)
  }

  beforeAll(async () => {
    requireLab()
    dir = await tempDir('tbmesh-e2e-guard-')
    lab = await createLab(['node', 'peer', 'attacker'])
    const home = ['--home', join(dir, 'home')]
    const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home, '--no-passphrase', '--network', 'guard', '--cidr', '10.42.0.0/16'])
    const nodeHost = lab.host('node')
    const added = {
      node: await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', `${nodeHost.underlayIp}:4242`]),
      peer: await tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, '--org', 'Umbrella']),
    }
    overlayIp = added.node.overlayIp
    peerIp = added.peer.overlayIp
    for (const label of ['node', 'peer'] as const) {
      const bundle = join(dir, `${label}.tar.gz`)
      await tbmeshJson(['export-bundle', ...home, added[label].name, '--out', bundle, '--no-encrypt'])
      const installed = await tbmeshJson<{guard: string; nebulaTest: {ok: boolean}}>(['install', bundle, '--dir', join(dir, label), '--ca-fingerprint', init.caFingerprint])
      expect(installed).toMatchObject({guard: join(dir, label, 'host', 'underlay-guard.nft'), nebulaTest: {ok: true}})
    }
    nodeDir = join(dir, 'node')
    // The command the installed guard unit runs, naming the guard file install wrote.
    loadGuard = execStart(await readFile(join(nodeDir, 'systemd', 'tbmesh-guard.service'), 'utf8'))
    expect(loadGuard).toEqual(['/usr/sbin/nft', '-f', join(nodeDir, 'host', 'underlay-guard.nft')])

    nebula = await lab.startNebula('node', join(nodeDir, 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1'})
    await lab.startNebula('peer', join(dir, 'peer', 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1'})
    // The attacker, on the same segment: the node's overlay IP is reached through the node's underlay address.
    await lab.run('attacker', ['ip', 'route', 'add', `${overlayIp}/32`, 'via', nodeHost.underlayIp])
  }, 180_000)

  afterAll(async () => {
    await lab?.cleanup()
    if (dir) await removeDir(dir)
  })

  it('without the guard, the attacker reaches MultiChain on the overlay IP past Nebula (the attack is real)', async () => {
    await listen('node', overlayIp)
    const reached = await attack()
    expect(reached, reached.detail).toMatchObject({ok: true})
    expect(listener!.accepted().map((a) => a.split(':')[0])).toContain(lab!.host('attacker').underlayIp)
    expect(await doctorGuard()).toMatchObject({status: 'fail', detail: expect.stringMatching(/^the underlay guard is not loaded: /)})
  })

  it("the guard unit's ExecStart loads the installed guard before Nebula starts; then only Nebula reaches the overlay IP", async () => {
    // As systemd does it: the guard, then Nebula (whose tun device does not exist yet when the guard loads).
    await nebula!.stop()
    await lab!.run('node', loadGuard)
    nebula = await lab!.startNebula('node', join(nodeDir, 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1'})
    await listen('node', overlayIp)
    await guarded()
    expect(listener!.accepted().map((a) => a.split(':')[0])).toEqual([peerIp])
    // The node reaches its own overlay IP (loopback), and doctor sees the guard.
    expect((await lab!.connect('node', overlayIp, P2P)).ok).toBe(true)
    expect(await doctorGuard()).toMatchObject({status: 'pass', detail: expect.stringMatching(/^the underlay guard is loaded: packets for 10\.42\.0\.1 are dropped unless they arrive on nebula1 or lo \(([1-9]\d*) dropped so far\)$/)})
    // Loading it again changes nothing (idempotent, one table, one rule).
    await lab!.run('node', loadGuard)
    const listed = JSON.parse((await lab!.run('node', ['nft', '-j', 'list', 'table', 'inet', 'tbmesh_guard'])).stdout) as {nftables: Array<{rule?: unknown}>}
    expect(listed.nftables.filter((i) => i.rule)).toHaveLength(1)
  })

  it('a listener on 0.0.0.0: reached without the guard, dropped with it, the peer still connects', async () => {
    await listen('node', '0.0.0.0')
    await unloadGuard()
    const reached = await attack()
    expect(reached, reached.detail).toMatchObject({ok: true})
    await lab!.run('node', loadGuard)
    await guarded()
  })

  it('a port published on the overlay IP by a Docker-style DNAT to a container: reached without the guard, dropped with it', async () => {
    await listener?.close()
    listener = undefined
    const ctr = await lab!.attach('node', 'ctr')
    const iptables = async (...args: string[]): Promise<void> => {
      await lab!.run('node', ['iptables', '-w', ...args])
    }
    await lab!.run('node', ['sysctl', '-qw', 'net.ipv4.ip_forward=1'])
    // What Docker writes for `ports: ["<overlay IP>:7447:7447"]` (iptables-nft: the nat table's own chains, DNAT at -100).
    await iptables('-t', 'nat', '-N', 'DOCKER')
    await iptables('-t', 'nat', '-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER')
    await iptables('-t', 'nat', '-A', 'DOCKER', '-d', `${overlayIp}/32`, '!', '-i', ctr.device, '-p', 'tcp', '-m', 'tcp', '--dport', String(P2P), '-j', 'DNAT', '--to-destination', `${ctr.host.underlayIp}:${P2P}`)
    listener = await lab!.listen('ctr', '0.0.0.0', P2P)

    await unloadGuard()
    const reached = await attack()
    expect(reached, reached.detail).toMatchObject({ok: true})
    expect(listener.accepted().map((a) => a.split(':')[0])).toContain(lab!.host('attacker').underlayIp)
    await lab!.run('node', loadGuard)
    const before = listener.accepted().length
    await guarded()
    expect(listener.accepted().slice(before).map((a) => a.split(':')[0])).toEqual([peerIp])
  })

  it('a guard for IPv6 overlay addresses too loads as rendered', async () => {
    const guard = join(dir, 'dual.nft')
    await writeFile(guard, renderUnderlayGuard({node: 'n', network: 'guard', overlayIps: ['10.42.9.9', 'fd42::9'], tunDev: 'nebula9'}))
    await lab!.run('attacker', ['nft', '-f', guard])
    const listed = JSON.parse((await lab!.run('attacker', ['nft', '-j', 'list', 'table', 'inet', 'tbmesh_guard'])).stdout) as {nftables: Array<{rule?: {expr: unknown[]}}>}
    expect(listed.nftables.filter((i) => i.rule).map((i) => JSON.stringify(i.rule!.expr[0]))).toEqual([
      JSON.stringify({match: {op: '==', left: {payload: {protocol: 'ip', field: 'daddr'}}, right: '10.42.9.9'}}),
      JSON.stringify({match: {op: '==', left: {payload: {protocol: 'ip6', field: 'daddr'}}, right: 'fd42::9'}}),
    ])
  })
})
