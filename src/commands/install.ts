import {Args, Flags} from '@oclif/core'

import {bundlePassphraseFlag, TbmeshCommand} from '../base-command.js'
import {installBundle, type InstallResult} from '../bundle/install.js'
import {checkFingerprint} from '../bundle/trust.js'
import {UserError} from '../errors.js'
import {loadJoinRequest} from '../join/join-request.js'
import {checkImageReference} from '../lib/names.js'
import {resolvePassphrase} from '../lib/passphrase.js'
import {reloadNebula, type ReloadResult} from '../node/reload.js'
import {NEBULA_IMAGE} from '../render/docker-compose-nebula.js'

async function readKeyFile(file: string): Promise<string> {
  const {readFile} = await import('node:fs/promises')
  return readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
    throw new UserError(`cannot read --key ${file} (${error.code ?? 'error'})`, {fix: 'give the private key file made with nebula-cert keygen'})
  })
}

export default class Install extends TbmeshCommand {
  static override summary = 'Install a join or update bundle on the node (run by the organization\'s admin).'

  static override description = `Verifies, before anything is written: the CA's signature of the manifest; that the CA's fingerprint equals --ca-fingerprint (get it from the network operator on a channel other than the bundle's); every file's SHA-256; the host certificate against the CA (all Nebula rules); that the private key matches the certificate (the bundle's, or for a node that joined with \`tbmesh join-request\`, the key kept in this machine's --home); and the bundle's expiry. Refuses archive entries outside the bundle layout.

Then it stages the files beside --dir and renames them into place (keys and secrets 0600), points config.yml at them so that \`nebula -config DIR/nebula/config.yml\` works from any directory, writes DIR into the systemd unit (systemd/nebula.service) and the compose files (docker/), and runs \`nebula -test\` when nebula is installed. The unit gets Type=notify when that nebula tells systemd it is ready (1.8 and later), Type=simple otherwise. docker/docker-compose.nebula.yml runs nebulaoss/nebula:1.11.1, or the image --nebula-image names. An encrypted bundle's passphrase comes from --bundle-passphrase-file, TBMESH_BUNDLE_PASSPHRASE, or a prompt.

An update bundle (from \`tbmesh export-update\`) goes onto an existing installation: it must be for the same node and network, newer than what is installed (replays and rollbacks are refused), and signed by a CA the installation trusts, or by the CA that one vouched for during a CA rotation, so --ca-fingerprint is not needed. The new files are swapped in atomically; --reload then makes the running nebula pick them up.`

  static override examples = [
    {description: 'Install an update bundle and make the running nebula reload', command: '<%= config.bin %> <%= command.id %> acme-1.update-3.tbmesh.tar.gz --dir /etc/tbmesh --reload --pid-file /run/nebula.pid'},
    {
      description: 'Install into /etc/tbmesh, pinning the CA, and start Nebula',
      command: '<%= config.bin %> <%= command.id %> acme-1.tbmesh.tar.gz.age --dir /etc/tbmesh --ca-fingerprint 3f1c…e9 && sudo nebula -config /etc/tbmesh/nebula/config.yml',
    },
    {description: 'Run Nebula in Docker from a local registry mirror', command: '<%= config.bin %> <%= command.id %> acme-1.tbmesh.tar.gz.age --dir /etc/tbmesh --ca-fingerprint 3f1c…e9 --nebula-image registry.example.org/nebula:1.11.1'},
    {description: 'Scripted, replacing an earlier installation', command: '<%= config.bin %> <%= command.id %> acme-1.tbmesh.tar.gz.age --dir /etc/tbmesh --ca-fingerprint 3f1c…e9 --bundle-passphrase-file bundle.pass --force --json'},
  ]

  static override args = {
    bundle: Args.string({description: 'join bundle written by tbmesh export-bundle', required: true}),
  }

