/**
 * The data-plane figures of `npm run bench`, on real Nebula in network namespaces (test/e2e/netns.ts), for each Nebula
 * build given (test/e2e/debian.ts):
 *
 * 1. TCP throughput over the overlay (iperf3, on the MultiChain P2P port the firewall opens) with the config tbmesh
 *    renders, against Nebula's own example config (`examples/config.yml` as Debian ships it, with only what must be
 *    network-specific filled in: certificates, the lighthouse, and the P2P port opened), in the same namespaces with
 *    the same certificates (target ≥ 1.0×); and the raw underlay (veth over a bridge), reported. Rounds alternate the
 *    two configs; medians.
 * 2. Join latency: from starting nebula on a node to its first TCP connection across the overlay to another
 *    organization's node (found through the lighthouse). Median of several joins.
 * 3. Revocation latency: from `tbmesh install --reload` of the update that blocklists a node, on the node it talks
 *    to, to the moment the revoked node's open TCP connection stops passing packets (its last echo). Median of
 *    several revocations, a fresh node each.
 *
 * Needs root (network namespaces), nebula and iperf3; says so and measures nothing without them.
 */

import {execFileSync} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {parse, stringify} from 'yaml'

import {type NebulaBuild, nebulaBuild} from '../e2e/debian.js'
import {createLab, type Lab, type NebulaProcess, requireLab} from '../e2e/netns.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const BIN = join(ROOT, 'bin', 'run.js')
const P2P = 7447
/** Seconds of each iperf3 run, and rounds per config. */
const IPERF_SECONDS = 5
const ROUNDS = 3
const JOINS = 5
const REVOCATIONS = 5

type Report = (label: string, value: string) => void

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

