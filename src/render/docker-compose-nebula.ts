/**
 * Renders a node's `docker-compose.nebula.yml` from `templates/docker-compose.nebula.yml` (`{{name}}` placeholders):
 * Nebula as a container on the host's network, with the installed `nebula/` directory mounted read-only at the same
 * path, so that config.yml's absolute pki paths hold inside the container too.
 */

import {safeLine} from '../lib/text.js'
import {compareVersions} from '../lib/version.js'
import {type DeploymentExtra, INSTALL_DIR_PLACEHOLDER, placeInstallDir} from './install-dir.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, fillPlaceholders, readTemplate} from './template.js'

/**
 * The Nebula image the compose file runs: the Nebula project's own (`nebulaoss/nebula`, published from 1.9 on;
 * distroless, entrypoint `/nebula`), pinned to a release. It reads the 1.6.1 keys tbmesh renders and P256 keys.
 */
export const NEBULA_IMAGE_TAG = '1.9.5'

/** The image tag for a node whose certificates need Nebula 1.10+ (v2): 1.9 releases refuse to start with a v2 CA. */
export const NEBULA_V2_IMAGE_TAG = '1.11.0'

/**
 * The text of the node's `docker-compose.nebula.yml`: project `tbmesh-nebula`, service `nebula` with image
 * `nebulaoss/nebula:<tag>`, `network_mode: host`, `cap_add: [NET_ADMIN]`, `/dev/net/tun`, `DIR/nebula` bound
 * read-only at `DIR/nebula`, `command: ["-config", "DIR/nebula/config.yml"]`, `restart: unless-stopped`.
 *
 * @throws UserError when `extra.installDir` contains a control character or line break.
 * @throws Error when the profile is malformed.
 */
export function renderNebulaCompose(p: NodeProfile, extra: DeploymentExtra = {}): string {
  const text = fillPlaceholders(readTemplate('docker-compose.nebula.yml'), {
    node: safeLine(p.node.name),
    network: safeLine(JSON.stringify(p.network.name)),
    overlayIp: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    tunDev: safeLine(p.tun.dev),
    imageTag: compareVersions(p.minNebulaVersion, '1.10.0') >= 0 ? NEBULA_V2_IMAGE_TAG : NEBULA_IMAGE_TAG,
    installDir: INSTALL_DIR_PLACEHOLDER,
  })
  return placeInstallDir(text, 'compose', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
}
