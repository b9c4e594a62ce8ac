import {Flags} from '@oclif/core'

import {caPassphraseFlag, TbmeshCommand} from '../base-command.js'
import {finishCaRotation, refuseFederatedRotation, rotateCa, type RotateCaResult} from '../ca/lifecycle.js'
import {parseDuration} from '../lib/duration.js'
import {canPrompt, resolvePassphrase} from '../lib/passphrase.js'

export default class RotateCa extends TbmeshCommand {
  static override summary = 'Replace the CA with overlap: new CA, both trusted, every node re-issued; --finish drops the old one.'

  static override description = `Step 1, \`tbmesh rotate-ca\`: creates a new CA (the old one vouches for it, so nodes accept updates it signs), keeps the old CA in the trust bundle, and re-issues every node's certificate with the new CA (same key, IP and groups). Ship it with \`tbmesh export-update --all\` and install the updates on every node.

Step 2, once every node has that update: \`tbmesh rotate-ca --finish\` drops the old CA from the trust bundle; ship \`export-update --all\` again. Certificates signed by the old CA are refused from then on.

The current CA's passphrase is read from --passphrase-file / TBMESH_CA_PASSPHRASE / a prompt; the new key's from --new-passphrase-file / TBMESH_NEW_CA_PASSPHRASE / a prompt (twice), and otherwise is the current one.`

  static override examples = [
    {description: 'Start a rotation to a new 10-year CA', command: '<%= config.bin %> <%= command.id %> && <%= config.bin %> export-update --all --out updates/'},
    {description: 'Finish it once every node runs the update', command: '<%= config.bin %> <%= command.id %> --finish && <%= config.bin %> export-update --all --out updates/'},
  ]

  static override flags = {
    finish: Flags.boolean({description: 'finish the rotation under way: drop the old CA from the trust bundle'}),
    duration: Flags.string({description: 'new CA lifetime', default: '10y', exclusive: ['finish']}),
    'passphrase-file': caPassphraseFlag,
    'new-passphrase-file': Flags.file({description: 'file holding the new CA key\'s passphrase (or TBMESH_NEW_CA_PASSPHRASE)', exclusive: ['finish', 'no-passphrase']}),
    'no-passphrase': Flags.boolean({description: 'store the new CA key unencrypted (not recommended)', exclusive: ['finish']}),
  }

  async run(): Promise<RotateCaResult> {
    const {flags} = await this.parse(RotateCa)
    const home = await this.openHome(flags)
    refuseFederatedRotation(home.state)
    let result: RotateCaResult
    if (flags.finish) {
      result = await finishCaRotation(home)
      this.log(`Rotation finished: CA ${result.previousCaFingerprint.slice(0, 12)} leaves the trust bundle; ${result.caFingerprint} remains`)
    } else {
      const durationSeconds = parseDuration(flags.duration)
      const caKey = await this.unlockCa(home, flags['passphrase-file'])
      const passphrase = flags['no-passphrase'] ? null : await this.newPassphrase(flags['new-passphrase-file'], flags['passphrase-file'])
      result = await rotateCa(home, caKey, {passphrase, durationSeconds})
      this.log(`New CA ${result.caFingerprint} valid until ${result.caNotAfter}; old CA ${result.previousCaFingerprint.slice(0, 12)} still trusted`)
      this.log(`Re-issued ${result.reissued.length} node certificate(s) with the new CA`)
      this.log('Next: tbmesh export-update --all --out updates/, install them everywhere, then tbmesh rotate-ca --finish')
    }
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
