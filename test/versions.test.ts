/**
 * A v2 + P256 network through the CLI: init-ca --cert-version 2 --curve P256 (an encrypted ECDSA CA key), nodes with
 * P256 keys made here or by the joiner (join-request --curve P256), a joiner's key of the wrong curve refused in one
 * line, list and doctor showing version and curve, every certificate checked by the newest nebula-cert, and install
 * taking the bundle only on a nebula that can load it.
 */

import {readFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {readBundle} from '../src/bundle/archive.js'
import {compareVersions} from '../src/lib/version.js'
import {certificateFromPem} from '../src/nebula/index.js'
import {doctor} from '../src/node/doctor.js'
import {NEBULA_IMAGE} from '../src/render/docker-compose-nebula.js'
import {nebulaBuild} from './e2e/debian.js'
import {expectOneLineError, nebulaCertCheck, removeDir, tbmesh, tbmeshJson, tempDir} from './helpers.js'

let dir: string
beforeAll(async () => {
  dir = await tempDir('tbmesh-versions-')
})
afterAll(async () => removeDir(dir))

describe('a v2 + P256 network through the CLI', () => {
  const env = {TBMESH_CA_PASSPHRASE: 'p256 passphrase'}
  const h = () => ['--home', join(dir, 'home')]
  let caFingerprint = ''
  let caPem = ''

  it('init-ca makes a v2 ECDSA P256 CA with an encrypted key, and says which Nebula the nodes need', async () => {
    const run = await tbmesh(['init-ca', ...h(), '--network', 'p', '--cidr', '10.90.0.0/16', '--cert-version', '2', '--curve', 'P256'], {env})
    expect(run.exitCode, String(run.stderr)).toBe(0)
    expect(String(run.stdout)).toMatch(/CA fingerprint: [0-9a-f]{64} \(v2 P256\)/)
    expect(String(run.stdout)).toMatch(/Every node needs Nebula 1\.10 or newer/)
    caFingerprint = /CA fingerprint: ([0-9a-f]{64})/.exec(String(run.stdout))![1]!
    expect(await readFile(join(dir, 'home', 'ca', `${caFingerprint}.key`), 'utf8')).toContain('NEBULA ECDSA P256 ENCRYPTED PRIVATE KEY')
    caPem = await readFile(join(dir, 'home', 'ca', `${caFingerprint}.crt`), 'utf8')
    expect(certificateFromPem(caPem)).toMatchObject({version: 2, details: {curve: 'P256', isCA: true}})
  })

  it('issues v2 P256 host certificates, for keys made here and by a joiner, that the newest nebula-cert accepts', async () => {
    const origin = await tbmeshJson<{fingerprint: string}>(['add-node', ...h(), '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.40:4242'], {env})
    expect(await readFile(join(dir, 'home', 'keys', 'acme-1.key'), 'utf8')).toContain('NEBULA P256 PRIVATE KEY')
    const request = join(dir, 'umbrella.request.json')
    await tbmeshJson(['join-request', '--home', join(dir, 'joiner'), '--org', 'Umbrella', '--curve', 'P256', '--out', request])
    const joined = await tbmeshJson<{fingerprint: string; keyInHome: boolean}>(['add-node', ...h(), '--request', request, '--yes'], {env})
    expect(joined.keyInHome).toBe(false)
    for (const fp of [origin.fingerprint, joined.fingerprint]) {
      const printed = await nebulaCertCheck(caPem, await readFile(join(dir, 'home', 'certs', `${fp}.crt`), 'utf8'))
      expect(printed).toMatchObject({version: 2, curve: 'P256', fingerprint: fp})
    }
    // an X25519 key does not fit a P256 network: refused in one line, with the fix
    const x25519 = join(dir, 'x25519.request.json')
    await tbmeshJson(['join-request', '--home', join(dir, 'joiner2'), '--org', 'Initech', '--out', x25519])
    expectOneLineError(await tbmesh(['add-node', ...h(), '--request', x25519, '--yes'], {env}), /the public key of the join request of "Initech" is not a P256 key, the curve of this network's CA: make the key with `tbmesh join-request --curve P256`/, 1)
  })

  it('list shows version and curve; install takes the bundle only on a nebula that loads v2, and doctor says so', async () => {
    const listed = await tbmeshJson<any>(['list', ...h()])
    expect(listed.cas).toEqual([expect.objectContaining({id: caFingerprint, version: 2, curve: 'P256'})])
    expect(listed.nodes.map((n: any) => [n.name, n.version, n.curve])).toEqual([['acme-1', 2, 'P256'], ['umbrella-1', 2, 'P256']])
    expect(String((await tbmesh(['list', ...h()])).stdout)).toMatch(/^acme-1 .* v2 P256 /m)

    const bundle = join(dir, 'acme-1.tar.gz')
    await tbmeshJson(['export-bundle', ...h(), 'acme-1', '--out', bundle, '--no-encrypt'], {env})
    // the bundle tells the admin which Nebula it needs, and its compose file runs an image that loads v2
    const {files} = await readBundle(bundle)
    expect(files.get('README.md')!.toString()).toContain('Install Nebula (1.10.0 or later;')
    // The image the compose file runs loads v2 certificates (1.10 or newer).
    expect(files.get('docker/docker-compose.nebula.yml')!.toString()).toContain(`image: "${NEBULA_IMAGE}"`)
    expect(compareVersions(NEBULA_IMAGE.split(':')[1]!, '1.10.0')).toBeGreaterThanOrEqual(0)
    const target = join(dir, 'node')
    expectOneLineError(await tbmesh(['install', bundle, '--dir', target, '--ca-fingerprint', caFingerprint]), /Refusing join bundle acme-1\.tar\.gz: it holds a v2 CA certificate, which nebula 1\.6\.1 \(.*\) cannot load \(1\.10\.0 or newer can\)/, 1)
    const newest = (await nebulaBuild('newest')).nebula
    const installed = await tbmeshJson<any>(['install', bundle, '--dir', target, '--ca-fingerprint', caFingerprint], {env: {PATH: `${dirname(newest)}:${process.env.PATH}`}})
    expect(installed.nebulaTest).toMatchObject({ran: true, ok: true})
    const checked = await doctor(target)
    const check = (name: string) => checked.checks.find((c) => c.name === name)!
    expect(check('nebula')).toMatchObject({status: 'fail', detail: expect.stringMatching(/older than 1\.10\.0, which a v2 CA certificate here needs/)})
    expect(check('host-cert').detail).toMatch(/^host certificate "acme-1" \(10\.90\.0\.1, v2 P256\) is valid until/)
    expect(check('host-key')).toMatchObject({status: 'pass', detail: 'nebula/host.key (P256) matches the host certificate'})
  })
})