/** Runs tbmesh with `--json` and returns the result; throws with its stderr on failure. */
function tbmesh<T>(args: string[], env: Record<string, string> = {}): T {
  const out = execFileSync('node', [BIN, ...args, '--json'], {env: {...process.env, NODE_ENV: undefined, ...env}, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']})
  return JSON.parse(out) as T
}

/** Why the data-plane figures cannot be measured here, or undefined. */
function missing(): string | undefined {
  try {
    requireLab()
  } catch (error) {
    return (error as Error).message.split('\n')[0]
  }
  try {
    execFileSync('iperf3', ['--version'], {stdio: 'ignore'})
  } catch {
    return 'iperf3 is not installed (apt-get install iperf3)'
  }
  return undefined
}

/** Measures and reports the data-plane figures for each of `buildNames` (default: the oldest and the newest). */
export async function dataPlane(report: Report, buildNames: Array<'oldest' | 'newest'> = ['oldest', 'newest']): Promise<void> {
  const why = missing()
  if (why) {
    report('data plane', `skipped: ${why}`)
    return
  }
  for (const name of buildNames) {
    const build = await nebulaBuild(name)
    const bench = await Bench.create(build)
    try {
      await bench.throughput(report)
      await bench.joinLatency(report)
      await bench.revocationLatency(report)
    } finally {
      await bench.close()
    }
  }
}

/** One lab (lighthouse `lh`, nodes `a` and `b` of other organizations) and one tbmesh network, for one build. */
class Bench {
  private nebula: Partial<Record<'lh' | 'a' | 'b', NebulaProcess>> = {}
  private revoked = 0

  private constructor(
    private readonly build: NebulaBuild,
    private readonly lab: Lab,
    private readonly dir: string,
    private readonly pin: string,
    private readonly ip: Record<'lh' | 'a' | 'b', string>,
  ) {}

  static async create(build: NebulaBuild): Promise<Bench> {
    const dir = await mkdtemp(join(tmpdir(), 'tbmesh-bench-net-'))
    const lab = await createLab(['lh', 'a', 'b'])
    try {
      const home = ['--home', join(dir, 'home')]
      const {caFingerprint} = tbmesh<{caFingerprint: string}>(['init-ca', ...home, '--network', 'bench', '--cidr', '10.42.0.0/16', '--no-passphrase'])
      const ip = {} as Record<'lh' | 'a' | 'b', string>
      const nodes = [['lh', ['--org', 'ACME', '--origin', '--lighthouse', '--endpoint', `${lab.host('lh').underlayIp}:4242`]], ['a', ['--org', 'Umbrella']], ['b', ['--org', 'Initech']]] as const
      for (const [label, flags] of nodes) {
        const added = tbmesh<{name: string; overlayIp: string}>(['add-node', ...home, ...flags])
        ip[label] = added.overlayIp
        const bundle = join(dir, `${label}.tar.gz`)
        tbmesh(['export-bundle', ...home, added.name, '--out', bundle, '--no-encrypt'])
        tbmesh(['install', bundle, '--dir', join(dir, label), '--ca-fingerprint', caFingerprint], {PATH: `${dirname(build.nebula)}:${process.env.PATH}`})
      }
      return new Bench(build, lab, dir, caFingerprint, ip)
    } catch (error) {
      await lab.cleanup()
      await rm(dir, {recursive: true, force: true})
      throw error
    }
  }

  async close(): Promise<void> {
    try {
      await this.lab.cleanup()
    } finally {
      await rm(this.dir, {recursive: true, force: true})
    }
  }

  private get name(): string {
    return `nebula ${this.build.version} (${this.build.label})`
  }

  private async start(label: 'lh' | 'a' | 'b', config = join(this.dir, label, 'nebula', 'config.yml')): Promise<NebulaProcess> {
    const proc = await this.lab.startNebula(label, config, {cwd: '/', tunDev: 'nebula1', binary: this.build.nebula})
    this.nebula[label] = proc
    return proc
  }

  private async stopAll(): Promise<void> {
    await Promise.all(Object.values(this.nebula).map(async (p) => p?.stop()))
    this.nebula = {}
  }

  /** Resolves once something in `label`'s namespace listens on TCP `ip:port`. */
  private async listening(label: 'a' | 'b', ip: string, port: number): Promise<void> {
    const deadline = Date.now() + 10_000
    while ((await this.lab.run(label, ['ss', '-Hltn', 'src', `${ip}:${port}`])).stdout.trim() === '') {
      if (Date.now() > deadline) throw new Error(`nothing listens on ${ip}:${port} in ${label}`)
      await sleep(50)
    }
  }

  /** Mbit/s of one iperf3 run from `a` to `ip` (a server started on `b`), received side. */
  private async iperf(ip: string): Promise<number> {
    const server = this.lab.run('b', ['iperf3', '-s', '-1', '-B', ip, '-p', String(P2P)], {timeoutMs: (IPERF_SECONDS + 30) * 1000, reject: false})
    await this.listening('b', ip, P2P)
    // The first packets to a peer wait for the handshake: have the tunnel up before measuring.
    if (ip !== this.lab.host('b').underlayIp) await this.lab.run('a', ['ping', '-c', '1', '-W', '5', ip], {reject: false, timeoutMs: 10_000})
    const client = await this.lab.run('a', ['iperf3', '-c', ip, '-p', String(P2P), '-t', String(IPERF_SECONDS), '-J'], {timeoutMs: (IPERF_SECONDS + 30) * 1000})
    await server
    const result = JSON.parse(client.stdout) as {end: {sum_received: {bits_per_second: number}}}
    return result.end.sum_received.bits_per_second / 1e6
  }

  /** Nebula's example config for `label`, with only the network-specific values filled in. */
  private async exampleConfig(label: 'a' | 'b' | 'lh'): Promise<string> {
    const own = join(dirname(dirname(this.build.nebula)), 'share', 'doc', 'nebula', 'examples', 'config.yml')
    // Debian 12's package ships no example: use the newest build's (the keys it sets are read alike by 1.6).
    const source = existsSync(own) ? own : join(dirname(dirname((await nebulaBuild('newest')).nebula)), 'share', 'doc', 'nebula', 'examples', 'config.yml')
    const doc = parse(await readFile(source, 'utf8')) as Record<string, any>
    const installed = join(this.dir, label, 'nebula')
    doc.pki = {ca: join(installed, 'ca.crt'), cert: join(installed, 'host.crt'), key: join(installed, 'host.key')}
    doc.static_host_map = {[this.ip.lh]: [`${this.lab.host('lh').underlayIp}:4242`]}
    doc.lighthouse = {...doc.lighthouse, am_lighthouse: label === 'lh', hosts: label === 'lh' ? [] : [this.ip.lh]}
    // The example opens 443 and 8080 to some groups; the workload here is TCP on the P2P port, from any host.
    doc.firewall.inbound = [{port: 'any', proto: 'icmp', host: 'any'}, {port: P2P, proto: 'tcp', host: 'any'}]
    const file = join(this.dir, `${label}.example.yml`)
    await writeFile(file, stringify(doc))
    return file
  }

  async throughput(report: Report): Promise<void> {
    const underlay: number[] = []
    const rendered: number[] = []
    const example: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      underlay.push(await this.iperf(this.lab.host('b').underlayIp))
      for (const [results, config] of [[rendered, undefined], [example, 'example']] as const) {
        await this.start('lh', config ? await this.exampleConfig('lh') : undefined)
        await Promise.all((['a', 'b'] as const).map(async (l) => this.start(l, config ? await this.exampleConfig(l) : undefined)))
        results.push(await this.iperf(this.ip.b))
        await this.stopAll()
      }
    }
    const [u, r, e] = [median(underlay), median(rendered), median(example)]
    report(`${this.name}: TCP throughput, tbmesh config`, `${r.toFixed(0)} Mbit/s`)
    report(`${this.name}: TCP throughput, Nebula's example config`, `${e.toFixed(0)} Mbit/s`)
    report(`${this.name}: tbmesh / example config (target ≥ 1.0×)`, `${(r / e).toFixed(2)}×`)
    report(`${this.name}: raw underlay (veth, bridge), for scale`, `${u.toFixed(0)} Mbit/s (overlay = ${((r / u) * 100).toFixed(1)} %)`)
  }

  async joinLatency(report: Report): Promise<void> {
    await this.start('lh')
    await this.start('b')
    const listener = await this.lab.listen('b', this.ip.b, P2P)
    const joins: number[] = []
    try {
      for (let i = 0; i < JOINS; i++) {
        const started = Date.now()
        const a = await this.start('a')
        await this.lab.waitForTcp('a', this.ip.b, P2P, {timeoutMs: 30_000, attemptTimeoutMs: 5000, intervalMs: 20})
        joins.push(Date.now() - started)
        await a.stop()
        delete this.nebula.a
      }
    } finally {
      await listener.close()
      await this.stopAll()
    }
    report(`${this.name}: join latency (nebula start → first TCP across), median of ${JOINS}`, `${median(joins)} ms (${joins.join(', ')})`)
  }

  async revocationLatency(report: Report): Promise<void> {
    await this.start('lh')
    const b = await this.start('b')
    const pidFile = join(this.dir, 'b.pid')
    await writeFile(pidFile, `${b.pid}\n`)
    // Runs until the lab is cleaned up.
    void this.lab.run('b', [process.execPath, '-e', ECHO_SERVER, this.ip.b, String(P2P)], {timeoutMs: 30 * 60_000, reject: false})
    const latencies: number[] = []
    try {
      await this.listening('b', this.ip.b, P2P)
      const home = ['--home', join(this.dir, 'home')]
      for (let i = 0; i < REVOCATIONS; i++) {
        // A fresh Umbrella node each time: a revoked one stays revoked.
        const name = `revoked-${++this.revoked}`
        tbmesh(['add-node', ...home, '--org', 'Umbrella', '--name', name])
        const bundle = join(this.dir, `${name}.tar.gz`)
        tbmesh(['export-bundle', ...home, name, '--out', bundle, '--no-encrypt'])
        tbmesh(['install', bundle, '--dir', join(this.dir, name), '--ca-fingerprint', this.pin])
        const a = await this.start('a', join(this.dir, name, 'nebula', 'config.yml'))
        // The node holds an open connection and echoes through it every 20 ms until the echoes stop.
        const talking = this.lab.run('a', [process.execPath, '-e', ECHO_CLIENT, this.ip.b, String(P2P)], {timeoutMs: 120_000})
        await sleep(1500)
        tbmesh(['revoke', ...home, name])
        const update = tbmesh<{bundles: Array<{path: string; manifest: {node: string}}>}>(['export-update', ...home, 'initech-1', '--out', join(this.dir, `updates-${name}`)])
        const started = Date.now()
        tbmesh(['install', update.bundles[0].path, '--dir', join(this.dir, 'b'), '--reload', '--pid-file', pidFile])
        const out = JSON.parse((await talking).stdout) as {lastEcho: number; echoes: number}
        if (out.echoes === 0) throw new Error(`${name} never talked to initech-1`)
        latencies.push(Math.max(0, out.lastEcho - started))
        await a.stop()
        delete this.nebula.a
      }
    } finally {
      await this.stopAll()
    }
    report(`${this.name}: revocation latency (install --reload → packets stop), median of ${REVOCATIONS}`, `${median(latencies)} ms (${latencies.join(', ')})`)
  }
}

/** TCP echo server on ip:port: writes back whatever it reads, for every connection. */
const ECHO_SERVER = `
const net = require('node:net');
const [ip, port] = process.argv.slice(1);
net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen({host: ip, port: Number(port)});
`

/**
 * Connect to ip:port, send one byte every 20 ms and count the echoes; once no echo came for 3 s (or after 100 s),
 * print {lastEcho: epoch ms of the last echo, echoes} and exit.
 */
const ECHO_CLIENT = `
const net = require('node:net');
const [ip, port] = process.argv.slice(1);
let lastEcho = 0, echoes = 0;
const done = () => { process.stdout.write(JSON.stringify({lastEcho, echoes}) + '\\n'); process.exit(0); };
const s = net.connect({host: ip, port: Number(port)}, () => { setInterval(() => s.write('x'), 20); });
s.on('data', (d) => { echoes += d.length; lastEcho = Date.now(); });
s.on('error', done);
setInterval(() => { if (lastEcho && Date.now() - lastEcho > 3000) done(); }, 100);
setTimeout(done, 100000);
`
