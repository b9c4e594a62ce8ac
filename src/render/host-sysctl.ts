/**
 * Renders `host/tbmesh-sysctl.conf` from `templates/tbmesh-sysctl.conf`: the kernel setting that lets a Docker node
 * come back after a reboot (sysctl.d format, `key = value`).
 */

import {safeLine} from '../lib/text.js'
import type {NodeProfile} from './profile.js'
import {assertIPv4, fillPlaceholders, readTemplate} from './template.js'

/**
 * The settings the file makes, as sysctl names and values: `net.ipv4.ip_nonlocal_bind = 1`, so that Docker can publish
 * on the overlay IP before Nebula has brought it up (the order in which dockerd restarts containers at boot).
 */
export const HOST_SYSCTLS: Readonly<Record<string, string>> = {'net.ipv4.ip_nonlocal_bind': '1'}

/** The text of `host/tbmesh-sysctl.conf` for the node. @throws Error when the profile is malformed. */
export function renderHostSysctl(p: NodeProfile): string {
  return fillPlaceholders(readTemplate('tbmesh-sysctl.conf'), {
    node: safeLine(p.node.name),
    overlayIp: assertIPv4(p.node.overlayIp, 'node.overlayIp'),
    network: safeLine(JSON.stringify(p.network.name)),
    settings: Object.entries(HOST_SYSCTLS).map(([k, v]) => `${k} = ${v}`).join('\n'),
  })
}
