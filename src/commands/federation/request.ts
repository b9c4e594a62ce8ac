import {Flags} from '@oclif/core'

import {caPassphraseFlag, TbmeshCommand} from '../../base-command.js'
import {createMembershipRequest, type MembershipRequestResult} from '../../federation/federation.js'

export default class FederationRequest extends TbmeshCommand {
  static override summary = 'Ask to join a federated network: write a membership request signed by your CA.'

  static override description = `Run in a home made with \`tbmesh init-ca --federated --org ORG --descriptor FILE\`. The request carries your organization, its block, the access level asked for, and your CA certificate (never its key), and names the descriptor version it extends.

Send it to the member organizations. Read each admin the verification code printed here: \`tbmesh federation approve\` shows them the same code for the same CA and block. Once enough of them approved, import the version they send back with \`tbmesh federation import\`.`

  static override examples = [
    {description: 'Write the request', command: '<%= config.bin %> <%= command.id %> --out umbrella.membership.json'},
  ]

  static override flags = {
    out: Flags.string({description: 'request file to write', required: true}),
    force: Flags.boolean({char: 'f', description: 'overwrite an existing --out file'}),
    'passphrase-file': caPassphraseFlag,
  }

  async run(): Promise<MembershipRequestResult> {
    const {flags} = await this.parse(FederationRequest)
    const home = await this.openHome(flags)
    const caKey = await this.unlockCa(home, flags['passphrase-file'])
    const result = await createMembershipRequest(home, caKey, flags.out, {force: flags.force})
    this.log(`Wrote the membership request of ${result.organization} (block ${result.block}, ${result.access}) to ${result.path}`)
    this.log(`It extends descriptor version ${result.baseVersion}. CA fingerprint: ${result.caFingerprint}`)
    this.log(`Verification code: ${result.verificationCode} (read it to each approving admin)`)
    return result
  }
}
