/**
 * `tbmesh up` as a node runtime, on real Nebula 1.6.1 in network namespaces, in a single-CA network (the same `up`
 * runs there; its address check holds by construction):
 *
 * - the underlay guard is loaded before Nebula starts, and a guard that does not load keeps Nebula from starting;
 * - both nodes under `up` carry TCP and ICMP between them once `up` watches; SIGHUP reaches Nebula; up prints no
 *   secret; a reload brings no warning, a frozen Nebula one, and up says when it watches again;
 * - Nebula's environment holds nothing of tbmesh's (the passphrase variables of the parent do not reach it);
 * - up exits with Nebula's status (128 + 9 when Nebula is killed) and removes its pid file and runtime files;
 * - while up cannot reach Nebula's debug server, Nebula's firewall stays closed (the lighthouse's pings die over an
 *   established tunnel); up then stops Nebula and exits 1 (fail closed).
 *
 * Fails (never skips) when it cannot run: it needs root, iproute2, nft, /dev/net/tun and nebula.
 */

import {mkdir, readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BIN, removeDir, tbmeshJson, tempDir} from '../helpers.js'
import {createLab, type Lab, type NebulaProcess, requireLab} from './netns.js'

const P2P = 7447
const SECRET = 'not-for-nebula-7f3a'

interface Added {name: string; overlayIp: string}

/** An nftables guard like the one `tbmesh install` writes: drop packets for `ip` that did not come in on the tun device. */
function guard(ip: string): string {
  return `table inet tbmesh_guard {}
delete table inet tbmesh_guard
table inet tbmesh_guard {
\tchain prerouting {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tip daddr { ${ip} } iifname != { "nebula1", "lo" } counter drop comment "tbmesh underlay guard"
\t}
}
`
}

