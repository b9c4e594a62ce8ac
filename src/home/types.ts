import type {CertificateVersion, Curve} from '../nebula/index.js'

/**
 * The types of everything a tbmesh home holds (`state.json`, `secrets.json`), the federation's descriptor and the
 * files members exchange (membership requests, revocation lists) included. Types only: the code that reads, checks and
 * writes them lives in `home/` (the state), `federation/` (the descriptor) and `lib/messages.ts` (what is signed).
 */

/** The state file's schema version this build reads and writes. */
export const SCHEMA_VERSION = 1

/**
 * The ports of a network, chosen at `init-ca` and the same on every node. TCP except `nebula` (UDP): `nebula` Nebula's
 * listen port on lighthouses (4242); `p2p` MultiChain peer-to-peer (7447); `rpc` MultiChain RPC (8000, never on the
 * overlay); `api` the TruBudget API (8080, on the overlay on registrars, where joining nodes register); `storage`
 * TruBudget's storage service (8090, documents between organizations over the overlay). `storage` is absent from states
 * and descriptors written before ports were chosen at init-ca: read it with `networkPorts` (`ca/node-profile.ts`).
 */
export interface NetworkPorts {
  nebula: number
  p2p: number
  rpc: number
  api: number
  storage?: number
}

/** Ports and device settings shared by every node of a network. */
export interface NetworkSettings {
  name: string
  /** Overlay network, IPv4 CIDR. */
  cidr: string
  /** Prefix length of each organization's block, e.g. 24. */
  orgPrefix: number
  /** ISO 8601 time of creation. */
  createdAt: string
  ports: NetworkPorts
  tun: {dev: string; mtu: number}
}

/** A CA of the network. `id` is its fingerprint (hex SHA-256 of the Nebula certificate). */
export interface CaRecord {
  id: string
  name: string
  /** Validity, ISO 8601. */
  notBefore: string
  notAfter: string
  /** True when the key file is encrypted (`NEBULA ED25519 ENCRYPTED PRIVATE KEY` or its ECDSA P256 form). */
  encrypted: boolean
  /** Nebula certificate format of the CA certificate and of the host certificates it issues; absent means 1. */
  version?: CertificateVersion
  /** Curve of the CA key and of the host keys; absent means CURVE25519. */
  curve?: Curve
  /** The organization this CA belongs to; null for a network-wide CA (single-CA mode). */
  organization: string | null
  /**
   * The CA's place in a rotation (`src/ca/rotation.ts`): `incoming`: created by `rotate-ca` (round 1), in the trust
   * bundle, not yet signing. `active`: signs new certificates and bundles. `retiring`: the previous CA once
   * `rotate-ca --switch` made the incoming one active (round 2), still in the trust bundle. `retired`: dropped from the
   * trust bundle (`rotate-ca --finish`, round 3); kept for the record.
   */
  status: 'incoming' | 'active' | 'retiring' | 'retired'
  /**
   * For a CA created by a rotation: the previous CA's vouching for it, so that nodes that trust only the previous CA
   * accept update bundles signed by this one. `signature` is a base64 signature (Ed25519, or ECDSA P256 DER) by CA
   * `by` over `endorsementMessage(id)` (src/lib/messages.ts).
   */
  endorsement?: {by: string; signature: string}
}

/** An organization and its IP block. `slug` is the DNS-label form of the name used in groups and node names. */
export interface OrganizationRecord {
  name: string
  slug: string
  /** The organization's block inside the overlay, IPv4 CIDR. */
  block: string
  createdAt: string
}

