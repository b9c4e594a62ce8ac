import {Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {listNodes, type ListResult} from '../ca/lifecycle.js'

export default class List extends TbmeshCommand {
  static override summary = 'List the nodes: overlay IP, roles, certificate fingerprint, expiry and status.'

  static override description = 'One row per node with its current certificate\'s version and curve (e.g. v2 P256) and status: valid, expiring (within 30 days), expired, revoked or superseded. "update pending": the node has not been sent its latest changes yet (`tbmesh export-update`). During a CA rotation, "round N not installed": its admin has not reported installing the round (`tbmesh confirm-install`); the next round waits for it.'

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
    const format = (version: number, curve: string): string => `v${version} ${curve === 'P256' ? 'P256' : 'Curve25519'}`
    for (const ca of result.cas) this.log(`CA ${ca.id.slice(0, 12)} (${ca.status}, ${format(ca.version, ca.curve)}) valid until ${ca.notAfter} (${ca.daysLeft} days)`)
    const rotation = result.rotation
    if (rotation) {
      const waiting = rotation.waitingFor.length > 0 ? `waiting for ${rotation.waitingFor.join(', ')}` : 'installed everywhere'
      this.log(`CA rotation round ${rotation.round} (${rotation.previousCaFingerprint.slice(0, 12)} → ${rotation.caFingerprint.slice(0, 12)}): ${waiting}`)
    }
    const rows = [
      ['NAME', 'ORGANIZATION', 'OVERLAY IP', 'ROLES', 'CERTIFICATE', 'FINGERPRINT', 'NOT AFTER', 'DAYS', 'STATUS'],
      ...result.nodes.map((n) => [
        n.name,
        n.organization,
        n.overlayIp,
        n.roles.join(',') || '-',
        format(n.version, n.curve),
        n.shortFingerprint,
        n.notAfter,
        String(n.daysLeft),
        n.status + (n.updatePending ? ' (update pending)' : '') + (n.roundPending && rotation ? ` (round ${rotation.round} not installed)` : ''),
      ]),
    ]
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
    for (const row of rows) this.log(row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd())
    return result
  }
}
