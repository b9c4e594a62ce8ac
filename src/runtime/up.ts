/**
 * `tbmesh up`: runs Nebula for an installed node in the foreground and enforces what Nebula cannot — that every peer
 * holds only addresses of the block of the member whose CA signed its certificate (`policy.ts`).
 *
 * Order at start: read the installation; write the runtime config (`runtime-config.ts`) and this run's debug-server
 * host key into the run directory (0700), with Nebula's firewall closed; load the underlay guard when the installation
 * has one (`nft -f`; if it fails, Nebula is not started); start Nebula on the runtime config with an environment of
 * its own; watch its tunnels (`watch.ts`); once the first look at them succeeded, open the firewall (the installed
 * rules) with a reload: no packet to or from this node passes before `up` first saw the tunnels (afterwards `up` is
 * blind at most 10 s, during a debug-server restart or a hang, before it stops Nebula).
 *
 * On a violation: the watcher closes the offending tunnel; then here, in one step, the certificate's fingerprint joins
 * the local blocklist, the firewall epoch goes up, the address is pinned to its legitimate peer, the runtime config is
 * rewritten and Nebula gets SIGHUP; then the evidence record is written to `DIR/evidence/` and printed.
 *
 * Signals: SIGHUP re-reads the installation (an installed update), re-loads the guard, rewrites the runtime config and
 * is passed on to Nebula; SIGTERM and SIGINT are passed on. `up` ends when Nebula does, with its status. If Nebula's
 * debug server cannot be reached for 10 s, `up` stops Nebula (fail closed) and reports why.
 */

import {chmod, lstat, mkdir, readFile, rm} from 'node:fs/promises'
import path from 'node:path'

import {UNDERLAY_GUARD} from '../bundle/layout.js'
import {UserError} from '../errors.js'
import {exists, writeAtomic} from '../lib/files.js'
import {startChild} from '../lib/spawn.js'
import {safeLine} from '../lib/text.js'
import {generateDebugKeys} from './debug-ssh.js'
import {EVIDENCE_DIR, evidencePath, type EvidenceRecord, readEvidence, writeEvidence} from './evidence.js'
import {type InstalledNode, readInstalledNode} from './installation.js'
import {findNebula, freeLoopbackPort, loadGuard, nebulaCommand} from './process.js'
import {type Pin, renderRuntimeConfig} from './runtime-config.js'
import {type FoundViolation, PeerWatch} from './watch.js'

/** Default run directory: Nebula's runtime config and this run's debug-server host key (tmpfs, root only). */
export const DEFAULT_RUN_DIR = '/run/tbmesh'

/** How long an address stays pinned to its legitimate peer after a takeover (ms): 10 minutes. */
export const PIN_MS = 10 * 60_000

/** Options of {@link up}. */
export interface UpOptions {
  /** The installation directory (`tbmesh install --dir`). */
  dir: string
  /** Path of the nebula binary (default: `nebula` on PATH). */
  nebula?: string
  /** Run Nebula from this image with `docker run` instead of a binary. */
  docker?: string
  /** Run directory, default {@link DEFAULT_RUN_DIR}. */
  runDir?: string
  /** Write this process's pid here (for `tbmesh install --reload --pid-file`); removed at the end. */
  pidFile?: string
  /** Poll interval of the watcher, ms (default 200). */
  intervalMs?: number
  /** Lines for the operator (stdout): start, violations. */
  log: (line: string) => void
  /** Warnings (stderr). */
  warn: (line: string) => void
  /** Debugging lines (the watcher's view of the hostmap); `tbmesh up` sets it when `DEBUG` is set. */
  trace?: (line: string) => void
  /** Where Nebula's own output goes, unchanged. */
  output: {stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream}
}

/** One violation handled in a run. */
export interface ViolationSummary {
  fingerprint: string
  /** The issuing member's organization (or the CA fingerprint when it is no known member's). */
  issuer: string
  addresses: string[]
  outside: string[]
  underlay?: string
  /** Path of the evidence record. */
  evidence: string
}

