/**
 * doctor on a Docker host. No Docker engine runs here, so a stand-in `docker` CLI answers doctor's three questions:
 * `docker compose version` (the real Compose v2 from Debian 13 answers it, or a stand-in printing an old version),
 * `docker ps --filter label=…` and `docker inspect`, whose container is made the way Docker makes it from the merged
 * Compose project (real `docker compose config`): Config.Env from `environment:`, HostConfig.PortBindings from `ports:`,
 * Mounts from `volumes:`, HostConfig.RestartPolicy from `restart:`.
 *
 * The blockchain container of tbmesh's complete stack passes every container check; one started from TruBudget's files
 * alone (the example organization and RPC password, P2P on every interface, no chain volume, no restart policy) fails
 * each; one started with node.env before TruBudget's .env runs on the example RPC password and fails. An old Compose
 * fails, as does a host without the boot-order sysctl. A host running Nebula in a container is not failed for lacking
 * a nebula binary.
 */

import {chmod, mkdir, readFile, symlink, writeFile} from 'node:fs/promises'
import {join, resolve} from 'node:path'

import {execa} from 'execa'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {installBundle} from '../src/bundle/install.js'
import {parseNodeEnv} from '../src/bundle/node-env.js'
import {addNode} from '../src/ca/add-node.js'
import {initCa, unlockCaKey} from '../src/ca/ca.js'
import {exportBundle} from '../src/ca/export.js'
import {Home} from '../src/home/home.js'
import {doctor, type DoctorResult} from '../src/node/doctor.js'
import {composeBinary} from './e2e/debian.js'
import {removeDir, tempDir, which} from './helpers.js'

const SERVICES = resolve(import.meta.dirname, 'fixtures', 'trubudget', 'docker-compose')

/** The stand-in docker CLI: `compose` runs $FAKE_COMPOSE; `ps` and `inspect` print what $FAKE_DOCKER holds. */
const FAKE_DOCKER = `#!/bin/sh
set -eu
PATH=/usr/bin:/bin
cmd="$1"; shift
case "$cmd" in
  compose) exec "$FAKE_COMPOSE" "$@" ;;
  ps)
    service=""; running=""
    for arg in "$@"; do
      case "$arg" in
        label=org.tbmesh.service=*) service="\${arg#label=org.tbmesh.service=}" ;;
        status=running) running="-running" ;;
      esac
    done
    [ -f "$FAKE_DOCKER/ps-$service$running" ] && cat "$FAKE_DOCKER/ps-$service$running"
    exit 0 ;;
  inspect) cat "$FAKE_DOCKER/inspect-$1.json" ;;
  *) echo "fake docker: $cmd is not served" >&2; exit 1 ;;
esac
`

interface Port {host_ip?: string; target: number; published: string}
interface Service {environment?: Record<string, string>; ports?: Port[]; volumes?: Array<{type: string; source: string; target: string}>; restart?: string}

let work: string
let compose: string
let dir: string
let bin: string
let state: string
const saved = {PATH: process.env.PATH, FAKE_COMPOSE: process.env.FAKE_COMPOSE, FAKE_DOCKER: process.env.FAKE_DOCKER}

/** The blockchain service of the project `args` make (real Compose), as `docker inspect` shows its container. */
async function containerFrom(cwd: string, args: string[], service: string): Promise<Record<string, unknown>> {
  const r = await execa(compose, [...args, 'config', '--format', 'json'], {cwd, extendEnv: false, env: {PATH: saved.PATH}, stdin: 'ignore'})
  const project = JSON.parse(String(r.stdout)) as {name: string; services: Record<string, Service>}
  const s = project.services[service]
  return {
    Id: 'c0ffee'.repeat(10) + '0123',
    Name: `/${project.name}-${service}-1`,
    Config: {Env: Object.entries(s.environment ?? {}).map(([k, v]) => `${k}=${v}`)},
    HostConfig: {
      PortBindings: Object.fromEntries((s.ports ?? []).map((p) => [`${p.target}/tcp`, [{HostIp: p.host_ip ?? '', HostPort: p.published}]])),
      RestartPolicy: {Name: s.restart ?? 'no', MaximumRetryCount: 0},
    },
    Mounts: (s.volumes ?? []).map((v) => ({Type: v.type, Name: v.type === 'volume' ? `${project.name}_${v.source}` : undefined, Destination: v.target})),
  }
}

