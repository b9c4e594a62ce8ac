/**
 * Errors of the Nebula format module. Every message is one line. The module never depends on the CLI: callers map
 * these to `UserError` (or treat them as bugs) themselves.
 *
 * - {@link NebulaFormatError} and its subclasses: bytes or PEM text that are not a well-formed, canonically encoded
 *   Nebula certificate or key, or values that cannot be encoded.
 * - {@link CertificateVerifyError}: a well-formed certificate that fails one of Nebula's verification rules.
 * - {@link WrongPassphraseError} / {@link PassphraseRequiredError}: an encrypted CA key could not be opened.
 */

/** Base of every error this module throws on purpose. */
export class NebulaError extends Error {
  override name = 'NebulaError'
  constructor(message: string, options: {cause?: unknown} = {}) {
    super(message, options)
  }
}

/** Malformed input: bad PEM, bad protobuf wire data, wrong lengths, unknown fields, non-canonical encodings. */
export class NebulaFormatError extends NebulaError {
  override name = 'NebulaFormatError'
}

/** A Nebula certificate (raw bytes, PEM, or details to be encoded) is malformed. */
export class CertificateFormatError extends NebulaFormatError {
  override name = 'CertificateFormatError'
}

/** A Nebula key (plain or encrypted PEM, or raw key bytes) is malformed or has the wrong length. */
export class KeyFormatError extends NebulaFormatError {
  override name = 'KeyFormatError'
}

/**
 * Why a certificate failed verification, one code per rule of Nebula's check, in the order Nebula applies them:
 *
 * 1. `blocklisted`: the certificate's fingerprint is blocklisted;
 * 2. `unknown-issuer`: no issuer, or the issuer is not among the trusted CAs;
 * 3. `ca-expired` / `expired`: now is outside the CA's or the certificate's NotBefore..NotAfter;
 * 4. `bad-signature`: the CA's key did not sign these details (or the curves differ);
 * 5. `validity-outside-ca`: the certificate is valid before the CA's NotBefore or after its NotAfter;
 * 6. `group-not-allowed`: the CA lists groups and a certificate group is not among them;
 * 7. `ip-not-allowed`: the CA lists IPs and a certificate IP is not inside one of them with a prefix at least as long;
 * 8. `subnet-not-allowed`: the same for subnets.
 */
export type CertificateVerifyReason =
  | 'blocklisted'
  | 'unknown-issuer'
  | 'ca-expired'
  | 'expired'
  | 'bad-signature'
  | 'validity-outside-ca'
  | 'group-not-allowed'
  | 'ip-not-allowed'
  | 'subnet-not-allowed'

/** A certificate failed verification; `reason` says which rule (see {@link CertificateVerifyReason}). */
export class CertificateVerifyError extends NebulaError {
  override name = 'CertificateVerifyError'
  constructor(
    readonly reason: CertificateVerifyReason,
    message: string,
  ) {
    super(message)
  }
}

/** The passphrase does not open an encrypted CA key (AES-256-GCM authentication failed; or the file is corrupt). */
export class WrongPassphraseError extends NebulaError {
  override name = 'WrongPassphraseError'
  constructor(message = 'wrong passphrase for the encrypted CA key (or the key file is corrupt)') {
    super(message)
  }
}

/** The CA key is encrypted and no passphrase was given. */
export class PassphraseRequiredError extends NebulaError {
  override name = 'PassphraseRequiredError'
  constructor(message = 'the CA key is encrypted and needs a passphrase') {
    super(message)
  }
}

/** Why {@link SigningError} refused: a rule of verification the result would break, or a wrong signer. */
export type SigningReason = CertificateVerifyReason | 'not-a-ca' | 'wrong-key'

/**
 * A CA was asked to sign what it may not (`SignWith` in slackhq/nebula refuses the same): a certificate outside its
 * validity, groups or ranges, of another curve, a CA signed by another CA, a non-CA self-signed, or a key that is not
 * the signer's. `reason` says which.
 */
export class SigningError extends NebulaError {
  override name = 'SigningError'
  constructor(
    readonly reason: SigningReason,
    message: string,
  ) {
    super(message)
  }
}