/** What {@link up} returns when Nebula has ended. */
export interface UpResult {
  /** Nebula's exit code, or null when a signal ended it. */
  exitCode: number | null
  signal: NodeJS.Signals | null
  /** Set when `up` stopped Nebula itself (it could not watch it). */
  failure?: string
  violations: ViolationSummary[]
}

/**
 * Runs Nebula for the node installed in `opts.dir` until it exits (see the module comment). Throws UserError before
 * Nebula starts (no installation, no nebula, a run directory it cannot use), ExternalError when the guard does not load.
 */
export async function up(opts: UpOptions): Promise<UpResult> {
  let node = await readInstalledNode(opts.dir)
  const runner = await findNebula({binary: opts.nebula, image: opts.docker})
  const runDir = await prepareRunDir(path.resolve(opts.runDir ?? DEFAULT_RUN_DIR))
  const configFile = path.join(runDir, 'nebula.yml')
  const hostKeyFile = path.join(runDir, 'ssh_host_ed25519_key')
  const keys = generateDebugKeys()
  const port = await freeLoopbackPort()

  // The local blocklist: the fingerprints of the evidence records (also those a previous run wrote).
  const records = new Map<string, EvidenceRecord>()
  const loadEvidence = async (): Promise<void> => {
    const found = await readEvidence(node.dir).catch((error: Error) => ({records: [], problems: [`cannot read the evidence records: ${error.message}`]}))
    for (const problem of found.problems) opts.warn(`${problem} (ignored)`)
    for (const r of found.records) if (!records.has(r.fingerprint)) records.set(r.fingerprint, r)
  }
  await loadEvidence()
  let epoch = 0
  // Closed (no firewall rule) until the watcher's first look at the hostmap succeeded.
  let closed = true
  const pins = new Map<string, Pin & {expires: number}>()
  const writeConfig = async (): Promise<void> => {
    const now = Date.now()
    for (const [address, pin] of pins) if (pin.expires <= now) pins.delete(address)
    const text = renderRuntimeConfig(node.config, {
      pki: node.pki,
      blocklist: [...records.keys()],
      sshd: {port, hostKeyFile, clientPublicKey: keys.clientPublic},
      epoch,
      pins: [...pins.values()],
      closed,
    })
    await writeAtomic(hostKeyFile, keys.hostPrivate, 0o600)
    await writeAtomic(configFile, text, 0o600)
  }
  await writeConfig()
  const guard = path.join(node.dir, ...UNDERLAY_GUARD.split('/'))
  if (await exists(guard)) await loadGuard(guard)

  const command = nebulaCommand(runner, configFile, runDir, node.manifest.node)
  const child = startChild(command.file, command.args, command.env)
  const exited = new Promise<{code: number | null; signal: NodeJS.Signals | null}>((resolve) => {
    child.once('error', (error) => {
      opts.warn(`cannot start ${command.file}: ${error.message}`)
      resolve({code: 127, signal: null})
    })
    child.once('exit', (code, signal) => resolve({code, signal}))
  })
  const signalNebula = (signal: NodeJS.Signals): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }

  // One change of the runtime config at a time (a violation and an operator's reload may meet). A step that fails is
  // warned about and rejects the promise returned for it; the next step runs anyway.
  let queue: Promise<unknown> = Promise.resolve()
  const serial = (step: () => Promise<void>): Promise<void> => {
    const next = queue.then(step)
    queue = next.catch((error: Error) => opts.warn(`${safeLine(error.message)}`))
    return next
  }

  const violations: ViolationSummary[] = []
  let failure: string | undefined
  const watch = new PeerWatch({
    port,
    keys,
    intervalMs: opts.intervalMs,
    policy: () => node.policy,
    isBlocked: (fp) => records.has(fp),
    onWatching() {
      serial(async () => {
        closed = false
        await writeConfig()
        signalNebula('SIGHUP')
      }).catch(() => opts.warn('Nebula\'s firewall stays closed: the runtime config could not be written (reload or restart tbmesh up)'))
    },
    log: opts.log,
    warn: opts.warn,
    ...(opts.trace ? {trace: opts.trace} : {}),
    onBlind(reason) {
      failure = `${reason}; stopped Nebula rather than run it unwatched`
      opts.warn(failure)
      signalNebula('SIGTERM')
    },
    onViolations: (found) =>
      serial(async () => {
        const now = Date.now()
        const fresh = found.map((f) => ({f, record: evidenceRecord(node, f)}))
        for (const {f, record} of fresh) {
          records.set(record.fingerprint, record)
          for (const address of f.tunnel.addresses) pins.set(address, {...pinFor(address, f), expires: now + PIN_MS})
        }
        epoch++
        try {
          await writeConfig()
        } catch (error) {
          // Not blocked after all: the watcher reports them again at its next poll.
          for (const {record} of fresh) records.delete(record.fingerprint)
          throw error
        }
        signalNebula('SIGHUP')
        for (const {f, record} of fresh) {
          // The certificate is blocked from here on; a record that cannot be written now is written again on the next
          // reload (below), so that the block survives a restart.
          const file = evidencePath(node.dir, record)
          await writeEvidence(node.dir, record).catch((error: Error) => opts.warn(`cannot write the evidence record ${file} (${error.message}); it is written again at the next reload`))
          violations.push({
            fingerprint: record.fingerprint,
            issuer: record.issuer.organization ?? record.issuer.caFingerprint,
            addresses: record.addresses,
            outside: record.outside,
            ...(record.underlay ? {underlay: record.underlay} : {}),
            evidence: file,
          })
          opts.log(violationLine(record, f, file))
        }
      }),
  })
  const forward = (stream: NodeJS.ReadableStream | null, to: NodeJS.WritableStream): void => {
    stream?.on('data', (chunk: Buffer) => {
      to.write(chunk)
      watch.wake()
    })
  }
  forward(child.stdout, opts.output.stdout)
  forward(child.stderr, opts.output.stderr)

  const onHup = (): void => {
    serial(async () => {
      try {
        node = await readInstalledNode(opts.dir)
      } catch (error) {
        opts.warn(`reload: ${error instanceof UserError ? error.line : (error as Error).message}; Nebula keeps the previous installation`)
      }
      // An install that swapped the directory while a record was being written may have left it behind, and a record
      // may have failed to be written at all.
      for (const v of violations) if (!(await exists(path.join(node.dir, EVIDENCE_DIR, path.basename(v.evidence))))) await writeEvidence(node.dir, records.get(v.fingerprint)!)
      await loadEvidence()
      if (await exists(path.join(node.dir, ...UNDERLAY_GUARD.split('/')))) await loadGuard(path.join(node.dir, ...UNDERLAY_GUARD.split('/'))).catch((error: Error) => opts.warn(`the underlay guard did not reload: ${error.message}; the previous one stays loaded`))
      await writeConfig()
      signalNebula('SIGHUP')
    }).catch(() => {})
  }
  const onTerm = (signal: NodeJS.Signals): void => signalNebula(signal)
  process.on('SIGHUP', onHup)
  process.on('SIGTERM', onTerm)
  process.on('SIGINT', onTerm)
  const pinTimer = setInterval(() => {
    if ([...pins.values()].some((p) => p.expires <= Date.now())) serial(writeConfig).then(() => signalNebula('SIGHUP'), () => {})
  }, 30_000)
  if (opts.pidFile) await writeAtomic(opts.pidFile, `${process.pid}\n`, 0o644)
  opts.log(`tbmesh up: nebula (pid ${child.pid}) runs ${node.manifest.node} (${node.manifest.overlayIp}); ${node.policy.federated ? `each peer is checked against the blocks of ${node.policy.members.length} member(s)` : 'single CA'}; ${records.size} certificate(s) on the local blocklist`)
  watch.start()

  const end = await exited
  clearInterval(pinTimer)
  process.removeListener('SIGHUP', onHup)
  process.removeListener('SIGTERM', onTerm)
  process.removeListener('SIGINT', onTerm)
  await watch.stop()
  await queue
  if (opts.pidFile && (await readFile(opts.pidFile, 'utf8').catch(() => '')).trim() === String(process.pid)) await rm(opts.pidFile, {force: true})
  // The runtime config holds the host key inline, and the debug-server key is this run's only.
  await rm(configFile, {force: true})
  await rm(hostKeyFile, {force: true})
  return {exitCode: end.code, signal: end.signal, ...(failure ? {failure} : {}), violations}
}

