/**
 * What `tbmesh up` reads from an installation (made by `tbmesh install`): the manifest, Nebula's config, the PKI and
 * the peer policy. Read afresh at start and on every reload, so an installed update takes effect with SIGHUP.
 */

import {readFile} from 'node:fs/promises'
import path from 'node:path'

import {type BundleManifest, MANIFEST, manifestProblem} from '../bundle/layout.js'
import {checkMembersFile, isFederatedTrust, MEMBERS_PATH} from '../bundle/members.js'
import {UserError} from '../errors.js'
import {certificatesFromPem, type NebulaCertificate} from '../nebula/index.js'
import {federatedPolicy, type PeerPolicy, singleCaPolicy} from './policy.js'

/** An installed node, as `tbmesh up` runs it. */
export interface InstalledNode {
  /** Absolute installation directory. */
  dir: string
  manifest: BundleManifest
  /** `nebula/config.yml` as installed. */
  config: string
  /** The PEM texts of `nebula/ca.crt`, `nebula/host.crt` and `nebula/host.key` (the key is a secret). */
  pki: {ca: string; cert: string; key: string}
  host: NebulaCertificate
  policy: PeerPolicy
}

/**
 * Reads the installation in `dir`. Throws UserError (one line with the fix) when a file is missing or does not parse,
 * when `nebula/members.json` does not fit the trust bundle, or when a federated installation has no members file
 * (installed from a bundle made before `tbmesh up` existed).
 */
export async function readInstalledNode(dir: string): Promise<InstalledNode> {
  const root = path.resolve(dir)
  const fix = 'install the node\'s bundle there (`tbmesh install`), or pass the right --dir'
  const read = async (rel: string, optional = false): Promise<string | undefined> =>
    readFile(path.join(root, rel), 'utf8').catch((error: NodeJS.ErrnoException) => {
      if (optional && error.code === 'ENOENT') return undefined
      throw new UserError(`cannot read ${path.join(root, rel)} (${error.code ?? 'error'})`, {fix: error.code === 'EACCES' ? 'run as root' : fix})
    })
  const [manifestText, config, ca, cert, key, members] = await Promise.all([
    read(MANIFEST),
    read('nebula/config.yml'),
    read('nebula/ca.crt'),
    read('nebula/host.crt'),
    read('nebula/host.key'),
    read(MEMBERS_PATH, true),
  ])
  let manifest: unknown
  try {
    manifest = JSON.parse(manifestText!)
  } catch {}
  if (manifestProblem(manifest)) throw new UserError(`${root}/${MANIFEST} is not a tbmesh manifest`, {fix})
  const m = manifest as BundleManifest
  let cas: NebulaCertificate[]
  let hosts: NebulaCertificate[]
  try {
    cas = certificatesFromPem(ca!)
    // One certificate, or in a rotation round that changes the format two for one key: the newest (last) is the node's.
    hosts = certificatesFromPem(cert!)
    if (hosts.length === 0) throw new Error('nebula/host.crt holds no certificate')
  } catch (error) {
    throw new UserError(`a certificate in ${root}/nebula does not parse (${(error as Error).message})`, {fix: 'reinstall the join bundle with --force'})
  }
  const host = hosts.at(-1)!
  let policy: PeerPolicy
  if (members === undefined) {
    if (isFederatedTrust(cas)) {
      throw new UserError(`${root} holds a federated network's node but no ${MEMBERS_PATH}, so peers cannot be checked against the members' blocks`, {
        fix: 'install an update bundle made by a current tbmesh (`tbmesh export-update`)',
      })
    }
    policy = singleCaPolicy(m.network, cas)
  } else {
    const checked = checkMembersFile(members, {network: m.network, cas, hosts, signer: m.caFingerprint})
    if (typeof checked === 'string') throw new UserError(`${root}: ${checked}`, {fix: 'reinstall the node\'s latest bundle'})
    policy = federatedPolicy(checked)
  }
  return {dir: root, manifest: m, config: config!, pki: {ca: ca!, cert: cert!, key: key!}, host, policy}
}
