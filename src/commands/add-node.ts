import {Flags} from '@oclif/core'

import {caPassphraseFlag, TbmeshCommand} from '../base-command.js'
import {addNode, type AddNodeResult} from '../ca/add-node.js'
import {requireKeyCurve} from '../ca/ca.js'
import {UsageError, UserError} from '../errors.js'
import {type JoinRequest, readJoinRequest, readPublicKeyFile, type ReceivedJoinRequest} from '../join/join-request.js'
import {parseDuration} from '../lib/duration.js'
import {slugify} from '../lib/names.js'
import type {Curve} from '../nebula/index.js'

export default class AddNode extends TbmeshCommand {
  static override summary = 'Add a node: allocate its overlay IP and sign its Nebula host certificate.'

  static override description = `An organization seen for the first time gets the next free block of the overlay (/24 by default); the node gets the next free address in that block (never its first or last), or --ip.

The certificate carries the groups org:<slug>, role:lighthouse and role:origin when set, and --groups. It lives one year by default, never past the CA.

Lighthouses are also relays: nodes behind NAT gateways that cannot reach each other directly (symmetric NAT) talk through them. --no-relay keeps a lighthouse out of relaying; --relay makes another node with a public --endpoint a relay.

The host key pair is generated here and travels in the node's join bundle (tbmesh export-bundle) — unless the joining organization keeps its key: with --request (a file from \`tbmesh join-request\`; the verification code shown must match the one the joiner reads you on the phone) or --pubkey (a Nebula X25519 public key, e.g. from \`nebula-cert keygen\`), tbmesh signs their public key and the bundle carries no private key.

--access records the organization's TruBudget access level, trusted (admin rights) or managed (basic rights), in the ledger and as the certificate group access:<level>.

Joining nodes register at a registrar's TruBudget API, over the overlay: the origin, and every trusted node added with --registrar (its firewall opens the API port, its compose files publish the API on its overlay IP). A node joins the chain and registers at the origin, or at the registrar --register-at names (P2P_HOST, API_HOST).`

  static override examples = [
    {description: 'The origin (alpha) node, also the network\'s lighthouse', command: '<%= config.bin %> <%= command.id %> --org ACME --origin --lighthouse --endpoint 203.0.113.7:4242'},
    {description: 'A second lighthouse that does not relay, and a relay that is no lighthouse', command: '<%= config.bin %> <%= command.id %> --org ACME --lighthouse --no-relay --endpoint 203.0.113.9:4242 && <%= config.bin %> <%= command.id %> --org ACME --relay --endpoint 203.0.113.8:4242'},
    {description: 'A node of another organization, with a fixed name and IP', command: '<%= config.bin %> <%= command.id %> --org "Umbrella Bank" --name umbrella-berlin --ip 10.42.1.10'},
    {description: 'Extra groups and a 90-day certificate, as JSON', command: '<%= config.bin %> <%= command.id %> --org ACME --groups backup,monitoring --duration 90d --json'},
    {description: 'Approve a join request with admin rights, after checking its code by phone', command: '<%= config.bin %> <%= command.id %> --request umbrella.request.json --access trusted'},
    {description: 'Sign a key made with nebula-cert keygen', command: '<%= config.bin %> <%= command.id %> --org Initech --pubkey initech.pub'},
    {description: 'A second registrar, and a node that registers there instead of at the origin', command: '<%= config.bin %> <%= command.id %> --org Umbrella --registrar && <%= config.bin %> <%= command.id %> --org Globex --register-at umbrella-1'},
  ]

  static override flags = {
    org: Flags.string({char: 'o', description: "organization name as TruBudget knows it (ORGANIZATION); required unless --request gives it or the home is a federated organization's"}),
    name: Flags.string({description: 'node name, a lowercase DNS label (default: <org-slug>-<n>)'}),
    ip: Flags.string({description: 'overlay IP inside the organization\'s block (default: the next free one)'}),
    lighthouse: Flags.boolean({description: 'make the node a Nebula lighthouse (needs --endpoint)', dependsOn: ['endpoint']}),
    relay: Flags.boolean({allowNo: true, description: 'relay for nodes that cannot reach each other directly (needs --endpoint); default: yes for a lighthouse, no otherwise'}),
    endpoint: Flags.string({description: 'public underlay address HOST:PORT where other nodes reach this one'}),
    origin: Flags.boolean({description: 'the TruBudget origin (alpha) node that creates the chain; one per network'}),
    registrar: Flags.boolean({description: 'joining nodes may register at this node (a trusted node; the origin is one anyway)'}),
    'register-at': Flags.string({description: 'the registrar this node joins and registers at, by name or overlay IP (default: the origin)', exclusive: ['origin']}),
    groups: Flags.string({description: 'extra certificate groups, comma-separated', delimiter: ',', multiple: true}),
    duration: Flags.string({description: 'certificate lifetime (e.g. 365d, 8760h); default one year, capped at the CA\'s expiry'}),
    access: Flags.option({options: ['trusted', 'managed'] as const, description: 'TruBudget access level: trusted (admin) or managed (basic); default trusted for --origin, else managed'})(),
    request: Flags.file({description: 'join request file from `tbmesh join-request` (the joiner keeps its key)', exclusive: ['pubkey'], exists: false}),
    pubkey: Flags.file({description: 'Nebula public key file of the joiner (PEM, X25519 or P256: the CA\'s curve)', exclusive: ['request']}),
    yes: Flags.boolean({char: 'y', description: 'approve the --request without asking (only after checking its verification code)'}),
    'passphrase-file': caPassphraseFlag,
  }

