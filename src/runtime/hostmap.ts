/**
 * What Nebula's debug server says about its tunnels: `list-hostmap -json` (and `-json -by-index`, Nebula ≥ 1.7), parsed
 * into one shape whatever the version. Pure: no I/O.
 *
 * Formats (read from slackhq/nebula `control.go` `ControlHostInfo` and `cert` `MarshalJSON`, and seen on Debian's
 * 1.6.1 and 1.11.0 builds; fixtures in `test/fixtures/nebula-ssh/`):
 * - 1.6.1: `vpnIp`; `remoteAddrs` and `currentRemote` as `{ip, port}`; `cert.details.ips` / `subnets`; no curve.
 * - 1.7–1.9: as 1.6.1 plus `cert.details.curve`.
 * - 1.10+: `vpnAddrs` (a list); addresses as `"ip:port"` strings; `cert.details.networks` / `unsafeNetworks`;
 *   `cert.version` (1 or 2; a v2 certificate has `publicKey` and `curve` beside `details`).
 * - always: `localIndex` (our index of the tunnel), `cert.fingerprint`, `cert.details.issuer`, `cert.signature`,
 *   `currentRelaysToMe` (overlay addresses of the relays the tunnel runs through).
 */

import {certificateToPem, fingerprint, type NebulaCertificate} from '../nebula/index.js'

/** A peer's certificate as Nebula reports it. */
export interface PeerCertificate {
  /** Hex SHA-256, as Nebula computed it. */
  fingerprint: string
  /** Hex SHA-256 of the issuing CA. */
  issuer: string
  name: string
  /** The certificate's overlay networks (v1 `ips`), `a.b.c.d/n` with the host address kept. */
  networks: string[]
  /** Unsafe networks (v1 `subnets`). */
  unsafeNetworks: string[]
  groups: string[]
  /** RFC 3339 as Nebula printed them. */
  notBefore: string
  notAfter: string
  /** Format version: 1 or 2. */
  version: number
  /** The certificate itself (PEM) when it could be rebuilt byte for byte from the report, else undefined. */
  pem?: string
}

/** One tunnel of the hostmap. */
export interface Tunnel {
  /** Our index of the tunnel: tells two tunnels for one address apart. */
  localIndex: number
  /** The peer's overlay addresses. */
  addresses: string[]
  /** The underlay `ip:port` packets go to now, when known. */
  remote?: string
  /** Overlay addresses of the relays the tunnel goes through (empty for a direct tunnel). */
  relays: string[]
  /** Undefined when Nebula reported none (a tunnel being set up). */
  certificate?: PeerCertificate
}

/** Thrown when the text is not a hostmap listing of a known shape. */
export class HostmapFormatError extends Error {
  override name = 'HostmapFormatError'
}

type Json = Record<string, unknown>

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [])

/** `{ip, port}` (1.6–1.9) or `"ip:port"` (1.10+) as `ip:port` (IPv6 in brackets); undefined for anything else. */
function addrPort(v: unknown): string | undefined {
  if (typeof v === 'string') return v === '' || v === 'invalid AddrPort' ? undefined : v
  if (isObject(v) && typeof v.ip === 'string' && typeof v.port === 'number') return v.ip.includes(':') ? `[${v.ip}]:${v.port}` : `${v.ip}:${v.port}`
  return undefined
}

/**
 * Parses the output of `list-hostmap -json` (with or without `-by-index`) of any Nebula from 1.6 on.
 * @throws HostmapFormatError when it is not a JSON list of tunnels.
 */
export function parseHostmap(text: string): Tunnel[] {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new HostmapFormatError(`not JSON: ${JSON.stringify(text.slice(0, 80))}`)
  }
  if (value === null) return []
  if (!Array.isArray(value)) throw new HostmapFormatError('not a list')
  return value.map((entry, i) => {
    if (!isObject(entry) || typeof entry.localIndex !== 'number') throw new HostmapFormatError(`entry ${i} has no localIndex`)
    const addresses = Array.isArray(entry.vpnAddrs) ? strings(entry.vpnAddrs) : typeof entry.vpnIp === 'string' ? [entry.vpnIp] : []
    if (addresses.length === 0) throw new HostmapFormatError(`entry ${i} has no overlay address`)
    const remote = addrPort(entry.currentRemote)
    return {
      localIndex: entry.localIndex,
      addresses,
      ...(remote ? {remote} : {}),
      relays: strings(entry.currentRelaysToMe),
      ...(isObject(entry.cert) ? {certificate: peerCertificate(entry.cert, i)} : {}),
    }
  })
}

function peerCertificate(cert: Json, i: number): PeerCertificate {
  const d = cert.details
  if (!isObject(d) || typeof cert.fingerprint !== 'string' || typeof d.issuer !== 'string') {
    throw new HostmapFormatError(`entry ${i} has a certificate without fingerprint or issuer`)
  }
  const peer: PeerCertificate = {
    fingerprint: cert.fingerprint,
    issuer: d.issuer,
    name: typeof d.name === 'string' ? d.name : '',
    networks: strings(d.networks ?? d.ips),
    unsafeNetworks: strings(d.unsafeNetworks ?? d.subnets),
    groups: strings(d.groups),
    notBefore: String(d.notBefore ?? ''),
    notAfter: String(d.notAfter ?? ''),
    version: typeof cert.version === 'number' ? cert.version : 1,
  }
  const rebuilt = rebuild(cert, peer)
  return rebuilt ? {...peer, pem: certificateToPem(rebuilt)} : peer
}

/**
 * The certificate the report describes, rebuilt from its details, public key and signature (v1: key and curve inside
 * `details`; v2: beside it, as `nebula-cert print -json` shows them, `CertificatePrintJson`); undefined unless its
 * fingerprint is the one Nebula reported (so only the exact certificate is ever returned).
 */
function rebuild(cert: Json, peer: PeerCertificate): NebulaCertificate | undefined {
  if ((peer.version !== 1 && peer.version !== 2) || typeof cert.signature !== 'string') return undefined
  const d = cert.details as Json
  const keyAndCurve = peer.version === 1 ? d : cert
  const seconds = (v: unknown) => (typeof v === 'string' ? Date.parse(v) / 1000 : Number.NaN)
  const curve = keyAndCurve.curve === undefined || keyAndCurve.curve === 'CURVE25519' ? 'CURVE25519' : keyAndCurve.curve === 'P256' ? 'P256' : undefined
  const publicKey = keyAndCurve.publicKey
  if (!curve || typeof publicKey !== 'string' || !/^([0-9a-f]{2})*$/.test(publicKey) || !/^([0-9a-f]{2})*$/.test(cert.signature)) return undefined
  try {
    const certificate: NebulaCertificate = {
      version: peer.version,
      details: {
        name: peer.name,
        ips: peer.networks,
        subnets: peer.unsafeNetworks,
        groups: peer.groups,
        notBefore: seconds(d.notBefore),
        notAfter: seconds(d.notAfter),
        publicKey: Buffer.from(publicKey, 'hex'),
        isCA: d.isCa === true,
        issuer: peer.issuer,
        curve,
      },
      signature: Buffer.from(cert.signature, 'hex'),
    }
    return fingerprint(certificate) === peer.fingerprint ? certificate : undefined
  } catch {
    return undefined
  }
}
