import {Args, Flags} from '@oclif/core'

import {caPassphraseFlag, TbmeshCommand} from '../base-command.js'
import {type ExportUpdateResult, exportUpdates} from '../ca/export.js'
import {parseDuration} from '../lib/duration.js'

export default class ExportUpdate extends TbmeshCommand {
  static override summary = 'Write signed update bundles: current certificate, CA trust bundle and config.yml.'

  static override description = 'One update bundle per node, signed like join bundles and carrying a sequence number: the node\'s current certificate, the CA trust bundle, and a freshly rendered config.yml (blocklist, lighthouses, static host map). They hold no secret and are not encrypted. On the node: `tbmesh install BUNDLE --dir DIR --reload --pid-file FILE`.'

  static override examples = [
    {description: 'Updates for every node after a revocation or a CA rotation', command: '<%= config.bin %> <%= command.id %> --all --out updates/'},
    {description: 'Updates for two renewed nodes', command: '<%= config.bin %> <%= command.id %> acme-1 umbrella-1 --out updates/ --json'},
  ]

  static override strict = false

  static override args = {
    names: Args.string({description: 'node names'}),
  }

  static override flags = {
    all: Flags.boolean({description: 'every node that is not revoked'}),
    out: Flags.string({description: 'directory to write the bundles into', required: true}),
    'expires-in': Flags.string({description: 'how long the bundles may be installed (e.g. 14d)', default: '14d'}),
    force: Flags.boolean({char: 'f', description: 'replace existing bundle files'}),
    'passphrase-file': caPassphraseFlag,
  }

  async run(): Promise<ExportUpdateResult> {
    const {argv, flags} = await this.parse(ExportUpdate)
    const expiresInSeconds = parseDuration(flags['expires-in'], '--expires-in')
    const home = await this.openHome(flags)
    const caKey = await this.unlockCa(home, flags['passphrase-file'])
    const result = await exportUpdates(home, caKey, {names: argv as string[], all: flags.all, outDir: flags.out, expiresInSeconds, force: flags.force})
    for (const b of result.bundles) this.log(`Wrote ${b.path} (update ${b.manifest.sequence} for ${b.manifest.node})`)
    this.log('On each node: tbmesh install BUNDLE --dir DIR --reload --pid-file FILE')
    return result
  }
}