/** Docker runs `container` as the node's blockchain (and, with `nebula`, a Nebula container of the node). */
async function dockerRuns(container: Record<string, unknown> | undefined, o: {nebula?: boolean} = {}): Promise<void> {
  const id = 'c0ffee'.repeat(10) + '0123'
  await writeFile(join(state, 'ps-blockchain'), container ? `${id}\n` : '')
  await writeFile(join(state, `inspect-${id}.json`), JSON.stringify(container ? [container] : []))
  await writeFile(join(state, 'ps-nebula-running'), o.nebula ? 'deadbeef\n' : '')
}

/** doctor with the stand-in docker (and, with `nebulaBinary`, the real nebula) on PATH, and /proc/sys from `procSys`. */
async function run(o: {nebulaBinary?: boolean; ipNonlocalBind?: string; composeBin?: string} = {}): Promise<DoctorResult> {
  const procSys = join(work, `proc-${o.ipNonlocalBind ?? '1'}`)
  await mkdir(join(procSys, 'net', 'ipv4'), {recursive: true})
  await writeFile(join(procSys, 'net', 'ipv4', 'ip_nonlocal_bind'), `${o.ipNonlocalBind ?? '1'}\n`)
  const path = [bin, ...(o.nebulaBinary ? [join(work, 'nebula-bin')] : [])].join(':')
  Object.assign(process.env, {PATH: path, FAKE_COMPOSE: o.composeBin ?? compose, FAKE_DOCKER: state})
  return doctor(dir, {procSys})
}

const check = (r: DoctorResult, name: string) => r.checks.find((c) => c.name === name)

beforeAll(async () => {
  compose = await composeBinary()
  work = await tempDir('tbmesh-doctor-docker-')
  const homeDir = join(work, 'home')
  const init = await initCa(homeDir, {network: 'tb', cidr: '10.42.0.0/16', passphrase: null})
  const home = await Home.open(homeDir)
  const caKey = await unlockCaKey(home, null)
  await addNode(home, caKey, {org: 'ACME', origin: true, lighthouse: true, endpoint: '192.0.2.10:4242'})
  await addNode(home, caKey, {org: 'Umbrella'})
  await exportBundle(home, 'umbrella-1', join(work, 'umbrella-1.tar.gz'), {caKey, passphrase: null})
  dir = join(work, 'umbrella')
  await installBundle(join(work, 'umbrella-1.tar.gz'), dir, {pin: init.caFingerprint})
  bin = join(work, 'bin')
  state = join(work, 'docker-state')
  await mkdir(bin)
  await mkdir(state)
  await writeFile(join(bin, 'docker'), FAKE_DOCKER)
  await chmod(join(bin, 'docker'), 0o755)
  await symlink(which('ip'), join(bin, 'ip'))
  await mkdir(join(work, 'nebula-bin'))
  await symlink(which('nebula'), join(work, 'nebula-bin', 'nebula'))
  const old = join(work, 'old-compose')
  await writeFile(old, '#!/bin/sh\necho 2.20.3\n')
  await chmod(old, 0o755)
}, 120_000)

afterEach(() => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k]
    else process.env[k] = v
  }
})

afterAll(async () => {
  if (work) await removeDir(work)
})

