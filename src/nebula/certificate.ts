/**
 * What a Nebula certificate is, whatever its format version (`cert/cert.go` in slackhq/nebula): its details, its
 * signature, and the interface each format version implements in a file of its own (`cert-v1.ts`, `cert-v2.ts`).
 * `codec.ts` picks the version; signing (`sign.ts`) and verification (`verify.ts`) work on this interface only.
 * Types only.
 */

/**
 * Curve of a certificate's public key and signature: CURVE25519 (Ed25519 CA signatures, X25519 host keys) or P256
 * (ECDSA P-256 CA signatures, P-256 ECDH host keys).
 */
export type Curve = 'CURVE25519' | 'P256'

/** Nebula's certificate format versions: 1 (protobuf, every Nebula), 2 (ASN.1, Nebula 1.10+). */
export type CertificateVersion = 1 | 2

/**
 * The signed part of a Nebula certificate, whatever its format version (v1 `RawNebulaCertificateDetails`; v2 calls
 * `ips` and `subnets` networks and unsafe networks).
 */
export interface CertificateDetails {
  /** Certificate name (a host name, or the CA's name). */
  name: string
  /**
   * Overlay addresses (v2: networks), CIDR with the host address kept, e.g. `10.42.1.5/16`; on a CA, the allowed
   * ranges. IPv4 in v1; IPv4 or IPv6 (`fd42::5/64`, as Go prints it) in v2.
   */
  ips: string[]
  /** Unsafe routes the host may serve (v2: unsafe networks), CIDR; on a CA, the allowed ranges. */
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

/**
 * A Nebula certificate: its format version, its details and the issuing CA's signature over them (64 bytes for
 * Ed25519; an ASN.1 DER ECDSA signature, 70–72 bytes, for P256).
 */
export interface NebulaCertificate {
  version: CertificateVersion
  details: CertificateDetails
  signature: Buffer
}

/**
 * One element of `nebula-cert print -json` (1.10+, which prints a JSON array, one element per PEM block), field names
 * as Nebula writes them. Times RFC 3339, UTC, whole seconds (`2026-11-21T05:06:01Z`); keys and signature lowercase hex.
 * v1 lists are `[]` when empty; v2 lists are `null` when absent.
 */
export type CertificatePrintJson =
  | {
      details: {
        curve: Curve
        groups: string[]
        isCa: boolean
        issuer: string
        name: string
        networks: string[]
        notAfter: string
        notBefore: string
        publicKey: string
        unsafeNetworks: string[]
      }
      fingerprint: string
      signature: string
      version: 1
    }
  | {
      curve: Curve
      details: {
        groups: string[] | null
        isCa: boolean
        issuer: string
        name: string
        networks: string[] | null
        notAfter: string
        notBefore: string
        unsafeNetworks: string[] | null
      }
      fingerprint: string
      publicKey: string
      signature: string
      version: 2
    }

/**
 * One certificate format version (v1: protobuf, `cert-v1.ts`; v2: ASN.1, `cert-v2.ts`). Adding a version adds an
 * implementation of this interface and an entry in `codec.ts`, not branches elsewhere.
 */
export interface CertificateFormat {
  /** Nebula's version number of the format. */
  readonly version: CertificateVersion
  /** PEM banner of a certificate in this format, e.g. `NEBULA CERTIFICATE`. */
  readonly banner: string
  /**
   * `details` as this format signs them (a copy): the format's rules checked and, for v2, networks sorted as
   * nebula-cert sorts them (`validate` in slackhq/nebula).
   * @throws CertificateFormatError for details this format cannot carry (e.g. an IPv6 network in v1, a v2 host
   *   without a network, a duplicate network)
   */
  prepare(details: CertificateDetails): CertificateDetails
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
  /** `nebula-cert print -json`'s element for the certificate (1.10+ layout), given its fingerprint. */
  printJson(certificate: NebulaCertificate, fingerprint: string): CertificatePrintJson
}
