import {Flags} from '@oclif/core'

import {certVersionFlag, certVersionOf, curveFlag, curveOf, TbmeshCommand, type TbmeshFlags} from '../base-command.js'
import {checkNetworkOptions, DEFAULTS, initCa, type InitCaResult, type PortChoice} from '../ca/ca.js'
import {type FederatedInitResult, foundFederation, joinFederation} from '../federation/federation.js'
import {parseDuration} from '../lib/duration.js'
import {resolvePassphrase} from '../lib/passphrase.js'

/** The ports given on the command line. */
function portChoice(flags: {'p2p-port'?: number; 'api-port'?: number; 'storage-port'?: number}): PortChoice {
  return {p2p: flags['p2p-port'], api: flags['api-port'], storage: flags['storage-port']}
}

export default class InitCa extends TbmeshCommand {
  static override summary = 'Create a network: its CA, overlay CIDR, ports and state.'

  static override description = `Creates the network's Certificate Authority (a Nebula CA named after the network and constrained to the overlay CIDR: v1 Curve25519 by default, see --cert-version and --curve) and the state in --home, with the network's ports: MultiChain P2P (--p2p-port, 7447), the TruBudget API where joining nodes register (--api-port, 8080) and the storage service for documents (--storage-port, 8090). Every node's files and firewall use them. The CA holds no TruBudget secret: each node makes its own at install.

The overlay CIDR must not overlap Docker's default address pools (172.17.0.0/16 to 172.31.0.0/16, 192.168.0.0/16), where Docker puts the networks of TruBudget's containers; --allow-docker-overlap accepts it when no node runs Docker with those pools.

The CA key is stored encrypted (Argon2id + AES-256-GCM, nebula-cert's format). The passphrase comes from --passphrase-file, TBMESH_CA_PASSPHRASE, or a prompt on a terminal (asked twice); --no-passphrase stores the key unencrypted.

A CA that expires breaks every tunnel of the network at once, so the default lifetime is ten years.

Certificate version and curve: v1 (the default) is read by every Nebula from 1.6.1 on; v2 needs Nebula 1.10 or newer on every node (1.6.1 and 1.9.3 refuse to start with a v2 CA). --curve P256 (ECDSA, for compliance regimes that require NIST curves) needs Nebula 1.7 or newer (1.6.1 crashes on P256 keys). A v1 network moves to v2 later with \`tbmesh rotate-ca --cert-version 2\`; the curve cannot change.

With --federated there is no network-wide CA: each organization has its own, constrained (in the certificate, which Nebula enforces) to the overlay and to its own groups (org:<slug>, access:…, role:…), and a signed network descriptor lists the members. --federated --org ORG founds such a network (ORG gets the first block and signs descriptor version 1); --federated --org ORG --descriptor FILE creates a joining organization's home against a version received from a member, then \`tbmesh federation request\` asks to join.`

  static override examples = [
    {description: 'Create a network on 10.42.0.0/16, asking for the CA passphrase', command: '<%= config.bin %> <%= command.id %> --network trubudget-prod --cidr 10.42.0.0/16'},
    {description: 'Scripted, with the passphrase in a file and a 5-year CA', command: '<%= config.bin %> <%= command.id %> --network tb --cidr 10.42.0.0/16 --duration 5y --passphrase-file ca.pass'},
    {description: 'Organizations get /20 blocks instead of /24', command: '<%= config.bin %> <%= command.id %> --network tb --cidr 10.0.0.0/12 --org-prefix 20'},
    {description: 'v2 certificates and P256 keys (every node runs Nebula 1.10+)', command: '<%= config.bin %> <%= command.id %> --network tb --cidr 10.42.0.0/16 --cert-version 2 --curve P256'},
    {description: 'Other ports for MultiChain P2P and the TruBudget API', command: '<%= config.bin %> <%= command.id %> --network tb --cidr 10.42.0.0/16 --p2p-port 7500 --api-port 8443'},
    {description: 'Found a federated network as ACME (one CA per organization)', command: '<%= config.bin %> <%= command.id %> --federated --org ACME --network tb --cidr 10.42.0.0/16'},
    {description: 'Join a federated network as Umbrella, against the descriptor ACME sent', command: '<%= config.bin %> <%= command.id %> --federated --org Umbrella --descriptor tb.v3.json'},
  ]

