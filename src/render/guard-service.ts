/**
 * Renders a node's `systemd/tbmesh-guard.service` from `templates/tbmesh-guard.service` (`{{name}}` placeholders): a
 * oneshot unit that loads the underlay guard (`host/underlay-guard.nft`) before Docker starts, for hosts that run
 * Nebula with Docker Compose. `tbmesh install` renders it on the node for the directory it installs into.
 */

import {safeLine} from '../lib/text.js'
import {type DeploymentExtra, INSTALL_DIR_PLACEHOLDER, placeInstallDir} from './install-dir.js'
import {fillPlaceholders, readTemplate} from './template.js'

/**
 * The text of the unit: `Type=oneshot`, `RemainAfterExit=yes`, `ExecStart=` and `ExecReload=` both
 * `/usr/sbin/nft -f "DIR/host/underlay-guard.nft"`, `CapabilityBoundingSet=CAP_NET_ADMIN`, ordered after
 * `nftables.service` and before `docker.service`, installed as `WantedBy=multi-user.target` and
 * `RequiredBy=docker.service` (Docker does not start when the guard fails to load). `node`, `network` and
 * `overlayIps` only go into comments and the description.
 *
 * @throws UserError when `extra.installDir` contains a control character or line break.
 */
export function renderGuardService(p: {node: string; network: string; overlayIps: string[]}, extra: DeploymentExtra = {}): string {
  const text = fillPlaceholders(readTemplate('tbmesh-guard.service'), {
    node: safeLine(p.node),
    network: safeLine(JSON.stringify(p.network)),
    overlayIps: safeLine(p.overlayIps.join(', ')),
    installDir: INSTALL_DIR_PLACEHOLDER,
  })
  return placeInstallDir(text, 'systemd', extra.installDir ?? INSTALL_DIR_PLACEHOLDER)
}
