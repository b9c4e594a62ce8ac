/**
 * Writing Docker Compose files: YAML built from plain objects, with Compose's merge tags (`!override`, `!reset`,
 * Compose 2.24.4 or later) and comments where a wrapper asks for them, every string double-quoted (so that no value is
 * read as a number, a boolean or a base-60 time), under a header comment. And the pieces every compose file of a node
 * shares: port mappings and the labels doctor finds the containers by.
 */

import {Document, Pair, type Scalar, YAMLMap, YAMLSeq} from 'yaml'

import {assertIPv4, assertPort} from './template.js'

/** A value written with a Compose merge tag: `!override` replaces what the files before set, `!reset` removes it. */
export class Tagged {
  constructor(
    readonly tag: '!override' | '!reset',
    readonly value: unknown,
  ) {}
}

/** A value written after a comment line (`# text`) above its key. */
export class Noted {
  constructor(
    readonly comment: string,
    readonly value: unknown,
  ) {}
}

/**
 * `header` (each line prefixed with `# `) followed by `body` as YAML: keys in insertion order, strings double-quoted,
 * {@link Tagged} values with their tag, {@link Noted} values after their comment.
 */
export function composeYaml(header: string, body: Record<string, unknown>): string {
  const doc = new Document()
  const build = (value: unknown): YAMLMap | YAMLSeq | Scalar => {
    if (value instanceof Tagged) {
      const node = build(value.value)
      node.tag = value.tag
      return node
    }
    if (Array.isArray(value)) {
      const seq = new YAMLSeq()
      for (const item of value) seq.items.push(build(item))
      return seq
    }
    if (typeof value === 'object' && value !== null && !(value instanceof Noted)) {
      const map = new YAMLMap()
      for (const [key, item] of Object.entries(value)) {
        const keyNode = doc.createNode(key) as Scalar
        keyNode.type = 'PLAIN'
        if (item instanceof Noted) keyNode.commentBefore = item.comment.split('\n').map((l) => ` ${l}`).join('\n')
        map.items.push(new Pair(keyNode, build(item instanceof Noted ? item.value : item)))
      }
      return map
    }
    return doc.createNode(value) as Scalar
  }
  doc.contents = build(body) as YAMLMap
  const text = doc.toString({lineWidth: 0, defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN'})
  const comment = header
    .trimEnd()
    .split('\n')
    .map((l) => (l === '' ? '#' : `# ${l}`))
    .join('\n')
  return `${comment}\n${text}`
}

/** A compose variable reference with a default: `${NAME:-fallback}`. */
export function variable(name: string, fallback: string): string {
  return `\${${name}:-${fallback}}`
}

/** A short-syntax port mapping `HOST_IP:PORT:PORT` (the same port outside and inside the container). */
export function publish(hostIp: string, port: number, target = port): string {
  return `${hostIp === '127.0.0.1' ? hostIp : assertIPv4(hostIp, 'published address')}:${assertPort(port, 'port')}:${assertPort(target, 'port')}`
}

/** The label keys doctor finds a node's containers by (`docker ps --filter label=…`). */
export const LABEL_NODE = 'org.tbmesh.node'
export const LABEL_SERVICE = 'org.tbmesh.service'

/** What a container of the node is, for {@link LABEL_SERVICE}. */
export type LabelledService = 'nebula' | 'blockchain' | 'api' | 'frontend' | 'storage-service' | 'minio'

/** The labels of a node's container: its node name and what it is. */
export function labels(node: string, service: LabelledService): Record<string, string> {
  return {[LABEL_NODE]: node, [LABEL_SERVICE]: service}
}
