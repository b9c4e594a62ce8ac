/**
 * `tbmesh doctor`: checks an installation made by `tbmesh install` and the host it is on, one line per check (nebula,
 * tun device, certificates and key, the overlay IP in every file TruBudget reads, published ports).
 */

import {constants as fsConstants} from 'node:fs'
import {open, readFile, stat} from 'node:fs/promises'
import path from 'node:path'

import {parse as parseYaml} from 'yaml'

import {UserError} from '../errors.js'
import {EXPIRY_WARNING_SECONDS} from '../lib/duration.js'
import {safeLine, SHA256_HEX} from '../lib/text.js'
import {
  certificateFromPem,
  certificatesFromPem,
  CertificateVerifyError,
  fingerprint,
  hostKeyMatchesCertificate,
  hostPrivateKeyFromPem,
  type NebulaCertificate,
  verifyCertificate,
} from '../nebula/index.js'
import {composePorts, type Verdict} from './compose-ports.js'
import {advisoriesFor, compareVersions, hasSdNotify, nebulaTest, nebulaVersion, SD_NOTIFY_SINCE} from './nebula.js'

/** Verdict of one {@link DoctorCheck}. */
export type DoctorStatus = Verdict

/** One check of an installation: a stable id, its verdict, and one line saying what was found. */
export interface DoctorCheck {
  /**
   * Which check: `nebula`, `nebula-fixes`, `tun`, `nebula-test`, `systemd-unit`, `ca-pin`, `ca-validity`, `host-cert`,
   * `host-cert-verify`, `host-key`, `multichain-conf`, `blockchain-env`, `compose-ports`.
   */
  name: string
  status: DoctorStatus
  /** One line, starting with what was checked, e.g. `nebula 1.6.1 (/usr/bin/nebula)`. */
  detail: string
}

/** What `tbmesh doctor` reports. */
export interface DoctorResult {
  /** Absolute path of the installation checked. */
  dir: string
  /** The overlay IP the checks compared against (the host certificate's, else the manifest's), when known. */
  overlayIp?: string
  /** The version `nebula -version` reports (e.g. `1.11.0`), when nebula is on PATH. */
  nebulaVersion?: string
  /** True when no check failed (warnings allowed). */
  ok: boolean
  /** How many checks ended with each status. */
  counts: Record<DoctorStatus, number>
  /** Every check, in the order run. */
  checks: DoctorCheck[]
}

/** Options of {@link doctor}. */
export interface DoctorOptions {
  /** Current time in ms since the epoch (tests). */
  now?: number
  /** The tun device to check; default `/dev/net/tun`. */
  tunDevice?: string
}

/** Oldest Nebula the rendered config.yml is for. */
export const MIN_NEBULA_VERSION = '1.6.1'

const DAY = 86_400

/**
 * Checks the installation in `dir` (made by `tbmesh install`) and the host it is on, each check one {@link DoctorCheck}:
 *
 * - `nebula`: the binary is on PATH and `nebula -version` is at least {@link MIN_NEBULA_VERSION};
 * - `nebula-fixes`: the version has the security fixes of `NEBULA_ADVISORIES` (`node/nebula.ts`) that matter to this
 *   installation (federated when config.yml's rules carry `ca_sha`; P256 when its CA is); warns otherwise;
 * - `tun`: `/dev/net/tun` exists, is a character device and opens read-write;
 * - `nebula-test`: `nebula -test -config DIR/nebula/config.yml` passes;
 * - `systemd-unit`: `systemd/nebula.service`, when present, says `Type=notify` only if nebula notifies systemd
 *   (1.8 and later; an older one would be killed and restarted in a loop);
 * - `ca-pin`: the installed manifest's `caFingerprint`, and that `nebula/ca.crt` holds that CA;
 * - `ca-validity`, `host-cert`: validity and days left of the host certificate's CA and of the host certificate
 *   (warn within 30 days ({@link EXPIRY_WARNING_SECONDS}), fail when expired or not yet valid); the host certificate must be
 *   for the manifest's node and overlay IP;
 * - `host-cert-verify`: the host certificate passes every Nebula rule against `nebula/ca.crt` and config.yml's
 *   blocklist (expiry is left to the checks above);
 * - `host-key`: `nebula/host.key` matches the host certificate;
 * - `multichain-conf`: every `bind` and `externalip` of `multichain/multichain.conf` is the overlay IP;
 * - `blockchain-env`: `EXTERNAL_IP` of `trubudget/blockchain.env` is the overlay IP;
 * - `compose-ports`: `docker/docker-compose.trubudget.override.yml`, when present, publishes the MultiChain P2P port
 *   on the overlay IP only (any mapping of it bound to another address, or to all, fails).
 *
 * Never throws for a broken installation (that is what the checks report).
 * @throws UserError when `dir` is not a directory.
 */