  static override flags = {
    dir: Flags.directory({char: 'd', description: 'directory to install into; asked for on a terminal (default /etc/tbmesh)'}),
    'ca-fingerprint': Flags.string({description: 'the network CA\'s fingerprint (hex SHA-256) you expect; asked for on a terminal when absent'}),
    'bundle-passphrase-file': bundlePassphraseFlag,
    key: Flags.file({description: 'the node\'s Nebula X25519 private key (PEM), for a bundle signed from `add-node --pubkey` (it carries no key)'}),
    force: Flags.boolean({char: 'f', description: 'replace an existing installation in --dir'}),
    reload: Flags.boolean({description: 'after installing, make the running nebula reload (SIGHUP to --pid-file, or --reload-cmd)'}),
    'pid-file': Flags.file({description: 'file holding the running nebula\'s process id', dependsOn: ['reload']}),
    'reload-cmd': Flags.string({description: 'command that reloads nebula, e.g. "systemctl reload nebula"', dependsOn: ['reload'], exclusive: ['pid-file']}),
    'nebula-image': Flags.string({description: `container image docker/docker-compose.nebula.yml runs, with a tag or digest (default ${NEBULA_IMAGE})`}),
  }

  async run(): Promise<InstallResult & {reloaded?: ReloadResult}> {
    const {args, flags} = await this.parse(Install)
    const pin = flags['ca-fingerprint'] === undefined ? undefined : checkFingerprint(flags['ca-fingerprint'], '--ca-fingerprint')
    const nebulaImage = flags['nebula-image'] === undefined ? undefined : checkImageReference(flags['nebula-image'], '--nebula-image')
    // Checked here, not after installing: a usage error must change nothing.
    if (flags.reload && flags['pid-file'] === undefined && flags['reload-cmd'] === undefined) {
      throw new UserError('--reload needs --pid-file or --reload-cmd', {exit: 2, fix: 'e.g. --pid-file /run/nebula.pid'})
    }
    const homeDir = this.homeDir(flags)
    const dir = await this.ask('--dir', flags.dir, {message: 'Install into directory', default: '/etc/tbmesh'})
    const result = await installBundle(args.bundle, dir, {
      force: flags.force,
      pin,
      confirmCa: async (fingerprint, manifest) =>
        this.confirmOrYes({
          lines: [`Bundle for ${manifest.node} (${manifest.organization}) of network ${manifest.network}`, `CA fingerprint: ${fingerprint}`],
          question: 'Does this fingerprint match the one the network operator gave you?',
        }),
      passphrase: () =>
        resolvePassphrase({file: flags['bundle-passphrase-file'], fileFlag: '--bundle-passphrase-file', env: 'TBMESH_BUNDLE_PASSPHRASE', purpose: 'bundle'}),
      joinerKey: async (nonce) => (await loadJoinRequest(homeDir, nonce))?.keyPem,
      hostKey: flags.key === undefined ? undefined : await readKeyFile(flags.key),
      nebulaImage,
    })
    const what = result.manifest.kind === 'update' ? `update ${result.manifest.sequence} (was ${result.previousSequence}) for` : ''
    this.log(`Installed ${what}${what ? ' ' : ''}${result.manifest.node} (${result.manifest.organization}, overlay IP ${result.manifest.overlayIp}) into ${result.dir}`)
    this.log(`CA ${result.manifest.caFingerprint} verified${result.keyFromJoiner ? '; private key from this machine\'s join request' : ''}`)
    if (!result.nebulaTest.ran) this.warn('nebula is not installed here: could not run `nebula -test` on the config')
    else if (result.nebulaTest.ok) this.log(`nebula -test: ok${result.nebula?.version ? ` (nebula ${result.nebula.version})` : ''}`)
    else {
      const reason = result.nebulaTest.output?.trim().split('\n').at(-1) ?? ''
      throw new UserError(`nebula -test rejected ${result.dir}/nebula/config.yml: ${reason}`, {fix: 'check that nebula is 1.6 or newer and the bundle is for this network'})
    }
    if (flags.reload) {
      const reloaded = await reloadNebula({pidFile: flags['pid-file'], command: flags['reload-cmd']})
      this.log(`Reloaded nebula${reloaded.pid ? ` (pid ${reloaded.pid})` : ''}`)
      return {...result, reloaded}
    }
    if (result.manifest.kind === 'update') this.log('Reload nebula (SIGHUP) to use the update')
    else {
      this.log(`Start it: sudo nebula -config ${result.dir}/nebula/config.yml`)
      if (result.files.includes('systemd/nebula.service')) {
        this.log(`As a service: ${result.dir}/systemd/nebula.service (Type=${result.systemdType}) or ${result.dir}/docker/docker-compose.nebula.yml (see ${result.dir}/README.md)`)
      }
      this.log(`Check it: tbmesh doctor --dir ${result.dir}`)
    }
    return result
  }
}
