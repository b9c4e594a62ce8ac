/**
 * Nebula's certificate formats and keys (`cert/` in slackhq/nebula): one interface for a certificate
 * (`certificate.ts`), one file per format version (`cert-v1.ts`), one place that picks the version (`codec.ts`),
 * signing as a CA (`sign.ts`), verification and key matching (`verify.ts`), keys (`keys.ts`, `encrypted-key.ts`), PEM.
 * Pure functions on `node:crypto` and `argon2`; no I/O, no CLI. Errors are the classes of `./errors.js`; callers map
 * them to user errors.
 */

export {
  CertificateFormatError,
  CertificateVerifyError,
  KeyFormatError,
  NebulaError,
  NebulaFormatError,
  PassphraseRequiredError,
  SigningError,
  WrongPassphraseError,
  type CertificateVerifyReason,
  type SigningReason,
} from './errors.js'
export {
  CERTIFICATE_BANNER,
  CERTIFICATE_V2_BANNER,
  ED25519_ENCRYPTED_PRIVATE_KEY_BANNER,
  ED25519_PRIVATE_KEY_BANNER,
  X25519_PRIVATE_KEY_BANNER,
  decodePemBlocks,
  encodePem,
} from './pem.js'
export type {CertificateDetails, NebulaCertificate} from './certificate.js'
export {marshalDetails, unmarshalCertificate} from './cert-v1.js'
export {certificateFromPem, certificateToPem, certificatesFromPem, fingerprint, marshalCertificate} from './codec.js'
export {checkSignature, signCertificate, signDetails} from './sign.js'
export {
  caPrivateKeyMatchesCertificate,
  hostKeyMatchesCertificate,
  toPrintJson,
  verifyCertificate,
  type VerifyOptions,
} from './verify.js'
export {
  caPrivateKeyFromPem,
  caPrivateKeyToPem,
  caPublicKeyFromPem,
  caPublicKeyToPem,
  ed25519PublicKeyFromSeed,
  ed25519Sign,
  ed25519Verify,
  generateCaKeyPair,
  generateHostKeyPair,
  hostPrivateKeyFromPem,
  hostPrivateKeyToPem,
  hostPublicKeyFromPem,
  hostPublicKeyFromPrivate,
  hostPublicKeyToPem,
} from './keys.js'
export {
  DEFAULT_ARGON2_PARAMETERS,
  decryptCaKey,
  encryptCaKey,
  isEncryptedCaKey,
  readArgon2Parameters,
  readCaPrivateKey,
  type Argon2Parameters,
} from './encrypted-key.js'
