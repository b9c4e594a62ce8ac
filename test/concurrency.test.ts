/**
 * Several tbmesh processes on one home, and processes killed at random moments: real processes through the built
 * bin/run.js, real files, real locks. After everything, the state loads, no overlay IP is recorded twice, every
 * certificate file is in the ledger and every ledger row's certificate is on disk. TBMESH_CRASH_TRIALS sets the number
 * of crash trials (default 50).
 */

import {type FSWatcher, readdirSync, watch} from 'node:fs'
import {mkdir, readdir, readFile, utimes, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {execa, type ResultPromise} from 'execa'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import {addNode} from '../src/ca/add-node.js'
import {unlockCaKey} from '../src/ca/ca.js'
import {Home} from '../src/home/home.js'
import {currentCertificate} from '../src/home/queries.js'
import {certificateFromPem, fingerprint} from '../src/nebula/index.js'
import {BIN, NEBULA_CERT, nebulaCertCheck, removeDir, ROOT, tbmesh, tbmeshJson, tempDir} from './helpers.js'

let dir: string
const running = new Set<ResultPromise>()

beforeAll(async () => {
  dir = await tempDir('tbmesh-concurrency-')
})
afterEach(() => {
  for (const p of running) p.kill('SIGKILL')
  running.clear()
})
afterAll(async () => removeDir(dir))

/** Starts `tbmesh ARGS` as a real process and returns it (a promise of its result that never rejects, with its pid). */
function start(args: string[], env: Record<string, string> = {}): ResultPromise {
  const p = execa('node', [BIN, ...args], {
    env: {...process.env, TBMESH_HOME: undefined, TBMESH_CA_PASSPHRASE: undefined, TBMESH_LOCK_TIMEOUT: undefined, DEBUG: undefined, NODE_ENV: undefined, ...env},
    extendEnv: false,
    reject: false,
    stdin: 'ignore',
    cwd: ROOT,
    timeout: 120_000,
  })
  running.add(p)
  void p.finally(() => running.delete(p))
  return p
}

/**
 * Checks the invariants of a home: the state loads (Home.open validates it: no IP twice, nodes inside their blocks),
 * every certificate file is in the ledger and is the certificate its name says, every ledger row's certificate is on
 * disk (only the newest row's may still be pending, renamed by the next transaction). With `settled` (after a
 * transaction completed): nothing pending, no temporary files, no host key without its node, no lock left.
 */
async function checkHome(homeDir: string, opts: {settled: boolean}): Promise<Home> {
  const home = await Home.open(homeDir)
  const {state} = home
  const ips = state.nodes.map((n) => n.overlayIp)
  expect(new Set(ips).size).toBe(ips.length)
  const names = state.nodes.map((n) => n.name)
  expect(new Set(names).size).toBe(names.length)

  const ledger = state.certificates.map((c) => c.fingerprint)
  const certFiles = await readdir(join(homeDir, 'certs')).catch(() => [] as string[])
  const crts = new Set(certFiles.filter((f) => f.endsWith('.crt')).map((f) => f.slice(0, -4)))
  for (const fp of crts) {
    expect(ledger).toContain(fp)
    expect(fingerprint(certificateFromPem(await readFile(join(homeDir, 'certs', `${fp}.crt`), 'utf8')))).toBe(fp)
  }
  ledger.forEach((fp, i) => {
    if (crts.has(fp)) return
    expect(i, `ledger row ${fp} has no certificate file`).toBe(ledger.length - 1)
    expect(certFiles).toContain(`${fp}.crt.pending`)
  })
  for (const node of state.nodes) expect(currentCertificate(home.state, node.name)).toBeDefined()

  if (opts.settled) {
    expect(certFiles.sort()).toEqual(ledger.map((fp) => `${fp}.crt`).sort())
    const keys = await readdir(join(homeDir, 'keys')).catch(() => [] as string[])
    expect(keys.sort()).toEqual(state.nodes.map((n) => `${n.name}.key`).sort())
    expect((await readdir(homeDir)).sort()).toEqual(['ca', 'certs', 'keys', 'secrets.json', 'state.json'])
  }
  return home
}

/** nebula-cert verify on every certificate of the home (four at a time). */
async function verifyAll(homeDir: string): Promise<number> {
  const home = await Home.open(homeDir)
  const caPem = await home.readCaCertificate(home.activeCa())
  const rows = [...home.state.certificates]
  for (let i = 0; i < rows.length; i += 4) {
    await Promise.all(
      rows.slice(i, i + 4).map(async (row) => {
        const printed = await nebulaCertCheck(caPem, await home.readCertificate(row.fingerprint))
        expect(printed.details.name).toBe(row.name)
        expect(printed.details.networks).toEqual([`${row.overlayIp}/16`])
      }),
    )
  }
  return rows.length
}

describe('16 add-node processes at once on one home', () => {
  it('give 16 distinct overlay IPs, 16 ledger rows, 16 certificates that nebula-cert verifies', async () => {
    const home = join(dir, 'sixteen')
    const pass = join(dir, 'sixteen.pass')
    await writeFile(pass, 'sixteen at once\n', {mode: 0o600})
    await tbmeshJson(['init-ca', '--home', home, '--network', 'sixteen', '--cidr', '10.50.0.0/16', '--passphrase-file', pass])

    const orgs = ['ACME', 'Umbrella', 'Initech', 'Globex']
    const started = Date.now()
    const results = await Promise.all(
      Array.from({length: 16}, (_, i) => start(['add-node', '--home', home, '--passphrase-file', pass, '--org', orgs[i % 4], '--json'])),
    )
    const seconds = (Date.now() - started) / 1000
    for (const r of results) expect(r.exitCode, String(r.stderr)).toBe(0)
    const nodes = results.map((r) => JSON.parse(String(r.stdout)))
    expect(new Set(nodes.map((n) => n.overlayIp)).size).toBe(16)
    expect(new Set(nodes.map((n) => n.name)).size).toBe(16)
    expect(new Set(nodes.map((n) => n.fingerprint)).size).toBe(16)

    const state = (await checkHome(home, {settled: true})).state
    expect(state.certificates).toHaveLength(16)
    expect(state.nodes).toHaveLength(16)
    expect(state.organizations.map((o) => o.block).sort()).toEqual(['10.50.0.0/24', '10.50.1.0/24', '10.50.2.0/24', '10.50.3.0/24'])
    for (const org of state.organizations) {
      expect(state.nodes.filter((n) => n.organization === org.slug).map((n) => n.overlayIp).sort()).toEqual([1, 2, 3, 4].map((i) => org.block.replace('0/24', String(i))))
    }
    if (NEBULA_CERT) expect(await verifyAll(home)).toBe(16)
    console.log(`16 concurrent add-node processes: ${seconds.toFixed(1)} s`)
  })

  it('two --origin at once: one wins; one --ip twice at once: one wins; the losers get one line and change nothing', async () => {
    const home = join(dir, 'races')
    await tbmeshJson(['init-ca', '--home', home, '--network', 'races', '--cidr', '10.51.0.0/16', '--no-passphrase'])
    await tbmeshJson(['add-node', '--home', home, '--org', 'ACME'])
    const results = await Promise.all([
      start(['add-node', '--home', home, '--org', 'ACME', '--origin']),
      start(['add-node', '--home', home, '--org', 'ACME', '--origin']),
      start(['add-node', '--home', home, '--org', 'ACME', '--ip', '10.51.0.77']),
      start(['add-node', '--home', home, '--org', 'ACME', '--ip', '10.51.0.77']),
    ])
    const exits = results.map((r) => r.exitCode)
    expect(exits.slice(0, 2).sort()).toEqual([0, 1])
    expect(exits.slice(2).sort()).toEqual([0, 2])
    for (const r of results.filter((x) => x.exitCode !== 0)) {
      expect(String(r.stderr).trim().split('\n')).toHaveLength(1)
      expect(String(r.stderr)).toMatch(/already has an origin node|already used/)
    }
    const state = (await checkHome(home, {settled: true})).state
    expect(state.nodes).toHaveLength(3)
    expect(state.nodes.filter((n) => n.origin)).toHaveLength(1)
    expect(state.nodes.filter((n) => n.overlayIp === '10.51.0.77')).toHaveLength(1)
  })
})

describe('the lock', () => {
  /**
   * Holds the lock of `home` in a separate process running tbmesh's own transaction code, until killed. (Returned in an
   * object: an async function returning the subprocess, a thenable, would wait for it to exit.)
   */
  async function holdLock(home: string): Promise<{holder: ResultPromise}> {
    const script = `
      const {Home} = await import(${JSON.stringify(join(ROOT, 'dist', 'home', 'home.js'))})
      const home = await Home.open(${JSON.stringify(home)})
      await home.transaction(async () => {
        process.stdout.write('locked\\n')
        await new Promise((resolve) => setTimeout(resolve, 120_000))
      })`
    const p = execa('node', ['--input-type=module', '-e', script], {reject: false, timeout: 130_000, buffer: false})
    running.add(p)
    void p.finally(() => running.delete(p))
    await new Promise<void>((resolve, reject) => {
      p.stdout!.on('data', (d: Buffer) => d.toString().includes('locked') && resolve())
      void p.then((r) => reject(new Error(`lock holder exited: ${r.stderr}`)))
    })
    return {holder: p}
  }

  it('while another process holds it: one line naming that process, after TBMESH_LOCK_TIMEOUT; once it is killed, at once', async () => {
    const home = join(dir, 'held')
    await tbmeshJson(['init-ca', '--home', home, '--network', 'held', '--cidr', '10.52.0.0/16', '--no-passphrase'])
    const {holder} = await holdLock(home)
    const busy = await tbmesh(['add-node', '--home', home, '--org', 'ACME'], {env: {TBMESH_LOCK_TIMEOUT: '1'}})
    expect(busy.exitCode).toBe(1)
    expect(String(busy.stderr).trim()).toBe(
      `Error: another tbmesh process (pid ${holder.pid}) is changing ${home}: wait for it to finish and run the command again (waited 1 s; set TBMESH_LOCK_TIMEOUT to wait longer)`,
    )

    // A waiting process gets the lock as soon as the holder is gone, even if it was SIGKILLed: no stale-time wait.
    const waiting = start(['add-node', '--home', home, '--org', 'ACME'])
    await sleep(1500)
    const killedAt = Date.now()
    holder.kill('SIGKILL')
    await holder
    const result = await waiting
    expect(result.exitCode, String(result.stderr)).toBe(0)
    expect(Date.now() - killedAt).toBeLessThan(3000) // proper-lockfile alone would wait for the 5 s stale time
    await checkHome(home, {settled: true})
  })

  it('a lock left without a holder, or by another machine, is taken over once it is stale (5 s unrefreshed)', async () => {
    const home = join(dir, 'stale')
    await tbmeshJson(['init-ca', '--home', home, '--network', 'stale', '--cidr', '10.53.0.0/16', '--no-passphrase'])
    const lock = join(home, 'state.lock')
    const old = new Date(Date.now() - 60_000)

    await mkdir(lock) // a killed process between mkdir and naming itself
    await utimes(lock, old, old)
    expect((await tbmesh(['add-node', '--home', home, '--org', 'ACME'])).exitCode).toBe(0)

    await mkdir(lock) // a holder on another machine (a home on NFS), alive as far as we know, but not refreshing
    await writeFile(join(lock, 'holder-1-1-00000000'), '')
    const busy = await tbmesh(['add-node', '--home', home, '--org', 'ACME'], {env: {TBMESH_LOCK_TIMEOUT: '0'}})
    expect(busy.exitCode).toBe(1)
    expect(String(busy.stderr)).toContain('another tbmesh process (pid 1 on another machine)')
    await utimes(lock, old, old)
    expect((await tbmesh(['add-node', '--home', home, '--org', 'ACME'])).exitCode).toBe(0)
    const state = (await checkHome(home, {settled: true})).state
    expect(state.nodes.map((n) => n.overlayIp)).toEqual(['10.53.0.1', '10.53.0.2'])
  })
})

describe('add-node processes killed at random moments', () => {
  const TRIALS = Number(process.env.TBMESH_CRASH_TRIALS ?? 50)
  const BATCH = 3

  it(`${TRIALS} trials of ${BATCH} processes, SIGKILLed at random (half of them while holding the lock): the state always loads and stays consistent, and the next add-node works`, {timeout: 600_000}, async () => {
    const home = join(dir, 'crash')
    await tbmeshJson(['init-ca', '--home', home, '--network', 'crash', '--cidr', '10.60.0.0/16', '--no-passphrase'])
    const opened = await Home.open(home)
    const caKey = await unlockCaKey(opened, null)
    const orgs = ['ACME', 'Umbrella', 'Initech', 'Globex', 'Hooli']

    // How long a batch of add-node processes takes here, to spread the timed kills over a whole run.
    const calibration = Date.now()
    await Promise.all(Array.from({length: BATCH}, (_, i) => start(['add-node', '--home', home, '--org', orgs[i]])))
    const batchMs = Date.now() - calibration

    const stats = {killed: 0, killedHoldingLock: 0, completed: 0, leftPending: 0, leftLock: 0, leftKeyOrTemp: 0}
    const timing = {batches: 0, rest: 0}
    const started = Date.now()
    for (let trial = 0; trial < TRIALS; trial++) {
      const trialStart = Date.now()
      const holderMode = trial % 2 === 1
      const procs = Array.from({length: BATCH}, () => start(['add-node', '--home', home, '--org', orgs[Math.floor(Math.random() * orgs.length)]]))
      const pids = new Map(procs.map((p) => [p.pid!, p]))
      const timers: NodeJS.Timeout[] = []
      let watcher: FSWatcher | undefined
      let poll: NodeJS.Timeout | undefined
      const killed = new Set<number>()
      const kill = (pid: number) => {
        if (killed.has(pid)) return
        killed.add(pid)
        let holding = false
        try {
          holding = readdirSync(join(home, 'state.lock')).some((h) => h.startsWith(`holder-${pid}-`))
        } catch {}
        pids.get(pid)!.kill('SIGKILL')
        if (holding) stats.killedHoldingLock++
      }
      if (holderMode) {
        // Kill the n-th process of the batch to take the lock (the last one half of the time, so that what it leaves is
        // still there for the checks below and the next add-node; otherwise the batch's next process cleans it up),
        // 0-25 ms after it took it: a transaction takes 20 ms or more here, so at a random step of it, or just after.
        const victimRank = Math.random() < 0.5 ? BATCH - 1 : Math.floor(Math.random() * BATCH)
        const seen: number[] = []
        const look = () => {
          if (seen.length > victimRank) return
          let holders: string[] = []
          try {
            holders = readdirSync(join(home, 'state.lock'))
          } catch {}
          const pid = holders.map((h) => Number(/^holder-(\d+)-/.exec(h)?.[1])).find((p) => pids.has(p))
          if (pid === undefined || seen.includes(pid)) return
          seen.push(pid)
          if (seen.length === victimRank + 1) timers.push(setTimeout(() => kill(pid), Math.random() * 25))
        }
        watcher = watch(home, look)
        poll = setInterval(look, 2)
      } else {
        for (const pid of pids.keys()) timers.push(setTimeout(() => kill(pid), Math.random() * batchMs))
      }
      const results = await Promise.all(procs)
      for (const t of timers) clearTimeout(t)
      if (poll) clearInterval(poll)
      watcher?.close()

      for (const r of results) {
        if (r.isTerminated) stats.killed++
        else {
          expect(r.exitCode, String(r.stderr)).toBe(0)
          stats.completed++
        }
      }
      const batchDone = Date.now()
      const entries = await readdir(home)
      if (entries.includes('state.lock')) stats.leftLock++
      const certFiles = await readdir(join(home, 'certs')).catch(() => [] as string[])
      if (certFiles.some((f) => f.endsWith('.pending'))) stats.leftPending++

      // After the kill: the state loads and is consistent.
      const home1 = await checkHome(home, {settled: false})
      const keys = await readdir(join(home, 'keys')).catch(() => [] as string[])
      if (keys.length !== home1.state.nodes.length || entries.some((e) => /\.\d+$/.test(e)) || certFiles.some((f) => /\.\d+$/.test(f))) stats.leftKeyOrTemp++

      // The next add-node works (the real CLI every tenth trial, else the same code in this process) and settles it.
      if (trial % 10 === 9) {
        const next = await tbmesh(['add-node', '--home', home, '--org', 'Next'])
        expect(next.exitCode, String(next.stderr)).toBe(0)
      } else {
        await addNode(await Home.open(home), caKey, {org: 'Next'})
      }
      await checkHome(home, {settled: true})
      timing.batches += batchDone - trialStart
      timing.rest += Date.now() - batchDone
    }
    const seconds = (Date.now() - started) / 1000
    const verified = NEBULA_CERT ? await verifyAll(home) : 0
    console.log(`crash test: ${TRIALS} trials in ${seconds.toFixed(1)} s (batch ${batchMs} ms), ${JSON.stringify(stats)}, ${JSON.stringify(timing)}, ${verified} certificates verified`)
    expect(stats.killed).toBeGreaterThanOrEqual(TRIALS / 2)
    expect(stats.killedHoldingLock).toBeGreaterThanOrEqual(Math.floor(TRIALS / 5))
  })
})
