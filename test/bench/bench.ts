/**
 * `npm run bench`: tbmesh's speed figures, each a ratio measured in one run on this machine (so machines compare).
 *
 * 1. Cold start: `tbmesh --version` and `tbmesh add-node` against `node -e 0` (target ≤ 2.5×). add-node runs on a home
 *    whose CA key is not encrypted, so the figure is start-up and work, not Argon2 (reported apart).
 * 2. `tbmesh apply` of a 1000-node file (signing, state, rendering every config, writing 1000 unencrypted join bundles)
 *    against 1000 `nebula-cert sign` calls in a shell loop, signing only (target: tbmesh ≥ 5× faster).
 * 3. `tbmesh add-node` with 5000 nodes in the state against 10 nodes (target ≤ 1.3×).
 * 4. The data plane, on real Nebula (oldest and newest build) in network namespaces: TCP throughput with tbmesh's
 *    config against Nebula's example config (target ≥ 1.0×) and the raw underlay, join latency, revocation latency
 *    (`data-plane.ts`).
 *
 * Medians of several runs; wall-clock time. Needs nebula-cert for figure 2, and root, nebula and iperf3 for figure 4
 * (each skipped, and said so, without them). `npm run bench -- ca` or `-- data` runs only figures 1–3 or figure 4.
 */

import {execFileSync, spawnSync} from 'node:child_process'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join, resolve} from 'node:path'

import {dataPlane} from './data-plane.js'

const ROOT = resolve(import.meta.dirname, '..', '..')
const BIN = join(ROOT, 'bin', 'run.js')
const work = mkdtempSync(join(tmpdir(), 'tbmesh-bench-'))
const env = {...process.env, TBMESH_CA_PASSPHRASE: undefined, CI: '1'}

