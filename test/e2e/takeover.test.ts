/**
 * A member's CA takes over an established flow to another member's node, on real Nebula (Debian 12's 1.6.1 and the
 * newest Debian build), and `tbmesh up` stops it.
 *
 * Three members, each with its own CA (built with the CLI). Globex's node holds a TCP flow to umb-1:7447 that sends a
 * numbered line every 50 ms and reconnects on error. ACME then starts a rogue node whose certificate, signed by
 * ACME's CA with `nebula-cert` itself (ACME's CA may issue any overlay address), holds umb-1's address; its firewall is
 * open, it registers with the lighthouse (which then gives out its underlay address for umb-1's), handshakes with
 * Globex (a ping) and drops its own copy of the address so that its kernel does not reset the flow; tcpdump on its tun
 * device shows what it receives.
 *
 * - Plain `nebula` on Globex: the rogue keeps reading Globex's flow (the attack succeeds: this is what makes the test
 *   able to fail).
 * - `tbmesh up` on Globex: the rogue captures nothing from about a second after its handshake, umb-1 receives Globex's
 *   data again within a few seconds, and the evidence record names the certificate, ACME's CA, umb-1's address and the
 *   rogue's underlay address. On the oldest build the local blocklist then survives an update installed with
 *   `install --reload`; on the newest Globex reports the certificate, Umbrella imports the report, and umb-1's next
 *   update blocklists it.
 *
 * Fails (never skips) when it cannot run: it needs root, iproute2, /dev/net/tun, nebula, nebula-cert and tcpdump.
 */

