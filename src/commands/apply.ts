import {Flags} from '@oclif/core'

import {bundlePassphraseFlag, caPassphraseFlag, TbmeshCommand} from '../base-command.js'
import {applyPlan, type ApplyPlan, type ApplyResult, planApply, readNetworkFile, refuseDifferences} from '../ca/apply.js'
import {checkNetworkOptions, initCa, unlockCaKey} from '../ca/ca.js'
import {Home} from '../home/home.js'
import {parseDuration} from '../lib/duration.js'
import {resolvePassphrase} from '../lib/passphrase.js'

export default class Apply extends TbmeshCommand {
  static override summary = 'Create what a network file describes: the network, organizations and nodes, with their join bundles.'

  static override description = `Reads a YAML (or JSON) network file (its JSON Schema is templates/network.schema.json), prints the plan, and creates what is missing in one process: one lock, one passphrase prompt. A second run changes nothing and says so. A node that exists but is described differently is refused (tbmesh never changes a node in place: revoke it and add a new one). With --out, writes a join bundle for every new node (encrypted like export-bundle's, unless --no-encrypt).

If the home holds no network yet, apply creates it (CA, state) from the file's network section.`

  static override examples = [
    {description: 'See what would change', command: '<%= config.bin %> <%= command.id %> -f network.yaml --dry-run'},
    {description: 'Create it and write join bundles for the new nodes', command: '<%= config.bin %> <%= command.id %> -f network.yaml --out bundles/ --passphrase-file ca.pass --bundle-passphrase-file bundle.pass'},
    {description: 'In a pipeline, as JSON', command: '<%= config.bin %> <%= command.id %> -f network.yaml --out bundles/ --no-encrypt --json'},
  ]

  static override flags = {
    file: Flags.file({char: 'f', description: 'network file (YAML or JSON)', required: true}),
    out: Flags.string({description: 'directory for the join bundles of the new nodes'}),
    'dry-run': Flags.boolean({description: 'print the plan and stop'}),
    'no-encrypt': Flags.boolean({description: 'write plain tar.gz bundles (they hold private keys: not recommended)', exclusive: ['bundle-passphrase-file']}),
    'bundle-passphrase-file': bundlePassphraseFlag,
    'passphrase-file': caPassphraseFlag,
    force: Flags.boolean({description: 'replace existing bundle files in --out'}),
  }

  async run(): Promise<ApplyResult> {
    const {flags} = await this.parse(Apply)
    const file = await readNetworkFile(flags.file)
    const homeDir = this.homeDir(flags)
    const existing = (await Home.exists(homeDir)) ? await this.openHome(flags) : undefined
    const plan = planApply(existing?.state, file)
    this.printPlan(plan)
    if (flags['dry-run']) return {plan, applied: false, added: [], bundles: []}
    refuseDifferences(plan)
    if (plan.createNetwork) checkNetworkOptions({network: file.network.name, cidr: file.network.cidr, orgPrefix: file.network.orgPrefix, ports: file.network.ports, allowDockerOverlap: file.network.allowDockerOverlap})
    if (!plan.createNetwork && plan.add.length === 0) {
      this.log('Nothing to do: the network matches the file.')
      return {plan, applied: false, added: [], bundles: []}
    }
    const passphraseSource = {file: flags['passphrase-file'], fileFlag: '--passphrase-file', env: 'TBMESH_CA_PASSPHRASE', purpose: 'CA key'}
    const newCaPassphrase = plan.createNetwork ? await resolvePassphrase({...passphraseSource, confirm: true}) : undefined
    const bundlePassphrase =
      flags.out === undefined || plan.add.length === 0 || flags['no-encrypt']
        ? null
        : await resolvePassphrase({file: flags['bundle-passphrase-file'], fileFlag: '--bundle-passphrase-file', env: 'TBMESH_BUNDLE_PASSPHRASE', purpose: 'bundle', confirm: true, alternatives: ['--no-encrypt']})
    if (flags.out !== undefined) await import('node:fs/promises').then((fs) => fs.mkdir(flags.out!, {recursive: true}))

    let home = existing
    let caKey: Buffer | undefined
    let result: ApplyResult = {plan, applied: false, added: [], bundles: []}
    await this.runSteps([
      {
        title: `Create network ${file.network.name} (${file.network.cidr})`,
        skip: !plan.createNetwork,
        run: async () => {
          const created = await initCa(homeDir, {
            network: file.network.name,
            cidr: file.network.cidr,
            orgPrefix: file.network.orgPrefix,
            ports: file.network.ports,
            allowDockerOverlap: file.network.allowDockerOverlap,
            durationSeconds: file.network.caDuration ? parseDuration(file.network.caDuration, 'network.caDuration') : undefined,
            passphrase: newCaPassphrase!,
          })
          this.log(`CA fingerprint: ${created.caFingerprint}`)
        },
      },
      {
        title: `Add ${plan.add.length} node(s)${flags.out ? ` and write their join bundles to ${flags.out}` : ''}`,
        skip: plan.add.length === 0,
        run: async (update) => {
          home ??= await Home.open(homeDir)
          caKey = newCaPassphrase ? await unlockCaKey(home, newCaPassphrase) : await this.unlockCa(home, flags['passphrase-file'])
          result = await applyPlan(home, caKey, file, plan, {
            outDir: flags.out,
            bundlePassphrase,
            force: flags.force,
            progress: (phase, done, total) => update(`${phase === 'add' ? 'signed' : 'bundled'} ${done}/${total}`),
          })
        },
      },
    ])
    result.applied = true
    if (flags.out !== undefined && result.bundles.length > 0 && !bundlePassphrase) this.warn('the bundles are not encrypted: they hold private keys; hand them over on a trusted channel')
    this.log(`Applied: ${result.added.length} node(s) added${result.bundles.length > 0 ? `, ${result.bundles.length} bundle(s) written` : ''}.`)
    return result
  }

  private printPlan(plan: ApplyPlan): void {
    if (plan.createNetwork) this.log('+ create the network (CA, state)')
    for (const node of plan.add) this.log(`+ add ${node.name} (${node.organization}${node.roles.length > 0 ? `, ${node.roles.join(', ')}` : ''})`)
    for (const d of plan.differs) this.log(`! ${d.node} differs: ${d.changes.join('; ')}`)
    if (plan.unchanged.length > 0) this.log(`= ${plan.unchanged.length} node(s) unchanged`)
    if (plan.notInFile.length > 0) this.log(`? ${plan.notInFile.length} node(s) not in the file, left as they are: ${plan.notInFile.slice(0, 5).join(', ')}${plan.notInFile.length > 5 ? ', …' : ''}`)
  }
}
