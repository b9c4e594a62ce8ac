/**
 * TruBudget's traffic between organizations on real Nebula nodes in network namespaces, as tbmesh's bundles set it up:
 *
 * - Registrars: Umbrella's node is a registrar (`add-node --registrar`); Globex's node was added with
 *   `--register-at umbrella-1`. A stand-in for TruBudget's API listens on the registrar's overlay IP:8080; the values
 *   Globex's installation gives its blockchain (`API_PROTOCOL`, `API_HOST`, `API_PORT`) lead its stand-in to POST
 *   `/api/network.registerNode` there, over the overlay. A node that is not a registrar does not accept the API.
 * - Documents: a stand-in storage service on Globex's overlay IP:8090 is reachable from another member (Initech).
 * - MultiChain RPC (8000) and the blockchain container's API (8085) are not, though their stand-ins listen.
 * - doctor, run in the node's namespace, sees the overlay IP on the tun device and fails P2P listening everywhere.
 * - Boot order: with the installation's host/tbmesh-sysctl.conf applied in the node's namespace, a process binds the
 *   overlay IP:7447 before Nebula has brought the address up (as Docker publishes at boot) and serves peers once
 *   Nebula runs; without it, that bind fails ("cannot assign requested address").
 *
 * Fails (never skips) when it cannot run: it needs root, iproute2, /dev/net/tun and nebula.
 */

import {mkdir, readFile, symlink} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {BIN, removeDir, tbmeshJson, tempDir, which} from '../helpers.js'
import {createLab, type Lab, requireLab} from './netns.js'

const LABELS = ['origin', 'registrar', 'joiner', 'member'] as const
type Label = (typeof LABELS)[number]

/** `NAME=value` lines of an env file. */
const envFile = async (file: string): Promise<Record<string, string>> =>
  Object.fromEntries((await readFile(file, 'utf8')).split('\n').filter((l) => /^[A-Z][A-Z0-9_]*=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))