/** A node of the network (its current identity; its certificates are in the ledger). */
export interface NodeRecord {
  name: string
  /** Organization slug. */
  organization: string
  /** Dotted IPv4. */
  overlayIp: string
  lighthouse: boolean
  origin: boolean
  /**
   * A registrar: a trusted node where joining nodes register (TruBudget API open on the overlay). The origin is one
   * whether or not this is set.
   */
  registrar?: boolean
  /**
   * Overlay IP of the registrar this node joins the chain at (`P2P_HOST`) and registers at (`API_HOST`); absent: the
   * origin.
   */
  registerAt?: string
  /**
   * Whether the node relays for nodes that cannot reach each other directly (Nebula's `relay.am_relay`), when it
   * differs from the default: absent, a node relays exactly when it is a lighthouse (`isRelay` in `queries.ts`).
   */
  relay?: boolean
  /** Public underlay `host:port`, when known (required for lighthouses and relays). */
  endpoint?: string
  /** Extra certificate groups given with --groups. */
  groups: string[]
  /** TruBudget access level: `trusted` (admin rights) or `managed` (basic rights); the certificate group `access:<level>`. */
  access: AccessLevel
  createdAt: string
  /** Set when the node was revoked: its every certificate is in the blocklist; its overlay IP is never reused. */
  revoked?: {at: string; reason?: string}
  /** Sequence number of the last bundle (join or update) exported for the node; updates must be newer. */
  sequence?: number
  /**
   * The highest bundle sequence number the node's admin reported installed (`tbmesh confirm-install`, from the receipt
   * `install` prints).
   */
  installed?: number
  /**
   * Set when a CA rotation round starts (`rotate-ca`, `--switch`, `--finish`): the sequence number of the first bundle
   * that carries it. The node has installed the round once `installed` reaches it; the next round waits for that.
   */
  roundSequence?: number
  /** True when the node's certificate or trust changed since its last exported bundle (rotation, renewal). */
  updatePending?: boolean
}

/** TruBudget's access levels for an approved organization: trusted = admin rights, managed = basic rights. */
export type AccessLevel = 'trusted' | 'managed'

/** One ledger row: a certificate as issued. Times are ISO 8601. */
export interface CertificateRecord {
  fingerprint: string
  name: string
  /** Organization slug. */
  organization: string
  overlayIp: string
  /** Every group in the certificate. */
  groups: string[]
  /** `lighthouse`, `origin`. */
  roles: string[]
  notBefore: string
  notAfter: string
  /** Fingerprint of the issuing CA. */
  issuer: string
  /** Nebula certificate format; absent means 1. */
  version?: CertificateVersion
  /** Curve of the certificate (and of the node's key); absent means CURVE25519. */
  curve?: Curve
  /**
   * For a P256 certificate: the fingerprint of the same certificate with the other form of its ECDSA signature, which
   * anyone can derive and which verifies too; blocklisted with the certificate's own.
   */
  otherFingerprint?: string
  issuedAt: string
  /** True when the host private key is held in this home (`keys/<name>.key`); false when the joiner holds it. */
  keyInHome: boolean
  /** Nonce of the join request this certificate answers (hex), when it was signed from one. */
  requestNonce?: string
  /** When a newer certificate for the same node replaced it (renewal, CA rotation). */
  supersededAt?: string
}

/**
 * A federated network, seen from one member organization's home (see src/federation/descriptor.ts). The home's one organization
 * (`organizations[0]`) is `self.slug`; its active CA is `self`'s CA and issues only for that organization.
 */
export interface FederationState {
  /** This organization as it appears (or will appear, once approved) among the descriptor's members. */
  self: Member
  /** The adopted descriptor version and its approvals; while pending, the version the membership request extends. */
  current: SignedDescriptor
  /**
   * The successor this organization approved of the version it holds (`federation approve`): one per version, so that
   * two competing successors cannot both gather a majority through the same member.
   */
  approved?: {version: number; digest: string}
  /** Sequence number of the last revocation list this organization published (`federation revocations`). */
  revocationSequence?: number
  /**
   * Revocations imported from other members, by slug: the sequence number of their newest list and the fingerprints
   * (hex SHA-256) of the certificates it revokes. Rendered into every node's `pki.blocklist`.
   */
  revocations?: Record<string, {sequence: number; fingerprints: string[]}>
  /**
   * Certificates found holding addresses outside their issuer's block (from this organization's own evidence or the
   * violation reports of other members), by fingerprint: the issuing member (slug), the member that reported it first
   * (slug) and when it was seen. Rendered into every node's `pki.blocklist`.
   */
  violations?: Record<string, {issuer: string; reportedBy: string; observedAt: string}>
}

