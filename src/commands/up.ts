import {constants} from 'node:os'

import {Flags} from '@oclif/core'

import {TbmeshCommand} from '../base-command.js'
import {up, type UpResult} from '../runtime/up.js'

export default class Up extends TbmeshCommand {
  static override summary = 'Run Nebula for an installed node, and stop any peer that holds an address outside its organization\'s block.'

  static override description = `Runs Nebula in the foreground on the installation in --dir (what the systemd unit runs) and watches its tunnels through Nebula's own debug server, bound to 127.0.0.1 with keys made for this run. Every peer's overlay address (and unsafe network) must lie in the block of the member organization whose CA signed its certificate (nebula/members.json; in single-CA mode this holds by construction). Nebula cannot enforce this itself, and a newer handshake for an address takes over the established flows to it: within about a second of such a handshake, up closes the tunnel, adds the certificate to the node's local blocklist, pins the address to its legitimate peer, reloads Nebula, and writes an evidence record to DIR/evidence/ and prints it. The local blocklist survives updates installed with \`tbmesh install --reload\`; \`tbmesh federation report\` turns evidence into a report for the other members.

Before Nebula starts, up loads the installation's underlay guard (DIR/host/underlay-guard.nft, with nft -f) when there is one, and does not start Nebula if it fails. Nebula starts with its firewall closed, which up opens (the installed rules) once it watches the tunnels: no packet to or from the node passes before that. SIGHUP re-reads the installation and reloads Nebula; SIGTERM and SIGINT stop it; up exits with Nebula's status. Nebula gets no environment variable of tbmesh's.`

  static override examples = [
    {description: 'Run the node installed in /etc/tbmesh (nebula from PATH)', command: '<%= config.bin %> <%= command.id %> --dir /etc/tbmesh'},
    {description: 'With the Nebula project\'s image instead of a local binary', command: '<%= config.bin %> <%= command.id %> --dir /etc/tbmesh --docker nebulaoss/nebula:1.11.1'},
    {description: 'Outside systemd, with a pid file for `tbmesh install --reload`', command: '<%= config.bin %> <%= command.id %> --dir /etc/tbmesh --pid-file /run/tbmesh-up.pid'},
  ]

  static override flags = {
    dir: Flags.directory({char: 'd', description: 'the installation directory (tbmesh install --dir)', default: '/etc/tbmesh'}),
    nebula: Flags.file({description: 'path of the nebula binary (default: nebula on PATH)', exclusive: ['docker']}),
    docker: Flags.string({description: 'run Nebula from this image with docker run (e.g. nebulaoss/nebula:1.11.1), on the host network'}),
    'run-dir': Flags.directory({description: 'directory (0700) for Nebula\'s runtime config and the debug server\'s key of this run', default: '/run/tbmesh'}),
    'pid-file': Flags.file({description: 'write this process\'s id here, for `tbmesh install --reload --pid-file`'}),
  }

  async run(): Promise<UpResult> {
    const {flags} = await this.parse(Up)
    const json = this.jsonEnabled()
    const result = await up({
      dir: flags.dir,
      nebula: flags.nebula,
      docker: flags.docker,
      runDir: flags['run-dir'],
      pidFile: flags['pid-file'],
      // Under --json, stdout carries only the result: every line goes to stderr.
      log: (line) => (json ? process.stderr : process.stdout).write(`${line}\n`),
      warn: (line) => process.stderr.write(`Warning: ${line}\n`),
      ...(process.env.DEBUG ? {trace: (line: string) => process.stderr.write(`tbmesh up [debug] ${new Date().toISOString()} ${line}\n`)} : {}),
      output: {stdout: json ? process.stderr : process.stdout, stderr: process.stderr},
    })
    // Nebula's status; 128 + n when a signal ended it, as a shell reports it.
    process.exitCode = result.failure ? 1 : result.exitCode ?? 128 + (result.signal ? constants.signals[result.signal] : 0)
    return result
  }
}
