import {Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {DEFAULT_INSTALL_DIR, doctor, type DoctorResult, type DoctorStatus} from '../node/doctor.js'

const MARK: Record<DoctorStatus, string> = {pass: '✔', warn: '!', fail: '✖'}

export default class Doctor extends TbmeshCommand {
  static override summary = 'Check an installed node and what runs on it: nebula, certificates, key, secrets, overlay IP, published ports, containers, underlay guard.'

  static override description = `Run on the node, after \`tbmesh install\`. Each check prints one line, pass, warn or fail:

- nebula is installed, at least the version the installed certificates need (1.10 for v2 certificates, 1.7 for P256, else 1.6.1), with the security fixes the installation needs (a warning names what a version lacks, e.g. federated networks want 1.11.0 or later), /dev/net/tun opens, \`nebula -test\` accepts DIR/nebula/config.yml, and the systemd unit's Type suits that nebula (notify only from 1.8);
- the CA the installation pins (manifest.json's caFingerprint) is in nebula/ca.crt; the CA and the host certificate are valid (warn within 30 days of expiry, fail once expired); the host certificate verifies against nebula/ca.crt and matches nebula/host.key;
- trubudget/node.env (the node's own secrets) is there, 0600, with every secret; blockchain.env's and trubudget.env's EXTERNAL_IP are the certificate's overlay IP; on a host without Docker, multichain.conf's bind, externalip and RPC password;
- no compose file publishes the MultiChain P2P port beyond the overlay IP;
- the running system: the overlay IP on Nebula's tun device, and what listens on overlay:7447 (fails when it listens on every interface);
- with docker on PATH: Docker Compose 2.24.4 or later, the boot-order sysctl (net.ipv4.ip_nonlocal_bind), and the node's blockchain container as Docker runs it (docker inspect): its ORGANIZATION, EXTERNAL_IP, P2P_HOST and RPC password, its published ports, the chain volume and the restart policy. A host running Nebula in a container needs no nebula binary.
- the underlay guard (DIR/host/underlay-guard.nft) is loaded for this node's overlay IP and tun device: without it, a host on the underlay reaches the overlay IP past Nebula.

Exits 1 when any check fails (with --json too, after printing the result). Run it as root: the key, the tun device and the loaded nftables rules are root's.`

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