/**
 * The CA rotation under way, or the last one (`src/ca/rotation.ts`): round 1 trusts `caFingerprint` beside
 * `previousCaFingerprint`, round 2 switches nodes to certificates of the new CA, round 3 drops the previous CA.
 */
export interface RotationState {
  round: 1 | 2 | 3
  caFingerprint: string
  previousCaFingerprint: string
}

/** Everything in `state.json`. */
export interface NetworkState {
  schemaVersion: typeof SCHEMA_VERSION
  network: NetworkSettings
  cas: CaRecord[]
  organizations: OrganizationRecord[]
  nodes: NodeRecord[]
  certificates: CertificateRecord[]
  /** Present in a federated network's home; absent in single-CA mode. */
  federation?: FederationState
  /** The CA rotation under way, or the last one; absent while the network has not rotated its CA in rounds. */
  rotation?: RotationState
}

/**
 * Everything in `secrets.json`. The node secrets TruBudget needs (MultiChain RPC password, ROOT_SECRET, JWT_SECRET) are
 * never here: `tbmesh install` generates them on each node.
 */
export interface NetworkSecrets {
  schemaVersion: typeof SCHEMA_VERSION
  /**
   * A federated organization's TruBudget `ORGANIZATION_VAULT_SECRET` (the same on all its nodes, unknown to every other
   * organization), generated with its home and carried in the join bundles of its own nodes. Absent in single-CA mode,
   * where the CA may be another organization's: each organization's admin gives it at install.
   */
  organizationVaultSecret?: string
}

// ---------------------------------------------------------------------------------------------------------------------
// Federation: the network descriptor and the files members exchange (src/federation/descriptor.ts checks them)

/** A member organization of a federated network. */
export interface Member {
  /** Organization name as TruBudget knows it, e.g. `Umbrella Bank`. */
  organization: string
  /** DNS-label form of the name, used in groups (`org:<slug>`) and node names. */
  slug: string
  /** The organization's IP block inside the overlay, IPv4 CIDR; firewall rules accept its CA only from there. */
  block: string
  /** TruBudget access level the members approved: trusted (admin rights) or managed (basic rights). */
  access: AccessLevel
  /** The organization's Nebula CA certificate (PEM, Nebula v1 or v2). */
  caCertificate: string
  /** Hex SHA-256 of the CA certificate (what Nebula's `ca_sha` and `pki.blocklist` match). */
  caFingerprint: string
  /**
   * While the organization rotates its CA (from the `rotate-member-ca` change until `finish-member-ca-rotation`): its
   * new CA, trusted beside the current one and allowed by the firewall rules as its own.
   */
  incomingCa?: {caCertificate: string; caFingerprint: string}
}

/** What a version changes relative to the previous one. */
export type DescriptorChange =
  | {kind: 'found'; organization: string}
  /** The member added, last in `members`. */
  | {kind: 'add-member'; organization: string}
  /**
   * A node of `organization` that becomes a lighthouse (added last to `lighthouses`), a relay (added last to `relays`),
   * the origin, or several of these. `relay` absent (versions made before relays): the node relays when it is a
   * lighthouse.
   */
  | {kind: 'add-role-node'; organization: string; overlayIp: string; lighthouse: boolean; origin: boolean; relay?: boolean}
  /** The member `organization` starts rotating its CA: `caFingerprint` is its new CA, now its `incomingCa`. */
  | {kind: 'rotate-member-ca'; organization: string; caFingerprint: string}
  /** The member `organization` ends its CA rotation: its incoming CA `caFingerprint` replaces the old one. */
  | {kind: 'finish-member-ca-rotation'; organization: string; caFingerprint: string}

