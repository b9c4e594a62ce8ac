import {Args, Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {installBundle, type InstallResult} from '../bundle.js'
import {UserError} from '../errors.js'

export default class Install extends TbmeshCommand {
  static override summary = 'Install a join package on the node (run by the joining organization\'s admin).'

  static override description = `Checks every file against the SHA-256 in the bundle's manifest, refuses anything outside the bundle layout, writes the files into --dir (keys and secrets 0600) and points config.yml at them, so that \`nebula -config DIR/nebula/config.yml\` works from any directory.

When nebula is installed, runs \`nebula -test\` on the result and reports its verdict.`

  static override examples = [
    {description: 'Install into /etc/tbmesh and start Nebula', command: '<%= config.bin %> <%= command.id %> acme-1.tbmesh.tar.gz --dir /etc/tbmesh && sudo nebula -config /etc/tbmesh/nebula/config.yml'},
    {description: 'Replace an earlier installation', command: '<%= config.bin %> <%= command.id %> acme-1.tbmesh.tar.gz --dir /etc/tbmesh --force'},
  ]

  static override args = {
    bundle: Args.file({description: 'join bundle (.tar.gz) written by tbmesh export-bundle', required: true}),
  }

  static override flags = {
    dir: Flags.directory({char: 'd', description: 'directory to install into', required: true}),
    force: Flags.boolean({char: 'f', description: 'replace an existing installation in --dir'}),
  }

  async run(): Promise<InstallResult> {
    const {args, flags} = await this.parse(Install)
    const result = await installBundle(args.bundle, flags.dir, {force: flags.force})
    this.log(`Installed ${result.manifest.node} (${result.manifest.organization}, overlay IP ${result.manifest.overlayIp}) into ${result.dir}`)
    if (!result.nebulaTest.ran) this.warn('nebula is not installed here: could not run `nebula -test` on the config')
    else if (result.nebulaTest.ok) this.log('nebula -test: ok')
    else {
      const reason = result.nebulaTest.output?.trim().split('\n').at(-1) ?? ''
      throw new UserError(`nebula -test rejected ${result.dir}/nebula/config.yml: ${reason}`, {fix: 'check that nebula is 1.6 or newer and the bundle is for this network'})
    }
    this.log(`Start it: sudo nebula -config ${result.dir}/nebula/config.yml`)
    return result
  }
}
