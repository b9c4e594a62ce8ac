/**
 * What a Nebula certificate is, whatever its format version (`cert/cert.go` in slackhq/nebula): its details, its
 * signature, and the interface each format version implements in a file of its own (`cert-v1.ts`). `codec.ts` picks
 * the version; signing (`sign.ts`) and verification (`verify.ts`) work on this interface only. Types only.
 */

/** Curve of a certificate's public key and signature. tbmesh issues CURVE25519 only. */
export type Curve = 'CURVE25519' | 'P256'

/**
 * The signed part of a Nebula certificate, whatever its format version (v1 `RawNebulaCertificateDetails`; v2 calls
 * `ips` and `subnets` networks and unsafe networks).
 */
export interface CertificateDetails {
  /** Certificate name (a host name, or the CA's name). */
  name: string
  /** Overlay IPv4 addresses, CIDR with the host address kept, e.g. `10.42.1.5/16`; on a CA, the allowed ranges. */
  ips: string[]
  /** Unsafe routes the host may serve, IPv4 CIDR; on a CA, the allowed ranges. */
  subnets: string[]
  /** Groups, order kept; on a CA, the allowed groups. */
  groups: string[]
  /** Start of validity, Unix seconds. */
  notBefore: number
  /** End of validity, Unix seconds. */
  notAfter: number
  /** 32 bytes: X25519 for a host, Ed25519 for a CA (65 bytes, uncompressed point, for P256). */
  publicKey: Buffer
  isCA: boolean
  /** Lowercase hex SHA-256 fingerprint of the issuing CA certificate; `''` on a CA. */
  issuer: string
  curve: Curve
}

/** A Nebula certificate: its details and the issuing CA's signature over them (64 bytes for Ed25519). */
export interface NebulaCertificate {
  details: CertificateDetails
  signature: Buffer
}

/** `nebula-cert print -json` of a certificate (field names as Nebula writes them; `curve` as in 1.7.0+). */
export interface CertificatePrintJson {
  details: {
    name: string
    ips: string[]
    subnets: string[]
    groups: string[]
    /** RFC 3339, UTC, whole seconds, e.g. `2026-11-21T05:06:01Z`. */
    notBefore: string
    notAfter: string
    /** Lowercase hex. */
    publicKey: string
    isCa: boolean
    issuer: string
    curve: Curve
  }
  fingerprint: string
  /** Lowercase hex. */
  signature: string
}

/**
 * One certificate format version (v1: protobuf, `cert-v1.ts`). Adding a version adds an implementation of this
 * interface and an entry in `codec.ts`, not branches elsewhere.
 */
export interface CertificateFormat {
  /** Nebula's version number of the format. */
  readonly version: 1 | 2
  /** PEM banner of a certificate in this format, e.g. `NEBULA CERTIFICATE`. */
  readonly banner: string
  /**
   * The bytes the issuer signs for `details`.
   * @throws CertificateFormatError when a value cannot be encoded in this format
   */
  signedBytes(details: CertificateDetails): Buffer
  /**
   * The certificate's bytes as stored (PEM body).
   * @throws CertificateFormatError as {@link CertificateFormat.signedBytes}
   */
  marshal(certificate: NebulaCertificate): Buffer
  /**
   * Parses stored bytes; only the canonical encoding is accepted.
   * @throws CertificateFormatError for anything else
   */
  unmarshal(bytes: Uint8Array): NebulaCertificate
  /** The bytes whose SHA-256 is the certificate's fingerprint. */
  fingerprintBytes(certificate: NebulaCertificate): Buffer
}
