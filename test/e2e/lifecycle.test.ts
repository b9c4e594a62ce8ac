/**
 * The certificate lifecycle on real Nebula nodes in network namespaces, on the oldest and the newest build tested
 * (test/e2e/debian.ts): update bundles made by `export-update`
 * and installed with `install --reload --pid-file` change what running nodes accept, without restarting them.
 *
 * - Revocation: once origin and the other ACME node run the update carrying the blocklist, the revoked Umbrella node
 *   loses its tunnel (pki.disconnect_invalid) and cannot open a new one; ACME keeps working.
 * - CA rotation in three rounds (`rotate-ca`: new CA trusted beside the old one; `--switch`: certificates of the new
 *   CA; `--finish`: old CA dropped), each installed one node at a time in a different order: after every single install
 *   TCP works between every pair of four nodes. Round 2 refuses to start while a node has not installed round 1 (it
 *   would be cut off: it trusts only the old CA). Afterwards a node presenting a certificate of the old CA is refused.
 * - Renewal: a short-lived certificate is renewed and shipped; the node keeps its tunnel, holds the new not-after, and
 *   once the old certificate has expired the tunnel runs with the renewed one (made at once from Nebula 1.7 on, at the
 *   old certificate's expiry on 1.6).
 *
 * One lab, ordered tests (each builds on the state the previous one left). Fails (never skips) when it cannot run.
 */