  static override flags = {
    network: Flags.string({char: 'n', description: 'network name (also the CA name); asked for on a terminal'}),
    cidr: Flags.string({description: 'overlay network, IPv4 CIDR; asked for on a terminal'}),
    duration: Flags.string({description: 'CA lifetime (e.g. 10y, 3650d, 87600h)', default: '10y'}),
    'org-prefix': Flags.integer({description: 'prefix length of each organization\'s block', default: DEFAULTS.orgPrefix}),
    'passphrase-file': Flags.file({description: 'file holding the CA passphrase (or set TBMESH_CA_PASSPHRASE)', exists: false, exclusive: ['no-passphrase']}),
    'no-passphrase': Flags.boolean({description: 'store the CA key unencrypted (not recommended)'}),
    force: Flags.boolean({char: 'f', description: 'destroy an existing network in --home and start over'}),
    'cert-version': certVersionFlag({description: 'Nebula certificate version: 1 (default; every Nebula) or 2 (Nebula 1.10+ on every node)', exclusive: ['descriptor']}),
    curve: curveFlag({description: 'key curve: 25519 (default) or P256 (Nebula 1.7+ on every node)', exclusive: ['descriptor']}),
    'p2p-port': Flags.integer({description: `MultiChain peer-to-peer port of every node [default: ${DEFAULTS.ports.p2p}]`}),
    'api-port': Flags.integer({description: `TruBudget API port, where joining nodes register [default: ${DEFAULTS.ports.api}]`}),
    'storage-port': Flags.integer({description: `TruBudget storage service port, documents between organizations [default: ${DEFAULTS.ports.storage}]`}),
    'allow-docker-overlap': Flags.boolean({description: "accept an overlay CIDR overlapping Docker's default address pools"}),
    federated: Flags.boolean({description: 'one CA per organization: found a federated network, or join one with --descriptor', helpGroup: 'FEDERATION'}),
    org: Flags.string({char: 'o', description: 'this organization (with --federated)', dependsOn: ['federated'], helpGroup: 'FEDERATION'}),
    descriptor: Flags.file({description: 'network descriptor received from a member: join that network', dependsOn: ['federated'], exclusive: ['network', 'cidr', 'org-prefix', 'approvals', 'p2p-port', 'api-port', 'storage-port', 'allow-docker-overlap'], helpGroup: 'FEDERATION'}),
    block: Flags.string({description: 'IP block (CIDR) to request when joining (default: the first free one)', dependsOn: ['descriptor'], helpGroup: 'FEDERATION'}),
    access: Flags.option({options: ['trusted', 'managed'] as const, description: 'TruBudget access level to request when joining (default managed)', dependsOn: ['descriptor'], helpGroup: 'FEDERATION'})(),
    approvals: Flags.integer({description: 'approvals every change needs, 3 or more (never fewer than more than half of the members, the default)', dependsOn: ['federated'], helpGroup: 'FEDERATION'}),
  }

