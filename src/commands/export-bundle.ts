import {Args, Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {exportBundle, type ExportBundleResult} from '../network.js'

export default class ExportBundle extends TbmeshCommand {
  static override summary = 'Write a node\'s join package: certificates, key, Nebula config, multichain.conf and blockchain.env.'

  static override description = `The package is a single tar.gz file the organization's admin installs on the node with \`tbmesh install\`. Its manifest.json lists the SHA-256 of every file.

It holds the node's private key and the network's RPC password: hand it over on a trusted channel.`

  static override examples = [
    {description: 'Write acme-1.tbmesh.tar.gz in the current directory', command: '<%= config.bin %> <%= command.id %> acme-1'},
    {description: 'Choose the file, replacing an earlier one', command: '<%= config.bin %> <%= command.id %> umbrella-1 --out /srv/bundles/umbrella-1.tar.gz --force'},
  ]

  static override args = {
    name: Args.string({description: 'node name', required: true}),
  }

  static override flags = {
    out: Flags.string({description: 'bundle file to write (default: ./<name>.tbmesh.tar.gz)'}),
    force: Flags.boolean({char: 'f', description: 'replace an existing bundle file'}),
  }

  async run(): Promise<ExportBundleResult> {
    const {args, flags} = await this.parse(ExportBundle)
    const home = await this.openHome(flags)
    const result = await exportBundle(home, args.name, flags.out ?? `${args.name}.tbmesh.tar.gz`, {force: flags.force})
    this.log(`Wrote ${result.path} (${result.bytes} bytes) for ${result.manifest.node} at ${result.manifest.overlayIp}`)
    this.log(`CA fingerprint: ${result.manifest.caFingerprint}`)
    this.log('It holds a private key: send it on a trusted channel. On the node: tbmesh install BUNDLE --dir DIR')
    return result
  }
}