  async run(): Promise<AddNodeResult> {
    const {flags} = await this.parse(AddNode)
    const durationSeconds = flags.duration === undefined ? undefined : parseDuration(flags.duration)
    const home = await this.openHome(flags)
    const joiner: {publicKey: Buffer; request?: JoinRequest} | undefined = flags.request
      ? await this.approveRequest(flags.request, flags.org, Boolean(flags.yes), home.activeCa().curve ?? 'CURVE25519')
      : flags.pubkey
        ? {publicKey: await readPublicKeyFile(flags.pubkey)}
        : undefined
    if (flags.pubkey && joiner) requireKeyCurve(home.activeCa().curve ?? 'CURVE25519', joiner.publicKey, flags.pubkey)
    const known = home.state.organizations.map((o) => o.name)
    const org = joiner?.request?.organization ?? (await this.ask('--org', flags.org ?? home.state.federation?.self.organization, {message: 'Organization (as TruBudget knows it)', choices: undefined, default: known[0]}))
    const caKey = await this.unlockCa(home, flags['passphrase-file'])
    const result = await addNode(home, caKey, {
      org,
      name: flags.name ?? joiner?.request?.name,
      ip: flags.ip,
      lighthouse: flags.lighthouse,
      relay: flags.relay,
      endpoint: flags.endpoint ?? joiner?.request?.endpoint,
      origin: flags.origin,
      registrar: flags.registrar,
      registerAt: flags['register-at'],
      groups: flags.groups,
      durationSeconds,
      access: flags.access,
      publicKey: joiner?.publicKey,
      requestNonce: joiner?.request?.nonce,
    })
    this.log(`Added ${result.name} (${result.organization}) at ${result.overlayIp}`)
    this.log(`  groups:      ${result.groups.join(', ')}`)
    if (result.relay) this.log(`  relay:       yes, at ${result.endpoint}`)
    if (result.registrar) this.log(`  registrar:   joining nodes may register at ${result.overlayIp}`)
    if (result.registerAt) this.log(`  registers at ${result.registerAt}`)
    this.log(`  fingerprint: ${result.fingerprint}`)
    this.log(`  valid until: ${result.notAfter}`)
    this.log(`Next: tbmesh export-bundle ${result.name}${result.keyInHome ? '' : ' (it will carry no private key)'}`)
    return result
  }

  /** Shows a join request and its verification code and gets the operator's approval (prompt, or --yes). */
  private async approveRequest(file: string, org: string | undefined, yes: boolean, curve: Curve): Promise<ReceivedJoinRequest> {
    const received = await readJoinRequest(file)
    const {request} = received
    // Before asking: a key of another curve than the CA's cannot be signed, whatever the operator answers.
    requireKeyCurve(curve, received.publicKey, `the join request of ${JSON.stringify(request.organization)}`)
    if (org !== undefined && slugify(org) !== slugify(request.organization)) {
      throw new UsageError(`--org ${org} differs from the request's organization ${request.organization}`, {fix: 'drop --org'})
    }
    const ok = await this.confirmOrYes({
      // Quoted and made safe: an organization name may hold characters that would change how the line reads.
      lines: [
        `Join request from ${JSON.stringify(request.organization)}${request.name ? ` for node ${request.name}` : ''}${request.endpoint ? ` at ${request.endpoint}` : ''}, made ${request.createdAt}`,
        `Verification code: ${received.verificationCode}`,
      ],
      question: 'Does the joiner read you the same verification code?',
      yes,
      unattended: {message: 'approving a join request needs confirmation', fix: 'check the verification code with the joiner, then pass --yes'},
    })
    if (!ok) throw new UserError('join request not approved', {fix: 'ask the joiner for a new request if the codes differ'})
    return received
  }
}
