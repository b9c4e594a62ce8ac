/**
 * `tbmesh doctor`: checks an installation made by `tbmesh install` and the host it is on, one line per check (nebula,
 * tun device, certificates and key, the overlay IP in every file TruBudget reads, published ports).
 */

import {constants as fsConstants} from 'node:fs'
import {open, readFile, stat} from 'node:fs/promises'
import path from 'node:path'

import {parse as parseYaml} from 'yaml'

import {NODE_ENV_FILE, UNDERLAY_GUARD} from '../bundle/layout.js'
import {checkMembersFile, isFederatedTrust, MEMBERS_PATH} from '../bundle/members.js'
import {MIN_VAULT_SECRET_LENGTH, parseNodeEnv} from '../bundle/node-env.js'
import {UserError} from '../errors.js'
import {EXPIRY_WARNING_SECONDS} from '../lib/duration.js'
import {TUN_DEVICE} from '../lib/names.js'
import {lastLine, safeLine, SHA256_HEX} from '../lib/text.js'
import {compareVersions} from '../lib/version.js'
import {
  certificatesFromPem,
  CertificateVerifyError,
  type CurveKey,
  describeFormat,
  fingerprint,
  hostCertificatesProblem,
  hostKeyMatchesCertificate,
  MIN_NEBULA_VERSION,
  type NebulaCertificate,
  nebulaRequirement,
  readHostPrivateKey,
  verifyCertificate,
} from '../nebula/index.js'
import {NODE_ENV_SECRETS} from '../render/trubudget.js'
import {EVIDENCE_DIR, readEvidence} from '../runtime/evidence.js'
import {composePorts, type Verdict} from './compose-ports.js'
import {checkUnderlayGuard} from './guard.js'
import {advisoriesFor, hasSdNotify, nebulaTest, nebulaVersion, onPath, SD_NOTIFY_SINCE} from './nebula.js'
import {checkBlockchainContainer, checkBootOrder, checkComposeVersion, checkOverlayAddress, checkP2pListener, ipOrUndefined, nodeContainers} from './runtime.js'

/** Verdict of one {@link DoctorCheck}. */
export type DoctorStatus = Verdict

/** One check of an installation: a stable id, its verdict, and one line saying what was found. */
export interface DoctorCheck {
  /**
   * Which check: `nebula`, `nebula-fixes`, `tun`, `nebula-test`, `systemd-unit`, `ca-pin`, `ca-validity`, `host-cert`,
   * `host-cert-verify`, `host-key`, `peer-policy`, `evidence`, `node-env`, `multichain-conf`, `blockchain-env`,
   * `compose-ports`, `overlay-address`, `p2p-listener`, with docker `compose-version`, `boot-order`,
   * `container-environment`, `container-ports`, `container-volume`, `container-restart` (or `container`), and
   * `underlay-guard`.
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
  /** Where the kernel's settings are read; default `/proc/sys` (tests). */
  procSys?: string
}

/** The installation directory `doctor` checks by default. */

/** Shortest node secret doctor accepts (tbmesh install makes 44 characters; TruBudget wants 32 for RPC). */
const MIN_SECRET_LENGTH = 32

/** The compose files of an installation whose published ports doctor reads, and what each must do. */
const COMPOSE_FILES: ReadonlyArray<[string, {override?: boolean; requireP2p?: boolean}]> = [
  ['docker/compose.yml', {override: false}],
  ['docker/trubudget-operation.override.yml', {}],
  ['docker/trubudget-services.override.yml', {}],
  ['docker/trubudget-services-documents.override.yml', {requireP2p: false}],
]

const DAY = 86_400