/** The signed body of a descriptor version. Times are ISO 8601. */
export interface NetworkDescriptor {
  type: 'tbmesh-network-descriptor'
  formatVersion: 1
  /** Network name. */
  network: string
  /** Overlay network, IPv4 CIDR. */
  cidr: string
  /** Prefix length of each organization's block. */
  orgPrefix: number
  ports: NetworkSettings['ports']
  /** 1, 2, … */
  version: number
  /** Digest of the version this one extends; null for version 1. */
  previous: string | null
  /** Approvals a change needs: `majority` (more than half of the previous version's members) or a fixed number. */
  requiredApprovals: 'majority' | number
  createdAt: string
  change: DescriptorChange
  members: Member[]
  /** Lighthouses: overlay IP in their organization's block, public underlay `host:port`. */
  lighthouses: Array<{organization: string; overlayIp: string; endpoint: string}>
  /**
   * Relays (Nebula's `relay.am_relay`), lighthouses that relay included: overlay IP in their organization's block,
   * public underlay `host:port`. Absent in versions made before relays existed; every lighthouse relays then
   * (`descriptorRelays` in `federation/descriptor.ts`).
   */
  relays?: Array<{organization: string; overlayIp: string; endpoint: string}>
  /** The TruBudget origin (alpha) node, once there is one. */
  origin: {organization: string; overlayIp: string} | null
}

/**
 * One member's approval of a version: base64 signature (Ed25519, or ECDSA P256 DER for a P256 CA) by the CA
 * `caFingerprint` of member `organization` (slug), one of the CAs the version lists for it.
 */
export interface Approval {
  organization: string
  caFingerprint: string
  signature: string
}

/** A descriptor version with the approvals gathered so far (the descriptor file). */
export interface SignedDescriptor {
  descriptor: NetworkDescriptor
  approvals: Approval[]
}

/** A request to join a federated network, made by the joining organization against the version it received. */
export interface MembershipRequest {
  type: 'tbmesh-membership-request'
  formatVersion: 1
  network: string
  /** The descriptor version the request extends: its number and digest. */
  base: {version: number; digest: string}
  organization: string
  slug: string
  /** Requested block, IPv4 CIDR. */
  block: string
  access: AccessLevel
  /** The joining organization's CA certificate (PEM). */
  caCertificate: string
  createdAt: string
}

/** The request file: the request and a base64 CA signature (Ed25519 or ECDSA P256) of its canonical JSON by its CA. */
export interface SignedMembershipRequest {
  request: MembershipRequest
  signature: string
}

/**
 * A member's revoked certificates, as it publishes them to the other members: every certificate it ever issued to a
 * node it revoked (PEM, Nebula v1). Certificates rather than fingerprints, so that an importer can check each was
 * issued by that member's CA: a member cannot blocklist another organization's nodes. `sequence` grows with every list
 * a member publishes; an importer refuses one not newer than what it holds.
 */
export interface RevocationList {
  type: 'tbmesh-revocation-list'
  formatVersion: 1
  network: string
  /** The publishing member's slug and CA fingerprint. */
  organization: string
  caFingerprint: string
  sequence: number
  createdAt: string
  certificates: string[]
}

/** The revocation list file: the list and a base64 CA signature (Ed25519 or ECDSA P256) of its canonical JSON. */
export interface SignedRevocationList {
  revocations: RevocationList
  signature: string
}

/** One certificate of a violation report: the certificate itself and where it was seen. */
export interface ReportedViolation {
  /** The offending certificate (PEM, Nebula v1): anyone holding the descriptor can check it. */
  certificate: string
  /** When a node of the reporter saw it (ISO 8601), which node, the overlay addresses its tunnel served and its underlay address. */
  observedAt: string
  observer: string
  addresses: string[]
  underlay?: string
}

/**
 * Certificates that hold addresses outside the block of the member whose CA issued them, as a member publishes them to
 * the others. Such a certificate is misbehaviour that anyone holding the descriptor can verify from the certificate
 * alone, so any member may report any member's certificate (unlike a revocation, which only the issuer may publish).
 */
export interface ViolationReport {
  type: 'tbmesh-violation-report'
  formatVersion: 1
  network: string
  /** The reporting member's slug and CA fingerprint. */
  organization: string
  caFingerprint: string
  createdAt: string
  violations: ReportedViolation[]
}

/** The violation report file: the report and a base64 Ed25519 signature over its canonical JSON by the reporter's CA. */
export interface SignedViolationReport {
  report: ViolationReport
  signature: string
}
