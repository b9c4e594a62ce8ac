import {Args} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {type ConfirmInstallResult, parseReceipt, recordInstalls} from '../ca/rounds.js'

export default class ConfirmInstall extends TbmeshCommand {
  static override summary = 'Record that nodes installed their bundles (the receipts `tbmesh install` prints).'

  static override description = 'tbmesh has no channel back from the nodes: after `tbmesh install`, each node\'s admin reports the receipt it printed, NODE@SEQUENCE (the node and the bundle\'s sequence number), and the network operator records it here. A CA rotation round (`tbmesh rotate-ca`, `--switch`, `--finish`) refuses to start while nodes have not installed the previous one; `tbmesh list` shows which. A bare NODE records the last bundle exported to it.'

  static override examples = [
    {description: 'Two admins reported their installs', command: '<%= config.bin %> <%= command.id %> acme-1@4 umbrella-1@3'},
    {description: 'The last bundle sent to initech-1 is installed', command: '<%= config.bin %> <%= command.id %> initech-1 --json'},
  ]

  static override strict = false

  static override args = {
    receipts: Args.string({description: 'receipts NODE@SEQUENCE (or NODE)'}),
  }

  async run(): Promise<ConfirmInstallResult> {
    const {argv, flags} = await this.parse(ConfirmInstall)
    const reports = (argv as string[]).map((text) => parseReceipt(text))
    const home = await this.openHome(flags)
    const result = await recordInstalls(home, reports)
    for (const c of result.confirmed) this.log(`${c.name}: installed up to bundle ${c.installed}`)
    this.log(result.waitingFor.length > 0 ? `The current rotation round still waits for: ${result.waitingFor.join(', ')}` : 'No rotation round waits for any node.')
    return result
  }
}
