import {Args, Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {revoke, type RevokeResult} from '../ca/lifecycle.js'
import {descriptorRelays} from '../federation/descriptor.js'

export default class Revoke extends TbmeshCommand {
  static override summary = 'Revoke a node: block every certificate it was ever issued.'

  static override description = 'Adds every certificate fingerprint ever issued to the node to the network\'s blocklist and marks it revoked; its overlay IP is never handed out again. Nodes refuse it once they install the next update bundle (`tbmesh export-update --all`), which also tears down its open tunnels.'

  static override examples = [
    {description: 'Revoke a node and ship the blocklist', command: '<%= config.bin %> <%= command.id %> umbrella-1 --reason "key lost" && <%= config.bin %> export-update --all --out updates/'},
    {description: 'As JSON', command: '<%= config.bin %> <%= command.id %> initech-2 --json'},
  ]

  static override args = {
    name: Args.string({description: 'node name', required: true}),
  }

  static override flags = {
    reason: Flags.string({description: 'why, for the record'}),
  }

  async run(): Promise<RevokeResult> {
    const {args, flags} = await this.parse(Revoke)
    const home = await this.openHome(flags)
    const result = await revoke(home, args.name, {reason: flags.reason})
    this.log(`Revoked ${result.name}: ${result.fingerprints.length} certificate(s) blocked (${result.blocklistSize} in the blocklist)`)
    this.log('Next: tbmesh export-update --all --out updates/ and install the updates on every node')
    if (home.state.federation) {
      this.log('and send the other members your revocation list: tbmesh federation revocations --out FILE')
      const listed = home.state.federation.current.descriptor
      const ip = home.state.nodes.find((n) => n.name === result.name)?.overlayIp
      if ([...listed.lighthouses, ...descriptorRelays(listed)].some((l) => l.overlayIp === ip) || listed.origin?.overlayIp === ip) {
        this.warn(`${result.name} stays listed as lighthouse, relay or origin in the network descriptor: tbmesh cannot remove it from there yet, so other members' nodes keep addressing it (and refuse it once they import your revocation list)`)
      }
    }
    return result
  }
}
