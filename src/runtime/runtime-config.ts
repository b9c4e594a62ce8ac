/**
 * The config Nebula runs on under `tbmesh up`: the installed `nebula/config.yml` (as the CA rendered it) plus what is
 * the node's own, written by `up` into its run directory and never into the installation:
 *
 * - `pki.ca`, `pki.cert`, `pki.key` inline (PEM): one file is one consistent snapshot, whatever `install` swaps in;
 * - `pki.blocklist`: the installed blocklist plus the node's local one (the fingerprints of its evidence records);
 * - `sshd`: Nebula's debug server on 127.0.0.1 with this run's host key (a file: inline keys need Nebula 1.11) and
 *   client key (`debug-ssh.ts`);
 * - `firewall.inbound` and `outbound` empty (Nebula then passes no packet to or from this node; relaying for others
 *   and handshakes are not the firewall's) until `up` first saw the hostmap;
 * - `firewall.tbmesh_epoch`: a counter `up` raises when it blocks a certificate: any change below `firewall` makes
 *   Nebula install a new rule set on reload (`reloadFirewall` in slackhq/nebula `interface.go`), and entries of
 *   Nebula's conntrack are then re-checked against the peer's current certificate instead of being trusted;
 * - pins: for an address just taken over, a `static_host_map` entry with the legitimate peer's last underlay address
 *   and `lighthouse.remote_allow_ranges` refusing the impostor's underlay IP for that address, so the legitimate peer's
 *   next handshake wins (without it Nebula 1.6.1 keeps asking the lighthouse, which answers with the impostor's address).
 *
 * Pure: YAML in, YAML out.
 */

import {isMap, parseDocument, stringify} from 'yaml'

import {DEBUG_USER} from './debug-ssh.js'

/** A pin for one overlay address (see the module comment). */
export interface Pin {
  /** The overlay address taken over. */
  address: string
  /** The underlay `ip:port` of the last peer that held it legitimately, when known. */
  good?: string
  /** The impostor's underlay IP (no port), refused for this address. */
  badIp?: string
}

/** What `up` adds to the installed config. */
export interface RuntimeAdditions {
  /** PEM texts of the trust bundle, the host certificate and its key. */
  pki: {ca: string; cert: string; key: string}
  /** Fingerprints to refuse besides the installed blocklist. */
  blocklist: readonly string[]
  /** The debug server: loopback port, path of the host key file, the client's public key line. */
  sshd: {port: number; hostKeyFile: string; clientPublicKey: string}
  epoch: number
  pins: readonly Pin[]
  /** True until `up` watches Nebula: no firewall rule, so no packet to or from this node passes. */
  closed: boolean
}

/**
 * The runtime config: `installed` (the text of the installed config.yml) with {@link RuntimeAdditions} applied.
 * @throws Error when `installed` is not a YAML mapping (install checked it, so the file was changed since).
 */
export function renderRuntimeConfig(installed: string, add: RuntimeAdditions): string {
  const doc = parseDocument(installed, {uniqueKeys: true})
  if (doc.errors.length > 0 || !isMap(doc.contents)) throw new Error('the installed nebula/config.yml is not a YAML mapping')
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a Nebula config: any shape below its keys
  const plain = doc.toJS() as Record<string, any>
  const installedBlocklist: unknown[] = Array.isArray(plain.pki?.blocklist) ? plain.pki.blocklist : []
  const blocklist = [...new Set([...installedBlocklist.filter((v): v is string => typeof v === 'string'), ...add.blocklist])]
  plain.pki = {...plain.pki, ca: add.pki.ca, cert: add.pki.cert, key: add.pki.key, blocklist}
  plain.sshd = {
    enabled: true,
    listen: `127.0.0.1:${add.sshd.port}`,
    host_key: add.sshd.hostKeyFile,
    authorized_users: [{user: DEBUG_USER, keys: [add.sshd.clientPublicKey]}],
  }
  plain.firewall = {...plain.firewall, tbmesh_epoch: add.epoch, ...(add.closed ? {inbound: [], outbound: []} : {})}
  if (add.pins.length > 0) {
    const hostMap: Record<string, string[]> = {...plain.static_host_map}
    const ranges: Record<string, Record<string, boolean>> = {...plain.lighthouse?.remote_allow_ranges}
    for (const pin of add.pins) {
      if (pin.good) hostMap[pin.address] = [pin.good, ...(hostMap[pin.address] ?? []).filter((r) => r !== pin.good)]
      if (pin.badIp) ranges[`${pin.address}/32`] = {...ranges[`${pin.address}/32`], [`${pin.badIp}/${pin.badIp.includes(':') ? 128 : 32}`]: false}
    }
    plain.static_host_map = hostMap
    plain.lighthouse = {...plain.lighthouse, remote_allow_ranges: ranges}
  }
  const header = '# Written by tbmesh up for this run: the installed config.yml plus the node\'s own settings. Edit the installation, not this file.\n'
  return header + stringify(plain, {lineWidth: 0, aliasDuplicateObjects: false})
}
