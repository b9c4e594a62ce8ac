import {Args} from '@oclif/core'

import {TbmeshCommand} from '../../base-command.js'
import {importFederationFile, type ImportResult} from '../../federation/federation.js'
import type {ImportRevocationsResult} from '../../federation/revocations.js'
import type {ImportViolationReportResult} from '../../federation/violations.js'

export default class FederationImport extends TbmeshCommand {
  static override summary = "Adopt a new version of the network descriptor approved by enough members, a member's revocation list, or a violation report."

  static override description = `The version must extend the one this home holds (the next number, naming its digest), change only what it says it changes, and carry valid approvals of enough members of the version it extends (by default more than half). Anything else is refused and the home is left as it was.

A joining organization becomes a member with the version that lists its CA. After an import, every node of this home needs an update bundle: run \`tbmesh export-update --all\` and install the bundles, so that your nodes trust the new member's CA.

A revocation list (from \`tbmesh federation revocations\`) must be signed by a member's CA, list only certificates that CA issued, and be newer than the last one imported from that member. Its certificates join this home's blocklist with the next \`tbmesh export-update --all\`.

A violation report (from \`tbmesh federation report\`) must be signed by a member's CA, and each certificate in it must be issued by a member's CA and hold an address outside that member's block: proof in itself, whoever reports it. Its certificates join the blocklist the same way; importing it again changes nothing.`

  static override examples = [
    {description: 'Adopt version 5', command: '<%= config.bin %> <%= command.id %> tb.v5.json'},
    {description: "Take over Umbrella's revocations", command: '<%= config.bin %> <%= command.id %> umbrella.revocations-3.json'},
    {description: "Blocklist the certificates Globex's nodes caught outside their issuer's block", command: '<%= config.bin %> <%= command.id %> globex.violations.json'},
  ]

  static override args = {
    file: Args.file({description: 'descriptor version (from `federation approve` or `federation show --out`), revocation list or violation report', required: true}),
  }

  async run(): Promise<ImportResult | ImportRevocationsResult | ImportViolationReportResult> {
    const {args, flags} = await this.parse(FederationImport)
    const home = await this.openHome(flags)
    const result = await importFederationFile(home, args.file)
    if (result.kind === 'revocations') {
      this.log(`Imported revocation list ${result.sequence} of ${result.organization}: ${result.fingerprints.length} certificate(s) blocked`)
      this.log(`${result.nodesToUpdate.length} node(s) need an update: tbmesh export-update --all --out DIR`)
      return result
    }
    if (result.kind === 'violations') {
      this.log(`Imported ${result.organization}'s violation report: ${result.violations.length} certificate(s), ${result.added.length} new on the blocklist`)
      if (result.nodesToUpdate.length > 0) this.log(`${result.nodesToUpdate.length} node(s) need an update: tbmesh export-update --all --out DIR`)
      return result
    }
    if (!result.adopted) {
      this.log(`This home already holds version ${result.version}; nothing changed`)
      return result
    }
    this.log(`Adopted descriptor version ${result.version} (${result.change.kind} ${result.change.organization}), approved by ${result.approvedBy.join(', ')}`)
    if (result.member) this.log(`${result.nodesToUpdate.length} node(s) need an update: tbmesh export-update --all --out DIR`)
    for (const warning of result.warnings) this.warn(warning)
    return result
  }
}