describe('doctor with Docker', () => {
  it("passes the blockchain container of tbmesh's complete stack, Compose 2.26 and the boot-order sysctl", async () => {
    await dockerRuns(await containerFrom(work, ['--env-file', `${dir}/trubudget/node.env`, '-f', `${dir}/docker/compose.yml`], 'blockchain'))
    const r = await run({nebulaBinary: true})
    expect(r.checks.filter((c) => c.name.startsWith('container') || c.name === 'compose-version'), JSON.stringify(r.checks, null, 1)).toHaveLength(5)
    for (const name of ['compose-version', 'boot-order', 'container-environment', 'container-ports', 'container-volume', 'container-restart']) {
      expect(check(r, name), name).toMatchObject({status: 'pass'})
    }
    expect(check(r, 'compose-version')!.detail).toMatch(/^Docker Compose 2\.26\.1 /)
    expect(check(r, 'container-environment')!.detail).toBe("container tbmesh-umbrella-1-blockchain-1 runs as Umbrella at 10.42.1.1, joining at 10.42.0.1, with this node's RPC password")
    expect(check(r, 'container-volume')!.detail).toBe('the chain (/root) is on volume tbmesh-umbrella-1_chain')
    // With Docker present, multichain.conf is not what decides (TruBudget rewrites it).
    expect(check(r, 'multichain-conf')!.detail).toMatch(/^multichain\.conf is not used with Docker/)
  })

  it("fails a blockchain container started from TruBudget's files alone, on each count", async () => {
    await dockerRuns(await containerFrom(SERVICES, ['--project-directory', '.', '-f', 'blockchain/docker-compose.betanode.yml', '-f', 'api/docker-compose.yml'], 'blockchain'))
    const r = await run({nebulaBinary: true})
    expect(r.ok).toBe(false)
    for (const name of ['container-environment', 'container-ports', 'container-volume', 'container-restart']) expect(check(r, name), name).toMatchObject({status: 'fail'})
    const env = check(r, 'container-environment')!.detail
    expect(env).toContain('ORGANIZATION=KfW (want Umbrella)')
    expect(env).toContain('EXTERNAL_IP=(unset) (want 10.42.1.1)')
    expect(env).toContain('P2P_HOST=127.0.0.1 (want 10.42.0.1)')
    expect(env).toContain("MULTICHAIN_RPC_PASSWORD is not this node's own")
    expect(check(r, 'container-ports')!.detail).toContain('7447/tcp on 0.0.0.0:7447')
    expect(check(r, 'container-restart')!.detail).toContain('restart policy "no"')
  })

  it('fails a container started with node.env before TruBudget\'s .env: it runs on the example RPC password', async () => {
    const misordered = [
      '--project-directory', '.', '-f', 'blockchain/docker-compose.betanode.yml', '-f', 'api/docker-compose.yml', '-f', 'frontend/docker-compose.yml',
      '-f', `${dir}/docker/trubudget-services.override.yml`,
      '--env-file', `${dir}/trubudget/node.env`, '--env-file', `${dir}/docker/trubudget.env`, '--env-file', '.env',
    ]
    const container = await containerFrom(SERVICES, misordered, 'blockchain')
    const example = parseNodeEnv(await readFile(join(SERVICES, '.env'), 'utf8')).MULTICHAIN_RPC_PASSWORD
    expect((container.Config as {Env: string[]}).Env).toContain(`MULTICHAIN_RPC_PASSWORD=${example}`)
    await dockerRuns(container)
    const r = await run({nebulaBinary: true})
    expect(check(r, 'container-environment')).toMatchObject({status: 'fail', detail: expect.stringContaining("MULTICHAIN_RPC_PASSWORD is not this node's own (node.env must be the last --env-file)")})
    expect(check(r, 'container-ports')!.status).toBe('pass')
  })

  it('fails a Compose older than 2.24.4 and a host without the boot-order sysctl', async () => {
    await dockerRuns(undefined)
    const r = await run({nebulaBinary: true, ipNonlocalBind: '0', composeBin: join(work, 'old-compose')})
    expect(check(r, 'compose-version')).toMatchObject({status: 'fail', detail: expect.stringMatching(/^Docker Compose 2\.20\.3 is older than 2\.24\.4/)})
    expect(check(r, 'boot-order')).toMatchObject({status: 'fail', detail: expect.stringMatching(/^net\.ipv4\.ip_nonlocal_bind is 0: after a reboot/)})
    expect(check(r, 'container')).toMatchObject({status: 'warn'})
  })

  it('does not fail a host that runs Nebula in a container for lacking a nebula binary', async () => {
    await dockerRuns(undefined, {nebula: true})
    const inContainer = await run()
    expect(check(inContainer, 'nebula')).toMatchObject({status: 'pass', detail: expect.stringContaining('nebula runs in a container')})
    expect(check(inContainer, 'nebula-test')!.status).toBe('warn')
    await dockerRuns(undefined)
    expect(check(await run(), 'nebula')!.status).toBe('warn')
  })
})