/**
 * Checks the installation in `dir` (made by `tbmesh install`) and the host it is on, each check one {@link DoctorCheck}:
 *
 * - `nebula`: the binary is on PATH and `nebula -version` is at least what the installed certificates need
 *   (`nebulaRequirement`: 1.10 for v2, 1.7 for P256, else {@link MIN_NEBULA_VERSION}); without it, with docker on PATH,
 *   a running Nebula container of the node passes (and none warns); listed first, run after the certificates are read;
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
 * - `host-cert-verify`: the host certificate (and an older one beside it, in round 2 of a rotation that changes the
 *   format) passes every Nebula rule against `nebula/ca.crt` and config.yml's blocklist (expiry is left to the checks
 *   above);
 * - `host-key`: `nebula/host.key` matches the host certificate;
 * - `peer-policy`: in a federated network, `nebula/members.json` is there and fits the trust bundle and the host (what
 *   `tbmesh up` holds every peer to); in single-CA mode there is nothing to check;
 * - `evidence`: warns when `tbmesh up` recorded certificates outside their issuer's block (`evidence/`);
 * - `node-env`: `trubudget/node.env` exists, is readable by its owner only and holds every secret, long enough;
 * - `multichain-conf` (without docker; with it TruBudget rewrites the file and it passes as unused): every `bind` and
 *   `externalip` of `multichain/multichain.conf` is the overlay IP and its `rpcpassword` node.env's;
 * - `blockchain-env`: `EXTERNAL_IP` of `trubudget/blockchain.env` and `docker/trubudget.env` is the overlay IP;
 * - `compose-ports`: no compose file of the installation publishes the MultiChain P2P port beyond the overlay IP;
 * - the running system (`runtime.ts`): `overlay-address`, `p2p-listener`; with docker on PATH `compose-version`,
 *   `boot-order` and the blockchain container's `container-environment`, `container-ports`, `container-volume`,
 *   `container-restart` (or one `container` warning).
 * - `underlay-guard`: the underlay guard is loaded for the host certificate's overlay IPs and config.yml's `tun.dev`
 *   (`checkUnderlayGuard` in `guard.ts`); fails when it is not, and when it cannot be checked (not root).
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

  // The installation's manifest: which node, which CA.
  let manifest: {caFingerprint?: unknown; network?: unknown; node?: unknown; overlayIp?: unknown; organization?: unknown} | undefined
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

  // Nebula itself (its version against what the installed certificates need, checked below) and the tun device.
  const dockerBin = await onPath('docker')
  const found = await nebulaVersion()
  const nebula = found?.path
  const version = found?.version
  const configPath = file('nebula/config.yml')
  const config = await readConfig(configPath)
  if (version) {
    const installation = {federated: configFederated(config), p256: await caCurveP256(file('nebula/ca.crt'))}
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
    const text = unit.data.toString('utf8')
    const type = /^Type=(\S+)/m.exec(text)?.[1] ?? 'simple'
    if (type === 'notify' && version && !hasSdNotify(version)) {
      check('systemd-unit', 'fail', `systemd/nebula.service has Type=notify, but nebula ${version} does not notify systemd (${SD_NOTIFY_SINCE} and later do): set Type=simple, or upgrade nebula`)
    } else if (type === 'notify' && !/^NotifyAccess=all$/m.test(text)) {
      check('systemd-unit', 'fail', 'systemd/nebula.service has Type=notify without NotifyAccess=all: Nebula, a child of tbmesh up, sends the ready message, which systemd then ignores and restarts the unit in a loop; add NotifyAccess=all')
    } else check('systemd-unit', 'pass', `systemd/nebula.service has Type=${type}${version ? `, right for nebula ${version}` : ''}`)
  }

  // The pinned CA, the certificates and the key.
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

  // The host certificate (the newest, last) and, in round 2 of a rotation that changes the format, an older one beside it.
  let hosts: NebulaCertificate[] | undefined
  const hostFile = await read('nebula/host.crt')
  let hostProblem = 'problem' in hostFile ? hostFile.problem : undefined
  if ('data' in hostFile) {
    try {
      hosts = certificatesFromPem(hostFile.data)
      hostProblem = hostCertificatesProblem(hosts)
      if (hostProblem) hosts = undefined
    } catch (error) {
      hostProblem = `nebula/host.crt does not parse (${(error as Error).message})`
    }
  }
  const host = hosts?.at(-1)

  // Listed first: whether this nebula can load these certificates (v2 needs 1.10, P256 1.7).
  const need = nebulaRequirement([...(cas ?? []), ...(hosts ?? [])])
  const needs = need.why ? `, which ${need.why} here needs` : ''
  const nebulaCheck: DoctorCheck = !found
    ? await nebulaContainer(dockerBin, manifest?.node, `nebula is not on PATH: install it (apt-get install nebula), version ${need.version} or later${needs}`)
    : found.version === undefined
      ? {name: 'nebula', status: 'fail', detail: found.problem}
      : compareVersions(found.version, need.version) < 0
        ? {name: 'nebula', status: 'fail', detail: `nebula ${found.version} (${found.path}) is older than ${need.version}${needs}: upgrade it`}
        : {name: 'nebula', status: 'pass', detail: `nebula ${found.version} (${found.path})`}
  checks.unshift({...nebulaCheck, detail: safeLine(nebulaCheck.detail)})

  const issuer = host && cas?.find((c) => fingerprint(c) === host.details.issuer)
  const ca = issuer ?? cas?.find((c) => fingerprint(c) === pin)
  if (ca) check('ca-validity', ...validity(`CA ${JSON.stringify(ca.details.name)} (${fingerprint(ca)})`, ca, now))
  else check('ca-validity', 'fail', caProblem ?? 'nebula/ca.crt holds neither the host certificate\'s CA nor the pinned one')

  const manifestIp = typeof manifest?.overlayIp === 'string' ? manifest.overlayIp : undefined
  const certIp = host?.details.ips[0]?.split('/')[0]
  const overlayIp = certIp ?? manifestIp
  if (host) {
    const formats = hosts!.map((h) => describeFormat(h)).join(' + ')
    const name = `host certificate ${JSON.stringify(host.details.name)} (${certIp ?? 'no IP'}, ${formats})`
    const [status, detail] = validity(name, host, now)
    if (manifest && (host.details.name !== manifest.node || certIp !== manifestIp)) {
      check('host-cert', 'fail', `${name} is not for ${String(manifest.node)} (${String(manifestIp)}), the node manifest.json names`)
    } else check('host-cert', status, detail)
  } else check('host-cert', 'fail', hostProblem!)

  if (!host) check('host-cert-verify', 'fail', `cannot verify the host certificate: ${hostProblem}`)
  else if (!cas) check('host-cert-verify', 'fail', `cannot verify the host certificate: ${caProblem}`)
  else {
    const list = config?.pki?.blocklist
    const blocklist = Array.isArray(list) ? list.filter((e): e is string => typeof e === 'string') : []
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
    // An older certificate presented beside it (round 2 of a rotation) must verify too, apart from its expiry.
    for (const older of hosts!.slice(0, -1)) {
      try {
        verifyCertificate(older, {trusted: cas, blocklist, now: Math.min(now, older.details.notAfter)})
      } catch (error) {
        if (!(error instanceof CertificateVerifyError)) throw error
        failure ??= error
      }
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
    let key: CurveKey | undefined
    try {
      key = readHostPrivateKey(keyFile.data)
    } catch (error) {
      check('host-key', 'fail', `nebula/host.key does not parse (${(error as Error).message})`)
    }
    if (key && !host) check('host-key', 'fail', `cannot match nebula/host.key: ${hostProblem}`)
    else if (key && host) {
      if (hosts!.every((h) => hostKeyMatchesCertificate(key.key, h, key.curve))) check('host-key', 'pass', `nebula/host.key (${key.curve === 'P256' ? 'P256' : 'X25519'}) matches the host certificate${hosts!.length > 1 ? 's' : ''}`)
      else check('host-key', 'fail', "nebula/host.key does not match the host certificate (it is another node's key, or of another curve)")
    }
  }

  // What tbmesh up holds every peer to, and what it caught.
  const members = await read(MEMBERS_PATH)
  if (!cas) check('peer-policy', 'fail', `cannot check the peer policy: ${caProblem}`)
  else if ('problem' in members && !members.problem.endsWith('is missing')) check('peer-policy', 'fail', members.problem)
  else if ('problem' in members) {
    if (isFederatedTrust(cas)) check('peer-policy', 'fail', `no ${MEMBERS_PATH} in a federated network's installation: tbmesh up refuses to run it; install an update bundle from your CA`)
    else check('peer-policy', 'pass', 'single CA: every address is its CA\'s to give, nothing for tbmesh up to hold peers to')
  } else {
    const checked = checkMembersFile(members.data.toString('utf8'), {network: String(manifest?.network), cas, ...(hosts && pin ? {hosts, signer: pin} : {})})
    if (typeof checked === 'string') check('peer-policy', 'fail', checked)
    else check('peer-policy', 'pass', `${MEMBERS_PATH}: ${checked.members.length} member block(s), one per CA of nebula/ca.crt; tbmesh up holds every peer to its issuer's block`)
  }
  const evidence = await readEvidence(target).catch(() => ({records: [], problems: []}))
  if (evidence.records.length > 0) {
    check('evidence', 'warn', `tbmesh up caught ${evidence.records.length} certificate(s) outside their issuer's block (${EVIDENCE_DIR}/): report them to the other members with tbmesh federation report`)
  } else check('evidence', 'pass', `no evidence records in ${EVIDENCE_DIR}/`)

  // The node's own secrets (made by tbmesh install).
  const nodeEnvFile = await read(NODE_ENV_FILE)
  let nodeEnv: Record<string, string> | undefined
  if ('problem' in nodeEnvFile) check('node-env', 'fail', `${nodeEnvFile.problem}: reinstall the bundle with this tbmesh (it makes the node's secrets)`)
  else {
    nodeEnv = parseNodeEnv(nodeEnvFile.data.toString('utf8'))
    const mode = (await stat(file(NODE_ENV_FILE))).mode & 0o777
    const weak = NODE_ENV_SECRETS.filter((name) => (nodeEnv![name]?.length ?? 0) < (name === 'ORGANIZATION_VAULT_SECRET' ? MIN_VAULT_SECRET_LENGTH : MIN_SECRET_LENGTH))
    if (mode & 0o077) check('node-env', 'fail', `${NODE_ENV_FILE} has mode ${mode.toString(8)}: others may read the node's secrets (chmod 600 it)`)
    else if (weak.length > 0) check('node-env', 'fail', `${NODE_ENV_FILE} lacks ${weak.join(', ')} or holds a short one: reinstall the bundle`)
    else check('node-env', 'pass', `${NODE_ENV_FILE} holds this node's secrets, readable by its owner only`)
  }

  // The overlay IP everywhere TruBudget reads it.
  const ipSource = certIp ? 'the certificate\'s overlay IP' : 'the overlay IP in manifest.json'
  const conf = await read('multichain/multichain.conf')
  if (dockerBin) check('multichain-conf', 'pass', 'multichain.conf is not used with Docker (TruBudget rewrites it at every start); the published ports do its job')
  else if ('problem' in conf) check('multichain-conf', 'fail', conf.problem)
  else if (!overlayIp) check('multichain-conf', 'fail', 'cannot check multichain.conf: the overlay IP is unknown')
  else {
    const settings = confSettings(conf.data.toString('utf8'))
    const wrong: string[] = []
    for (const key of ['bind', 'externalip']) {
      const values = settings.get(key) ?? []
      if (values.length === 0) wrong.push(`no ${key}=`)
      for (const value of values) if (stripPort(value) !== overlayIp) wrong.push(`${key}=${value}`)
    }
    if (nodeEnv && settings.get('rpcpassword')?.at(-1) !== nodeEnv.MULTICHAIN_RPC_PASSWORD) wrong.push(`an rpcpassword other than ${NODE_ENV_FILE}'s`)
    if (wrong.length > 0) check('multichain-conf', 'fail', `multichain.conf has ${wrong.join(', ')}, not ${ipSource} ${overlayIp}`)
    else check('multichain-conf', 'pass', `multichain.conf bind and externalip are ${ipSource} ${overlayIp}, its RPC password the node's own`)
  }

  let p2pPort = 7447
  let p2pHost: string | undefined
  const wrongIp: string[] = []
  const envProblems: string[] = []
  for (const rel of ['trubudget/blockchain.env', 'docker/trubudget.env']) {
    const env = await read(rel)
    if ('problem' in env) {
      envProblems.push(env.problem)
      continue
    }
    const vars = envSettings(env.data.toString('utf8'))
    const port = Number(vars.get('P2P_PORT'))
    if (Number.isInteger(port) && port > 0 && port < 65_536) p2pPort = port
    p2pHost ??= ipOrUndefined(vars.get('P2P_HOST'))
    const external = vars.get('EXTERNAL_IP')
    if (external !== overlayIp) wrongIp.push(`${rel} ${external === undefined ? 'sets no EXTERNAL_IP' : `has EXTERNAL_IP=${external}`}`)
  }
  if (!overlayIp) check('blockchain-env', 'fail', 'cannot check EXTERNAL_IP: the overlay IP is unknown')
  else if (envProblems.length > 0 || wrongIp.length > 0) check('blockchain-env', 'fail', `${[...envProblems, ...wrongIp].join('; ')}, not ${ipSource} ${overlayIp}`)
  else check('blockchain-env', 'pass', `blockchain.env and trubudget.env EXTERNAL_IP are ${ipSource} ${overlayIp}`)

  if (overlayIp) {
    const verdicts: Array<[DoctorStatus, string]> = []
    for (const [rel, o] of COMPOSE_FILES) {
      const text = await read(rel)
      verdicts.push('problem' in text ? ['fail', text.problem] : composePorts(rel, text.data.toString('utf8'), overlayIp, p2pPort, o))
    }
    const worst = verdicts.find(([v]) => v === 'fail') ?? verdicts.find(([v]) => v === 'warn')
    if (worst) check('compose-ports', ...worst)
    else check('compose-ports', 'pass', `the compose files publish MultiChain P2P port ${p2pPort} on the overlay IP ${overlayIp} only`)
  } else check('compose-ports', 'fail', 'cannot check the compose files: the overlay IP is unknown')

  // The running system: Nebula's address, what answers on P2P, and with Docker the containers as Docker runs them.
  if (overlayIp) {
    const address = await checkOverlayAddress(configTun(config), overlayIp)
    check(...address)
    check(...(await checkP2pListener(overlayIp, p2pPort, address[1] === 'pass')))
  }
  if (dockerBin) {
    check(...(await checkComposeVersion(dockerBin)))
    check(...(await checkBootOrder(opts.procSys)))
    if (overlayIp && typeof manifest?.node === 'string' && typeof manifest.organization === 'string') {
      const want = {node: manifest.node, organization: manifest.organization, overlayIp, p2pHost, p2pPort, rpcPassword: nodeEnv?.MULTICHAIN_RPC_PASSWORD}
      for (const c of await checkBlockchainContainer(dockerBin, want)) check(...c)
    }
  }

  // The underlay guard: loaded in the kernel, for this node's overlay IP(s) and tun device.
  const guardFile = file(UNDERLAY_GUARD)
  const guardIps = host ? host.details.ips.map((ip) => ip.split('/')[0]) : overlayIp ? [overlayIp] : []
  const tunDev = config?.tun?.dev
  const unknown =
    guardIps.length === 0 ? `the overlay IP is unknown (${hostProblem ?? manifestProblem ?? 'no host certificate'})` : typeof tunDev === 'string' ? undefined : `${configPath} names no tun.dev`
  const [guardStatus, guardDetail] = await checkUnderlayGuard({
    overlayIps: guardIps,
    ...(typeof tunDev === 'string' ? {tunDev} : {}),
    ...(unknown ? {unknown} : {}),
    file: guardFile,
  })
  const noFile = guardStatus === 'fail' && (await stat(guardFile).then(() => false, (error: NodeJS.ErrnoException) => error.code === 'ENOENT'))
  check('underlay-guard', guardStatus, noFile ? `${guardDetail} (${UNDERLAY_GUARD} is missing: reinstall the join bundle with tbmesh install --force, which writes it)` : guardDetail)

  const counts: Record<DoctorStatus, number> = {pass: 0, warn: 0, fail: 0}
  for (const c of checks) counts[c.status]++
  return {dir: target, ...(overlayIp ? {overlayIp} : {}), ...(version ? {nebulaVersion: version} : {}), ok: counts.fail === 0, counts, checks}
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

/** Whether config.yml's firewall rules are scoped by `ca_sha` (a federated network's); false when it was not read. */
function configFederated(config: InstalledConfig | undefined): boolean {
  const rules = config?.firewall?.inbound
  return Array.isArray(rules) && rules.some((r) => typeof r === 'object' && r !== null && 'ca_sha' in r)
}