import {execFile} from 'node:child_process'
import {readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {promisify} from 'node:util'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import yaml from 'yaml'

import {type AddedNode, BIN, type MemberHome, removeDir, tbmeshJson, tempDir, threeMembers} from '../helpers.js'
import {nebulaBuild, type NebulaBuild, type NebulaBuildName} from './debian.js'
import {type Capture, createLab, type FlowReceiver, type FlowSender, type Lab, type LabProcess, type NebulaProcess, requireLab} from './netns.js'

const run = promisify(execFile)
const P2P = 7447
const CIDR = '10.77.0.0/16'
const LABELS = ['lighthouse', 'umbrella', 'globex', 'rogue'] as const
type Label = (typeof LABELS)[number]

/** "About a second" after the rogue's handshake: after this, the rogue must capture nothing of Globex's flow. */
const CAPTURE_LIMIT_MS = 1500
/** "Within a few seconds": by then umb-1 must receive data Globex sent after the takeover began. */
const RECOVERY_LIMIT_MS = 5000
/** How long each scenario watches after the rogue's handshake. */
const OBSERVE_MS = 6000

interface Evidence {fingerprint: string; issuer: {caFingerprint: string; slug?: string; organization?: string}; addresses: string[]; underlay?: string; observedAt: string; certificate?: string}

const BUILDS: NebulaBuildName[] = ['oldest', 'newest']

/** For failure messages: `tbmesh up`'s own lines in a node's output (start, watch, debug trace, warnings, violations) and the handshakes Nebula logged. */
const upLines = (output: string): string => output.split('\n').filter((l) => /^(tbmesh up|Warning:)|SSH server|ssh user|Taking new handshake|Handshake message received/.test(l)).join('\n')

describe('an ACME rogue holding umb-1\'s address', () => {
  let lab: Lab | undefined
  let dir: string
  const node = {} as Record<'lighthouse' | 'umbrella' | 'globex', AddedNode>
  const ca = {} as Record<string, MemberHome>
  let rogueFingerprint = ''
  const home = (org: string) => ['--home', join(dir, `home-${org}`)]
  /** Each build gets installations of its own (evidence and updates stay apart). */
  const installDir = (which: NebulaBuildName, label: Label) => join(dir, which, label)

  beforeAll(async () => {
    requireLab()
    await Promise.all(BUILDS.map((b) => nebulaBuild(b)))
    dir = await tempDir('tbmesh-e2e-takeover-')
    lab = await createLab([...LABELS])
    const built = await threeMembers(dir, CIDR, `${lab.host('lighthouse').underlayIp}:4242`)
    Object.assign(ca, built.members)
    Object.assign(node, built.nodes)
    for (const [label, org] of [['lighthouse', 'acme'], ['umbrella', 'umbrella'], ['globex', 'globex']] as const) {
      const bundle = join(dir, `${label}.tar.gz`)
      await tbmeshJson(['export-bundle', ...home(org), node[label].name, '--out', bundle, '--no-encrypt'])
      for (const which of BUILDS) await tbmeshJson(['install', bundle, '--dir', installDir(which, label), '--ca-fingerprint', ca[org].caFingerprint])
    }

    // The rogue: umb-1's address in a certificate that nebula-cert signs with ACME's CA key.
    const caFile = (ext: string) => join(dir, 'home-acme', 'ca', `${ca.acme.caFingerprint}.${ext}`)
    await run('nebula-cert', ['sign', '-ca-crt', caFile('crt'), '-ca-key', caFile('key'), '-name', 'rogue', '-ip', `${node.umbrella.overlayIp}/16`, '-groups', 'org:acme',
      '-out-crt', join(dir, 'rogue.crt'), '-out-key', join(dir, 'rogue.key')])
    const printed = await run('nebula-cert', ['print', '-json', '-path', join(dir, 'rogue.crt')])
    // 1.6.1 prints the certificate, 1.10+ a list of them.
    rogueFingerprint = ([JSON.parse(printed.stdout)].flat()[0] as {fingerprint: string}).fingerprint
  }, 180_000)

  afterAll(async () => {
    await lab?.cleanup()
    if (dir) await removeDir(dir)
  })

  describe.each(BUILDS)('on Nebula %s', (which) => {
  let build: NebulaBuild
  beforeAll(async () => {
    build = await nebulaBuild(which)
  })
  const installed = (label: Label) => installDir(which, label)

  /** Everything one scenario started, stopped in reverse order. */
  interface Scenario {
    nebula: Partial<Record<Label, NebulaProcess>>
    sender: FlowSender
    receiver: FlowReceiver
    capture?: Capture
    /** When the rogue sent its first packet to Globex (its handshake follows within milliseconds). */
    attackAt: number
  }

  async function startNebula(label: Label, opts: {up?: boolean; config?: string} = {}): Promise<NebulaProcess> {
    const config = opts.config ?? join(installed(label), 'nebula', 'config.yml')
    if (!opts.up) return lab!.startNebula(label, config, {cwd: '/', tunDev: 'nebula1', binary: build.nebula})
    const command = [process.execPath, BIN, 'up', '--dir', installed(label), '--nebula', build.nebula, '--run-dir', join(dir, which, `run-${label}`), '--pid-file', join(dir, which, `${label}.pid`)]
    // DEBUG: up traces the hostmap as its watcher sees it (in the failure messages below).
    return lab!.startNebula(label, config, {cwd: '/', tunDev: 'nebula1', command, env: {DEBUG: '1'}})
  }

  /** The rogue's config: open firewall, the trust bundle of every member, Globex and the lighthouse in the static host map. */
  async function rogueConfig(): Promise<string> {
    const sockets = await lab!.run('globex', ['ss', '-Hlunp'])
    const port = /:(\d+)\s.*nebula/.exec(sockets.stdout)?.[1]
    expect(port, sockets.stdout).toBeDefined()
    const config = {
      pki: {ca: join(installed('globex'), 'nebula', 'ca.crt'), cert: join(dir, 'rogue.crt'), key: join(dir, 'rogue.key')},
      // Straight to Globex, and registered with the lighthouse, which then hands out the rogue's address for umb-1's.
      static_host_map: {[node.globex.overlayIp]: [`${lab!.host('globex').underlayIp}:${port}`], [node.lighthouse.overlayIp]: [`${lab!.host('lighthouse').underlayIp}:4242`]},
      lighthouse: {am_lighthouse: false, interval: 10, hosts: [node.lighthouse.overlayIp]},
      listen: {host: '0.0.0.0', port: 0},
      punchy: {punch: false},
      tun: {dev: 'nebula1', mtu: 1300},
      logging: {level: 'info'},
      firewall: {outbound: [{port: 'any', proto: 'any', host: 'any'}], inbound: [{port: 'any', proto: 'any', host: 'any'}]},
    }
    const file = join(dir, 'rogue.yml')
    await writeFile(file, yaml.stringify(config))
    return file
  }

  async function attack(globexUnderUp: boolean): Promise<Scenario> {
    const nebula: Scenario['nebula'] = {}
    nebula.lighthouse = await startNebula('lighthouse')
    nebula.umbrella = await startNebula('umbrella')
    nebula.globex = await startNebula('globex', {up: globexUnderUp})
    const receiver = await lab!.receive('umbrella', node.umbrella.overlayIp, P2P)
    const sender = await lab!.stream('globex', node.umbrella.overlayIp, P2P)
    const flowing = Date.now()
    while (receiver.received().length < 10) {
      if (Date.now() - flowing > 30_000) throw new Error(`the flow never started\n${await lab!.diagnostics()}`)
      await sleep(50)
    }
    nebula.rogue = await startNebula('rogue', {config: await rogueConfig()})
    await lab!.run('rogue', ['ip', 'addr', 'del', `${node.umbrella.overlayIp}/16`, 'dev', 'nebula1'])
    await lab!.run('rogue', ['ip', 'route', 'add', CIDR, 'dev', 'nebula1'])
    const capture = await lab!.capture('rogue', 'nebula1', P2P)
    const attackAt = Date.now()
    await lab!.run('rogue', ['ping', '-c', '1', '-W', '1', node.globex.overlayIp], {reject: false})
    await sleep(Math.max(0, attackAt + OBSERVE_MS - Date.now()))
    return {nebula, sender, receiver, capture, attackAt}
  }

  async function stop(s: Scenario): Promise<void> {
    for (const p of [s.capture?.process, s.sender.process, s.receiver.process] as Array<LabProcess | undefined>) await p?.stop()
    for (const label of ['rogue', 'globex', 'umbrella', 'lighthouse'] as const) await s.nebula[label]?.stop()
  }

  it('with plain nebula on Globex, the rogue reads Globex\'s flow to umb-1', async () => {
    const s = await attack(false)
    try {
      const late = s.capture!.flowLines().filter((l) => l.at > s.attackAt + 2000)
      expect(late.length, `nothing of the flow reached the rogue after 2 s\n${await lab!.diagnostics()}`).toBeGreaterThan(0)
    } finally {
      await stop(s)
    }
  }, 120_000)

  it('with tbmesh up on Globex, the rogue is cut off within about a second, umb-1 gets the flow back, and the evidence is kept', async () => {
    const s = await attack(true)
    try {
      const captured = s.capture!.flowLines()
      const late = captured.filter((l) => l.at > s.attackAt + CAPTURE_LIMIT_MS)
      expect(late, `the rogue still read the flow after ${CAPTURE_LIMIT_MS} ms (attack at ${new Date(s.attackAt).toISOString()})\n${upLines(s.nebula.globex!.output())}\n${s.nebula.globex!.output().slice(-4000)}`).toEqual([])
      // Again: data Globex sent once the rogue was cut off.
      const back = s.receiver.received().filter((l) => l.sentAt > s.attackAt + CAPTURE_LIMIT_MS && l.at <= s.attackAt + RECOVERY_LIMIT_MS)
      expect(back.length, `umb-1 received nothing sent after ${CAPTURE_LIMIT_MS} ms within ${RECOVERY_LIMIT_MS} ms\n${upLines(s.nebula.globex!.output())}\n${await lab!.diagnostics()}`).toBeGreaterThan(0)

      const files = await readdir(join(installed('globex'), 'evidence')).catch(() => [])
      expect(files, `no evidence record (the rogue captured ${captured.length} line(s) of the flow)\n${upLines(s.nebula.globex!.output())}`).toHaveLength(1)
      const evidence = JSON.parse(await readFile(join(installed('globex'), 'evidence', files[0]), 'utf8')) as Evidence
      expect(evidence).toMatchObject({fingerprint: rogueFingerprint, issuer: {caFingerprint: ca.acme.caFingerprint, slug: 'acme', organization: 'ACME'}, addresses: [node.umbrella.overlayIp]})
      expect(evidence.underlay).toMatch(new RegExp(`^${lab!.host('rogue').underlayIp.replaceAll('.', '\\.')}:\\d+$`))
      expect(evidence.certificate).toBe(await readFile(join(dir, 'rogue.crt'), 'utf8'))
      expect(Date.parse(evidence.observedAt)).toBeLessThan(s.attackAt + CAPTURE_LIMIT_MS)
      expect(s.nebula.globex!.output()).toContain('VIOLATION')

      if (which === 'newest') {
        // The evidence travels: Globex reports it, Umbrella imports it, and umb-1's next update blocklists the certificate.
        const reportFile = join(dir, 'globex.violations.json')
        const reported = await tbmeshJson<{violations: Array<{fingerprint: string; issuer: string}>}>(['federation', 'report', join(installed('globex'), 'evidence', files[0]), ...home('globex'), '--out', reportFile])
        expect(reported.violations).toEqual([expect.objectContaining({fingerprint: rogueFingerprint, issuer: 'acme'})])
        expect(await tbmeshJson(['federation', 'import', reportFile, ...home('umbrella')])).toMatchObject({kind: 'violations', organization: 'globex', added: [rogueFingerprint]})
        const updates = await tbmeshJson<{bundles: Array<{path: string}>}>(['export-update', ...home('umbrella'), '--all', '--out', join(dir, 'updates-umbrella')])
        await tbmeshJson(['install', updates.bundles[0].path, '--dir', installed('umbrella')])
        const config = yaml.parse(await readFile(join(installed('umbrella'), 'nebula', 'config.yml'), 'utf8')) as {pki: {blocklist: string[]}}
        expect(config.pki.blocklist).toContain(rogueFingerprint)
      }
      if (which === 'oldest') {
        // An update installed with --reload (SIGHUP to up) keeps the local blocklist and the evidence.
        const updates = await tbmeshJson<{bundles: Array<{path: string}>}>(['export-update', ...home('globex'), '--all', '--out', join(dir, 'updates')])
        const since = s.nebula.globex!.outputLength()
        await tbmeshJson(['install', updates.bundles[0].path, '--dir', installed('globex'), '--reload', '--pid-file', join(dir, which, 'globex.pid')])
        await s.nebula.globex!.waitForLog(/Caught HUP|reloading config/i, {since})
        expect(await readdir(join(installed('globex'), 'evidence'))).toEqual(files)
        const runtime = yaml.parse(await readFile(join(dir, which, 'run-globex', 'nebula.yml'), 'utf8')) as {pki: {blocklist: string[]}}
        expect(runtime.pki.blocklist).toContain(rogueFingerprint)
      }
      // SIGTERM to up stops Nebula; up exits with Nebula's status.
      await s.nebula.globex!.stop()
      expect(await s.nebula.globex!.exited).toEqual({exitCode: 0, signal: null})
    } finally {
      await stop(s)
    }
  }, 120_000)
})
})
