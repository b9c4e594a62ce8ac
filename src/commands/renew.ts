import {Args, Flags} from '@oclif/core'

import {caPassphraseFlag, TbmeshCommand} from '../base-command.js'
import {renew, type RenewResult} from '../ca/lifecycle.js'
import {UsageError} from '../errors.js'
import {parseDuration} from '../lib/duration.js'

export default class Renew extends TbmeshCommand {
  static override summary = 'Re-sign node certificates with a new validity (same key, IP and groups).'

  static override description = 'Renews the named nodes, or with --expiring-within every node whose certificate expires within that time. The old certificate is marked superseded in the ledger. Ship the new certificates with `tbmesh export-update`.'

  static override examples = [
    {description: 'Renew two nodes for another year', command: '<%= config.bin %> <%= command.id %> acme-1 umbrella-1'},
    {description: 'Renew everything that expires within 30 days, for 90 days', command: '<%= config.bin %> <%= command.id %> --expiring-within 30d --duration 90d'},
  ]

  static override strict = false

  static override args = {
    names: Args.string({description: 'node names'}),
  }

  static override flags = {
    'expiring-within': Flags.string({description: 'renew every node whose certificate expires within this time (e.g. 30d)'}),
    duration: Flags.string({description: 'new certificate lifetime (default one year, capped at the CA\'s expiry)'}),
    'passphrase-file': caPassphraseFlag,
  }

  async run(): Promise<RenewResult> {
    const {argv, flags} = await this.parse(Renew)
    const names = argv as string[]
    if (names.length > 0 && flags['expiring-within']) throw new UsageError('give node names or --expiring-within, not both', {fix: 'drop one of them'})
    if (names.length === 0 && !flags['expiring-within']) throw new UsageError('name the nodes to renew, or pass --expiring-within', {fix: 'e.g. tbmesh renew --expiring-within 30d'})
    const expiringWithinSeconds = flags['expiring-within'] ? parseDuration(flags['expiring-within'], '--expiring-within') : undefined
    const durationSeconds = flags.duration ? parseDuration(flags.duration) : undefined
    const home = await this.openHome(flags)
    const caKey = await this.unlockCa(home, flags['passphrase-file'])
    const result = await renew(home, caKey, {names, expiringWithinSeconds, durationSeconds})
    if (result.renewed.length === 0) this.log('Nothing to renew.')
    for (const r of result.renewed) this.log(`Renewed ${r.name}: ${r.fingerprint.slice(0, 12)} valid until ${r.notAfter}`)
    if (result.renewed.length > 0) this.log(`Next: tbmesh export-update ${result.renewed.map((r) => r.name).join(' ')} --out updates/`)
    return result
  }
}
