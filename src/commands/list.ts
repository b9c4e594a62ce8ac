import {Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {listNodes, type ListResult} from '../ca/lifecycle.js'

export default class List extends TbmeshCommand {
  static override summary = 'List the nodes: overlay IP, roles, certificate fingerprint, expiry and status.'

  static override description = 'One row per node with the state of its current certificate: valid, expiring (within 30 days), expired, revoked or superseded. During a CA rotation, nodes marked "update pending" have not yet been sent the update with their new certificate.'

  static override examples = [
    {description: 'Every node of the network', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'One organization, as JSON', command: '<%= config.bin %> <%= command.id %> --org ACME --json'},
  ]

  static override flags = {
    org: Flags.string({char: 'o', description: 'only the nodes of this organization'}),
  }

  async run(): Promise<ListResult> {
    const {flags} = await this.parse(List)
    const home = await this.openHome(flags)
    const result = listNodes(home.state, {org: flags.org})
    for (const ca of result.cas) this.log(`CA ${ca.id.slice(0, 12)} (${ca.status}) valid until ${ca.notAfter} (${ca.daysLeft} days)`)
    const rows = [
      ['NAME', 'ORGANIZATION', 'OVERLAY IP', 'ROLES', 'FINGERPRINT', 'NOT AFTER', 'DAYS', 'STATUS'],
      ...result.nodes.map((n) => [
        n.name,
        n.organization,
        n.overlayIp,
        n.roles.join(',') || '-',
        n.shortFingerprint,
        n.notAfter,
        String(n.daysLeft),
        n.status + (n.updatePending ? ' (update pending)' : ''),
      ]),
    ]
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
    for (const row of rows) this.log(row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd())
    return result
  }
}