  async run(): Promise<InitCaResult | FederatedInitResult> {
    const {flags} = await this.parse(InitCa)
    const durationSeconds = parseDuration(flags.duration)
    if (flags.federated) return this.federated(flags, durationSeconds)
    const network = await this.ask('--network', flags.network, {message: 'Network name', default: 'trubudget'})
    const cidr = await this.ask('--cidr', flags.cidr, {message: 'Overlay network (IPv4 CIDR)', default: '10.42.0.0/16'})
    const options = {network, cidr, orgPrefix: flags['org-prefix'], ports: portChoice(flags), allowDockerOverlap: flags['allow-docker-overlap']}
    checkNetworkOptions(options)
    const passphrase = flags['no-passphrase']
      ? null
      : await resolvePassphrase({file: flags['passphrase-file'], fileFlag: '--passphrase-file', env: 'TBMESH_CA_PASSPHRASE', purpose: 'CA key', confirm: true, alternatives: ['--no-passphrase']})
    const result = await initCa(this.homeDir(flags), {
      ...options,
      durationSeconds,
      passphrase,
      force: flags.force,
      certVersion: certVersionOf(flags['cert-version']),
      curve: curveOf(flags.curve),
    })
    // Warned after the fact, so that a refused init-ca prints its one error line and nothing else.
    if (!passphrase) this.warn('the CA key is stored unencrypted: anyone who can read it can add nodes to the network')
    this.log(`Created network ${result.network} (${result.cidr}, /${result.orgPrefix} per organization) in ${result.home}`)
    this.log(`Ports: MultiChain P2P ${result.ports.p2p}, TruBudget API ${result.ports.api}, storage ${result.ports.storage}`)
    this.log(`CA fingerprint: ${result.caFingerprint} (v${result.caVersion} ${result.caCurve === 'P256' ? 'P256' : 'Curve25519'})`)
    this.log(`CA valid until: ${result.caNotAfter} (${result.caLifetime})${result.keyEncrypted ? '' : ' — key NOT encrypted'}`)
    if (result.caVersion === 2 || result.caCurve === 'P256') this.log(`Every node needs Nebula ${result.caVersion === 2 ? '1.10' : '1.7'} or newer.`)
    this.log('Next: tbmesh add-node --org ORG --origin --lighthouse --endpoint HOST:4242')
    return result
  }

  private async federated(flags: TbmeshFlags<typeof InitCa>, durationSeconds: number): Promise<FederatedInitResult> {
    const org = await this.ask('--org', flags.org, {message: 'Your organization (as TruBudget knows it)'})
    let network: string | undefined
    if (!flags.descriptor) {
      network = await this.ask('--network', flags.network, {message: 'Network name', default: 'trubudget'})
      const cidr = await this.ask('--cidr', flags.cidr, {message: 'Overlay network (IPv4 CIDR)', default: '10.42.0.0/16'})
      checkNetworkOptions({network, cidr, orgPrefix: flags['org-prefix'], ports: portChoice(flags), allowDockerOverlap: flags['allow-docker-overlap']})
      flags.cidr = cidr
    }
    const passphrase = flags['no-passphrase']
      ? null
      : await resolvePassphrase({file: flags['passphrase-file'], fileFlag: '--passphrase-file', env: 'TBMESH_CA_PASSPHRASE', purpose: 'CA key', confirm: true, alternatives: ['--no-passphrase']})
    const common = {org, passphrase, durationSeconds, force: flags.force}
    const result = flags.descriptor
      ? await joinFederation(this.homeDir(flags), {...common, descriptorFile: flags.descriptor, block: flags.block, access: flags.access})
      : await foundFederation(this.homeDir(flags), {
          ...common,
          network: network!,
          cidr: flags.cidr!,
          orgPrefix: flags['org-prefix'],
          requiredApprovals: flags.approvals,
          ports: portChoice(flags),
          allowDockerOverlap: flags['allow-docker-overlap'],
          version: certVersionOf(flags['cert-version']),
          curve: curveOf(flags.curve),
        })
    if (!passphrase) this.warn(`the CA key is stored unencrypted: anyone who can read it can add nodes as ${result.organization}`)
    this.log(`${result.member ? 'Founded' : 'Prepared to join'} federated network ${result.network} (${result.cidr}) as ${result.organization}, block ${result.block}, in ${result.home}`)
    this.log(`CA fingerprint: ${result.caFingerprint} (valid until ${result.caNotAfter})`)
    if (!result.member) this.log(`Joining against descriptor version ${result.version}, digest ${result.descriptorDigest}: check it with the member who sent the file`)
    this.log(
      result.member
        ? 'Next: tbmesh add-node --org ORG --origin --lighthouse --endpoint HOST:4242, then send `tbmesh federation show --out FILE` to the organizations that join'
        : 'Next: tbmesh federation request --out REQUEST.json, and send it to the members',
    )
    return result
  }
}
