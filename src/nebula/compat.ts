/**
 * Which Nebula release can load which certificates (measured with Debian's builds 1.6.1, 1.9.3 and 1.11.0):
 * v1 Curve25519 every release from 1.6.1 on; P256 from 1.7 on (1.6.1 crashes on a P256 key); v2 from 1.10 on (1.6.1
 * and 1.9.3 refuse to start with a v2 CA in `pki.ca`, whatever the host certificate). Pure.
 */

import type {CertificateVersion, Curve} from './certificate.js'

/** Oldest Nebula tbmesh renders for (v1 Curve25519 certificates). */
export const MIN_NEBULA_VERSION = '1.6.1'

/** The oldest Nebula an installation needs, and the certificate that makes it so. */
export interface NebulaRequirement {
  /** `x.y.z`. */
  version: string
  /** What needs it, e.g. `a v2 CA certificate`; empty for the baseline. */
  why: string
}

/** What {@link nebulaRequirement} looks at: a certificate, or a CA's or a ledger row's record of one. */
export interface CertificateFormatFacts {
  version: CertificateVersion
  details: {curve: Curve; isCA: boolean}
}

/**
 * The oldest Nebula that loads all of `certificates` (an installation's trust bundle and host certificates): 1.10.0
 * for any v2 certificate, 1.7.0 for P256, else {@link MIN_NEBULA_VERSION}.
 */
export function nebulaRequirement(certificates: readonly CertificateFormatFacts[]): NebulaRequirement {
  const what = (c: CertificateFormatFacts): string => (c.details.isCA ? 'CA certificate' : 'host certificate')
  const v2 = certificates.find((c) => c.version === 2)
  if (v2) return {version: '1.10.0', why: `a v2 ${what(v2)}`}
  const p256 = certificates.find((c) => c.details.curve === 'P256')
  if (p256) return {version: '1.7.0', why: `a P256 ${what(p256)}`}
  return {version: MIN_NEBULA_VERSION, why: ''}
}

