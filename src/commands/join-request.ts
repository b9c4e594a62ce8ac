import {Flags} from '@oclif/core'

import {curveFlag, curveOf, TbmeshCommand} from '../base-command.js'
import {createJoinRequest, type JoinRequestResult} from '../join/join-request.js'

export default class JoinRequest extends TbmeshCommand {
  static override summary = 'Ask to join a network, keeping the node\'s private key on this machine.'

  static override description = `Run on the joining node. Generates the node's key pair here (X25519, or P256 with --curve P256 for a P256 network) (the private key stays in --home, 0600), writes a request file (organization, name, endpoint, public key, a random nonce, creation time) to send to the network's CA admin, and prints a verification code.

Read the code to the CA admin on the phone: \`tbmesh add-node --request\` shows the same code for an unaltered request. Install the bundle you get back with \`tbmesh install\` and the same --home: it finds the key by the request's nonce.`

  static override examples = [
    {description: 'Request a node for Umbrella Bank', command: '<%= config.bin %> <%= command.id %> --org "Umbrella Bank" --out umbrella.request.json'},
    {description: 'With a name and a public endpoint, as JSON', command: '<%= config.bin %> <%= command.id %> --org ACME --name acme-frankfurt --endpoint 198.51.100.4:4242 --out acme.request.json --json'},
  ]

  static override flags = {
    org: Flags.string({char: 'o', description: 'organization name as TruBudget knows it (ORGANIZATION); asked for on a terminal'}),
    name: Flags.string({description: 'node name you would like, a lowercase DNS label'}),
    endpoint: Flags.string({description: 'public underlay address HOST:PORT of this node, if it has one'}),
    out: Flags.string({description: 'request file to write; asked for on a terminal'}),
    curve: curveFlag({description: 'key curve: the curve of the network\'s CA, 25519 (default) or P256'}),
  }

  async run(): Promise<JoinRequestResult> {
    const {flags} = await this.parse(JoinRequest)
    const org = await this.ask('--org', flags.org, {message: 'Organization (as TruBudget knows it)'})
    const out = await this.ask('--out', flags.out, {message: 'Write the request to', default: `${org.toLowerCase().replaceAll(/[^a-z0-9]+/g, '-')}.request.json`})
    const result = await createJoinRequest(this.homeDir(flags), {org, name: flags.name, endpoint: flags.endpoint, out, curve: curveOf(flags.curve)})
    this.log(`Wrote join request ${result.path} for ${result.request.organization}${result.request.name ? ` (${result.request.name})` : ''}`)
    this.log(`Verification code: ${result.verificationCode}`)
    this.log('Send the file to the network\'s CA admin and read them the code on the phone; keep this --home for `tbmesh install`.')
    return result
  }
}
