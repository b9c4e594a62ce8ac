/**
 * Renders a node's systemd unit `nebula.service` from `templates/nebula.service` (`{{name}}` placeholders): Nebula run
 * under `tbmesh up` as a service on the installation, reloaded with SIGHUP, restarted when it exits.
 */

import {safeLine} from '../lib/text.js'
import {type DeploymentExtra, INSTALL_DIR_PLACEHOLDER, placeInstallDir} from './install-dir.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, fillPlaceholders, readTemplate} from './template.js'

/**
 * The text of the node's `nebula.service`: `Type=simple` (Nebula 1.6 does not notify systemd), run as root with
 * `CAP_NET_ADMIN` as its only capability, `ExecStart=/usr/bin/env tbmesh up --dir "DIR" --run-dir /run/tbmesh`
 * (`RuntimeDirectory=tbmesh`; `tbmesh up` loads the underlay guard `tbmesh install` writes before Nebula starts, and
 * again on reload), `ExecReload=/bin/kill -HUP $MAINPID`, `KillMode=mixed`, `Restart=always`, ordered after
 * `network-online.target` and `nftables.service` (whose start flushes every table) and before Docker.
 *
 * @throws UserError when `extra.installDir` contains a control character or line break.
 * @throws Error when the profile is malformed.
 */
export function renderNebulaService(p: NodeProfile, extra: DeploymentExtra = {}): string {
  const text = fillPlaceholders(readTemplate('nebula.service'), {
    node: safeLine(p.node.name),
    network: safeLine(JSON.stringify(p.network.name)),
    overlayIp: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    tunDev: safeLine(p.tun.dev),
    installDir: INSTALL_DIR_PLACEHOLDER,
  })
  return placeInstallDir(text, 'systemd', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
}
