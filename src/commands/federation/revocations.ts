import {Flags} from '@oclif/core'

import {caPassphraseFlag, TbmeshCommand} from '../../base-command.js'
import {exportRevocations, type ExportRevocationsResult} from '../../federation/revocations.js'

export default class FederationRevocations extends TbmeshCommand {
  static override summary = "Publish your organization's revocations to the other members: a signed revocation list."

  static override description = '`tbmesh revoke` blocks a node on your own nodes. In a federated network the other members\' nodes learn of it only from your revocation list: every certificate ever issued to a node you revoked, signed by your CA, with a sequence number that grows with each list. Send it to every member; they run `tbmesh federation import FILE` and `tbmesh export-update --all`. Importers check that each certificate was issued by your CA, so a list cannot block another organization\'s nodes.'

  static override examples = [
    {description: 'After revoking a node', command: '<%= config.bin %> revoke acme-3 && <%= config.bin %> <%= command.id %> --out acme.revocations.json'},
  ]

  static override flags = {
    out: Flags.string({description: 'file to write the revocation list to', required: true}),
    force: Flags.boolean({char: 'f', description: 'overwrite an existing --out file'}),
    'passphrase-file': caPassphraseFlag,
  }

  async run(): Promise<ExportRevocationsResult> {
    const {flags} = await this.parse(FederationRevocations)
    const home = await this.openHome(flags)
    const caKey = await this.unlockCa(home, flags['passphrase-file'])
    const result = await exportRevocations(home, caKey, flags.out, {force: flags.force})
    this.log(`Wrote revocation list ${result.sequence} (${result.fingerprints.length} certificate(s)) to ${result.path}`)
    this.log('Send it to every member organization: tbmesh federation import FILE')
    return result
  }
}
