/**
 * What depends on the installed Nebula's version, checked against the real builds (Debian 12's 1.6.1 on PATH, Debian
 * 13's and unstable's fetched by test/e2e/debian.ts): the one version probe, the systemd unit's `Type` that `install`
 * picks (notify only from 1.8), doctor's warnings about missing security fixes (federated networks want 1.11.0) and its
 * check of the unit, and the Docker image `install --nebula-image` chooses. That Nebula ≥ 1.8 really notifies systemd
 * and 1.6.1 does not is shown on running nodes in test/e2e/sd-notify.test.ts.
 */

import {readFile, writeFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {compareVersions} from '../src/lib/version.js'
import {advisoriesFor, hasSdNotify, nebulaVersion} from '../src/node/nebula.js'
import {type NebulaBuild, nebulaBuilds} from './e2e/debian.js'
import {expectOneLineError, removeDir, snapshot, tbmesh, tbmeshJson, tempDir} from './helpers.js'

let work: string
let builds: NebulaBuild[]
/** Environment whose PATH finds `build`'s nebula first. */
const withBuild = (build: NebulaBuild): Record<string, string> => ({PATH: `${dirname(build.nebula)}:${process.env.PATH}`})
const bundles = {single: '', federated: '', update: ''}
const pins = {single: '', federated: ''}

beforeAll(async () => {
  work = await tempDir('tbmesh-versions-')
  builds = await nebulaBuilds()
  const single = ['--home', join(work, 'single')]
  pins.single = (await tbmeshJson<{caFingerprint: string}>(['init-ca', ...single, '--network', 'versions', '--cidr', '10.70.0.0/16', '--no-passphrase'])).caFingerprint
  await tbmeshJson(['add-node', ...single, '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
  await tbmeshJson(['add-node', ...single, '--org', 'Umbrella'])
  bundles.single = join(work, 'single.tar.gz')
  await tbmeshJson(['export-bundle', ...single, 'umbrella-1', '--out', bundles.single, '--no-encrypt'])
  await tbmeshJson(['renew', ...single, 'umbrella-1'])
  const update = await tbmeshJson<{bundles: Array<{path: string}>}>(['export-update', ...single, 'umbrella-1', '--out', join(work, 'updates')])
  bundles.update = update.bundles[0].path

  const federated = ['--home', join(work, 'federated')]
  pins.federated = (await tbmeshJson<{caFingerprint: string}>(['init-ca', ...federated, '--federated', '--org', 'ACME', '--network', 'fed', '--cidr', '10.71.0.0/16', '--no-passphrase'])).caFingerprint
  await tbmeshJson(['add-node', ...federated, '--lighthouse', '--endpoint', '192.0.2.20:4242', '--origin'])
  await tbmeshJson(['add-node', ...federated])
  bundles.federated = join(work, 'federated.tar.gz')
  await tbmeshJson(['export-bundle', ...federated, 'acme-2', '--out', bundles.federated, '--no-encrypt'])
}, 120_000)

afterAll(async () => removeDir(work))

describe('the version probe', () => {
  it('reads the version every build reports, and compares versions as numbers', async () => {
    expect(builds.map((b) => b.label)).toEqual(['debian12', 'debian13', 'sid'])
    for (const build of builds) expect(await nebulaVersion(build.nebula)).toEqual({path: build.nebula, version: build.version})
    expect(compareVersions('1.10.0', '1.9.7')).toBeGreaterThan(0)
    expect(compareVersions('v1.11.0', '1.11.0')).toBe(0)
    expect(compareVersions('1.8.0', '1.11.1')).toBeLessThan(0)
  })

  it('says what is wrong with a binary that is not nebula', async () => {
    const probe = await nebulaVersion('/bin/false')
    expect(probe).toMatchObject({path: '/bin/false'})
    expect(probe).not.toHaveProperty('version')
    expect((probe as {problem: string}).problem).toMatch(/^`\/bin\/false -version` failed/)
  })

  it('knows which versions notify systemd (1.8.0 on) and which security fixes each lacks', () => {
    expect(['1.6.1', '1.7.2', '1.8.0', '1.9.3', '1.11.0'].map((v) => hasSdNotify(v))).toEqual([false, false, true, true, true])
    const ids = (version: string, federated: boolean, p256 = false) => advisoriesFor(version, {federated, p256}).map((a) => a.id)
    expect(ids('1.6.1', false)).toEqual([])
    expect(ids('1.6.1', true)).toEqual(['conntrack-before-address-check'])
    expect(ids('1.9.3', false)).toEqual([])
    expect(ids('1.9.5', false)).toEqual(['source-ip-spoofing'])
    expect(ids('1.9.7', true)).toEqual(['conntrack-before-address-check'])
    expect(ids('1.10.2', false, true)).toEqual(['p256-blocklist-bypass'])
    expect(ids('1.10.3', false, true)).toEqual([])
    expect(ids('1.11.0', true, true)).toEqual([])
  })
})

describe('install with each build', () => {
  it('makes the systemd unit Type=notify only for a nebula that notifies systemd, and reports that nebula', async () => {
    const expected: Record<string, 'simple' | 'notify'> = {debian12: 'simple', debian13: 'notify', sid: 'notify'}
    await Promise.all(builds.map(async (build) => {
      const dir = join(work, `install-${build.label}`)
      const result = await tbmeshJson<{systemdType: string; nebula: {path: string; version: string}; nebulaTest: {ok: boolean}}>(
        ['install', bundles.single, '--dir', dir, '--ca-fingerprint', pins.single],
        {env: withBuild(build)},
      )
      expect(result, build.label).toMatchObject({systemdType: expected[build.label], nebula: {path: build.nebula, version: build.version}, nebulaTest: {ok: true}})
      const unit = await readFile(join(dir, 'systemd', 'nebula.service'), 'utf8')
      expect(unit.match(/^Type=.*$/gm), build.label).toEqual([`Type=${expected[build.label]}`])
    }))
  })

  it('runs nebulaoss/nebula:1.11.1 in Docker, or the image --nebula-image names', async () => {
    const image = (dir: string) => readFile(join(dir, 'docker', 'docker-compose.nebula.yml'), 'utf8').then((t) => /^ {4}image: (.*)$/m.exec(t)?.[1])
    expect(await image(join(work, 'install-debian12'))).toBe('"nebulaoss/nebula:1.11.1"')
    const dir = join(work, 'mirror')
    await tbmeshJson(['install', bundles.single, '--dir', dir, '--ca-fingerprint', pins.single, '--nebula-image', 'registry.example.org:5000/ops/nebula:1.11.1'])
    expect(await image(dir)).toBe('"registry.example.org:5000/ops/nebula:1.11.1"')
  })

  it('refuses an image without a version, or one that is no image reference, and an image for an update: one line, nothing written', async () => {
    const dir = join(work, 'refused')
    for (const [image, reason] of [['nebulaoss/nebula', /names no version/], ['nebulaoss/nebula:1.11.1"\n  privileged: true', /is not a container image reference/], ['Nebula:1', /is not a container image reference/]] as const) {
      expectOneLineError(await tbmesh(['install', bundles.single, '--dir', dir, '--ca-fingerprint', pins.single, '--nebula-image', image]), reason, 2)
      expect(await snapshot(dir)).toEqual({})
    }
    const installed = join(work, 'install-debian12')
    const before = await snapshot(installed)
    expectOneLineError(await tbmesh(['install', bundles.update, '--dir', installed, '--nebula-image', 'nebulaoss/nebula:1.11.1']), /--nebula-image applies to a join bundle/, 2)
    expect(await snapshot(installed)).toEqual(before)
  })
})

describe('doctor with each build', () => {
  interface Check {name: string; status: string; detail: string}
  const doctor = async (dir: string, build: NebulaBuild): Promise<{nebulaVersion: string; checks: Check[]}> => {
    const run = await tbmesh(['doctor', '--dir', dir, '--json'], {env: withBuild(build)})
    return JSON.parse(String(run.stdout)) as {nebulaVersion: string; checks: Check[]}
  }
  const check = (result: {checks: Check[]}, name: string): Check => result.checks.find((c) => c.name === name)!

  it('reports the version, and no missing fix for a single-CA network on any of them', async () => {
    await Promise.all(builds.map(async (build) => {
      const result = await doctor(join(work, 'install-debian12'), build)
      expect(result.nebulaVersion).toBe(build.version)
      expect(check(result, 'nebula')).toEqual({name: 'nebula', status: 'pass', detail: `nebula ${build.version} (${build.nebula})`})
      expect(check(result, 'nebula-fixes'), build.label).toMatchObject({status: 'pass'})
    }))
  })

  it('warns in a federated network about a nebula older than 1.11.0, naming the fix', async () => {
    const dir = join(work, 'federated-install')
    // A federated bundle has no compose file for Nebula (its Nebula runs under tbmesh up): an image for it is refused.
    expectOneLineError(
      await tbmesh(['install', bundles.federated, '--dir', `${dir}-image`, '--ca-fingerprint', pins.federated, '--nebula-image', 'nebulaoss/nebula:1.11.1']),
      /--nebula-image applies to a bundle with docker\/docker-compose\.nebula\.yml, and this federated one has none/,
      2,
    )
    await tbmeshJson(['install', bundles.federated, '--dir', dir, '--ca-fingerprint', pins.federated])
    await Promise.all(builds.map(async (build) => {
      const fixes = check(await doctor(dir, build), 'nebula-fixes')
      if (compareVersions(build.version, '1.11.0') >= 0) expect(fixes, build.label).toMatchObject({status: 'pass'})
      else {
        expect(fixes.status, build.label).toBe('warn')
        expect(fixes.detail).toMatch(new RegExp(`^nebula ${build.version.replaceAll('.', '\\.')} lacks security fixes: .*source address.*fixed in 1\\.11\\.0.*: upgrade nebula to 1\\.11\\.0 or later$`))
      }
    }))
  })

  it('fails a Type=notify unit when the nebula found does not notify systemd', async () => {
    const notifying = join(work, 'install-debian13')
    const [oldest, newer] = [builds[0], builds[1]]
    expect(check(await doctor(notifying, newer), 'systemd-unit')).toMatchObject({status: 'pass', detail: `systemd/nebula.service has Type=notify, right for nebula ${newer.version}`})
    // Nebula downgraded to 1.6.1 under the unit install wrote for 1.9.3: systemd would kill it in a loop.
    expect(check(await doctor(notifying, oldest), 'systemd-unit')).toMatchObject({status: 'fail', detail: expect.stringMatching(/Type=notify, but nebula 1\.6\.1 does not notify systemd .*: set Type=simple/)})
    // Without NotifyAccess=all systemd ignores Nebula's message: Nebula is a child of tbmesh up, not the unit's main process.
    const unit = join(notifying, 'systemd', 'nebula.service')
    const text = await readFile(unit, 'utf8')
    expect(text).toMatch(/^Type=notify\nNotifyAccess=all$/m)
    await writeFile(unit, text.replace(/^NotifyAccess=all\n/m, ''))
    try {
      expect(check(await doctor(notifying, newer), 'systemd-unit')).toMatchObject({status: 'fail', detail: expect.stringMatching(/Type=notify without NotifyAccess=all/)})
    } finally {
      await writeFile(unit, text)
    }
  })
})