/** Wall time of one run of `cmd args` in ms; throws when it fails. */
function time(cmd: string, args: string[], extraEnv: Record<string, string> = {}): number {
  const start = process.hrtime.bigint()
  const result = spawnSync(cmd, args, {env: {...env, ...extraEnv}, stdio: ['ignore', 'ignore', 'pipe']})
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${result.stderr}`)
  return ms
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

function tbmesh(args: string[], extraEnv: Record<string, string> = {}): number {
  return time('node', [BIN, ...args], extraEnv)
}

/** A network file with `count` nodes: one origin+lighthouse, the rest spread over organizations of ≤ 250 nodes. */
function networkFile(name: string, count: number): string {
  const orgs: string[] = []
  for (let org = 0; org * 250 < count; org++) {
    const nodes: string[] = []
    for (let i = org * 250; i < Math.min(count, (org + 1) * 250); i++) {
      nodes.push(i === 0 ? `      - {name: n${i}, roles: [origin, lighthouse], endpoint: "192.0.2.10:4242"}` : `      - {name: n${i}}`)
    }
    orgs.push(`  - name: Org${org}\n    nodes:\n${nodes.join('\n')}`)
  }
  const file = join(work, `${name}.yaml`)
  writeFileSync(file, `network: {name: bench, cidr: 10.0.0.0/8}\norganizations:\n${orgs.join('\n')}\n`)
  return file
}

function newHome(name: string, nodes: number): string {
  const home = join(work, name)
  tbmesh(['init-ca', '--home', home, '--network', 'bench', '--cidr', '10.0.0.0/8', '--no-passphrase'])
  if (nodes > 0) tbmesh(['apply', '--home', home, '-f', networkFile(name, nodes)])
  return home
}

const lines: string[] = []
function report(label: string, value: string): void {
  const line = `${label.padEnd(64)} ${value}`
  lines.push(line)
  console.log(line)
}

const only = process.argv[2]
if (only !== undefined && only !== 'ca' && only !== 'data') throw new Error('usage: npm run bench [-- ca|data]')

try {
  console.log(`tbmesh benchmark (node ${process.version}, ${process.platform}-${process.arch}, ${new Date().toISOString().slice(0, 10)})`)
  if (only !== 'data') caFigures()
  if (only !== 'ca') await dataPlane(report)
} finally {
  rmSync(work, {recursive: true, force: true})
}

/** Figures 1–3: the CA side. */
function caFigures(): void {
  // 1. Cold start
  const RUNS = 9
  const baseline = median(Array.from({length: RUNS}, () => time('node', ['-e', '0'])))
  const version = median(Array.from({length: RUNS}, () => tbmesh(['--version'])))
  const startHome = newHome('start', 1)
  let n = 0
  const addNode = median(Array.from({length: RUNS}, () => tbmesh(['add-node', '--home', startHome, '--org', 'Cold', '--name', `cold-${n++}`])))
  report('node -e 0 (baseline)', `${baseline.toFixed(0)} ms`)
  report('cold start: tbmesh --version / node -e 0 (target ≤ 2.5×)', `${(version / baseline).toFixed(2)}× (${version.toFixed(0)} ms)`)
  report('cold start: tbmesh add-node / node -e 0 (target ≤ 2.5×)', `${(addNode / baseline).toFixed(2)}× (${addNode.toFixed(0)} ms)`)
  const encHome = join(work, 'encrypted')
  tbmesh(['init-ca', '--home', encHome, '--network', 'bench', '--cidr', '10.0.0.0/8'], {TBMESH_CA_PASSPHRASE: 'bench'})
  const encrypted = median(Array.from({length: 3}, () => tbmesh(['add-node', '--home', encHome, '--org', 'Cold'], {TBMESH_CA_PASSPHRASE: 'bench'})))
  report('  add-node with an encrypted CA key (Argon2id 64 MiB, t=3, p=4)', `${encrypted.toFixed(0)} ms`)

  // 2. apply 1000 nodes vs 1000 nebula-cert sign calls
  const haveNebulaCert = spawnSync('sh', ['-c', 'command -v nebula-cert']).status === 0
  if (haveNebulaCert) {
    const nc = join(work, 'nebula-cert')
    execFileSync('mkdir', ['-p', nc])
    execFileSync('nebula-cert', ['ca', '-name', 'bench', '-out-crt', join(nc, 'ca.crt'), '-out-key', join(nc, 'ca.key')])
    const loop = 'for i in $(seq 1 1000); do nebula-cert sign -ca-crt ca.crt -ca-key ca.key -name "n$i" -ip "10.0.$((i / 250)).$((i % 250 + 1))/8" -out-crt "n$i.crt" -out-key "n$i.key" || exit 1; done'
    const signing = time('bash', ['-c', `cd ${nc} && ${loop}`])
    const applyHome = join(work, 'apply')
    tbmesh(['init-ca', '--home', applyHome, '--network', 'bench', '--cidr', '10.0.0.0/8', '--no-passphrase'])
    const apply = tbmesh(['apply', '--home', applyHome, '-f', networkFile('apply', 1000), '--out', join(work, 'bundles'), '--no-encrypt'])
    report('1000 × nebula-cert sign in a shell loop', `${signing.toFixed(0)} ms`)
    report('tbmesh apply, 1000 nodes, every config rendered + bundle written', `${apply.toFixed(0)} ms`)
    report('apply speed-up over nebula-cert (target ≥ 5×)', `${(signing / apply).toFixed(2)}×`)
  } else {
    report('apply vs nebula-cert', 'skipped: nebula-cert is not installed')
  }

  // 3. add-node with 5000 nodes vs 10 nodes
  const small = newHome('small', 10)
  const large = newHome('large', 5000)
  let m = 0
  const addSmall = median(Array.from({length: 5}, () => tbmesh(['add-node', '--home', small, '--org', 'Late', '--name', `late-${m++}`])))
  const addLarge = median(Array.from({length: 5}, () => tbmesh(['add-node', '--home', large, '--org', 'Late', '--name', `late-${m++}`])))
  report('add-node with 10 nodes in the state', `${addSmall.toFixed(0)} ms`)
  report('add-node with 5000 nodes in the state', `${addLarge.toFixed(0)} ms`)
  report('add-node 5000 / 10 (target ≤ 1.3×)', `${(addLarge / addSmall).toFixed(2)}×`)
}
