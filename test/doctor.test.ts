/**
 * `tbmesh doctor`: a real installation (init-ca → add-node → export-bundle → install, all through the CLI) passes
 * every check of its files, says that nothing runs yet, and finds the underlay guard loaded; installations broken for
 * real — multichain.conf bound elsewhere, an expired host certificate, another node's key, a compose override
 * publishing P2P on every interface, a config.yml nebula rejects, node secrets others may read, the underlay guard not
 * loaded or loaded for another node — fail the right check and exit 1, with --json too. Doctor runs inside a network
 * namespace of its own, where each installation's underlay guard is loaded with nft (never in the root namespace),
 * with a PATH holding only node, nebula, ip, nft and setpriv (no docker: doctor-docker.test.ts covers that). Needs
 * root, nebula, nft and a usable /dev/net/tun, like the end-to-end suite.
 */

import {chmod, copyFile, mkdir, readFile, symlink, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {installBundle} from '../src/bundle/install.js'
import {composePorts} from '../src/node/compose-ports.js'
import {doctor, type DoctorResult} from '../src/node/doctor.js'
import {createLab, type Lab, requireLab} from './e2e/netns.js'
import {removeDir, tbmesh, tbmeshJson, tempDir, which} from './helpers.js'

/** The checks of an installation's files, then of the running system (without Docker), then the underlay guard. */
const FILE_CHECKS = ['nebula', 'nebula-fixes', 'tun', 'nebula-test', 'systemd-unit', 'ca-pin', 'ca-validity', 'host-cert', 'host-cert-verify', 'host-key', 'peer-policy', 'evidence', 'node-env', 'multichain-conf', 'blockchain-env', 'compose-ports']
const RUNTIME_CHECKS = ['overlay-address', 'p2p-listener']
const ALL_CHECKS = [...FILE_CHECKS, ...RUNTIME_CHECKS, 'underlay-guard']
/** Checks that pass on a good installation with nothing running (the runtime ones warn). */
const PASSING = FILE_CHECKS.length + 1

/** The namespace doctor runs in (one host of a lab), where the guards are loaded. */
let lab: Lab | undefined
const NODE = 'node'
/** `nft ARGS` in the namespace. */
const nft = async (...args: string[]): Promise<void> => {
  await lab!.run(NODE, ['nft', ...args])
}
/** Loads `dir`'s underlay guard in the namespace (replacing whichever was loaded). */
const loadGuard = (dir: string): Promise<void> => nft('-f', join(dir, 'host', 'underlay-guard.nft'))
const unloadGuard = (): Promise<void> => nft('table inet tbmesh_guard {}; delete table inet tbmesh_guard')
/** `tbmesh doctor ARGS` in the namespace, with the PATH below. */
const doctorIn = (args: string[], opts: {uid?: number} = {}) => tbmesh(['doctor', ...args], {netns: lab!.host(NODE).name, env: {PATH: path}, ...opts})

let work: string
/** A PATH with node, nebula, ip, nft and setpriv only: doctor sees no docker, whatever this host has. */
let path: string
let pin: string
const home = (): string[] => ['--home', join(work, 'home')]
const bundles: Record<string, string> = {}
let expiredDir: string

/**
 * Runs `tbmesh doctor --dir DIR --json` in the namespace, after loading DIR's underlay guard there (unless `guard` is
 * false): exit code and the parsed result (printed whatever the exit code).
 */
async function doctorJson(dir: string, opts: {guard?: boolean} = {}): Promise<{exitCode: number | undefined; result: DoctorResult}> {
  if (opts.guard ?? true) await loadGuard(dir)
  const run = await doctorIn(['--dir', dir, '--json'])
  return {exitCode: run.exitCode, result: JSON.parse(String(run.stdout)) as DoctorResult}
}

const failed = (result: DoctorResult): string[] => result.checks.filter((c) => c.status === 'fail').map((c) => c.name)
const detail = (result: DoctorResult, name: string): string => result.checks.find((c) => c.name === name)!.detail

/** Installs node `name`'s bundle into `work/<label>` with the CLI; returns the directory. */
async function install(name: string, label: string): Promise<string> {
  const dir = join(work, label)
  await tbmeshJson(['install', bundles[name], '--dir', dir, '--ca-fingerprint', pin])
  return dir
}

beforeAll(async () => {
  requireLab()
  lab = await createLab([NODE])
  work = await tempDir('tbmesh-doctor-')
  path = join(work, 'bin')
  await mkdir(path)
  for (const cmd of ['node', 'nebula', 'ip', 'nft', 'setpriv']) await symlink(which(cmd), join(path, cmd))
  const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home(), '--network', 'doctor', '--cidr', '10.42.0.0/16', '--no-passphrase'])
  pin = init.caFingerprint
  await tbmeshJson(['add-node', ...home(), '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
  await tbmeshJson(['add-node', ...home(), '--org', 'Umbrella'])
  await tbmeshJson(['add-node', ...home(), '--org', 'Initech'])
  await tbmeshJson(['add-node', ...home(), '--org', 'Soon', '--duration', '10d'])
  const expiring = await tbmeshJson<{notAfter: string}>(['add-node', ...home(), '--org', 'Globex', '--duration', '2s'])
  for (const name of ['umbrella-1', 'initech-1', 'soon-1', 'globex-1']) {
    bundles[name] = join(work, `${name}.tar.gz`)
    await tbmeshJson(['export-bundle', ...home(), name, '--out', bundles[name], '--no-encrypt'])
  }
  // globex-1's certificate lives 2 seconds: install it as of a moment when it was valid, then let it expire.
  expiredDir = join(work, 'expired')
  const notAfter = Date.parse(expiring.notAfter)
  await installBundle(bundles['globex-1'], expiredDir, {pin, now: notAfter - 500})
  const wait = notAfter + 1500 - Date.now()
  if (wait > 0) await sleep(wait)
}, 180_000)

afterAll(async () => {
  await lab?.cleanup()
  await removeDir(work)
})

describe('a good installation', () => {
  let dir: string
  beforeAll(async () => {
    dir = await install('umbrella-1', 'good')
  }, 60_000)

  it('passes every check of its files, says that nothing runs yet, and exits 0', async () => {
    const {exitCode, result} = await doctorJson(dir)
    expect(result.checks.map((c) => c.name)).toEqual(ALL_CHECKS)
    expect(result.checks.filter((c) => c.status !== 'pass').map((c) => [c.name, c.status]), JSON.stringify(result.checks, null, 2)).toEqual([
      ['overlay-address', 'warn'],
      ['p2p-listener', 'warn'],
    ])
    expect(detail(result, 'overlay-address')).toBe('nebula1 does not exist: Nebula is not running (start it, then run doctor again)')
    expect(detail(result, 'p2p-listener')).toBe("nothing answers on 10.42.1.1:7447: TruBudget's blockchain is not running, nor is Nebula")
    expect(result).toMatchObject({dir, overlayIp: '10.42.1.1', ok: true, counts: {pass: PASSING, warn: 2, fail: 0}})
    expect(exitCode).toBe(0)
    expect(detail(result, 'node-env')).toBe("trubudget/node.env holds this node's secrets, readable by its owner only")
    expect(detail(result, 'multichain-conf')).toBe("multichain.conf bind and externalip are the certificate's overlay IP 10.42.1.1, its RPC password the node's own")
    expect(detail(result, 'nebula')).toMatch(/^nebula 1\.\d+\.\d+/)
    expect(detail(result, 'ca-pin')).toContain(pin)
    expect(detail(result, 'host-cert')).toMatch(/umbrella-1.*10\.42\.1\.1.*\d+ days left/)
  })

  it('prints one line per check, then a summary', async () => {
    await loadGuard(dir)
    const run = await doctorIn(['--dir', dir])
    expect(run.exitCode).toBe(0)
    const lines = String(run.stdout).split('\n')
    expect(lines.slice(0, FILE_CHECKS.length).every((l) => l.startsWith('✔ pass  '))).toBe(true)
    expect(lines.slice(FILE_CHECKS.length, FILE_CHECKS.length + RUNTIME_CHECKS.length).every((l) => l.startsWith('! warn  '))).toBe(true)
    expect(lines[ALL_CHECKS.length - 1]).toMatch(/^✔ pass {2}the underlay guard is loaded/)
    expect(lines[0]).toMatch(/^✔ pass {2}nebula 1\.\d+\.\d+/)
    expect(lines[ALL_CHECKS.length]).toBe(`${dir}: ${PASSING} passed, 2 warnings, 0 failed`)
    expect(String(run.stderr)).toBe('')
  })

  it('warns (exit 0) about a host certificate that expires within 30 days', async () => {
    const soon = await install('soon-1', 'soon')
    const {exitCode, result} = await doctorJson(soon)
    expect(result.checks.filter((c) => c.status !== 'pass').map((c) => [c.name, c.status])).toEqual([
      ['host-cert', 'warn'],
      ['overlay-address', 'warn'],
      ['p2p-listener', 'warn'],
    ])
    expect(detail(result, 'host-cert')).toMatch(/9 days left/)
    expect(exitCode).toBe(0)
  })
})

describe('broken installations fail the right check and exit 1', () => {
  it('multichain.conf bound to another address', async () => {
    const dir = await install('umbrella-1', 'wrong-bind')
    const conf = join(dir, 'multichain', 'multichain.conf')
    await writeFile(conf, (await readFile(conf, 'utf8')).replace('bind=10.42.1.1', 'bind=0.0.0.0'))
    const {exitCode, result} = await doctorJson(dir)
    expect(failed(result)).toEqual(['multichain-conf'])
    expect(detail(result, 'multichain-conf')).toBe("multichain.conf has bind=0.0.0.0, not the certificate's overlay IP 10.42.1.1")
    expect(result.ok).toBe(false)
    expect(exitCode).toBe(1)

    const human = await doctorIn(['--dir', dir])
    expect(human.exitCode).toBe(1)
    expect(String(human.stdout)).toContain("✖ fail  multichain.conf has bind=0.0.0.0, not the certificate's overlay IP 10.42.1.1")
    expect(String(human.stdout)).toContain(`${PASSING - 1} passed, 2 warnings, 1 failed`)
  })

  it("multichain.conf without the node's own RPC password", async () => {
    const dir = await install('umbrella-1', 'wrong-rpc')
    const conf = join(dir, 'multichain', 'multichain.conf')
    await writeFile(conf, (await readFile(conf, 'utf8')).replace(/^rpcpassword=.*$/m, 'rpcpassword=s750SiJnj50yIrmwxPnEdSzpfGlTAHzhaUwgqKeb0G1j'))
    const {exitCode, result} = await doctorJson(dir)
    expect(failed(result)).toEqual(['multichain-conf'])
    expect(detail(result, 'multichain-conf')).toContain("an rpcpassword other than trubudget/node.env's")
    expect(exitCode).toBe(1)
  })

  it('node secrets others may read, or missing', async () => {
    const dir = await install('umbrella-1', 'open-secrets')
    await chmod(join(dir, 'trubudget', 'node.env'), 0o644)
    const {exitCode, result} = await doctorJson(dir)
    expect(failed(result)).toEqual(['node-env'])
    expect(detail(result, 'node-env')).toBe("trubudget/node.env has mode 644: others may read the node's secrets (chmod 600 it)")
    expect(exitCode).toBe(1)
    await writeFile(join(dir, 'trubudget', 'node.env'), 'ROOT_SECRET=root-secret\n', {mode: 0o600})
    await chmod(join(dir, 'trubudget', 'node.env'), 0o600)
    const short = await doctorJson(dir)
    expect(detail(short.result, 'node-env')).toMatch(/^trubudget\/node\.env lacks MULTICHAIN_RPC_PASSWORD, ROOT_SECRET, JWT_SECRET/)
  })

  it('blockchain.env with another EXTERNAL_IP', async () => {
    const dir = await install('umbrella-1', 'wrong-env')
    const env = join(dir, 'trubudget', 'blockchain.env')
    await writeFile(env, (await readFile(env, 'utf8')).replace('EXTERNAL_IP=10.42.1.1', 'EXTERNAL_IP=203.0.113.9'))
    const {exitCode, result} = await doctorJson(dir)
    expect(failed(result)).toEqual(['blockchain-env'])
    expect(detail(result, 'blockchain-env')).toContain('EXTERNAL_IP=203.0.113.9')
    expect(exitCode).toBe(1)
  })

  it('an expired host certificate', async () => {
    const {exitCode, result} = await doctorJson(expiredDir)
    // nebula -test refuses an expired certificate too; the signature is still the CA's.
    expect(failed(result)).toEqual(['nebula-test', 'host-cert'])
    expect(detail(result, 'host-cert')).toMatch(/^host certificate "globex-1" \(10\.42\.4\.1, v1 Curve25519\) expired on /)
    expect(detail(result, 'host-cert-verify')).toContain('apart from its expiry')
    expect(exitCode).toBe(1)
  })

  it("another node's host.key", async () => {
    const dir = await install('umbrella-1', 'swapped-key')
    const other = await install('initech-1', 'initech')
    await copyFile(join(other, 'nebula', 'host.key'), join(dir, 'nebula', 'host.key'))
    const {exitCode, result} = await doctorJson(dir)
    // nebula -test checks the key against the certificate as well.
    expect(failed(result)).toEqual(['nebula-test', 'host-key'])
    expect(detail(result, 'host-key')).toMatch(/does not match the host certificate/)
    expect(exitCode).toBe(1)
  })

  it('a compose override that publishes 0.0.0.0:7447', async () => {
    const dir = await install('umbrella-1', 'exposed')
    const override = join(dir, 'docker', 'trubudget-operation.override.yml')
    const text = await readFile(override, 'utf8')
    expect(text).toContain('"10.42.1.1:7447:7447"')
    await writeFile(override, text.replace('"10.42.1.1:7447:7447"', '"0.0.0.0:7447:7447"'))
    const {exitCode, result} = await doctorJson(dir)
    expect(failed(result)).toEqual(['compose-ports'])
    expect(detail(result, 'compose-ports')).toContain('"beta-node: 0.0.0.0:7447:7447"')
    expect(exitCode).toBe(1)
  })

  it('a corrupted config.yml that nebula -test rejects', async () => {
    const dir = await install('umbrella-1', 'corrupted')
    await writeFile(join(dir, 'nebula', 'config.yml'), 'pki: [this is: not, {valid\nfirewall: ]\n')
    const {exitCode, result} = await doctorJson(dir)
    // The guard is loaded, but without config.yml's tun.dev doctor cannot tell whether it is the right one.
    expect(failed(result)).toEqual(['nebula-test', 'underlay-guard'])
    expect(detail(result, 'nebula-test')).toMatch(/^nebula -test rejects .*config\.yml: /)
    expect(detail(result, 'underlay-guard')).toBe(`the underlay guard is loaded, but cannot be checked: ${dir}/nebula/config.yml names no tun.dev`)
    expect(exitCode).toBe(1)
  })

  it('a ca.crt without the pinned CA', async () => {
    const dir = await install('umbrella-1', 'wrong-pin')
    const manifestFile = join(dir, 'manifest.json')
    const manifest = JSON.parse(await readFile(manifestFile, 'utf8'))
    await writeFile(manifestFile, JSON.stringify({...manifest, caFingerprint: 'ab'.repeat(32)}))
    const {exitCode, result} = await doctorJson(dir)
    expect(failed(result)).toEqual(['ca-pin'])
    expect(detail(result, 'ca-pin')).toBe(`manifest.json pins CA ${'ab'.repeat(32)}, but nebula/ca.crt does not hold it`)
    expect(exitCode).toBe(1)
  })

  it('the underlay guard not loaded, loaded for another node, or with a rule that lets packets through first', async () => {
    const dir = await install('umbrella-1', 'guarded')
    await unloadGuard()
    const none = await doctorJson(dir, {guard: false})
    expect(failed(none.result)).toEqual(['underlay-guard'])
    expect(detail(none.result, 'underlay-guard')).toBe(
      `the underlay guard is not loaded: any host on the underlay that routes 10.42.1.1 to this one reaches it past Nebula; load it: nft -f ${dir}/host/underlay-guard.nft`,
    )
    expect(none.exitCode).toBe(1)

    // initech-1's guard protects 10.42.3.1, not this node's 10.42.1.1.
    await loadGuard(await install('initech-1', 'initech-guard'))
    const other = await doctorJson(dir, {guard: false})
    expect(failed(other.result)).toEqual(['underlay-guard'])
    expect(detail(other.result, 'underlay-guard')).toMatch(/^the loaded underlay guard does not drop packets for 10\.42\.1\.1 that arrive off nebula1 .*: load the installation's guard again: nft -f /)

    await loadGuard(dir)
    await nft('insert', 'rule', 'inet', 'tbmesh_guard', 'prerouting', 'ip', 'saddr', '192.0.2.66', 'accept')
    const bypass = await doctorJson(dir, {guard: false})
    expect(failed(bypass.result)).toEqual(['underlay-guard'])
    expect(detail(bypass.result, 'underlay-guard')).toMatch(/^table inet tbmesh_guard holds a rule that is not the guard's/)

    await loadGuard(dir)
    const loaded = await doctorJson(dir, {guard: false})
    expect(loaded.result.ok).toBe(true)
    expect(detail(loaded.result, 'underlay-guard')).toMatch(/^the underlay guard is loaded: packets for 10\.42\.1\.1 are dropped unless they arrive on nebula1 or lo \(\d+ dropped so far\)$/)
  })

  it('the underlay guard cannot be checked without root: says to run as root', async (ctx) => {
    const dir = await install('umbrella-1', 'not-root')
    const asNobody = {uid: 65_534}
    if ((await tbmesh(['--version'], {netns: lab!.host(NODE).name, ...asNobody})).exitCode !== 0) ctx.skip() // checkout not readable by nobody
    await loadGuard(dir)
    await chmod(work, 0o711) // nobody may reach DIR (0700, root's), not read it
    try {
      const run = await doctorIn(['--dir', dir, '--json'], asNobody)
      const result = JSON.parse(String(run.stdout)) as DoctorResult
      expect(result.checks.find((c) => c.name === 'underlay-guard')).toEqual({name: 'underlay-guard', status: 'fail', detail: 'cannot check the underlay guard: run tbmesh doctor as root'})
      expect(run.exitCode).toBe(1)
    } finally {
      await chmod(work, 0o700)
    }
  })

  it('refuses a --dir that does not exist, in one line', async () => {
    const run = await tbmesh(['doctor', '--dir', join(work, 'nowhere')])
    expect(run.exitCode).toBe(1)
    expect(String(run.stderr).trim()).toBe(`Error: ${join(work, 'nowhere')} is not a directory: pass the --dir you gave \`tbmesh install\``)
    const json = await tbmesh(['doctor', '--dir', join(work, 'nowhere'), '--json'])
    expect(json.exitCode).toBe(1)
    expect(JSON.parse(String(json.stdout)).error.message).toContain('is not a directory')
  })
})

describe('doctor (module)', () => {
  it('checks the tun device it is given', async () => {
    const dir = join(work, 'good')
    const tun = async (device: string) => (await doctor(dir, {tunDevice: device})).checks.find((c) => c.name === 'tun')!
    expect(await tun(join(work, 'no-such-device'))).toMatchObject({status: 'fail', detail: expect.stringContaining('does not exist')})
    expect(await tun(bundles['umbrella-1'])).toMatchObject({status: 'fail', detail: expect.stringContaining('is not a character device')})
    expect(await tun('/dev/null')).toMatchObject({status: 'pass'})
  })
})

describe('composePorts', () => {
  const ip = '10.42.1.1'
  const override = (ports: string, tag = '!override'): string => `services:\n  blockchain:\n    ports: ${tag}\n${ports}`
  const check = (ports: string, tag?: string) => composePorts('o.yml', override(ports, tag), ip, 7447)

  it.each([
    ['no address', '      - "7447:7447"'],
    ['0.0.0.0', '      - "0.0.0.0:7447:7447"'],
    ['[::]', '      - "[::]:7447:7447"'],
    ['another address', '      - "192.0.2.1:7447:7447"'],
    ['the container port on another host port', '      - "7448:7447"'],
    ['a container port alone (random host port)', '      - "7447"'],
    ['a range', '      - "7440-7450:7440-7450"'],
    ['TruBudget\'s own mapping', '      - "${P2P_PORT}:${P2P_PORT}"'],
    ['long syntax', '      - {target: 7447, published: "7447", host_ip: 0.0.0.0, protocol: tcp}'],
    ['long syntax without host_ip', '      - {target: 7447, published: 7447}'],
    ['beside the right one', `      - "${ip}:7447:7447"\n      - "7447:7447/tcp"`],
  ])('fails for P2P published on %s', (_label, ports) => {
    const [status, text] = check(ports)
    expect(status).toBe('fail')
    expect(text).toMatch(/^o\.yml publishes MultiChain P2P port 7447 beyond the overlay IP 10\.42\.1\.1: "blockchain: /)
  })

  it('passes the overlay IP only, in short and long syntax, with other ports anywhere', () => {
    expect(check(`      - "${ip}:7447:7447"\n      - "8080:8080"\n      - "127.0.0.1:\${BLOCKCHAIN_PORT:-8085}:8085"`)[0]).toBe('pass')
    expect(check(`      - {target: 7447, published: "7447", host_ip: "${ip}"}`)[0]).toBe('pass')
  })

  it('warns when it cannot tell, when P2P is not published, or when the list merges with the base file', () => {
    expect(check('      - "${SOMEWHERE}:7447"')).toEqual(['warn', 'o.yml has port mappings doctor cannot read: "blockchain: ${SOMEWHERE}:7447 (${SOMEWHERE})"'])
    expect(check('      - "127.0.0.1:8000:8000"')[1]).toMatch(/does not publish MultiChain P2P port 7447/)
    expect(check(`      - "${ip}:7447:7447"`, '')[1]).toMatch(/lack !override/)
    expect(composePorts('o.yml', 'services: {}\n', ip, 7447)[0]).toBe('warn')
    expect(composePorts('o.yml', 'services: [\n', ip, 7447)).toEqual(['fail', expect.stringMatching(/^o\.yml is not valid YAML/)])
  })
})