describe('tbmesh up on real Nebula nodes (single CA)', () => {
  let lab: Lab | undefined
  let dir: string
  const node = {} as Record<'lighthouse' | 'umbrella', Added>
  const installDir = (label: string) => join(dir, label)

  /** `tbmesh up` for `label` with the passphrase variables set in its own environment. */
  const upCommand = (label: string) => [
    'env',
    `TBMESH_CA_PASSPHRASE=${SECRET}`,
    `TBMESH_BUNDLE_PASSPHRASE=${SECRET}`,
    process.execPath,
    BIN,
    'up',
    '--dir',
    installDir(label),
    '--run-dir',
    join(dir, `run-${label}`),
    '--pid-file',
    join(dir, `${label}.pid`),
  ]
  const start = async (label: 'lighthouse' | 'umbrella'): Promise<NebulaProcess> =>
    lab!.startNebula(label, join(installDir(label), 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1', command: upCommand(label)})

  beforeAll(async () => {
    requireLab()
    dir = await tempDir('tbmesh-e2e-up-')
    lab = await createLab(['lighthouse', 'umbrella'])
    const home = ['--home', join(dir, 'home')]
    const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home, '--network', 'single', '--cidr', '10.78.0.0/16', '--no-passphrase'])
    node.lighthouse = await tbmeshJson<Added>(['add-node', ...home, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', `${lab.host('lighthouse').underlayIp}:4242`])
    node.umbrella = await tbmeshJson<Added>(['add-node', ...home, '--org', 'Umbrella'])
    for (const label of ['lighthouse', 'umbrella'] as const) {
      const bundle = join(dir, `${label}.tar.gz`)
      await tbmeshJson(['export-bundle', ...home, node[label].name, '--out', bundle, '--no-encrypt'])
      await tbmeshJson(['install', bundle, '--dir', installDir(label), '--ca-fingerprint', init.caFingerprint])
    }
  }, 120_000)

  afterAll(async () => {
    await lab?.cleanup()
    if (dir) await removeDir(dir)
  })

  it('does not start Nebula when the underlay guard does not load', async () => {
    await mkdir(join(installDir('lighthouse'), 'host'), {recursive: true})
    await writeFile(join(installDir('lighthouse'), 'host', 'underlay-guard.nft'), 'table inet tbmesh_guard { this is not nft }\n')
    const up = lab!.start('lighthouse', upCommand('lighthouse'))
    const exit = await up.exited
    expect(exit.exitCode, up.output()).not.toBe(0)
    expect(up.output()).toMatch(/underlay guard .* did not load/)
    const links = await lab!.run('lighthouse', ['ip', '-o', 'link', 'show'])
    expect(links.stdout).not.toContain('nebula1')
  })

  it('loads the guard, runs both nodes in single-CA mode, passes SIGHUP on, and keeps secrets away from Nebula', async () => {
    await writeFile(join(installDir('lighthouse'), 'host', 'underlay-guard.nft'), guard(node.lighthouse.overlayIp))
    const lighthouse = await start('lighthouse')
    const umbrella = await start('umbrella')
    const table = await lab!.run('lighthouse', ['nft', 'list', 'table', 'inet', 'tbmesh_guard'])
    expect(table.stdout).toContain(node.lighthouse.overlayIp)

    const listener = await lab!.listen('lighthouse', node.lighthouse.overlayIp, P2P)
    try {
      await lab!.waitForTcp('umbrella', node.lighthouse.overlayIp, P2P, {timeoutMs: 30_000})
    } finally {
      await listener.close()
    }
    expect(umbrella.output()).toMatch(/tbmesh up: nebula \(pid \d+\) runs umbrella-1 .*single CA/)
    expect(umbrella.output()).toMatch(/tbmesh up: watching the tunnels of Nebula \d+\.\d+\.\d+ over its debug server on 127\.0\.0\.1:\d+/)
    // Once up watches, the installed rules are in force: ICMP is answered (the same ping dies in the last test).
    const ping = await lab!.run('lighthouse', ['ping', '-n', '-c', '3', '-i', '0.3', '-W', '1', node.umbrella.overlayIp], {reject: false})
    expect(ping.stdout).toMatch(/ [1-3] received/)

    // A reload restarts Nebula's debug server: up reconnects without a warning.
    const beforeReload = umbrella.outputLength()
    await umbrella.reload()

    // Nebula is up's child: its environment has no tbmesh variable, although up's has two.
    const children = (await readFile(`/proc/${umbrella.pid}/task/${umbrella.pid}/children`, 'utf8')).trim().split(/\s+/)
    expect(children).toHaveLength(1)
    const environ = await readFile(`/proc/${children[0]}/environ`, 'utf8')
    expect(environ).not.toContain(SECRET)
    expect(await readFile(`/proc/${umbrella.pid}/environ`, 'utf8')).toContain(SECRET)
    for (const p of [lighthouse, umbrella]) expect(p.output()).not.toMatch(/PRIVATE KEY|rpcpassword/i)

    // Nebula frozen for 3 s: up warns once that it cannot read the tunnels, and says when it can again.
    await sleep(1500)
    expect(umbrella.output().slice(Math.max(0, beforeReload - (umbrella.outputLength() - umbrella.output().length)))).not.toContain('cannot read Nebula')
    const beforeFreeze = umbrella.outputLength()
    process.kill(Number(children[0]), 'SIGSTOP')
    await sleep(3000)
    process.kill(Number(children[0]), 'SIGCONT')
    await umbrella.waitForLog(/Warning: cannot read Nebula's tunnels \(.+\); retrying/, {since: beforeFreeze})
    await umbrella.waitForLog(/tbmesh up: watching Nebula's tunnels again/, {since: beforeFreeze, timeoutMs: 10_000})

    // Killing Nebula ends up with Nebula's status, 128 + 9, and up cleans after itself.
    process.kill(Number(children[0]), 'SIGKILL')
    expect(await umbrella.exited).toEqual({exitCode: 137, signal: null})
    expect(await readdir(join(dir, 'run-umbrella'))).toEqual([])
    expect(await readdir(dir)).not.toContain('umbrella.pid')
    await lighthouse.stop()
    expect(await lighthouse.exited).toEqual({exitCode: 0, signal: null})
  })

  it('carries nothing while it cannot watch Nebula, then stops it and exits 1 (fail closed)', async () => {
    // A real nebula whose debug server listens elsewhere than up was told: up can never connect.
    const wrapper = join(dir, 'nebula-elsewhere.sh')
    await writeFile(wrapper, '#!/bin/sh\nsed "s/listen: 127.0.0.1:[0-9]*/listen: 127.0.0.1:1/" "$2" > "$2.elsewhere" && exec nebula -config "$2.elsewhere"\n', {mode: 0o755})
    const lighthouse = await lab!.startNebula('lighthouse', join(installDir('lighthouse'), 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1'})
    try {
      const up = await lab!.startNebula('umbrella', join(installDir('umbrella'), 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1', command: [...upCommand('umbrella'), '--nebula', wrapper]})
      // Nebula runs, the tunnel comes up, but its firewall has no rule until up watches it: the lighthouse's pings die
      // (with the installed rules, which allow ICMP, they are answered).
      const ping = await lab!.run('lighthouse', ['ping', '-n', '-c', '6', '-i', '0.5', '-W', '1', node.umbrella.overlayIp], {reject: false})
      expect(ping.stdout).toMatch(/ 0 received/)
      // ... over an established tunnel: the two nodes did handshake.
      expect(lighthouse.output()).toMatch(/Handshake message (received|sent).*umbrella-1/)
      expect(up.isRunning()).toBe(true)
      expect(await up.exited).toEqual({exitCode: 1, signal: null})
      expect(up.output()).toMatch(/did not answer for 10 s .*stopped Nebula rather than run it unwatched/)
      expect(up.output()).not.toContain('watching the tunnels')
      expect((await lab!.run('umbrella', ['ip', '-o', 'link', 'show'])).stdout).not.toContain('nebula1')
    } finally {
      await lighthouse.stop()
    }
  }, 60_000)
})
