/**
 * The types of everything a tbmesh home holds (`state.json`, `secrets.json`), the federation's descriptor and the
 * files members exchange (membership requests, revocation lists) included. Types only: the code that reads, checks and
 * writes them lives in `home/` (the state), `federation/` (the descriptor) and `lib/messages.ts` (what is signed).
 */

/** The state file's schema version this build reads and writes. */
export const SCHEMA_VERSION = 1

/** Ports and device settings shared by every node of a network. Ports are TCP except `nebula` (UDP). */
export interface NetworkSettings {
  name: string
  /** Overlay network, IPv4 CIDR. */
  cidr: string
  /** Prefix length of each organization's block, e.g. 24. */
  orgPrefix: number
  /** ISO 8601 time of creation. */
  createdAt: string
  ports: {nebula: number; p2p: number; rpc: number; api: number}
  tun: {dev: string; mtu: number}
}

/** A CA of the network. `id` is its fingerprint (hex SHA-256 of the Nebula certificate). */
export interface CaRecord {
  id: string
  name: string
  /** Validity, ISO 8601. */
  notBefore: string
  notAfter: string
  /** True when the key file is `NEBULA ED25519 ENCRYPTED PRIVATE KEY`. */
  encrypted: boolean
  /** The organization this CA belongs to; null for a network-wide CA (single-CA mode). */
  organization: string | null
  /**
   * `active`: signs new certificates and bundles. `retiring`: the previous CA during a rotation, still in the trust
   * bundle. `retired`: dropped from the trust bundle (`rotate-ca --finish`); kept for the record.
   */
  status: 'active' | 'retiring' | 'retired'
  /**
   * For a CA created by a rotation: the previous CA's vouching for it, so that nodes that trust only the previous CA
   * accept update bundles signed by this one. `signature` is base64 Ed25519 by CA `by` over
   * `endorsementMessage(id)` (src/lib/messages.ts).
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
}

/** Everything in `secrets.json`. */
export interface NetworkSecrets {
  schemaVersion: typeof SCHEMA_VERSION
  rpcUser: string
  /** MultiChain RPC password shared by every node (≥ 32 characters, as TruBudget requires). */
  rpcPassword: string
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
  /** The organization's Nebula CA certificate (PEM, Nebula v1, `cert/cert.proto` in slackhq/nebula). */
  caCertificate: string
  /** Hex SHA-256 of the CA certificate (what Nebula's `ca_sha` and `pki.blocklist` match). */
  caFingerprint: string
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

/** One member's approval of a version: base64 Ed25519 by the CA `caFingerprint` of member `organization` (slug). */
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

/** The request file: the request and a base64 Ed25519 signature over its canonical JSON by the CA it carries. */
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

/** The revocation list file: the list and a base64 Ed25519 signature over its canonical JSON by the member's CA. */
export interface SignedRevocationList {
  revocations: RevocationList
  signature: string
}
