import {Flags} from '@oclif/core'

import {TbmeshCommand} from '../../base-command.js'
import {federationStatus, type FederationStatus} from '../../federation/federation.js'

export default class FederationShow extends TbmeshCommand {
  static override summary = "Show the federated network's current descriptor: members, blocks, CAs, approvals."

  static override description = `Lists the member organizations with their blocks, access levels and CA fingerprints, the lighthouses and the origin, and how many approvals the next change needs. The digest identifies the version: compare it with the other organizations' to be sure you hold the same.

--out writes the current version to a file, to send to an organization that wants to join (\`tbmesh init-ca --federated --descriptor FILE\`) or to a member that missed it (\`tbmesh federation import FILE\`).`

  static override examples = [
    {description: 'Where the network stands', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Write the current version for an organization that joins', command: '<%= config.bin %> <%= command.id %> --out tb.descriptor.json'},
  ]

  static override flags = {
    out: Flags.string({description: 'also write the current descriptor version to this file'}),
    force: Flags.boolean({char: 'f', description: 'overwrite an existing --out file'}),
  }

  async run(): Promise<FederationStatus> {
    const {flags} = await this.parse(FederationShow)
    const home = await this.openHome(flags)
    const s = await federationStatus(home, {out: flags.out, force: flags.force})
    this.log(`Network ${s.network} (${s.cidr}), descriptor version ${s.version}, digest ${s.digest}`)
    this.log(`This home: ${s.organization}${s.member ? '' : ' (membership pending)'}. Approved by: ${s.approvedBy.join(', ')}. The next change needs ${s.nextChangeNeeds} approval(s) (${s.requiredApprovals === 'majority' ? 'majority' : `fixed: ${s.requiredApprovals}`}).`)
    const rows = [['ORGANIZATION', 'SLUG', 'BLOCK', 'ACCESS', 'CA FINGERPRINT'], ...s.members.map((m) => [m.organization + (m.self ? ' (this home)' : ''), m.slug, m.block, m.access, m.caFingerprint])]
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
    for (const row of rows) this.log(row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd())
    for (const l of s.lighthouses) this.log(`Lighthouse ${l.overlayIp} at ${l.endpoint} (${l.organization})`)
    for (const r of s.relays) this.log(`Relay ${r.overlayIp} at ${r.endpoint} (${r.organization})`)
    this.log(s.origin ? `Origin ${s.origin.overlayIp} (${s.origin.organization})` : 'No origin node yet')
    if (s.path) this.log(`Wrote version ${s.version} to ${s.path}`)
    return s
  }
}