/** Creates the run directory (0700) or checks the existing one: a real directory, not a symbolic link. */
async function prepareRunDir(dir: string): Promise<string> {
  const existing = await lstat(dir).catch(() => undefined)
  if (existing && (!existing.isDirectory() || existing.isSymbolicLink())) throw new UserError(`${dir} is not a directory`, {fix: 'pass another --run-dir'})
  await mkdir(dir, {recursive: true, mode: 0o700}).catch((error: NodeJS.ErrnoException) => {
    throw new UserError(`cannot create the run directory ${dir} (${error.code ?? 'error'})`, {fix: 'run as root, or pass a --run-dir you may write'})
  })
  await chmod(dir, 0o700)
  return dir
}

/** The pin for `address` after `f`: the last legitimate underlay, and the impostor's IP refused (unless they share it). */
function pinFor(address: string, f: FoundViolation): Pin {
  const good = f.lastGood[address]
  const ipOf = (addrPort: string | undefined) => addrPort?.replace(/:\d+$/, '').replaceAll(/^\[|\]$/g, '')
  const badIp = ipOf(f.tunnel.remote)
  const goodIp = ipOf(good)
  return {address, ...(good ? {good} : {}), ...(badIp && badIp !== goodIp ? {badIp} : {})}
}

/** The evidence record of a violation seen by `node`. */
function evidenceRecord(node: InstalledNode, f: FoundViolation): EvidenceRecord {
  const cert = f.tunnel.certificate!
  return {
    type: 'tbmesh-violation-evidence',
    formatVersion: 1,
    network: node.manifest.network,
    observer: {node: node.manifest.node, overlayIp: node.manifest.overlayIp},
    observedAt: f.observedAt.toISOString(),
    fingerprint: f.violation.fingerprint,
    issuer: f.violation.issuer,
    addresses: f.tunnel.addresses,
    outside: f.violation.outside,
    ...(f.tunnel.remote ? {underlay: f.tunnel.remote} : {}),
    relays: f.tunnel.relays,
    certificateDetails: {name: cert.name, networks: cert.networks, unsafeNetworks: cert.unsafeNetworks, groups: cert.groups, notBefore: cert.notBefore, notAfter: cert.notAfter},
    ...(cert.pem ? {certificate: cert.pem} : {}),
  }
}

/** The line printed for a violation (untrusted parts made safe). */
function violationLine(record: EvidenceRecord, f: FoundViolation, file: string): string {
  const issuer = record.issuer.organization ? `${record.issuer.organization}'s CA` : `the unknown CA ${record.issuer.caFingerprint}`
  const block = record.issuer.blocks ? `outside its block ${record.issuer.blocks.join(', ')}` : 'from no member\'s CA'
  const via = [record.underlay ? `from ${record.underlay}` : '', f.tunnel.relays.length > 0 ? `relayed by ${f.tunnel.relays.join(', ')}` : ''].filter(Boolean).join(' ')
  return safeLine(
    `tbmesh up: VIOLATION at ${record.observedAt}: certificate ${record.fingerprint} (${JSON.stringify(record.certificateDetails.name)}), issued by ${issuer}, ` +
      `holds ${record.outside.join(', ')} ${block}${via ? ` (${via})` : ''}: tunnel closed, certificate blocklisted; evidence ${file}`,
  )
}