export async function doctor(dir: string, opts: DoctorOptions = {}): Promise<DoctorResult> {
  const target = path.resolve(dir)
  const st = await stat(target).catch(() => undefined)
  if (!st?.isDirectory()) {
    throw new UserError(`${target} is not a directory`, {fix: 'pass the --dir you gave `tbmesh install`'})
  }
  const now = Math.floor((opts.now ?? Date.now()) / 1000)
  const checks: DoctorCheck[] = []
  const check = (name: string, status: DoctorStatus, detail: string): void => {
    checks.push({name, status, detail: safeLine(detail)})
  }
  const file = (rel: string): string => path.join(target, ...rel.split('/'))
  const read = async (rel: string): Promise<{data: Buffer} | {problem: string}> => {
    try {
      return {data: await readFile(file(rel))}
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? 'error'
      if (code === 'ENOENT') return {problem: `${rel} is missing`}
      if (code === 'EACCES' || code === 'EPERM') return {problem: `cannot read ${rel} (${code}): run tbmesh doctor as root`}
      return {problem: `cannot read ${rel} (${code})`}
    }
  }

  // Nebula itself and the tun device.
  const configPath = file('nebula/config.yml')
  const probe = await nebulaVersion()
  const nebula = probe.found ? probe.path : undefined
  const version = probe.found ? probe.version : undefined
  if (!probe.found) check('nebula', 'fail', 'nebula is not on PATH: install it (apt-get install nebula), version 1.6.1 or later')
  else if (!probe.version) check('nebula', 'fail', probe.problem ?? `${probe.path} printed no version`)
  else if (compareVersions(probe.version, MIN_NEBULA_VERSION) < 0) check('nebula', 'fail', `nebula ${probe.version} (${probe.path}) is older than ${MIN_NEBULA_VERSION}: upgrade it`)
  else check('nebula', 'pass', `nebula ${probe.version} (${probe.path})`)
  if (version) {
    const installation = {federated: await configFederated(configPath), p256: await caCurveP256(file('nebula/ca.crt'))}
    const missing = advisoriesFor(version, installation)
    if (missing.length === 0) check('nebula-fixes', 'pass', `nebula ${version} has the security fixes this ${installation.federated ? 'federated ' : ''}installation needs`)
    else {
      const newest = missing.map((a) => a.fixed).sort(compareVersions).at(-1)!
      const what = missing.map((a) => `${a.summary} (fixed in ${a.fixed}, ${a.reference})`).join('; ')
      check('nebula-fixes', 'warn', `nebula ${version} lacks security fixes: ${what}: upgrade nebula to ${newest} or later`)
    }
  } else check('nebula-fixes', 'warn', 'cannot tell which security fixes nebula has: its version is unknown')
  check(...(await checkTun(opts.tunDevice ?? '/dev/net/tun')))

  if (nebula) {
    const test = await nebulaTest(configPath)
    if (test.ok) check('nebula-test', 'pass', `nebula -test accepts ${configPath}`)
    else check('nebula-test', 'fail', `nebula -test rejects ${configPath}: ${lastLine(test.output ?? '')}`)
  } else {
    check('nebula-test', 'warn', `nebula -test did not run on ${configPath}: nebula is not installed`)
  }

  const unit = await read('systemd/nebula.service')
  if ('problem' in unit) {
    if (unit.problem.endsWith('is missing')) check('systemd-unit', 'pass', 'no systemd/nebula.service: nothing to check')
    else check('systemd-unit', 'fail', unit.problem)
  } else {
    const type = /^Type=(\S+)/m.exec(unit.data.toString('utf8'))?.[1] ?? 'simple'
    if (type === 'notify' && version && !hasSdNotify(version)) {
      check('systemd-unit', 'fail', `systemd/nebula.service has Type=notify, but nebula ${version} does not notify systemd (${SD_NOTIFY_SINCE} and later do): set Type=simple, or upgrade nebula`)
    } else check('systemd-unit', 'pass', `systemd/nebula.service has Type=${type}${version ? `, right for nebula ${version}` : ''}`)
  }

  // The pinned CA, the certificates and the key.
  let manifest: {caFingerprint?: unknown; node?: unknown; overlayIp?: unknown} | undefined
  const manifestFile = await read('manifest.json')
  let manifestProblem = 'problem' in manifestFile ? manifestFile.problem : undefined
  if ('data' in manifestFile) {
    try {
      const parsed: unknown = JSON.parse(manifestFile.data.toString('utf8'))
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) manifest = parsed as typeof manifest
      else manifestProblem = 'manifest.json is not a JSON object'
    } catch {
      manifestProblem = 'manifest.json is not valid JSON'
    }
  }
  const pin = typeof manifest?.caFingerprint === 'string' && SHA256_HEX.test(manifest.caFingerprint) ? manifest.caFingerprint : undefined

  let cas: NebulaCertificate[] | undefined
  const caFile = await read('nebula/ca.crt')
  let caProblem = 'problem' in caFile ? caFile.problem : undefined
  if ('data' in caFile) {
    try {
      cas = certificatesFromPem(caFile.data).filter((c) => c.details.isCA)
      if (cas.length === 0) caProblem = 'nebula/ca.crt holds no CA certificate'
    } catch (error) {
      caProblem = `nebula/ca.crt does not parse (${(error as Error).message})`
    }
  }

  if (manifestProblem) check('ca-pin', 'fail', manifestProblem)
  else if (!pin) check('ca-pin', 'fail', 'manifest.json names no CA fingerprint')
  else if (!cas) check('ca-pin', 'fail', `manifest.json pins CA ${pin}, but ${caProblem}`)
  else if (cas.some((c) => fingerprint(c) === pin)) {
    const others = cas.length - 1
    check('ca-pin', 'pass', `manifest.json pins CA ${pin}; nebula/ca.crt holds it${others > 0 ? ` (and ${others} other CA${others > 1 ? 's' : ''})` : ''}`)
  } else check('ca-pin', 'fail', `manifest.json pins CA ${pin}, but nebula/ca.crt does not hold it`)

  let host: NebulaCertificate | undefined
  const hostFile = await read('nebula/host.crt')
  let hostProblem = 'problem' in hostFile ? hostFile.problem : undefined
  if ('data' in hostFile) {
    try {
      host = certificateFromPem(hostFile.data)
    } catch (error) {
      hostProblem = `nebula/host.crt does not parse (${(error as Error).message})`
    }
  }

  const issuer = host && cas?.find((c) => fingerprint(c) === host.details.issuer)
  const ca = issuer ?? cas?.find((c) => fingerprint(c) === pin)
  if (ca) check('ca-validity', ...validity(`CA ${JSON.stringify(ca.details.name)} (${fingerprint(ca)})`, ca, now))
  else check('ca-validity', 'fail', caProblem ?? 'nebula/ca.crt holds neither the host certificate\'s CA nor the pinned one')

  const manifestIp = typeof manifest?.overlayIp === 'string' ? manifest.overlayIp : undefined
  const certIp = host?.details.ips[0]?.split('/')[0]
  const overlayIp = certIp ?? manifestIp
  if (host) {
    const name = `host certificate ${JSON.stringify(host.details.name)} (${certIp ?? 'no IP'})`
    const [status, detail] = validity(name, host, now)
    if (manifest && (host.details.name !== manifest.node || certIp !== manifestIp)) {
      check('host-cert', 'fail', `${name} is not for ${String(manifest.node)} (${String(manifestIp)}), the node manifest.json names`)
    } else check('host-cert', status, detail)
  } else check('host-cert', 'fail', hostProblem!)

  if (!host) check('host-cert-verify', 'fail', `cannot verify the host certificate: ${hostProblem}`)
  else if (!cas) check('host-cert-verify', 'fail', `cannot verify the host certificate: ${caProblem}`)
  else {
    const blocklist = await configBlocklist(configPath)
    const verify = (at: number): CertificateVerifyError | undefined => {
      try {
        verifyCertificate(host, {trusted: cas, blocklist, now: at})
        return undefined
      } catch (error) {
        if (error instanceof CertificateVerifyError) return error
        throw error
      }
    }
    let failure = verify(now)
    let expiryAside = false
    if (failure && (failure.reason === 'expired' || failure.reason === 'ca-expired') && issuer) {
      // Expiry is the validity checks' business: check everything else at a time both were valid.
      failure = verify(Math.max(host.details.notBefore, issuer.details.notBefore))
      expiryAside = true
    }
    if (failure) check('host-cert-verify', 'fail', `the host certificate does not verify against nebula/ca.crt: ${failure.message}`)
    else {
      const by = `CA ${JSON.stringify(issuer!.details.name)} (${host.details.issuer})`
      check('host-cert-verify', 'pass', `the host certificate is signed by ${by} of nebula/ca.crt${expiryAside ? ' (apart from its expiry)' : ''}`)
    }
  }

  const keyFile = await read('nebula/host.key')
  if ('problem' in keyFile) check('host-key', 'fail', keyFile.problem)
  else {
    let key: Buffer | undefined
    try {
      key = hostPrivateKeyFromPem(keyFile.data)
    } catch (error) {
      check('host-key', 'fail', `nebula/host.key does not parse (${(error as Error).message})`)
    }
    if (key && !host) check('host-key', 'fail', `cannot match nebula/host.key: ${hostProblem}`)
    else if (key && host) {
      if (hostKeyMatchesCertificate(key, host)) check('host-key', 'pass', 'nebula/host.key matches the host certificate')
      else check('host-key', 'fail', "nebula/host.key does not match the host certificate (it is another node's key)")
    }
  }

  // The overlay IP everywhere TruBudget reads it.
  const ipSource = certIp ? 'the certificate\'s overlay IP' : 'the overlay IP in manifest.json'
  const conf = await read('multichain/multichain.conf')
  if ('problem' in conf) check('multichain-conf', 'fail', conf.problem)
  else if (!overlayIp) check('multichain-conf', 'fail', 'cannot check multichain.conf: the overlay IP is unknown')
  else {
    const settings = confSettings(conf.data.toString('utf8'))
    const wrong: string[] = []
    for (const key of ['bind', 'externalip']) {
      const values = settings.get(key) ?? []
      if (values.length === 0) wrong.push(`no ${key}=`)
      for (const value of values) if (stripPort(value) !== overlayIp) wrong.push(`${key}=${value}`)
    }
    if (wrong.length > 0) check('multichain-conf', 'fail', `multichain.conf has ${wrong.join(', ')}, not ${ipSource} ${overlayIp}`)
    else check('multichain-conf', 'pass', `multichain.conf bind and externalip are ${ipSource} ${overlayIp}`)
  }

  const env = await read('trubudget/blockchain.env')
  let p2pPort = 7447
  if ('problem' in env) check('blockchain-env', 'fail', env.problem)
  else {
    const vars = envSettings(env.data.toString('utf8'))
    const port = Number(vars.get('P2P_PORT'))
    if (Number.isInteger(port) && port > 0 && port < 65_536) p2pPort = port
    const external = vars.get('EXTERNAL_IP')
    if (!overlayIp) check('blockchain-env', 'fail', 'cannot check blockchain.env: the overlay IP is unknown')
    else if (external === overlayIp) check('blockchain-env', 'pass', `blockchain.env EXTERNAL_IP is ${ipSource} ${overlayIp}`)
    else check('blockchain-env', 'fail', `blockchain.env ${external === undefined ? 'sets no EXTERNAL_IP' : `has EXTERNAL_IP=${external}`}, not ${ipSource} ${overlayIp}`)
  }

  const overrideRel = 'docker/docker-compose.trubudget.override.yml'
  const override = await read(overrideRel)
  if ('problem' in override) {
    if (override.problem.endsWith('is missing')) check('compose-ports', 'pass', `no ${overrideRel}: nothing published by compose to check`)
    else check('compose-ports', 'fail', override.problem)
  } else if (!overlayIp) check('compose-ports', 'fail', `cannot check ${overrideRel}: the overlay IP is unknown`)
  else check('compose-ports', ...composePorts(overrideRel, override.data.toString('utf8'), overlayIp, p2pPort))

  const counts: Record<DoctorStatus, number> = {pass: 0, warn: 0, fail: 0}
  for (const c of checks) counts[c.status]++
  return {dir: target, ...(overlayIp ? {overlayIp} : {}), ...(version ? {nebulaVersion: version} : {}), ok: counts.fail === 0, counts, checks}
}