describe('registrars, documents and boot order on real Nebula nodes', () => {
  let lab: Lab | undefined
  let dir: string
  const ip = {} as Record<Label, string>
  const installed = (label: Label, ...rel: string[]): string => join(dir, label, ...rel)

  beforeAll(async () => {
    requireLab()
    dir = await tempDir('tbmesh-e2e-registrar-')
    lab = await createLab([...LABELS])
    const home = ['--home', join(dir, 'home')]
    const init = await tbmeshJson<{caFingerprint: string}>(['init-ca', ...home, '--network', 'e2e', '--cidr', '10.42.0.0/16', '--no-passphrase'])
    const add = async (args: string[]) => tbmeshJson<{name: string; overlayIp: string}>(['add-node', ...home, ...args])
    const added: Record<Label, {name: string; overlayIp: string}> = {
      origin: await add(['--org', 'ACME', '--origin', '--lighthouse', '--endpoint', `${lab.host('origin').underlayIp}:4242`]),
      registrar: await add(['--org', 'Umbrella', '--registrar']),
      joiner: await add(['--org', 'Globex', '--register-at', 'umbrella-1']),
      member: await add(['--org', 'Initech']),
    }
    for (const label of LABELS) {
      ip[label] = added[label].overlayIp
      const bundle = join(dir, `${label}.tar.gz`)
      await tbmeshJson(['export-bundle', ...home, added[label].name, '--out', bundle, '--no-encrypt'])
      await tbmeshJson(['install', bundle, '--dir', installed(label), '--ca-fingerprint', init.caFingerprint])
    }
  }, 180_000)

  afterAll(async () => {
    await lab?.cleanup()
    if (dir) await removeDir(dir)
  })

  it('boot order: without the sysctl a bind to the overlay IP fails before Nebula runs; with it, it serves once Nebula does', async () => {
    // The failure Docker meets at boot when it publishes on the overlay IP before Nebula has brought it up.
    await expect(lab!.listen('registrar', ip.registrar, 7447)).rejects.toThrow(/LISTEN-ERROR EADDRNOTAVAIL/)
    // The installation's sysctl file, applied in the joiner's namespace (ip_nonlocal_bind is per network namespace).
    await lab!.run('joiner', ['sysctl', '-p', installed('joiner', 'host', 'tbmesh-sysctl.conf')])
    const early = await lab!.listen('joiner', ip.joiner, 7447)
    for (const label of LABELS) await lab!.startNebula(label, installed(label, 'nebula', 'config.yml'), {cwd: '/', tunDev: 'nebula1'})
    await lab!.waitForTcp('origin', ip.joiner, 7447)
    expect(early.accepted().length).toBeGreaterThanOrEqual(1)
    await early.close()
  })

  it('doctor sees the overlay IP on the tun device, and fails MultiChain P2P listening on every interface', async () => {
    // A PATH without docker: this checks the host without Docker.
    const bin = join(dir, 'bin')
    await mkdir(bin, {recursive: true})
    for (const cmd of ['node', 'nebula', 'ip']) await symlink(which(cmd), join(bin, cmd)).catch(() => {})
    const doctor = async (): Promise<Record<string, {status: string; detail: string}>> => {
      const r = await lab!.run('joiner', ['env', `PATH=${bin}`, 'node', BIN, 'doctor', '--dir', installed('joiner'), '--json'], {reject: false})
      return Object.fromEntries((JSON.parse(r.stdout) as {checks: Array<{name: string; status: string; detail: string}>}).checks.map((c) => [c.name, c]))
    }
    const bound = await lab!.listen('joiner', ip.joiner, 7447)
    let checks = await doctor()
    expect(checks['overlay-address']).toEqual({name: 'overlay-address', status: 'pass', detail: `nebula1 holds the overlay IP ${ip.joiner}`})
    expect(checks['p2p-listener']).toMatchObject({status: 'pass', detail: `MultiChain P2P listens on ${ip.joiner}:7447 only`})
    await bound.close()
    const everywhere = await lab!.listen('joiner', '0.0.0.0', 7447)
    checks = await doctor()
    expect(checks['p2p-listener']).toMatchObject({status: 'fail', detail: expect.stringMatching(/^something listens on every interface on port 7447/)})
    await everywhere.close()
  })

  it("the joining node's blockchain finds its registrar's API over the overlay: POST /api/network.registerNode arrives", async () => {
    const env = await envFile(installed('joiner', 'trubudget', 'blockchain.env'))
    expect(env).toMatchObject({P2P_HOST: ip.registrar, API_HOST: ip.registrar, API_PROTOCOL: 'http', API_PORT: '8080', ORGANIZATION: 'Globex'})
    // The compose files say the same (trubudget.env, under TruBudget's .env names).
    expect(await envFile(installed('joiner', 'docker', 'trubudget.env'))).toMatchObject({P2P_HOST: ip.registrar, EXTERNAL_ALPHA_API_HOST: ip.registrar})
    const api = await lab!.httpServer('registrar', ip.registrar, Number(env.API_PORT))
    const p2p = await lab!.listen('registrar', ip.registrar, Number(env.P2P_PORT))
    try {
      // MultiChain joins at P2P_HOST first (the tunnel comes up), then the blockchain registers at API_HOST.
      await lab!.waitForTcp('joiner', env.P2P_HOST, Number(env.P2P_PORT))
      const body = JSON.stringify({apiVersion: '1.0', data: {address: '1ExampleWalletAddressOfGlobex', organization: env.ORGANIZATION}})
      const posted = await lab!.httpPost('joiner', `${env.API_PROTOCOL}://${env.API_HOST}:${env.API_PORT}/api/network.registerNode`, body)
      expect(posted).toMatchObject({ok: true, status: 200})
      const [request] = api.requests()
      expect(request).toMatchObject({method: 'POST', url: '/api/network.registerNode', body})
      expect(request.remote.split(':')[0]).toBe(ip.joiner) // over the overlay
    } finally {
      await api.close()
      await p2p.close()
    }
  })

  it('a node that is not a registrar does not accept the API', async () => {
    const api = await lab!.httpServer('member', ip.member, 8080)
    try {
      const p2p = await lab!.listen('member', ip.member, 7447)
      await lab!.waitForTcp('joiner', ip.member, 7447) // the tunnel is up: a failure below is the firewall
      await p2p.close()
      expect(await lab!.httpPost('member', `http://${ip.member}:8080/`, '{}')).toMatchObject({ok: true, status: 200}) // it serves locally
      const posted = await lab!.httpPost('joiner', `http://${ip.member}:8080/api/network.registerNode`, '{}')
      expect(posted).toMatchObject({ok: false, reason: 'timeout'})
      expect(api.requests().filter((r) => r.remote.split(':')[0] !== ip.member)).toEqual([])
    } finally {
      await api.close()
    }
  })

  it('the storage service is reachable from another member; MultiChain RPC and the blockchain API are not', async () => {
    const storage = await lab!.listen('joiner', ip.joiner, 8090)
    const rpc = await lab!.listen('registrar', ip.registrar, 8000)
    const blockchainApi = await lab!.listen('registrar', ip.registrar, 8085)
    try {
      await lab!.waitForTcp('member', ip.joiner, 8090)
      expect(storage.accepted().some((a) => a.startsWith(`${ip.member}:`))).toBe(true)
      // The listeners serve (locally); over the overlay the firewall drops them.
      expect((await lab!.connect('registrar', ip.registrar, 8000)).ok).toBe(true)
      const p2p = await lab!.listen('registrar', ip.registrar, 7447)
      await lab!.waitForTcp('joiner', ip.registrar, 7447)
      await p2p.close()
      for (const port of [8000, 8085]) {
        const attempt = await lab!.connect('joiner', ip.registrar, port, 3000)
        expect(attempt, String(port)).toMatchObject({ok: false, reason: 'timeout'})
      }
      expect(rpc.accepted().filter((a) => !a.startsWith(`${ip.registrar}:`))).toEqual([])
      expect(blockchainApi.accepted()).toEqual([])
    } finally {
      await storage.close()
      await rpc.close()
      await blockchainApi.close()
    }
  })
})