import {readFile, writeFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {compareVersions} from '../../src/lib/version.js'
import {expectOneLineError, removeDir, tbmesh, tbmeshJson, tempDir} from '../helpers.js'
import {nebulaBuild} from './debian.js'
import {createLab, type Lab, type Listener, NEBULA_LOG, type NebulaProcess, requireLab} from './netns.js'

const P2P = 7447
const CA_PASSPHRASE = 'e2e lifecycle passphrase'
const LABELS = ['origin', 'acme', 'umbrella', 'initech', 'legacy', 'globex'] as const
type Label = (typeof LABELS)[number]

/** Nebula's connection manager checks a peer 5 s after sending it traffic (timers.connection_alive_interval). */
const TEARDOWN_DEADLINE_MS = 20_000

interface Added {name: string; overlayIp: string; notAfter: string}
interface UpdateResult {bundles: {path: string; manifest: {node: string; sequence: number}}[]}
interface InstallJson {manifest: {kind: string; node: string; sequence: number; caFingerprint: string}; previousSequence?: number; nebulaTest: {ok: boolean}; reloaded?: {method: string; pid?: number}}

const BUILDS = await Promise.all([nebulaBuild('oldest'), nebulaBuild('newest')])

describe.each(BUILDS)('certificate lifecycle on real Nebula nodes: $label $version', (build) => {
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
  const tb = async <T>(args: string[]): Promise<T> => tbmeshJson<T>(args, {env: {...env, PATH: `${dirname(build.nebula)}:${process.env.PATH}`}})

  async function start(label: Label): Promise<NebulaProcess> {
    const proc = await lab!.startNebula(label, join(installDir(label), 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1', binary: build.nebula})
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
   * certificate. Returns the install result and the log lines written from the reload on (refused handshakes logged
   * before it are no error of the reload; 1.11 logs them at error level).
   */
  async function installUpdate(label: Label, bundle: string): Promise<{result: InstallJson; log: string}> {
    const proc = nebula[label]!
    const since = proc.outputLength()
    const result = await tb<InstallJson>(['install', bundle, '--dir', installDir(label), '--reload', '--pid-file', pidFile(label)])
    expect(result).toMatchObject({manifest: {kind: 'update', node: node[label].name}, nebulaTest: {ok: true}, reloaded: {method: 'signal', pid: proc.pid}})
    await proc.waitForLog(NEBULA_LOG.reloading, {since})
    await proc.waitForLog(NEBULA_LOG.certReloaded, {since})
    const log = logSince(proc, since)
    return {result, log: log.slice(log.search(NEBULA_LOG.reloading))}
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

  /** Fingerprints of the CAs in `label`'s installed trust bundle, as nebula-cert reads them. */
  async function trusted(label: Label): Promise<string[]> {
    const printed = await nebulaCert(['print', '-json', '-path', join(installDir(label), 'nebula', 'ca.crt')])
    expect(printed.exitCode).toBe(0)
    return printed.output.trim().split('\n').map((line) => (JSON.parse(line) as {fingerprint: string}).fingerprint).sort()
  }

  /** A log line of a tunnel `by` tore down with `peer`, for `reason` (both log formats: see NEBULA_LOG). */
  const tornDown = (peer: Label, reason: RegExp): RegExp => new RegExp(`(?:${NEBULA_LOG.tornDown.source}).*certName=${node[peer].name} .*(?:${reason.source})`)
  /** A log line of a handshake refused for `reason`, whichever comes first in the line. */
  const refused = (reason: RegExp): RegExp => new RegExp(`(?:${NEBULA_LOG.refused.source}).*(?:${reason.source})|(?:${reason.source}).*(?:${NEBULA_LOG.refused.source})`)
  const NO_CA = /could not find ca for the certificate/

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
      expect(log).not.toMatch(/level=error/i)
    }

    // The tunnel is still up right after the reload; Nebula tears it down on its next check of the peer.
    await waitForRefusal('umbrella', 'origin')
    await nebula.origin!.waitForLog(tornDown('umbrella', NEBULA_LOG.blocked), {since, timeoutMs: TEARDOWN_DEADLINE_MS})
    // Umbrella tries to handshake again; origin refuses its certificate at the first handshake message.
    await nebula.origin!.waitForLog(refused(NEBULA_LOG.blocked), {since, timeoutMs: TEARDOWN_DEADLINE_MS})
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
        expect(log).not.toMatch(/level=error/i)
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
    expect(await trusted('origin')).toEqual([r1.caFingerprint, r1.previousCaFingerprint].sort())
    // Round 2 waits for legacy, which has not installed round 1: switching now would cut it off from the others.
    const premature = await tbmesh(['rotate-ca', '--switch'], {env})
    expectOneLineError(premature, new RegExp(`cannot switch to the new CA: ${node.legacy.name} has not installed round 1 of the CA rotation`), 1) // umbrella-1 is revoked
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
    await round(['--finish'], ['origin', 'legacy', 'initech', 'acme'])
    expect(await trusted('acme')).toEqual([caFingerprint])
    expect(await readFile(join(installDir('origin'), 'nebula', 'ca.crt'), 'utf8')).not.toContain(oldCa.trim())

    // Nebula 1.6 presents a reloaded certificate only in new handshakes: tunnels made before round 2 still carry
    // certificates of the old CA, and one side of each pair tore its tunnel down once it dropped that CA; the next
    // packet made a new one with the new certificates (TCP worked after every install above). From 1.7 on a reload
    // makes new handshakes at once, so no tunnel with an old certificate is left to tear down.
    for (const [i, a] of compareVersions(build.version, '1.7.0') < 0 ? members.entries() : []) {
      for (const b of members.slice(i + 1)) {
        const teardown = (by: Label, peer: Label): Promise<string> => nebula[by]!.waitForLog(tornDown(peer, NO_CA), {since: since[by], timeoutMs: TEARDOWN_DEADLINE_MS})
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
    await nebula.origin!.waitForLog(new RegExp(`${tornDown('legacy', NO_CA).source}|${refused(NO_CA).source}`), {since: originSince, timeoutMs: TEARDOWN_DEADLINE_MS})
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

    // The tunnel survives the reload: the first attempts go through.
    expect(await lab!.connect('globex', node.origin.overlayIp, P2P, 3000)).toMatchObject({ok: true})
    expect(await lab!.connect('origin', node.globex.overlayIp, P2P, 3000)).toMatchObject({ok: true})
    expect(Date.now(), 'the renewal must be in place before the old certificate expires (a slow machine?)').toBeLessThan(before)

    // Nebula presents a reloaded certificate in a new handshake: from 1.7 on it makes one at once, 1.6 only when it
    // needs one, i.e. when the old certificate expires and origin tears the tunnel down (pki.disconnect_invalid). Either
    // way, once the old certificate has expired, origin holds a tunnel with the renewed one and TCP works both ways.
    await sleep(Math.max(0, before - Date.now()))
    const deadline = Date.now() + TEARDOWN_DEADLINE_MS
    const renewedHandshake = new RegExp(`(?:${NEBULA_LOG.handshake.source}).*certName=${node.globex.name} .*fingerprint=${fingerprint}`)
    while (!renewedHandshake.test(logSince(nebula.origin!, originSince))) {
      if (Date.now() > deadline) throw new Error(`origin made no tunnel with ${node.globex.name}'s renewed certificate after its old one expired`)
      await lab!.connect('origin', node.globex.overlayIp, P2P, 1000)
    }
    await lab!.waitForTcp('globex', node.origin.overlayIp, P2P)
    await lab!.waitForTcp('origin', node.globex.overlayIp, P2P)
  }, 120_000)
})
