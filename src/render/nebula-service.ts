/**
 * Renders a node's systemd unit `nebula.service` from `templates/nebula.service` (`{{name}}` placeholders): Nebula run
 * under `tbmesh up` as a service on the installation, reloaded with SIGHUP, restarted when it exits.
 */

import {safeLine} from '../lib/text.js'
import {type DeploymentExtra, INSTALL_DIR_PLACEHOLDER, placeInstallDir} from './install-dir.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, fillPlaceholders, readTemplate} from './template.js'

/**
 * The text of the node's `nebula.service`: `Type=simple`, or `Type=notify` and `NotifyAccess=all` with `extra.sdNotify`
 * (a Nebula that notifies systemd: 1.8 and later; it is a child of `tbmesh up`, which passes `NOTIFY_SOCKET` on); run as
 * root with `CAP_NET_ADMIN` as its only capability, `ExecStart=/usr/bin/env tbmesh up --dir "DIR" --run-dir /run/tbmesh`
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
  return adaptNebulaService(text, extra)
}

/**
 * A rendered `nebula.service` (`text`) adapted to the node, as `tbmesh install` does it and as the renderer does for a
 * directory it is given: the installation directory in place of the placeholder, and `Type=notify` in place of
 * `Type=simple` (and `NotifyAccess=all`: Nebula, a child of `tbmesh up`, sends the message) when `extra.sdNotify`.
 * @throws UserError when `extra.installDir` contains a control character or line break.
 */
export function adaptNebulaService(text: string, extra: Pick<DeploymentExtra, 'installDir' | 'sdNotify'>): string {
  const placed = placeInstallDir(text, 'systemd', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
  return extra.sdNotify ? placed.replace(/^Type=simple$/m, 'Type=notify\nNotifyAccess=all') : placed
}
