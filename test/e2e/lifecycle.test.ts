/**
 * The certificate lifecycle on real Nebula 1.6.1 nodes in network namespaces: update bundles made by `export-update`
 * and installed with `install --reload --pid-file` change what running nodes accept, without restarting them.
 *
 * - Revocation: once origin and the other ACME node run the update carrying the blocklist, the revoked Umbrella node
 *   loses its tunnel (pki.disconnect_invalid) and cannot open a new one; ACME keeps working.
 * - CA rotation in three rounds (`rotate-ca`: new CA trusted beside the old one; `--switch`: certificates of the new
 *   CA; `--finish`: old CA dropped), each installed one node at a time in a different order: after every single install
 *   TCP works between every pair of four nodes. Round 2 refuses to start while a node has not installed round 1 (it
 *   would be cut off: it trusts only the old CA). Afterwards a node presenting a certificate of the old CA is refused.
 * - Renewal: a short-lived certificate is renewed and shipped; the node keeps its tunnel, holds the new not-after, and
 *   when the old certificate expires the tunnel is made again with the renewed one.
 *
 * One lab, ordered tests (each builds on the state the previous one left). Fails (never skips) when it cannot run.
 */

import {readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {expectOneLineError, removeDir, tbmesh, tbmeshJson, tempDir} from '../helpers.js'
import {createLab, type Lab, type Listener, type NebulaProcess, requireLab} from './netns.js'

const P2P = 7447
const CA_PASSPHRASE = 'e2e lifecycle passphrase'
const LABELS = ['origin', 'acme', 'umbrella', 'initech', 'legacy', 'globex'] as const
type Label = (typeof LABELS)[number]

/** Nebula's connection manager checks a peer 5 s after sending it traffic (timers.connection_alive_interval). */
const TEARDOWN_DEADLINE_MS = 20_000

interface Added {name: string; overlayIp: string; notAfter: string}
interface UpdateResult {bundles: {path: string; manifest: {node: string; sequence: number}}[]}
interface InstallJson {manifest: {kind: string; node: string; sequence: number; caFingerprint: string}; previousSequence?: number; nebulaTest: {ok: boolean}; reloaded?: {method: string; pid?: number}}

describe('certificate lifecycle on real Nebula nodes', () => {
  let lab: Lab | undefined
  let dir: string | undefined
  let env: Record<string, string>
  const node = {} as Record<Label, Added>
  const nebula: Partial<Record<Label, NebulaProcess>> = {}
  const listeners: Partial<Record<Label, Listener>> = {}
  let caFingerprint = ''
  let rounds = 0

  const installDir = (label: Label): string => join(dir!, label)
  const pidFile = (label: Label): string => join(dir!, `${label}.pid`)
  const tb = async <T>(args: string[]): Promise<T> => tbmeshJson<T>(args, {env})

  async function start(label: Label): Promise<NebulaProcess> {
    const proc = await lab!.startNebula(label, join(installDir(label), 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1'})
    await writeFile(pidFile(label), `${proc.pid}\n`)
    nebula[label] = proc
    return proc
  }

  async function listen(label: Label): Promise<void> {
    listeners[label] ??= await lab!.listen(label, node[label].overlayIp, P2P)
  }

  /** Export bundles of `names` (or all) into a fresh directory; node name → bundle path. */
  async function exportUpdates(names: string[] | 'all'): Promise<Map<string, string>> {
    const args = names === 'all' ? ['--all'] : names
    const result = await tb<UpdateResult>(['export-update', ...args, '--out', join(dir!, 'updates', String(++rounds))])
    return new Map(result.bundles.map((b) => [b.manifest.node, b.path]))
  }

  /**
   * `tbmesh install UPDATE --dir … --reload --pid-file …` on a node, then wait until its nebula has re-read CA and
   * certificate. Returns the install result and the log lines written by the reload.
   */
  async function installUpdate(label: Label, bundle: string): Promise<{result: InstallJson; log: string}> {
    const proc = nebula[label]!
    const since = proc.outputLength()
    const result = await tb<InstallJson>(['install', bundle, '--dir', installDir(label), '--reload', '--pid-file', pidFile(label)])
    expect(result).toMatchObject({manifest: {kind: 'update', node: node[label].name}, nebulaTest: {ok: true}, reloaded: {method: 'signal', pid: proc.pid}})
    await proc.waitForLog(/Caught HUP, reloading config/, {since})
    await proc.waitForLog(/Trusted CA certificates refreshed/, {since})
    await proc.waitForLog(/Client cert refreshed from disk/, {since})
    return {result, log: logSince(proc, since)}
  }

  /** What `proc` logged after output offset `since`. */
  function logSince(proc: NebulaProcess, since: number): string {
    const output = proc.output()
    return output.slice(Math.max(0, since - (proc.outputLength() - output.length)))
  }

  /** TCP from every node of `labels` to every other one's P2P port, all pairs at once (short connects, retried). */
  async function allPairs(labels: Label[], timeoutMs = 15_000): Promise<void> {
    for (const to of labels) await listen(to)
    await lab!.waitForMesh(labels.map((label) => ({host: label, ip: node[label].overlayIp})), P2P, {timeoutMs, attemptTimeoutMs: 1500})
  }

  /** Poll until a connect from `from` to `to`'s P2P port fails; then two more attempts must fail too. */
  async function waitForRefusal(from: Label, to: Label): Promise<void> {
    const started = Date.now()
    for (;;) {
      const r = await lab!.connect(from, node[to].overlayIp, P2P, 2000)
      if (!r.ok) {
        for (let i = 0; i < 2; i++) expect(await lab!.connect(from, node[to].overlayIp, P2P, 2000)).toMatchObject({ok: false})
        return
      }
      if (Date.now() - started > TEARDOWN_DEADLINE_MS) throw new Error(`${from} still reaches ${to}:${P2P} ${TEARDOWN_DEADLINE_MS} ms later`)
      await sleep(250)
    }
  }

  async function nebulaCert(args: string[]): Promise<{exitCode: number; output: string}> {
    const r = await execa('nebula-cert', args, {reject: false, all: true})
    return {exitCode: r.exitCode ?? -1, output: String(r.all ?? '')}
  }

  beforeAll(async () => {
    requireLab()
    dir = await tempDir('tbmesh-e2e-lifecycle-')
    env = {TBMESH_HOME: join(dir, 'home'), TBMESH_CA_PASSPHRASE: CA_PASSPHRASE}
    lab = await createLab([...LABELS])
    const init = await tb<{caFingerprint: string}>(['init-ca', '--network', 'lifecycle', '--cidr', '10.42.0.0/16'])
    caFingerprint = init.caFingerprint
    node.origin = await tb<Added>(['add-node', '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', `${lab.host('origin').underlayIp}:4242`])
    node.acme = await tb<Added>(['add-node', '--org', 'ACME'])
    node.umbrella = await tb<Added>(['add-node', '--org', 'Umbrella'])
    node.initech = await tb<Added>(['add-node', '--org', 'Initech'])
    node.legacy = await tb<Added>(['add-node', '--org', 'Hooli'])
    // Join bundles are exported now, before any rotation: they carry the first CA only (globex joins later).
    const joining = ['origin', 'acme', 'umbrella', 'initech', 'legacy'] as const
    for (const label of joining) await tb(['export-bundle', node[label].name, '--out', join(dir, `${label}.tar.gz`), '--no-encrypt'])
    await Promise.all(joining.map(async (label) => {
      const installed = await tb<InstallJson>(['install', join(dir!, `${label}.tar.gz`), '--dir', installDir(label), '--ca-fingerprint', caFingerprint])
      expect(installed.nebulaTest.ok).toBe(true)
    }))
    await start('origin')
    await Promise.all((['acme', 'umbrella', 'initech'] as const).map((label) => start(label)))
  }, 120_000)

  afterAll(async () => {
    try {
      await lab?.cleanup()
    } finally {
      if (dir) await removeDir(dir)
    }
  })

  it('cuts a revoked node off once the others install the update with the blocklist', async () => {
    await listen('origin')
    await listen('acme')
    for (const from of ['acme', 'umbrella'] as const) await lab!.waitForTcp(from, node.origin.overlayIp, P2P)
    await lab!.waitForTcp('umbrella', node.acme.overlayIp, P2P)

    const revoked = await tb<{fingerprints: string[]; blocklistSize: number}>(['revoke', node.umbrella.name, '--reason', 'e2e'])
    expect(revoked.blocklistSize).toBeGreaterThanOrEqual(1)
    const updates = await exportUpdates('all')
    expect(updates.has(node.umbrella.name)).toBe(false)
    const since = nebula.origin!.outputLength()
    for (const label of ['origin', 'acme'] as const) {
      const {log} = await installUpdate(label, updates.get(node[label].name)!)
      expect(await readFile(join(installDir(label), 'nebula', 'config.yml'), 'utf8')).toContain(revoked.fingerprints[0])
      expect(log).not.toMatch(/level=error/)
    }

    // The tunnel is still up right after the reload; Nebula tears it down on its next check of the peer.
    await waitForRefusal('umbrella', 'origin')
    await nebula.origin!.waitForLog(
      new RegExp(`Remote certificate is no longer valid, tearing down the tunnel.*certName=${node.umbrella.name}.*certificate has been blocked`),
      {since, timeoutMs: TEARDOWN_DEADLINE_MS},
    )
    // Umbrella tries to handshake again; origin refuses its certificate at the first handshake message.
    await nebula.origin!.waitForLog(/Invalid certificate from host.*certificate has been blocked|certificate has been blocked.*Invalid certificate from host/, {since, timeoutMs: TEARDOWN_DEADLINE_MS})
    await waitForRefusal('umbrella', 'acme')

    await lab!.waitForTcp('acme', node.origin.overlayIp, P2P)
    await lab!.waitForTcp('origin', node.acme.overlayIp, P2P)
    // Umbrella is gone for good: stop it so it does not keep knocking.
    await nebula.umbrella!.stop()
  }, 90_000)

  it('rotates the CA in three rounds, one node at a time in changing orders, with TCP between every pair after every install', async () => {
    const members: Label[] = ['origin', 'acme', 'initech', 'legacy']
    await start('legacy')
    await allPairs(members)
    const oldCa = await readFile(join(installDir('origin'), 'nebula', 'ca.crt'), 'utf8')
    const legacyCrt = join(installDir('legacy'), 'nebula', 'host.crt')
    const legacyOld = await readFile(legacyCrt, 'utf8')

    /** One round: rotate-ca ARGS, export-update --all, install on each node of `order`, all pairs after each install. */
    const round = async (args: string[], order: Label[]): Promise<{caFingerprint: string; previousCaFingerprint: string; logs: Record<string, string>}> => {
      const rotated = await tb<{caFingerprint: string; previousCaFingerprint: string}>(['rotate-ca', ...args])
      const bundles = await exportUpdates('all')
      const logs: Record<string, string> = {}
      for (const label of order) {
        const {result, log} = await installUpdate(label, bundles.get(node[label].name)!)
        expect(log).not.toMatch(/level=error/)
        logs[label] = log
        // Tunnels torn down when a node stops trusting the old CA are made again on the next packet; a peer whose
        // address the lighthouse dropped with its tunnel is found again after its next report (lighthouse.interval).
        await allPairs(members, 30_000)
        await tb(['confirm-install', `${result.manifest.node}@${result.manifest.sequence}`])
      }
      return {...rotated, logs}
    }

    // Round 1: every node trusts both CAs and keeps its certificate of the old one.
    const r1 = await round([], ['acme', 'origin', 'initech'])
    caFingerprint = r1.caFingerprint
    expect(r1.logs.origin).toMatch(new RegExp(`Trusted CA certificates refreshed.*(${r1.caFingerprint}.*${r1.previousCaFingerprint}|${r1.previousCaFingerprint}.*${r1.caFingerprint})`))
    // Round 2 waits for legacy, which has not installed round 1: switching now would cut it off from the others.
    const refused = await tbmesh(['rotate-ca', '--switch'], {env})
    expectOneLineError(refused, new RegExp(`cannot switch to the new CA: ${node.legacy.name} has not installed round 1 of the CA rotation`), 1) // umbrella-1 is revoked
    const legacyRound1 = (await exportUpdates([node.legacy.name])).get(node.legacy.name)!
    const {result} = await installUpdate('legacy', legacyRound1)
    await tb(['confirm-install', `${node.legacy.name}@${result.manifest.sequence}`])
    await allPairs(members, 30_000)

    // Round 2: every node presents a certificate of the new CA; both CAs are still trusted.
    await round(['--switch'], ['initech', 'legacy', 'acme', 'origin'])
    const overlap = await readFile(join(installDir('origin'), 'nebula', 'ca.crt'), 'utf8')
    expect(overlap).toContain(oldCa.trim())
    expect((await nebulaCert(['verify', '-ca', join(installDir('origin'), 'nebula', 'ca.crt'), '-crt', legacyCrt])).exitCode).toBe(0)

    // Round 3: the old CA leaves every trust bundle.
    const since = Object.fromEntries(members.map((label) => [label, nebula[label]!.outputLength()])) as Record<Label, number>
    const r3 = await round(['--finish'], ['origin', 'legacy', 'initech', 'acme'])
    expect(r3.logs.acme).toMatch(new RegExp(`Trusted CA certificates refreshed.*${caFingerprint}`))
    expect(r3.logs.acme).not.toContain(r3.previousCaFingerprint)
    expect(await readFile(join(installDir('origin'), 'nebula', 'ca.crt'), 'utf8')).not.toContain(oldCa.trim())

    // Nebula 1.6 presents a reloaded certificate only in new handshakes: tunnels made before round 2 still carry
    // certificates of the old CA, and one side of each pair tore its tunnel down once it dropped that CA; the next
    // packet made a new one with the new certificates (TCP worked after every install above).
    for (const [i, a] of members.entries()) {
      for (const b of members.slice(i + 1)) {
        const teardown = (by: Label, peer: Label): Promise<string> => nebula[by]!.waitForLog(
          new RegExp(`Remote certificate is no longer valid, tearing down the tunnel.*certName=${node[peer].name} .*could not find ca for the certificate`),
          {since: since[by], timeoutMs: TEARDOWN_DEADLINE_MS},
        )
        await Promise.any([teardown(a, b), teardown(b, a)]).catch(() => {
          throw new Error(`neither ${a} nor ${b} tore down their tunnel with the old certificates within ${TEARDOWN_DEADLINE_MS} ms`)
        })
      }
    }

    // A certificate signed by the old CA is refused by origin now: legacy starts again with its old one (Nebula 1.6
    // would present a reloaded certificate only in new handshakes).
    await nebula.legacy!.stop()
    await writeFile(legacyCrt, legacyOld)
    const originSince = nebula.origin!.outputLength()
    await start('legacy')
    await waitForRefusal('legacy', 'origin')
    await nebula.origin!.waitForLog(
      new RegExp(`(Remote certificate is no longer valid, tearing down the tunnel|Invalid certificate from host).*${node.legacy.name}.*could not find ca for the certificate|could not find ca for the certificate.*${node.legacy.name}`),
      {since: originSince, timeoutMs: TEARDOWN_DEADLINE_MS},
    )
    const verify = await nebulaCert(['verify', '-ca', join(installDir('origin'), 'nebula', 'ca.crt'), '-crt', legacyCrt])
    expect(verify.exitCode).not.toBe(0)
    expect(verify.output).toMatch(/could not find ca for the certificate/)
    await nebula.legacy!.stop()
  }, 240_000)

  it('renews a short-lived certificate: the node keeps its tunnel and uses the new certificate once the old one expires', async () => {
    node.globex = await tb<Added>(['add-node', '--org', 'Globex', '--duration', '30s'])
    const bundle = join(dir!, 'globex.tar.gz')
    await tb(['export-bundle', node.globex.name, '--out', bundle, '--no-encrypt'])
    await tb(['install', bundle, '--dir', installDir('globex'), '--ca-fingerprint', caFingerprint])
    await start('globex')
    await listen('globex')
    await lab!.waitForTcp('globex', node.origin.overlayIp, P2P)
    await lab!.waitForTcp('origin', node.globex.overlayIp, P2P)

    const hostCrt = join(installDir('globex'), 'nebula', 'host.crt')
    const notAfter = async (): Promise<number> => {
      const printed = await nebulaCert(['print', '-json', '-path', hostCrt])
      expect(printed.exitCode).toBe(0)
      return Date.parse((JSON.parse(printed.output) as {details: {notAfter: string}}).details.notAfter)
    }
    const before = await notAfter()
    expect(before - Date.now()).toBeLessThanOrEqual(30_000)

    const renewed = await tb<{renewed: {name: string; fingerprint: string; notAfter: string}[]}>(['renew', node.globex.name, '--duration', '30d'])
    expect(renewed.renewed).toHaveLength(1)
    const {fingerprint, notAfter: renewedNotAfter} = renewed.renewed[0]!
    const updates = await exportUpdates([node.globex.name])
    const originSince = nebula.origin!.outputLength()
    await installUpdate('globex', updates.get(node.globex.name)!)
    const after = await notAfter()
    expect(after).toBe(Date.parse(renewedNotAfter))
    expect(after - before).toBeGreaterThan(29 * 86_400_000)

    // The tunnel survives the reload: the first attempts go through, and no new handshake was needed.
    expect(await lab!.connect('globex', node.origin.overlayIp, P2P, 3000)).toMatchObject({ok: true})
    expect(await lab!.connect('origin', node.globex.overlayIp, P2P, 3000)).toMatchObject({ok: true})
    expect(logSince(nebula.origin!, originSince)).not.toMatch(new RegExp(`Handshake message.*certName=${node.globex.name} `))
    expect(Date.now(), 'the renewal must be in place before the old certificate expires (a slow machine?)').toBeLessThan(before)

    // Nebula 1.6 presents a reloaded certificate only in new handshakes. Once the old one expires, origin tears the
    // tunnel down (pki.disconnect_invalid) and the next one is made with the renewed certificate.
    await sleep(Math.max(0, before - Date.now()))
    const deadline = Date.now() + TEARDOWN_DEADLINE_MS
    const expired = new RegExp(`Remote certificate is no longer valid, tearing down the tunnel.*certName=${node.globex.name} .*certificate is expired`)
    while (!expired.test(logSince(nebula.origin!, originSince))) {
      if (Date.now() > deadline) throw new Error(`origin did not tear down ${node.globex.name}'s tunnel after its old certificate expired`)
      await lab!.connect('origin', node.globex.overlayIp, P2P, 1000)
    }
    await lab!.waitForTcp('globex', node.origin.overlayIp, P2P)
    await lab!.waitForTcp('origin', node.globex.overlayIp, P2P)
    await nebula.origin!.waitForLog(new RegExp(`Handshake message received.*certName=${node.globex.name} .*fingerprint=${fingerprint}`), {since: originSince})
  }, 120_000)
})
