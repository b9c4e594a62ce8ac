/**
 * A client of Nebula's own debug server (`sshd` in config.yml), which `tbmesh up` enables on 127.0.0.1 with keys it
 * makes on the node for each run: one persistent SSH connection (the `ssh2` package), one command per `exec` channel.
 * Measured on Nebula 1.6.1 and 1.11.0: 1–2 ms per command with Nagle off, versus ~100 ms for a system `ssh` per call.
 *
 * Nebula restarts its debug server on every reload, which drops the connection: the caller reconnects.
 */

import net from 'node:net'

import ssh2 from 'ssh2'

/** The SSH user name `tbmesh up` authorizes on Nebula's debug server. */
export const DEBUG_USER = 'tbmesh'

/** Keys of one `tbmesh up` run: Nebula's host key and the client's key, Ed25519, OpenSSH format. */
export interface DebugKeys {
  /** Nebula's host key (OpenSSH private key; a secret, written 0600 for Nebula to read). */
  hostPrivate: string
  /** Nebula's host public key (`ssh-ed25519 AAAA…`): the one `tbmesh up` accepts. */
  hostPublic: string
  /** The client's private key: kept in memory only. */
  clientPrivate: string
  /** The client's public key, authorized in `sshd.authorized_users`. */
  clientPublic: string
}

/**
 * Two fresh Ed25519 key pairs (OpenSSH format, which Nebula 1.6.1+ reads and ssh2 needs for the client key).
 *
 * ssh2's generator strips every leading zero byte of the public key, the first byte of the key itself included
 * (mscdex/ssh2 issues 1390 and 1513, open in 1.17.0): about one pair in 256 comes out with a 31-byte public key, which
 * Nebula refuses (no debug server for a host key, an unauthorized client for a client key), so that `up` could never
 * watch that run. ssh2's own parser refuses exactly those keys: such pairs are drawn again.
 */
export function generateDebugKeys(): DebugKeys {
  const host = wellFormedPair()
  const client = wellFormedPair()
  return {hostPrivate: host.private, hostPublic: host.public, clientPrivate: client.private, clientPublic: client.public}
}

function wellFormedPair(): {private: string; public: string} {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519')
    if (!(ssh2.utils.parseKey(pair.public) instanceof Error) && !(ssh2.utils.parseKey(pair.private) instanceof Error)) return pair
  }
}

/** The SSH wire form of a public key line (`ssh-ed25519 AAAA…`), for comparing host keys. */
function publicBlob(line: string): Buffer {
  const parsed = ssh2.utils.parseKey(line)
  if (parsed instanceof Error) throw parsed
  return (Array.isArray(parsed) ? parsed[0] : parsed).getPublicSSH()
}

/** A connection to Nebula's debug server. */
export class DebugConnection {
  private closed = false
  private readonly closeHandlers: Array<() => void> = []

  private constructor(private readonly client: ssh2.Client) {
    client.once('close', () => {
      this.closed = true
      for (const handler of this.closeHandlers.splice(0)) handler()
    })
    client.on('error', () => {})
  }

  /**
   * Connects to `127.0.0.1:port` as {@link DEBUG_USER} with `keys.clientPrivate`, accepting only `keys.hostPublic` as
   * the server's key. Rejects (with the reason) when the connection fails or is not ready within `timeoutMs`.
   */
  static async connect(port: number, keys: DebugKeys, timeoutMs = 2000): Promise<DebugConnection> {
    const expected = publicBlob(keys.hostPublic)
    const sock = net.connect({host: '127.0.0.1', port})
    sock.setNoDelay(true)
    const client = new ssh2.Client()
    return new Promise<DebugConnection>((resolve, reject) => {
      let settled = false
      const timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
      const fail = (error: Error): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        client.end()
        sock.destroy()
        reject(error)
      }
      sock.on('error', fail)
      client.on('error', fail)
      // A server that goes away during the handshake closes without an error.
      client.once('close', () => fail(new Error('connection closed')))
      client.once('ready', () => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        resolve(new DebugConnection(client))
      })
      client.connect({
        sock,
        username: DEBUG_USER,
        privateKey: keys.clientPrivate,
        hostVerifier: (key: Buffer) => expected.equals(key),
        readyTimeout: timeoutMs,
        keepaliveInterval: 0,
      })
    })
  }

  /** True once the connection is gone (Nebula reloaded or stopped). */
  isClosed(): boolean {
    return this.closed
  }

  /** Calls `handler` once when the connection closes. */
  onClose(handler: () => void): void {
    if (this.closed) handler()
    else this.closeHandlers.push(handler)
  }

  /** Runs one debug command (e.g. `list-hostmap -json`); resolves with what it wrote to stdout. */
  async exec(command: string, timeoutMs = 2000): Promise<string> {
    if (this.closed) throw new Error('debug connection closed')
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`debug command ${command} timed out`))
        this.close()
      }, timeoutMs)
      this.client.exec(command, (error, stream) => {
        if (error) {
          clearTimeout(timer)
          reject(error)
          return
        }
        const chunks: Buffer[] = []
        stream.on('data', (d: Buffer) => chunks.push(d))
        stream.stderr.on('data', () => {})
        stream.on('close', () => {
          clearTimeout(timer)
          resolve(Buffer.concat(chunks).toString('utf8'))
        })
      })
    })
  }

  close(): void {
    this.client.end()
  }
}
