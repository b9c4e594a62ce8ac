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
    /** True for a registrar (the origin included): joining nodes register at its TruBudget API over the overlay. */
    registrar: boolean
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
    /** TruBudget API port (8080); opened on the overlay on registrars, where joining nodes register. */
    api: number
    /** TruBudget storage service port (8090); opened on the overlay on every node, for documents between organizations. */
    storage: number
  }
  /** Every lighthouse of the network (the node itself included when it is one). */
  lighthouses: Array<{overlayIp: string; endpoint: string}>
  /** Every relay of the network, lighthouses that relay included (the node itself included when it is one). */
  relays: Array<{overlayIp: string; endpoint: string}>
  /** The origin node's overlay IP; undefined while the network has no origin yet. */
  originOverlayIp?: string
  /**
   * The registrar a node other than the origin joins the chain at (`P2P_HOST`) and registers at (`API_HOST`): the one
   * it was added with (`--register-at`); undefined for the origin's.
   */
  registrarOverlayIp?: string
  /** MultiChain RPC user. The password is the node's own, made by `tbmesh install`: no renderer sees it. */
  rpc: {user: string}
  /** Nebula tun device name and MTU (bytes). */
  tun: {dev: string; mtu: number}
  /** Paths written into config.yml's `pki` section (absolute, or relative to nebula's working directory). */
  pki: {ca: string; cert: string; key: string}
  /**
   * `pki.initiating_version` (Nebula 1.10+): set only while the node presents two certificates (a v1 and a v2 one, in
   * round 2 of a rotation that changes the format) to the version of its new one, so that the tunnels it opens use the
   * certificate of the new CA. Undefined otherwise (Nebula's default fits one certificate).
   */
  initiatingVersion?: 1 | 2
  /** Certificate fingerprints (hex SHA-256) that nodes must refuse; rendered into `pki.blocklist`. */
  blocklist: string[]
  /**
   * The oldest Nebula that loads the node's trust bundle and certificates (`x.y.z`): 1.6.1, 1.7.0 for P256, 1.10.0 for
   * v2 certificates. The bundle README names it and the compose file runs an image at least as new.
   */
  minNebulaVersion: string
  /**
   * A federated network's member organizations (slug, name, IPv4 CIDR block, hex SHA-256 of their CA certificate), one
   * entry per CA (a member rotating its CA has two): every firewall rule is rendered once per entry, scoped to the CA
   * (`ca_sha`) and the block (`cidr`), so a peer is believed only within the block of the CA that issued its
   * certificate; `nebula/members.json` lists them for `tbmesh up`. Undefined in single-CA mode.
   */
  members?: Array<{organization: string; name: string; block: string; caFingerprint: string}>
}
