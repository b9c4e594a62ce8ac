import {Args, Flags} from '@oclif/core'

import {caPassphraseFlag, TbmeshCommand} from '../../base-command.js'
import {exportViolationReport, type ExportViolationReportResult} from '../../federation/violations.js'

export default class FederationReport extends TbmeshCommand {
  static override summary = 'Report certificates your nodes caught outside their issuer\'s block: a signed violation report for the other members.'

  static override description = '`tbmesh up` writes an evidence record to DIR/evidence/ on the node whenever a peer\'s certificate holds an address outside the block of the member whose CA signed it, and blocklists it on that node only. This command turns those records (copy them from your nodes) into a report signed by your CA: each certificate is checked against the current descriptor first, and joins your home\'s blocklist too (ship it with `tbmesh export-update --all`). Send the report to every member; they run `tbmesh federation import FILE` and `tbmesh export-update --all`. Such a certificate proves itself, so any member may report another member\'s certificate, unlike a revocation.'

  static override examples = [
    {description: 'After a node of yours caught one', command: '<%= config.bin %> <%= command.id %> evidence/20260101T120000Z-9f3a….json --out globex.violations.json'},
    {description: 'Everything a node recorded', command: '<%= config.bin %> <%= command.id %> /etc/tbmesh/evidence/*.json --out globex.violations.json --passphrase-file ca.pass --json'},
  ]

  static override strict = false

  static override args = {
    evidence: Args.file({description: 'evidence records written by tbmesh up (DIR/evidence/*.json)', required: true}),
  }

  static override flags = {
    out: Flags.string({description: 'file to write the violation report to', required: true}),
    force: Flags.boolean({char: 'f', description: 'overwrite an existing --out file'}),
    'passphrase-file': caPassphraseFlag,
  }

  async run(): Promise<ExportViolationReportResult> {
    const {argv, flags} = await this.parse(FederationReport)
    const home = await this.openHome(flags)
    const caKey = await this.unlockCa(home, flags['passphrase-file'])
    const result = await exportViolationReport(home, caKey, argv as string[], flags.out, {force: flags.force})
    for (const v of result.violations) this.log(`${v.fingerprint}: issued by ${v.issuer}, holds ${v.outside.join(', ')} outside ${v.block}`)
    this.log(`Wrote a violation report of ${result.violations.length} certificate(s) to ${result.path}`)
    this.log('Send it to every member organization: tbmesh federation import FILE')
    if (result.nodesToUpdate.length > 0) this.log(`${result.nodesToUpdate.length} node(s) of yours need an update: tbmesh export-update --all --out DIR`)
    return result
  }
}