/** The last non-empty line of a program's output, for a one-line detail. */
function lastLine(text: string): string {
  return text.trim().split('\n').findLast((l) => l.trim() !== '')?.trim() ?? 'no output'
}

async function checkTun(device: string): Promise<[string, DoctorStatus, string]> {
  const st = await stat(device).catch((error: NodeJS.ErrnoException) => error)
  if (st instanceof Error) {
    if (st.code === 'ENOENT') return ['tun', 'fail', `${device} does not exist: load the tun module (modprobe tun)`]
    return ['tun', 'fail', `cannot inspect ${device} (${st.code})`]
  }
  if (!st.isCharacterDevice()) return ['tun', 'fail', `${device} is not a character device`]
  try {
    const handle = await open(device, fsConstants.O_RDWR | fsConstants.O_NONBLOCK)
    await handle.close()
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error'
    const hint = code === 'EACCES' || code === 'EPERM' ? ': run tbmesh doctor as root' : ''
    return ['tun', 'fail', `${device} is a character device but does not open read-write (${code})${hint}`]
  }
  return ['tun', 'pass', `${device} is a character device and opens read-write`]
}

/** Validity of `cert` at `now` (Unix seconds): fail when not valid, warn within 30 days ({@link EXPIRY_WARNING_SECONDS}). */
function validity(what: string, cert: NebulaCertificate, now: number): [DoctorStatus, string] {
  const {notBefore, notAfter} = cert.details
  const at = (t: number): string => new Date(t * 1000).toISOString().replace('.000Z', 'Z')
  if (now < notBefore) return ['fail', `${what} is not valid before ${at(notBefore)}`]
  if (now > notAfter) return ['fail', `${what} expired on ${at(notAfter)}`]
  const days = Math.floor((notAfter - now) / DAY)
  const left = `valid until ${at(notAfter)}, ${days} day${days === 1 ? '' : 's'} left`
  if (days < EXPIRY_WARNING_SECONDS / 86_400) return ['warn', `${what} is ${left}: ask the network operator for a renewal`]
  return ['pass', `${what} is ${left}`]
}

