/**
 * Nebula's certificate formats and keys (`cert/` in slackhq/nebula): one interface for a certificate
 * (`certificate.ts`), one file per format version (`cert-v1.ts`, `cert-v2.ts`), one place that picks the version
 * (`codec.ts`), signing as a CA (`sign.ts`), verification and key matching (`verify.ts`), keys for Curve25519 and P256
 * (`keys.ts`, `encrypted-key.ts`), PEM.
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
export type {CertificateDetails, CertificateVersion, Curve, NebulaCertificate} from './certificate.js'
export {marshalDetails, unmarshalCertificate} from './cert-v1.js'
export {type CertificateFormatFacts, MIN_NEBULA_VERSION, nebulaRequirement} from './compat.js'
export {marshalDetails as marshalDetailsV2, signedBytes as signedBytesV2, unmarshalCertificate as unmarshalCertificateV2} from './cert-v2.js'
export {certificateFromPem, certificateToPem, certificatesFromPem, fingerprint, marshalCertificate, toPrintJson} from './codec.js'
export {checkSignature, signCertificate, signDetails} from './sign.js'
export {
  blocklistFingerprints,
  caPrivateKeyMatchesCertificate,
  caSignatureValid,
  describeFormat,
  hostCertificatesProblem,
  hostKeyMatchesCertificate,
  verifyCertificate,
  type VerifyOptions,
} from './verify.js'
export {
  caKeyCurve,
  caPrivateKeyFromPem,
  caPrivateKeyToPem,
  caPublicKeyFromPem,
  caPublicKeyToPem,
  caSign,
  ecdsaOtherForm,
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
  readHostPrivateKey,
  readHostPublicKey,
  type CurveKey,
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
