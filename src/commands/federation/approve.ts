import {Args, Flags} from '@oclif/core'

import {caPassphraseFlag, TbmeshCommand} from '../../base-command.js'
import {UsageError} from '../../errors.js'
import {type ChangeSummary, describeChange} from '../../federation/change-summary.js'
import {approveChange, type ApproveResult} from '../../federation/federation.js'
import {canPrompt} from '../../lib/passphrase.js'

export default class FederationApprove extends TbmeshCommand {
  static override summary = 'Approve a change of the federated network: a membership request, or a version another member proposed.'

  static override description = `Given a membership request (from \`tbmesh federation request\`), makes the next descriptor version, which adds the requesting organization, and signs it with your CA. Given a version another member already signed, checks it and adds your signature. Either way the result goes to --out: send it on to the next member, until enough have approved (by default more than half of the current members).

You approve one version per version number: approving a second, different version 5 is refused (two could otherwise both reach a majority and split the network) unless --replace-approval.

Before signing, the change is shown with the verification code of the new member's CA and block: approve only if the requesting admin reads you the same code. When your approval completes the version, this home adopts it at once; the others adopt it with \`tbmesh federation import\`. Then every member runs \`tbmesh export-update --all\` and installs the updates, and the new organization's nodes can connect.`

  static override examples = [
    {description: 'First approval of a membership request', command: '<%= config.bin %> <%= command.id %> umbrella.membership.json --out tb.v4.json'},
    {description: 'Second approval, of the version ACME signed', command: '<%= config.bin %> <%= command.id %> tb.v4.json --out tb.v4.approved.json --yes'},
  ]

  static override args = {
    file: Args.file({description: 'membership request, or a proposed descriptor version', required: true}),
  }

  static override flags = {
    out: Flags.string({description: 'file to write the version with your approval to', required: true}),
    force: Flags.boolean({char: 'f', description: 'overwrite an existing --out file'}),
    yes: Flags.boolean({char: 'y', description: 'approve without asking (only after checking the verification code)'}),
    'replace-approval': Flags.boolean({description: 'approve this version although you approved another one with the same number (only if that one was abandoned)'}),
    'passphrase-file': caPassphraseFlag,
  }

  async run(): Promise<ApproveResult> {
    const {args, flags} = await this.parse(FederationApprove)
    const home = await this.openHome(flags)
    if (!flags.yes && !canPrompt()) throw new UsageError(UNATTENDED.message, {fix: UNATTENDED.fix})
    const caKey = await this.unlockCa(home, flags['passphrase-file'])
    const result = await approveChange(home, caKey, args.file, {out: flags.out, force: flags.force, replace: flags['replace-approval'], confirm: (summary) => this.confirm(summary, Boolean(flags.yes))})
    this.log(`Approved version ${result.version}: ${result.approvedBy.length} of ${result.needed} approval(s) needed (${result.approvedBy.join(', ')}); wrote ${result.path}`)
    if (result.adopted) {
      this.log(`The version is complete and this home adopted it. Send ${result.path} to every organization (they run \`tbmesh federation import\`),`)
      this.log(`then update your ${result.nodesToUpdate.length} node(s): tbmesh export-update --all --out DIR`)
    } else this.log(`Send ${result.path} to another member organization to approve.`)
    return result
  }

  private async confirm(s: ChangeSummary, yes: boolean): Promise<boolean> {
    const question = s.verificationCode ? 'Does their admin read you the same verification code?' : 'Approve this change?'
    return this.confirmOrYes({lines: describeChange(s), question, yes, unattended: UNATTENDED})
  }
}

/** Why approving needs a terminal or --yes, and what to do. */
const UNATTENDED = {message: 'approving a change needs confirmation', fix: 'check the verification code with the requesting admin, then pass --yes'}
