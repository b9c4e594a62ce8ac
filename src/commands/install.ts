import {Args, Flags} from '@oclif/core'

import {bundlePassphraseFlag, TbmeshCommand} from '../base-command.js'
import {installBundle, type InstallResult} from '../bundle/install.js'
import {readVaultSecretFile} from '../bundle/node-env.js'
import {checkFingerprint} from '../bundle/trust.js'
import {UserError} from '../errors.js'
import {loadJoinRequest} from '../join/join-request.js'
import {checkImageReference} from '../lib/names.js'
import {resolvePassphrase} from '../lib/passphrase.js'
import {reloadNebula, type ReloadResult} from '../node/reload.js'
import {stackCommand} from '../render/compose-commands.js'
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

Then it makes the node's own TruBudget secrets in DIR/trubudget/node.env (0600): the MultiChain RPC password, ROOT_SECRET, JWT_SECRET and the MinIO keys, 44 random characters each, and the organization's ORGANIZATION_VAULT_SECRET (the one a federated organization's bundle carries, else --vault-secret-file, else a new one to give to the organization's other nodes). No bundle holds them; reinstalling the same node keeps them. It stages the files beside --dir and renames them into place (DIR 0700, keys and secrets 0600, whatever the umask), points config.yml at them so that \`nebula -config DIR/nebula/config.yml\` works from any directory, writes DIR into the systemd unit (systemd/nebula.service) and the compose files (docker/), adds the RPC password to multichain.conf, and runs \`nebula -test\` when nebula is installed. The unit (which runs \`tbmesh up\`) gets Type=notify when that nebula tells systemd it is ready (1.8 and later), Type=simple otherwise. docker/docker-compose.nebula.yml runs ${NEBULA_IMAGE}, or the image --nebula-image names. An encrypted bundle's passphrase comes from --bundle-passphrase-file, TBMESH_BUNDLE_PASSPHRASE, or a prompt.

It also writes the underlay guard, DIR/host/underlay-guard.nft: an nftables table that drops every packet for this node's overlay IP that did not come through Nebula's tun device (or loopback), so that no host on the underlay reaches MultiChain's P2P port past Nebula. tbmesh up (so systemd/nebula.service) loads it before Nebula starts; with Docker Compose, systemd/tbmesh-guard.service loads it before Docker (see DIR/README.md). By hand: nft -f DIR/host/underlay-guard.nft.

--force replaces a tbmesh installation only (DIR holds tbmesh's manifest.json): any other non-empty directory is refused and nothing in it is deleted. A bundle older than the installation of the same node in DIR (a join bundle or an update) is refused, with --force too: it would bring back older certificates and an older blocklist. --allow-rollback installs it anyway, with a warning.

It refuses, before writing anything, a bundle whose certificates the nebula on PATH cannot load: v2 certificates need Nebula 1.10 or newer (1.6.1 and 1.9.3 refuse to start with a v2 CA), P256 needs 1.7 or newer. At the end it prints a receipt, NODE@SEQUENCE, to report to the network operator (\`tbmesh confirm-install\`): a CA rotation's next round waits for every node's.

An update bundle (from \`tbmesh export-update\`) goes onto an existing installation: it must be for the same node and network, newer than what is installed (replays and rollbacks are refused), and signed by a CA the installation trusts, or by the CA that one vouched for during a CA rotation, so --ca-fingerprint is not needed. The new files are swapped in atomically; --reload then makes the running nebula pick them up.`

  static override examples = [
    {description: 'Install an update bundle and make the running node reload (the systemd unit runs tbmesh up)', command: '<%= config.bin %> <%= command.id %> acme-1.update-3.tbmesh.tar.gz --dir /etc/tbmesh --reload --reload-cmd "systemctl reload nebula"'},
    {
      description: 'Install into /etc/tbmesh, pinning the CA, and start Nebula (tbmesh up loads the underlay guard first)',
      command: '<%= config.bin %> <%= command.id %> acme-1.tbmesh.tar.gz.age --dir /etc/tbmesh --ca-fingerprint 3f1c…e9 && sudo tbmesh up --dir /etc/tbmesh',
    },
    {description: 'Go back to an older bundle of the same node on purpose', command: '<%= config.bin %> <%= command.id %> acme-1.tbmesh.tar.gz.age --dir /etc/tbmesh --ca-fingerprint 3f1c…e9 --force --allow-rollback'},
    {description: 'A second node of an organization: its vault secret, and documents on', command: '<%= config.bin %> <%= command.id %> umbrella-2.tbmesh.tar.gz --dir /etc/tbmesh --ca-fingerprint 3f1c…e9 --vault-secret-file umbrella.vault --documents'},
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
    force: Flags.boolean({char: 'f', description: 'replace the tbmesh installation in --dir (nothing else is ever replaced)'}),
    'allow-rollback': Flags.boolean({description: 'install a bundle older than the installation of the same node in --dir (brings back its certificates and blocklist)'}),
    'vault-secret-file': Flags.file({description: "file holding the organization's ORGANIZATION_VAULT_SECRET (the same on all its nodes)", exists: false}),
    documents: Flags.boolean({description: "run TruBudget's storage service (documents between organizations); recorded in node.env", allowNo: true}),
    'trubudget-tag': Flags.string({description: "TruBudget image tag for the complete compose stack (default: tbmesh's, see README)"}),
    reload: Flags.boolean({description: 'after installing, make the running nebula reload (SIGHUP to --pid-file, or --reload-cmd)'}),
    'pid-file': Flags.file({description: 'file holding the process id to signal: `tbmesh up --pid-file`\'s (or a bare nebula\'s)', dependsOn: ['reload']}),
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
    const vaultSecret = flags['vault-secret-file'] === undefined ? undefined : await readVaultSecretFile(flags['vault-secret-file'])
    const result = await installBundle(args.bundle, dir, {
      force: flags.force,
      allowRollback: flags['allow-rollback'],
      vaultSecret,
      documents: flags.documents,
      trubudgetTag: flags['trubudget-tag'],
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
    if (result.rollback) {
      this.warn(`rolled back ${result.manifest.node} from bundle sequence ${result.rollback.installed} to ${result.rollback.sequence}: its certificates and blocklist are those of the older bundle`)
    }
    this.log(`Receipt for the network operator: ${result.receipt} (they record it with \`tbmesh confirm-install ${result.receipt}\`)`)
    const made = result.nodeEnv.generated
    this.log(`Node secrets:   ${made.length > 0 ? `made ${made.join(', ')} in` : 'kept those in'} ${result.nodeEnv.path}`)
    if (result.nodeEnv.vault === 'generated') {
      this.warn(`made a new ORGANIZATION_VAULT_SECRET for ${result.manifest.organization}: if the organization has other nodes, install again with theirs (--vault-secret-file); else give this one to its next nodes`)
    }
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
      const unit = `${result.dir}/systemd/nebula.service`
      if (result.files.includes('docker/compose.yml')) {
        this.log(`Run it (${result.dir}/README.md gives the other ways):`)
        if (result.files.includes('docker/docker-compose.nebula.yml')) {
          this.log(`  sudo systemctl enable --now ${result.dir}/systemd/tbmesh-guard.service   # the underlay guard, before Docker`)
        } else this.log(`  sudo systemctl enable --now ${unit}   # Nebula under tbmesh up, which a federated network needs`)
        this.log(`  sudo cp ${result.dir}/host/tbmesh-sysctl.conf /etc/sysctl.d/60-tbmesh.conf && sudo sysctl --system`)
        this.log(`  ${stackCommand(result.dir)}`)
      } else {
        this.log(`Start it: sudo tbmesh up --dir ${result.dir} (loads the underlay guard, then runs Nebula); as a service: ${unit} (Type=${result.systemdType ?? 'simple'})`)
      }
      this.log(`Check it: tbmesh doctor --dir ${result.dir}`)
    }
    return result
  }
}
