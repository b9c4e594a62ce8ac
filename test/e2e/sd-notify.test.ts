/**
 * Why `tbmesh install` writes `Type=notify` into the systemd unit only for Nebula 1.8 and later: under
 * `Type=notify`, systemd waits for `READY=1` on `$NOTIFY_SOCKET`, and kills and restarts a service that never sends it.
 * Shown on running nodes of every build tested: those from 1.8 on send it once they are up, 1.6.1 never does.
 * (Which type `install` picks for which version: test/nebula-versions.test.ts.) Needs socat for the socket.
 */

import {existsSync} from 'node:fs'
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {hasSdNotify} from '../../src/node/nebula.js'
import {removeDir, tempDir} from '../helpers.js'
import {type NebulaBuild, nebulaBuilds} from './debian.js'
import {createLab, type Lab, requireLab} from './netns.js'

/** How long a node that is up gets to notify before we conclude it never will (1.8+ notify within milliseconds). */
const SILENCE_MS = 4000

describe('systemd readiness notification', () => {
  let lab: Lab | undefined
  let dir: string | undefined
  let builds: NebulaBuild[]

  beforeAll(async () => {
    requireLab()
    await execa('socat', ['-V']).catch(() => {
      throw new Error('socat is required (apt-get install socat): it stands in for systemd\'s notification socket')
    })
    builds = await nebulaBuilds()
    dir = await tempDir('tbmesh-e2e-notify-')
    await execa('nebula-cert', ['ca', '-name', 'notify', '-out-crt', 'ca.crt', '-out-key', 'ca.key'], {cwd: dir})
    await Promise.all(builds.map(async (build, i) => {
      await execa('nebula-cert', ['sign', '-ca-crt', 'ca.crt', '-ca-key', 'ca.key', '-name', build.label, '-ip', `10.79.0.${i + 1}/24`, '-out-crt', `${build.label}.crt`, '-out-key', `${build.label}.key`], {cwd: dir})
      await writeFile(join(dir!, `${build.label}.yml`), [
        `pki: {ca: ${join(dir!, 'ca.crt')}, cert: ${join(dir!, `${build.label}.crt`)}, key: ${join(dir!, `${build.label}.key`)}}`,
        'lighthouse: {am_lighthouse: true}',
        'listen: {host: 0.0.0.0, port: 4242}',
        'tun: {dev: nebula1, mtu: 1300}',
        'firewall: {outbound: [{port: any, proto: any, host: any}], inbound: []}',
        '',
      ].join('\n'))
    }))
    lab = await createLab(builds.map((b) => b.label))
  }, 60_000)

  afterAll(async () => {
    try {
      await lab?.cleanup()
    } finally {
      if (dir) await removeDir(dir)
    }
  })

  it('READY=1 from every build from 1.8 on once it is up, nothing from older ones', async () => {
    const heard = await Promise.all(builds.map(async (build) => {
      const socket = join(dir!, `${build.label}.notify`)
      // One datagram, or nothing within the time the node gets (socat exits either way).
      const listening = lab!.run(build.label, ['timeout', String(Math.ceil((15_000 + SILENCE_MS) / 1000)), 'socat', '-u', `UNIX-RECVFROM:${socket}`, 'STDOUT'], {reject: false, timeoutMs: 30_000})
      const deadline = Date.now() + 10_000
      while (!existsSync(socket)) {
        if (Date.now() > deadline) throw new Error(`socat made no socket ${socket}: ${(await listening).stderr}`)
        await sleep(20)
      }
      const nebula = await lab!.startNebula(build.label, join(dir!, `${build.label}.yml`), {binary: build.nebula, tunDev: 'nebula1', env: {NOTIFY_SOCKET: socket}})
      const got = await Promise.race([listening.then((r) => r.stdout), sleep(SILENCE_MS).then(() => '')])
      expect(nebula.isRunning(), `${build.label} ${build.version} is still running`).toBe(true)
      await nebula.stop()
      return {build, got}
    }))
    // Debian 12's 1.6.1 never notifies; Debian 13's 1.9.3 and unstable's 1.11 do, as hasSdNotify says of them.
    const expected: Record<string, string> = {debian12: '', debian13: 'READY=1', sid: 'READY=1'}
    for (const {build, got} of heard) {
      expect(got.trim(), `${build.label} ${build.version}`).toBe(expected[build.label])
      expect(hasSdNotify(build.version), `hasSdNotify(${build.version})`).toBe(expected[build.label] === 'READY=1')
    }
  }, 60_000)
})