/** Whether the CA certificates in `caPath` use curve P256; false when they cannot be read (other checks report that). */
async function caCurveP256(caPath: string): Promise<boolean> {
  try {
    return certificatesFromPem(await readFile(caPath)).some((c) => c.details.curve === 'P256')
  } catch {
    return false
  }
}

/**
 * Without nebula on PATH: Nebula may run in a container of node `node` (docker/compose.yml,
 * docker/docker-compose.nebula.yml), which passes; none running warns. Without docker, `missing` fails.
 */
async function nebulaContainer(dockerBin: string | undefined, node: unknown, missing: string): Promise<DoctorCheck> {
  if (!dockerBin || typeof node !== 'string') return {name: 'nebula', status: 'fail', detail: missing}
  const running = await nodeContainers(dockerBin, node, 'nebula', true)
  if (running.ok && running.ids.length > 0) return {name: 'nebula', status: 'pass', detail: `nebula runs in a container (${running.ids[0].slice(0, 12)}) of ${node}; not on PATH`}
  return {name: 'nebula', status: 'warn', detail: `nebula is neither on PATH nor running in a container of ${node}${running.ok ? '' : ` (cannot ask Docker: ${running.why})`}: start it (see README.md)`}
}

/** config.yml's `tun.dev`, or Nebula's default `nebula1` when it names none usable. */
function configTun(config: {tun?: {dev?: unknown}} | undefined): string {
  const dev = config?.tun?.dev
  return typeof dev === 'string' && TUN_DEVICE.test(dev) ? dev : 'nebula1'
}

/** What doctor reads of config.yml. */
type InstalledConfig = {pki?: {blocklist?: unknown}; tun?: {dev?: unknown}; firewall?: {inbound?: unknown}}

/** config.yml as data, or undefined when it cannot be read or parsed (nebula-test reports that). */
async function readConfig(configPath: string): Promise<InstalledConfig | undefined> {
  try {
    return (parseYaml(await readFile(configPath, 'utf8')) as InstalledConfig | null) ?? undefined
  } catch {
    return undefined
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
