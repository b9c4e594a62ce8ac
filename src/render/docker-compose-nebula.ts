/**
 * Renders a node's `docker-compose.nebula.yml` from `templates/docker-compose.nebula.yml` (`{{name}}` placeholders):
 * Nebula as a container on the host's network, with the installed `nebula/` directory mounted read-only at the same
 * path, so that config.yml's absolute pki paths hold inside the container too.
 */

import {checkImageReference} from '../lib/names.js'
import {safeLine} from '../lib/text.js'
import {type DeploymentExtra, INSTALL_DIR_PLACEHOLDER, placeInstallDir} from './install-dir.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, fillPlaceholders, readTemplate} from './template.js'

/**
 * The Nebula image the compose file runs unless `tbmesh install --nebula-image` chooses another: the Nebula project's
 * own (`nebulaoss/nebula`, published from 1.9 on; distroless, entrypoint `/nebula`), pinned to the newest release,
 * which has every security fix doctor knows of (`NEBULA_ADVISORIES` in `node/nebula.ts`).
 */
export const NEBULA_IMAGE = 'nebulaoss/nebula:1.11.1'

/**
 * The text of the node's `docker-compose.nebula.yml`: project `tbmesh-nebula`, service `nebula` with image
 * `extra.nebulaImage` (default {@link NEBULA_IMAGE}), `network_mode: host`, `cap_add: [NET_ADMIN]`, `/dev/net/tun`,
 * `DIR/nebula` bound read-only at `DIR/nebula`, `command: ["-config", "DIR/nebula/config.yml"]`,
 * `restart: unless-stopped`.
 *
 * @throws UserError when `extra.installDir` contains a control character or line break, or `extra.nebulaImage` is
 *   not an image reference with a tag or digest.
 * @throws Error when the profile is malformed.
 */
export function renderNebulaCompose(p: NodeProfile, extra: DeploymentExtra = {}): string {
  const text = fillPlaceholders(readTemplate('docker-compose.nebula.yml'), {
    node: safeLine(p.node.name),
    network: safeLine(JSON.stringify(p.network.name)),
    overlayIp: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    tunDev: safeLine(p.tun.dev),
    image: NEBULA_IMAGE,
    installDir: INSTALL_DIR_PLACEHOLDER,
  })
  return adaptNebulaCompose(text, extra)
}

/**
 * A rendered `docker-compose.nebula.yml` (`text`) adapted to the node, as `tbmesh install` does it and as the renderer
 * does for what it is given: the installation directory in place of the placeholder, and `extra.nebulaImage`, when
 * given, as the service's image.
 * @throws UserError when `extra.installDir` contains a control character or line break, or `extra.nebulaImage` is
 *   not an image reference with a tag or digest.
 */
export function adaptNebulaCompose(text: string, extra: Pick<DeploymentExtra, 'installDir' | 'nebulaImage'>): string {
  const placed = placeInstallDir(text, 'compose', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
  if (extra.nebulaImage === undefined) return placed
  const image = checkImageReference(extra.nebulaImage, '--nebula-image')
  return placed.replace(/^( {4}image: )"[^"\n]*"$/m, (_, key: string) => `${key}"${image}"`)
}
