/**
 * The processes `tbmesh up` runs: Nebula (a binary, or the official image through `docker run`), and `nft -f` for the
 * underlay guard. Each gets an environment of its own with nothing of tbmesh's (no passphrase reaches them).
 */

import {access, constants} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'

import {ExternalError, UserError} from '../errors.js'
import {childEnvironment, runChild} from '../lib/spawn.js'
import {onPath} from '../node/nebula.js'
import {LABEL_NODE, LABEL_SERVICE} from '../render/compose.js'

/** Variables the docker CLI needs to reach its engine; nothing else of tbmesh's environment is passed on. */
const DOCKER_ENV = ['HOME', 'DOCKER_HOST', 'DOCKER_CONFIG', 'DOCKER_CONTEXT', 'DOCKER_CERT_PATH', 'DOCKER_TLS_VERIFY']

/** How to run Nebula: a binary, or an image through `docker run`. */
export type NebulaRunner = {binary: string} | {image: string; docker: string}

/**
 * Finds how to run Nebula: `image` (run with the `docker` on PATH), else `binary` (a path), else `nebula` on PATH.
 * Throws UserError when it is not there.
 */
export async function findNebula(opts: {binary?: string; image?: string}): Promise<NebulaRunner> {
  if (opts.image !== undefined) {
    const docker = await onPath('docker')
    if (!docker) throw new UserError('--docker needs the docker CLI on PATH', {fix: 'install Docker, or run a nebula binary with --nebula'})
    return {image: opts.image, docker}
  }
  if (opts.binary !== undefined) {
    const binary = path.resolve(opts.binary)
    await access(binary, constants.X_OK).catch(() => {
      throw new UserError(`--nebula ${binary} is not an executable file`, {fix: 'give the path of the nebula binary'})
    })
    return {binary}
  }
  const found = await onPath('nebula')
  if (!found) throw new UserError('nebula is not on PATH', {fix: 'install it (apt-get install nebula), or pass --nebula PATH or --docker IMAGE'})
  return {binary: found}
}

/**
 * The command line that runs Nebula for node `node` on `config`, whose files all lie in `runDir`, and the environment
 * to give it. With an image: `docker run --rm --name tbmesh-nebula-<node> --label org.tbmesh.node=<node> --label
 * org.tbmesh.service=nebula --network host --cap-add NET_ADMIN --device /dev/net/tun` (the labels are how doctor finds
 * it, as it finds the compose files' containers) with `runDir` mounted read-only at the same path (the image's
 * entrypoint is nebula). `docker run` passes signals on to Nebula and exits with its status.
 */
export function nebulaCommand(runner: NebulaRunner, config: string, runDir: string, node: string): {file: string; args: string[]; env: Record<string, string>} {
  // NOTIFY_SOCKET: under a Type=notify unit (a Nebula that notifies systemd, 1.8 on) Nebula itself says it is ready.
  if ('binary' in runner) return {file: runner.binary, args: ['-config', config], env: childEnvironment(['NOTIFY_SOCKET'])}
  return {
    file: runner.docker,
    args: [
      'run',
      '--rm',
      '--name',
      `tbmesh-nebula-${node}`,
      '--label',
      `${LABEL_NODE}=${node}`,
      '--label',
      `${LABEL_SERVICE}=nebula`,
      '--network',
      'host',
      '--cap-add',
      'NET_ADMIN',
      '--device',
      '/dev/net/tun',
      '--mount',
      `type=bind,source=${runDir},target=${runDir},readonly`,
      runner.image,
      '-config',
      config,
    ],
    env: childEnvironment(DOCKER_ENV),
  }
}

/**
 * Loads the underlay guard `file` (an nftables table, see the README) with `nft -f`, atomically: nft applies the whole
 * file or nothing. Throws ExternalError when nft fails, UserError when it is not installed.
 */
export async function loadGuard(file: string): Promise<void> {
  const nft = await onPath('nft')
  if (!nft) throw new UserError(`cannot load the underlay guard ${file}: nft is not on PATH`, {fix: 'install nftables (apt-get install nftables)'})
  const result = await runChild(nft, ['-f', file], {timeoutMs: 30_000})
  // nft follows each error line with the offending line and a caret line: keep the error lines.
  const errors = result.output.split('\n').filter((line) => /error/i.test(line)).join('\n')
  if (result.exitCode !== 0) throw new ExternalError(`the underlay guard ${file} did not load`, `nft -f ${file}`, result.exitCode, errors || result.output || (result.failure ?? ''))
}

/** A TCP port on 127.0.0.1 that nothing listens on right now (for Nebula's debug server). */
export async function freeLoopbackPort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen({host: '127.0.0.1', port: 0, exclusive: true}, () => {
      const {port} = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}
