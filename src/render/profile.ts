/**
 * The one plain object every renderer is fed: everything a node's output files depend on, already resolved from the
 * network state. Renderers are pure functions of it (no I/O besides reading their template).
 */
export interface NodeProfile {
  network: {
    /** Network name (also the CA name). */
    name: string
    /** Overlay network, IPv4 CIDR, e.g. `10.42.0.0/16`. */
    cidr: string
  }
  node: {
    /** DNS-label node name, e.g. `acme-1`. */
    name: string
    /** Organization name as given by the operator (TruBudget's `ORGANIZATION`), e.g. `ACME`. */
    organization: string
    /** The node's overlay IP, dotted IPv4, e.g. `10.42.1.1`. */
    overlayIp: string
    lighthouse: boolean
    /** True when the node relays for others (`relay.am_relay`): lighthouses by default, or as the operator chose. */
    relay: boolean
    /** True for the TruBudget origin (alpha) node, which creates the chain. */
    origin: boolean
    /** Public underlay address `host:port` (required for lighthouses and relays, optional otherwise). */
    endpoint?: string
  }
  ports: {
    /** Nebula UDP listen port on lighthouses and relays (4242); other nodes listen on a random port (0). */
    nebula: number
    /** MultiChain P2P port (7447). */
    p2p: number
    /** MultiChain RPC port (8000); never opened on the overlay. */
    rpc: number
    /** TruBudget API port of the origin node (8080), where joining nodes register. */
    api: number
  }
  /** Every lighthouse of the network (the node itself included when it is one). */
  lighthouses: Array<{overlayIp: string; endpoint: string}>
  /** Every relay of the network, lighthouses that relay included (the node itself included when it is one). */
  relays: Array<{overlayIp: string; endpoint: string}>
  /** The origin node's overlay IP; undefined while the network has no origin yet. */
  originOverlayIp?: string
  /** MultiChain RPC credentials, shared by every node of the network (password ≥ 32 characters). */
  rpc: {user: string; password: string}
  /** Nebula tun device name and MTU (bytes). */
  tun: {dev: string; mtu: number}
  /** Paths written into config.yml's `pki` section (absolute, or relative to nebula's working directory). */
  pki: {ca: string; cert: string; key: string}
  /** Certificate fingerprints (hex SHA-256) that nodes must refuse; rendered into `pki.blocklist`. */
  blocklist: string[]
  /**
   * A federated network's member organizations (slug, IPv4 CIDR block, hex SHA-256 of their CA certificate): every
   * firewall rule is rendered once per member, scoped to its CA (`ca_sha`) and its block (`cidr`), so a peer is
   * believed only within the block of the CA that issued its certificate. Undefined in single-CA mode.
   */
  members?: Array<{organization: string; block: string; caFingerprint: string}>
}