/** Whether config.yml's firewall rules are scoped by `ca_sha` (a federated network's); false when it cannot be read. */
async function configFederated(configPath: string): Promise<boolean> {
  try {
    const doc = parseYaml(await readFile(configPath, 'utf8')) as {firewall?: {inbound?: unknown}} | null
    const rules = doc?.firewall?.inbound
    return Array.isArray(rules) && rules.some((r) => typeof r === 'object' && r !== null && 'ca_sha' in r)
  } catch {
    return false
  }
}

/** Whether the CA certificates in `caPath` use curve P256; false when they cannot be read (other checks report that). */
async function caCurveP256(caPath: string): Promise<boolean> {
  try {
    return certificatesFromPem(await readFile(caPath)).some((c) => c.details.curve === 'P256')
  } catch {
    return false
  }
}

/** config.yml's `pki.blocklist`, or empty when it cannot be read (nebula-test reports that). */
async function configBlocklist(configPath: string): Promise<string[]> {
  try {
    const doc = parseYaml(await readFile(configPath, 'utf8')) as {pki?: {blocklist?: unknown}} | null
    const list = doc?.pki?.blocklist
    return Array.isArray(list) ? list.filter((e): e is string => typeof e === 'string') : []
  } catch {
    return []
  }
}

/** `key=value` lines of a MultiChain (Bitcoin-style) config: `#` starts a comment, blanks are trimmed, keys repeat. */
function confSettings(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/#.*$/, '').trim()
    const eq = line.indexOf('=')
    if (eq <= 0) continue
    const key = line.slice(0, eq).trim().replace(/^-/, '')
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1).trim()])
  }
  return out
}

/** `NAME=value` lines of an env file (last wins; comments and blank lines skipped; surrounding quotes removed). */
function envSettings(text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const eq = line.indexOf('=')
    if (eq <= 0) continue
    out.set(line.slice(0, eq).replace(/^export\s+/, '').trim(), line.slice(eq + 1).trim().replace(/^(["'])(.*)\1$/, '$2'))
  }
  return out
}

/** An IPv4 `address[:port]` without the port (other forms unchanged). */
function stripPort(value: string): string {
  return /^\d+\.\d+\.\d+\.\d+:\d+$/.test(value) ? value.slice(0, value.lastIndexOf(':')) : value
}

export {INSTALL_DIR_PLACEHOLDER as DEFAULT_INSTALL_DIR} from '../render/install-dir.js'
