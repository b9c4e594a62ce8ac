import {Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {parseDuration} from '../duration.js'
import {addNode, unlockCaKey, type AddNodeResult} from '../network.js'
import {resolvePassphrase} from '../passphrase.js'

export default class AddNode extends TbmeshCommand {
  static override summary = 'Add a node: allocate its overlay IP and sign its Nebula host certificate.'

  static override description = `An organization seen for the first time gets the next free block of the overlay (/24 by default); the node gets the next free address in that block (never its first or last), or --ip.

The certificate carries the groups org:<slug>, role:lighthouse and role:origin when set, and --groups. It lives one year by default, never past the CA.

The host key pair is generated here and travels in the node's join bundle (tbmesh export-bundle).`

  static override examples = [
    {description: 'The origin (alpha) node, also the network\'s lighthouse', command: '<%= config.bin %> <%= command.id %> --org ACME --origin --lighthouse --endpoint 203.0.113.7:4242'},
    {description: 'A node of another organization, with a fixed name and IP', command: '<%= config.bin %> <%= command.id %> --org "Umbrella Bank" --name umbrella-berlin --ip 10.42.1.10'},
    {description: 'Extra groups and a 90-day certificate, as JSON', command: '<%= config.bin %> <%= command.id %> --org ACME --groups backup,monitoring --duration 90d --json'},
  ]

  static override flags = {
    org: Flags.string({char: 'o', description: 'organization name as TruBudget knows it (ORGANIZATION)', required: true}),
    name: Flags.string({description: 'node name, a lowercase DNS label (default: <org-slug>-<n>)'}),
    ip: Flags.string({description: 'overlay IP inside the organization\'s block (default: the next free one)'}),
    lighthouse: Flags.boolean({description: 'make the node a Nebula lighthouse (needs --endpoint)', dependsOn: ['endpoint']}),
    endpoint: Flags.string({description: 'public underlay address HOST:PORT where other nodes reach this one'}),
    origin: Flags.boolean({description: 'the TruBudget origin (alpha) node that creates the chain; one per network'}),
    groups: Flags.string({description: 'extra certificate groups, comma-separated', delimiter: ',', multiple: true}),
    duration: Flags.string({description: 'certificate lifetime (e.g. 365d, 8760h); default one year, capped at the CA\'s expiry'}),
    'passphrase-file': Flags.file({description: 'file holding the CA passphrase (or set TBMESH_CA_PASSPHRASE)'}),
  }

  async run(): Promise<AddNodeResult> {
    const {flags} = await this.parse(AddNode)
    const durationSeconds = flags.duration === undefined ? undefined : parseDuration(flags.duration)
    const home = await this.openHome(flags)
    const passphrase = home.activeCa().encrypted
      ? await resolvePassphrase({file: flags['passphrase-file'], fileFlag: '--passphrase-file', env: 'TBMESH_CA_PASSPHRASE', purpose: 'CA key'})
      : null
    const caKey = await unlockCaKey(home, passphrase)
    const result = await addNode(home, caKey, {
      org: flags.org,
      name: flags.name,
      ip: flags.ip,
      lighthouse: flags.lighthouse,
      endpoint: flags.endpoint,
      origin: flags.origin,
      groups: flags.groups,
      durationSeconds,
    })
    this.log(`Added ${result.name} (${result.organization}) at ${result.overlayIp}`)
    this.log(`  groups:      ${result.groups.join(', ')}`)
    this.log(`  fingerprint: ${result.fingerprint}`)
    this.log(`  valid until: ${result.notAfter}`)
    this.log(`Next: tbmesh export-bundle ${result.name}`)
    return result
  }
}
