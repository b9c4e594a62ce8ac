import {Args, Flags} from '@oclif/core'

import {bundlePassphraseFlag, caPassphraseFlag, TbmeshCommand} from '../base-command.js'
import {exportBundle, type ExportBundleResult, joinBundleSecrets} from '../ca/export.js'
import {findNode} from '../home/queries.js'
import {parseDuration} from '../lib/duration.js'
import {resolvePassphrase} from '../lib/passphrase.js'

export default class ExportBundle extends TbmeshCommand {
  static override summary = 'Write a node\'s join package: certificates, Nebula config, TruBudget compose files and settings, signed by the CA.'

  static override description = `The package is a single file the organization's admin installs on the node with \`tbmesh install --ca-fingerprint HEX\`. Its manifest.json lists the SHA-256 of every file, the node, the CA fingerprint and an expiry (14 days by default), and is signed by the CA key (manifest.sig).

It holds no TruBudget secret: the node makes its own (RPC password, ROOT_SECRET, JWT_SECRET) at install. It holds a secret only when it carries the node's private key (unless the node joined with \`tbmesh join-request\` or --pubkey) or, in a federated network, the organization's ORGANIZATION_VAULT_SECRET. Then it is encrypted by default in the age format with a passphrase (\`age -d\` opens it too): from --bundle-passphrase-file, TBMESH_BUNDLE_PASSPHRASE, or a prompt. Tell the admin the passphrase on another channel than the file. --no-encrypt writes a plain tar.gz. A bundle without secrets is written as a plain tar.gz and no passphrase is asked for (one given with --bundle-passphrase-file or TBMESH_BUNDLE_PASSPHRASE still encrypts it).`

  static override examples = [
    {description: 'Write acme-1.tbmesh.tar.gz.age in the current directory, asking for passphrases', command: '<%= config.bin %> <%= command.id %> acme-1'},
    {description: 'Scripted: passphrases from files, valid for 3 days', command: '<%= config.bin %> <%= command.id %> umbrella-1 --out /srv/bundles/umbrella-1.tbmesh.age --passphrase-file ca.pass --bundle-passphrase-file umbrella.pass --expires-in 3d'},
    {description: 'Unencrypted (the file must then travel on a trusted channel)', command: '<%= config.bin %> <%= command.id %> initech-1 --no-encrypt --force'},
  ]

  static override args = {
    name: Args.string({description: 'node name; chosen from a list on a terminal'}),
  }

  static override flags = {
    out: Flags.string({description: 'bundle file to write (default: ./<name>.tbmesh.tar.gz[.age])'}),
    force: Flags.boolean({char: 'f', description: 'replace an existing bundle file'}),
    'expires-in': Flags.string({description: 'how long the bundle may be installed (e.g. 14d, 48h)', default: '14d'}),
    'no-encrypt': Flags.boolean({description: 'write a plain tar.gz (it holds secrets: not recommended)', exclusive: ['bundle-passphrase-file']}),
    'bundle-passphrase-file': bundlePassphraseFlag,
    'passphrase-file': caPassphraseFlag,
  }

  async run(): Promise<ExportBundleResult> {
    const {args, flags} = await this.parse(ExportBundle)
    const expiresInSeconds = parseDuration(flags['expires-in'], '--expires-in')
    const home = await this.openHome(flags)
    const name = await this.ask('NAME', args.name, {message: 'Node', choices: home.state.nodes.filter((n) => !n.revoked).map((n) => n.name)})
    findNode(home.state, name) // an unknown name fails before any passphrase is asked for
    const secrets = await joinBundleSecrets(home, name)
    const caKey = await this.unlockCa(home, flags['passphrase-file'])
    // Nothing to protect: no prompt, and encrypted only when a passphrase was given anyway.
    const asked = secrets.length > 0 || flags['bundle-passphrase-file'] !== undefined || process.env.TBMESH_BUNDLE_PASSPHRASE !== undefined
    const passphrase =
      flags['no-encrypt'] || !asked
        ? null
        : await resolvePassphrase({
            file: flags['bundle-passphrase-file'],
            fileFlag: '--bundle-passphrase-file',
            env: 'TBMESH_BUNDLE_PASSPHRASE',
            purpose: 'bundle',
            confirm: true,
            alternatives: ['--no-encrypt'],
          })
    const out = flags.out ?? `${name}.tbmesh.tar.gz${passphrase ? '.age' : ''}`
    const result = await exportBundle(home, name, out, {caKey, passphrase, expiresInSeconds, force: flags.force})
    // Warned once written, so that a refused export prints its one error line and nothing else.
    if (!passphrase && result.secrets.length > 0) this.warn(`the bundle is not encrypted but holds ${result.secrets.join(' and ')}: hand it over on a trusted channel`)
    this.log(`Wrote ${result.path} (${result.bytes} bytes${result.encrypted ? ', encrypted' : ''}) for ${result.manifest.node} at ${result.manifest.overlayIp}`)
    this.log(
      result.secrets.length > 0
        ? `Secrets:        ${result.secrets.join(', ')}`
        : 'Secrets:        none (the node keeps its own key and makes its TruBudget secrets at install): no passphrase needed',
    )
    this.log(`CA fingerprint: ${result.manifest.caFingerprint}`)
    this.log(`Valid until:    ${result.manifest.expiresAt}`)
    this.log(`On the node:    tbmesh install ${out} --dir DIR --ca-fingerprint ${result.manifest.caFingerprint}`)
    return result
  }
}
