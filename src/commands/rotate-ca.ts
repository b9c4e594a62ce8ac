import {Flags} from '@oclif/core'

import {caPassphraseFlag, certVersionFlag, certVersionOf, curveFlag, curveOf, TbmeshCommand} from '../base-command.js'
import {finishCaRotation, rotateCa, type RotateCaResult, switchCa} from '../ca/rotation.js'
import {UsageError} from '../errors.js'
import {parseDuration} from '../lib/duration.js'
import {canPrompt, resolvePassphrase} from '../lib/passphrase.js'

export default class RotateCa extends TbmeshCommand {
  static override summary = 'Replace the CA in three rounds (trust both, switch, drop the old one) with no gap in connectivity.'

  static override description = `Each round is shipped with \`tbmesh export-update --all\` and installed on every node (\`tbmesh install UPDATE --reload …\`) before the next one starts; \`tbmesh install\` prints a receipt (NODE@SEQUENCE) that you record with \`tbmesh confirm-install\`. A round refuses to start while nodes have not installed the previous one (\`tbmesh list\` shows which), unless --force.

Round 1, \`tbmesh rotate-ca [--cert-version 1|2] [--duration D]\`: creates a new CA (the current one vouches for it) and adds it to every node's trust bundle; nodes keep presenting their certificates. --cert-version 2 migrates a v1 network to v2 certificates: every node then needs Nebula 1.10 or newer (install refuses the update on an older one).

Round 2, \`tbmesh rotate-ca --switch\`: every node gets a certificate of the new CA (same key, IP and groups) and presents it; when the version changes, a node holds its old and its new certificate (Nebula 1.10+ holds a v1 and a v2 one) and opens tunnels with the new one. Needs the new CA key's passphrase.

Round 3, \`tbmesh rotate-ca --finish\`: the old CA leaves the trust bundles; certificates it signed are refused from then on.

The curve stays (Nebula connects only nodes of one curve; a P256 network is made with \`tbmesh init-ca --curve P256\`). The current CA's passphrase is read from --passphrase-file / TBMESH_CA_PASSPHRASE / a prompt; the new key's from --new-passphrase-file / TBMESH_NEW_CA_PASSPHRASE / a prompt (twice), and otherwise is the current one.

In a federated network an organization rotates its own CA: round 1 makes a descriptor version that the other members approve (\`tbmesh federation approve\`, comparing the verification code printed here) and import; round 3 one that they import. Both are written to --out.`

  static override examples = [
    {description: 'Round 1: a new CA beside the current one', command: '<%= config.bin %> <%= command.id %> && <%= config.bin %> export-update --all --out updates/round1'},
    {description: 'Round 1 of a migration to v2 certificates', command: '<%= config.bin %> <%= command.id %> --cert-version 2 --duration 10y'},
    {description: 'Record the receipts node admins report', command: '<%= config.bin %> confirm-install acme-1@4 umbrella-1@3'},
    {description: 'Round 2, once every node installed round 1', command: '<%= config.bin %> <%= command.id %> --switch && <%= config.bin %> export-update --all --out updates/round2'},
    {description: 'Round 3, once every node installed round 2', command: '<%= config.bin %> <%= command.id %> --finish && <%= config.bin %> export-update --all --out updates/round3'},
    {description: 'Federated: round 1 as a descriptor version for the other members', command: '<%= config.bin %> <%= command.id %> --out tb.v9.json'},
  ]

  static override flags = {
    switch: Flags.boolean({description: 'round 2: nodes switch to certificates of the new CA', exclusive: ['finish']}),
    finish: Flags.boolean({description: 'round 3: drop the old CA from the trust bundle', exclusive: ['switch']}),
    'cert-version': certVersionFlag({description: 'certificate version of the new CA and its certificates: 1, or 2 (Nebula 1.10+); default the current CA\'s', exclusive: ['switch', 'finish']}),
    curve: curveFlag({description: 'curve of the new CA (25519 or P256): must be the current CA\'s', exclusive: ['switch', 'finish']}),
    duration: Flags.string({description: 'new CA lifetime', default: '10y', exclusive: ['switch', 'finish']}),
    force: Flags.boolean({description: 'start the round although nodes have not installed the previous one (they may lose connectivity)'}),
    out: Flags.string({description: 'federated network: file to write the descriptor version of round 1 or 3 to, for the other members'}),
    'passphrase-file': caPassphraseFlag,
    'new-passphrase-file': Flags.file({description: 'file holding the new CA key\'s passphrase (or TBMESH_NEW_CA_PASSPHRASE)', exclusive: ['switch', 'finish', 'no-passphrase']}),
    'no-passphrase': Flags.boolean({description: 'store the new CA key unencrypted (not recommended)', exclusive: ['switch', 'finish']}),
  }

