import {Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {DEFAULT_INSTALL_DIR, doctor, type DoctorResult, type DoctorStatus} from '../node/doctor.js'

const MARK: Record<DoctorStatus, string> = {pass: '✔', warn: '!', fail: '✖'}

export default class Doctor extends TbmeshCommand {
  static override summary = 'Check an installed node: nebula, tun device, certificates, key, overlay IP in every file, published ports.'

  static override description = `Run on the node, after \`tbmesh install\`. Each check prints one line, pass, warn or fail:

- nebula is installed (1.6.1 or later) and has the security fixes the installation needs (a warning names what a version lacks, e.g. federated networks want 1.11.0 or later), /dev/net/tun opens, \`nebula -test\` accepts DIR/nebula/config.yml, and the systemd unit's Type suits that nebula (notify only from 1.8);
- the CA the installation pins (manifest.json's caFingerprint) is in nebula/ca.crt; the CA and the host certificate are valid (warn within 30 days of expiry, fail once expired); the host certificate verifies against nebula/ca.crt and matches nebula/host.key;
- multichain.conf's bind and externalip, and blockchain.env's EXTERNAL_IP, are the certificate's overlay IP;
- docker/docker-compose.trubudget.override.yml, when present, publishes the MultiChain P2P port on the overlay IP only.

Exits 1 when any check fails (with --json too, after printing the result). Run it as root: the key and the tun device are root's.`

  static override examples = [
    {description: 'Check the installation in /etc/tbmesh', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Check another installation, for a script', command: '<%= config.bin %> <%= command.id %> --dir /srv/tbmesh --json'},
    {description: 'After installing, before starting TruBudget', command: 'sudo <%= config.bin %> install acme-1.tbmesh.age --dir /etc/tbmesh --ca-fingerprint 3f1c…e9 && sudo <%= config.bin %> <%= command.id %>'},
  ]

  static override flags = {
    dir: Flags.directory({char: 'd', description: 'the installation to check (the --dir of tbmesh install)', default: DEFAULT_INSTALL_DIR}),
  }

  async run(): Promise<DoctorResult> {
    const {flags} = await this.parse(Doctor)
    const result = await doctor(flags.dir)
    if (!this.jsonEnabled()) {
      for (const check of result.checks) this.log(`${MARK[check.status]} ${check.status}  ${check.detail}`)
      const {pass, warn, fail} = result.counts
      this.log(`${result.dir}: ${pass} passed, ${warn} warning${warn === 1 ? '' : 's'}, ${fail} failed`)
    }
    if (!result.ok) process.exitCode = 1
    return result
  }
}