  async run(): Promise<RotateCaResult> {
    const {flags} = await this.parse(RotateCa)
    const home = await this.openHome(flags)
    const federated = home.state.federation !== undefined
    if (federated && flags.finish && flags.out === undefined) throw new UsageError('--finish in a federated network needs --out FILE', {fix: 'pass --out FILE and send the file to the other members'})
    let result: RotateCaResult
    if (flags.finish) {
      const caKey = federated ? await this.unlockCa(home, flags['passphrase-file']) : undefined
      result = await finishCaRotation(home, {force: flags.force, caKey, descriptorOut: flags.out})
      this.log(`Round 3: CA ${result.previousCaFingerprint.slice(0, 12)} leaves the trust bundle; ${result.caFingerprint} remains`)
    } else if (flags.switch) {
      const incoming = home.state.cas.find((c) => c.status === 'incoming')
      const caKey = await this.unlockCa(home, flags['passphrase-file'], incoming)
      result = await switchCa(home, caKey, {force: flags.force})
      this.log(`Round 2: ${result.reissued.length} node certificate(s) re-issued by CA ${result.caFingerprint.slice(0, 12)} (v${result.caVersion}); CA ${result.previousCaFingerprint.slice(0, 12)} still trusted`)
    } else {
      const durationSeconds = parseDuration(flags.duration)
      const version = certVersionOf(flags['cert-version'])
      const curve = curveOf(flags.curve)
      const caKey = await this.unlockCa(home, flags['passphrase-file'])
      const passphrase = flags['no-passphrase'] ? null : await this.newPassphrase(flags['new-passphrase-file'], flags['passphrase-file'])
      result = await rotateCa(home, caKey, {passphrase, durationSeconds, version, curve, force: flags.force, descriptorOut: flags.out})
      this.log(`Round 1: new CA ${result.caFingerprint} (v${result.caVersion}) valid until ${result.caNotAfter}, trusted beside CA ${result.previousCaFingerprint.slice(0, 12)}`)
      if (result.caVersion === 2) this.log('Every node needs Nebula 1.10 or newer from now on: install refuses the update on an older one.')
    }
    if (result.forcedPast.length > 0) this.warn(`started although ${result.forcedPast.join(', ')} had not installed the previous round`)
    const d = result.descriptor
    if (d) {
      this.log(`Descriptor version ${d.version} (${d.change}) written to ${d.path ?? '-'}: ${d.approvedBy.length} of ${d.needed} approval(s)${d.adopted ? ', adopted' : ''}`)
      if (d.verificationCode) this.log(`Verification code for the approving members: ${d.verificationCode}`)
      if (!d.adopted) {
        this.log('Next: the other members approve it (`tbmesh federation approve FILE`); import the complete version here, then every member ships `tbmesh export-update --all`')
        return result
      }
    }
    const next = result.phase === 'finished' ? 'the rotation is done once every node installed it' : `then \`tbmesh rotate-ca ${result.phase === 'started' ? '--switch' : '--finish'}\``
    this.log(`Next: tbmesh export-update --all --out DIR, install on every node, tbmesh confirm-install NODE@SEQ for each receipt, ${next}`)
    return result
  }

  /** The new key's passphrase: its own file or variable, a prompt, else the current CA's (file or variable). */
  private async newPassphrase(file: string | undefined, currentFile: string | undefined): Promise<Buffer> {
    if (file === undefined && process.env.TBMESH_NEW_CA_PASSPHRASE === undefined && !canPrompt()) {
      return resolvePassphrase({file: currentFile, fileFlag: '--passphrase-file', env: 'TBMESH_CA_PASSPHRASE', purpose: 'CA key', alternatives: ['--new-passphrase-file FILE', '--no-passphrase']})
    }
    return resolvePassphrase({file, fileFlag: '--new-passphrase-file', env: 'TBMESH_NEW_CA_PASSPHRASE', purpose: 'new CA key', confirm: true})
  }
}
