/**
 * Every user error, through the real CLI: one line on stderr saying what is wrong and how to fix it, no stack trace,
 * exit 2 for bad usage and 1 for a refused operation, and not one byte changed on disk (every home and output path
 * lives below one temp dir, snapshotted before and after each case).
 */

import {mkdir, writeFile} from 'node:fs/promises'
import {join} from 'node:path'

import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {removeDir, snapshot, tbmesh, tbmeshJson, tempDir} from './helpers.js'

let dir: string
const at = (...parts: string[]) => join(dir, ...parts)
/** The main network: encrypted CA, ACME's origin + lighthouse acme-1 (10.42.0.1), umbrella-bank-1 (10.42.1.1). */
const h = () => ['--home', at('home')]
const pass = () => ['--passphrase-file', at('ca.pass')]
/** A network of two /30 blocks: A's block holds a-1 and a-2 (full), B has the other block (network full). */
const small = () => ['--home', at('small')]
const newHome = () => ['--home', at('new')]
const initNew = (...flags: string[]) => ['init-ca', ...newHome(), '--network', 'x', ...flags]

beforeAll(async () => {
  dir = await tempDir('tbmesh-bad-input-')
  await writeFile(at('ca.pass'), 'correct horse battery staple\n', {mode: 0o600})
  await writeFile(at('wrong.pass'), 'not it\n', {mode: 0o600})
  await writeFile(at('empty.pass'), '', {mode: 0o600})
  await writeFile(at('newline.pass'), '\n', {mode: 0o600})
  await writeFile(at('bundle.pass'), 'bundle passphrase\n', {mode: 0o600})
  await writeFile(at('file'), 'a regular file\n')
  await writeFile(at('not-a-bundle.tar.gz'), 'not a bundle\n')
  await mkdir(at('outdir'))

  await tbmeshJson(['init-ca', ...h(), '--network', 'demo', '--cidr', '10.42.0.0/16', ...pass()])
  await tbmeshJson(['add-node', ...h(), ...pass(), '--org', 'ACME', '--origin', '--lighthouse', '--endpoint', '192.0.2.10:4242'])
  await tbmeshJson(['add-node', ...h(), ...pass(), '--org', 'Umbrella Bank'])

  await tbmeshJson(['init-ca', ...small(), '--network', 'small', '--cidr', '10.43.0.0/29', '--org-prefix', '30', '--no-passphrase'])
  for (const org of ['A', 'A', 'B']) await tbmeshJson(['add-node', ...small(), '--org', org])

  await tbmeshJson(['init-ca', '--home', at('corrupt'), '--network', 'corrupt', '--cidr', '10.44.0.0/16', '--no-passphrase'])
  await writeFile(at('corrupt', 'state.json'), '{"schemaVersion": 1, "network": ')
}, 120_000)
afterAll(async () => removeDir(dir))

/** label, arguments, exit code, a text the error line contains (a function when it names a path in the temp dir), env. */
type Case = [label: string, args: () => string[], exit: number, needle: string | (() => string), env?: Record<string, string>]

const cases: Case[] = [
  // init-ca: the network's CIDR, prefix, name, duration, passphrase and home
  ['init-ca on an existing network without --force', () => ['init-ca', ...h(), '--network', 'x', '--cidr', '10.9.0.0/16', ...pass()], 1, '--force'],
  ['a CIDR without a prefix', () => initNew('--cidr', '10.9.0.0', ...pass()), 2, '--cidr "10.9.0.0" is not a CIDR'],
  ['a CIDR prefix over 32', () => initNew('--cidr', '10.9.0.0/33', ...pass()), 2, 'is not a CIDR'],
  ['a CIDR with an octet over 255', () => initNew('--cidr', '10.9.256.0/24', ...pass()), 2, 'is not an IPv4 address'],
  ['a CIDR that is a word', () => initNew('--cidr', 'banana', ...pass()), 2, 'is not a CIDR'],
  ['a CIDR with host bits', () => initNew('--cidr', '10.9.1.0/16', ...pass()), 2, 'did you mean 10.9.0.0/16'],
  ['an IPv6 CIDR', () => initNew('--cidr', 'fd00::/64', ...pass()), 2, 'IPv6'],
  ['a CIDR overlapping loopback', () => initNew('--cidr', '127.0.0.0/16', ...pass()), 2, 'overlaps the loopback range 127.0.0.0/8'],
  ['a CIDR overlapping multicast', () => initNew('--cidr', '224.0.0.0/16', ...pass()), 2, 'overlaps the multicast range'],
  ['the whole IPv4 space', () => initNew('--cidr', '0.0.0.0/0', ...pass()), 2, 'overlaps the "this network" range'],
  ['a CIDR too small for the org prefix', () => initNew('--cidr', '10.9.0.0/26', ...pass()), 2, 'is too small for /24 organization blocks'],
  ['a CIDR too small for any network', () => initNew('--cidr', '10.9.0.0/31', ...pass()), 2, 'too small for a network'],
  ["an overlay in Docker's default pools (172.17-31)", () => initNew('--cidr', '172.20.0.0/16', ...pass()), 2, "overlaps Docker's default address pool 172.20.0.0/14"],
  ["an overlay in Docker's default pools (192.168)", () => initNew('--cidr', '192.168.10.0/24', ...pass()), 2, '--allow-docker-overlap'],
  ['two services on one port', () => initNew('--cidr', '10.9.0.0/16', '--api-port', '7447', ...pass()), 2, '--api-port 7447 is already the port of MultiChain P2P'],
  ["a port of the blockchain container's own API", () => initNew('--cidr', '10.9.0.0/16', '--storage-port', '8085', ...pass()), 2, "the blockchain container's API"],
  ['a port out of range', () => initNew('--cidr', '10.9.0.0/16', '--p2p-port', '70000', ...pass()), 2, '--p2p-port 70000 is not a port'],
  ['an org prefix that leaves no node', () => initNew('--cidr', '10.9.0.0/16', '--org-prefix', '31', ...pass()), 2, '--org-prefix 31 leaves no room'],
  ['an org prefix that is not a number', () => initNew('--cidr', '10.9.0.0/16', '--org-prefix', 'abc', ...pass()), 2, '--org-prefix: Expected an integer'],
  ['a network name with a slash', () => ['init-ca', ...newHome(), '--network', 'a/b', '--cidr', '10.9.0.0/16', ...pass()], 2, 'not a valid network name'],
  ['a CA duration that does not parse', () => initNew('--cidr', '10.9.0.0/16', '--duration', 'soon', ...pass()), 2, 'is not a duration'],
  ['a negative CA duration', () => initNew('--cidr', '10.9.0.0/16', '--duration', '-1y', ...pass()), 2, 'is negative'],
  ['a zero CA duration', () => initNew('--cidr', '10.9.0.0/16', '--duration', '0d', ...pass()), 2, 'is not positive'],
  ['an empty passphrase file', () => initNew('--cidr', '10.9.0.0/16', '--passphrase-file', at('empty.pass')), 1, 'is empty'],
  ['a passphrase file holding only a newline', () => initNew('--cidr', '10.9.0.0/16', '--passphrase-file', at('newline.pass')), 1, 'is empty'],
  ['a missing passphrase file', () => initNew('--cidr', '10.9.0.0/16', '--passphrase-file', at('nope.pass')), 1, 'cannot read --passphrase-file'],
  ['an empty TBMESH_CA_PASSPHRASE', () => initNew('--cidr', '10.9.0.0/16'), 1, 'TBMESH_CA_PASSPHRASE is set but empty', {TBMESH_CA_PASSPHRASE: ''}],
  ['no passphrase source and no terminal', () => initNew('--cidr', '10.9.0.0/16'), 1, '--no-passphrase'],
  ['--passphrase-file and --no-passphrase', () => initNew('--cidr', '10.9.0.0/16', ...pass(), '--no-passphrase'), 2, 'cannot also be provided'],
  ['a home under a regular file', () => ['init-ca', '--home', at('file', 'home'), '--network', 'x', '--cidr', '10.9.0.0/16', '--no-passphrase'], 1, '(ENOTDIR)'],

  // add-node: registrars
  ['a managed registrar', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--registrar', '--access', 'managed'], 2, 'a registrar must be a trusted node'],
  ['--register-at a node that is no registrar', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--register-at', 'umbrella-bank-1'], 2, 'node umbrella-bank-1 is not a registrar'],
  ['--register-at an address outside the overlay', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--register-at', '192.0.2.1'], 2, 'is neither a node of this network nor inside its overlay'],
  ['--register-at an unknown address of a single-CA network', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--register-at', '10.42.9.9'], 2, 'is no node of this network'],
  ['--register-at with --origin', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--origin', '--register-at', 'acme-1'], 2, 'cannot also be provided'],

  // add-node: endpoints
  ['--lighthouse without --endpoint', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--lighthouse'], 2, 'endpoint'],
  ['an endpoint without a port', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--endpoint', '192.0.2.7'], 2, 'is not HOST:PORT'],
  ['an endpoint with port 0', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--endpoint', '192.0.2.7:0'], 2, 'has port 0'],
  ['an endpoint with port 65536', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--endpoint', '192.0.2.7:65536'], 2, 'has port 65536'],
  ['an endpoint with a named port', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--endpoint', '192.0.2.7:nebula'], 2, 'is not HOST:PORT'],
  ['an endpoint with a bad host name', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--endpoint', 'bad_host:4242'], 2, 'is not HOST:PORT'],
  ['an endpoint with a bad IPv4 address', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--endpoint', '192.0.2.999:4242'], 2, 'is not an IPv4 address'],
  // add-node: names and organizations
  ['a second --origin', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--origin'], 1, 'already has an origin node (acme-1)'],
  ['a taken name', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--name', 'acme-1'], 1, 'node name acme-1 is taken'],
  ['a name that is not a DNS label', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--name', 'Bad_Name'], 2, 'is not a lowercase DNS label'],
  ['a name ending in a dash', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--name', 'acme-'], 2, 'is not a lowercase DNS label'],
  ['a name longer than 63 characters', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--name', 'a'.repeat(64)], 2, 'is not a lowercase DNS label'],
  ['an organization name without a letter or digit', () => ['add-node', ...h(), ...pass(), '--org', '---'], 2, 'is not a valid organization name'],
  ['a group tbmesh sets itself', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--groups', 'role:admin'], 2, 'uses a prefix tbmesh sets itself'],
  ['a group name with a space', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--groups', 'bad group'], 2, 'is not a valid group name'],
  ['an access level that does not exist', () => ['add-node', ...h(), ...pass(), '--org', 'X', '--access', 'god'], 2, '--access'],
  // add-node: addresses
  ['an --ip outside the organization\'s block', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--ip', '10.42.9.9'], 2, 'is outside organization ACME\'s block 10.42.0.0/24'],
  ['an --ip already used', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--ip', '10.42.0.1'], 2, 'already used'],
  ['an --ip that is the block\'s first address', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--ip', '10.42.0.0'], 2, 'first or last address'],
  ['an --ip that is the block\'s last address', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--ip', '10.42.0.255'], 2, 'first or last address'],
  ['an IPv6 --ip', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--ip', 'fd00::1'], 2, 'is IPv6'],
  ['an --ip with three octets', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--ip', '10.42.0'], 2, 'is not an IPv4 address'],
  ['a full block (--org-prefix 30: two nodes)', () => ['add-node', ...small(), '--org', 'A'], 1, 'the block 10.43.0.0/30 of organization A is full'],
  ['a full network', () => ['add-node', ...small(), '--org', 'C'], 1, 'has no free /30 block left'],
  // add-node: lifetimes
  ['a node lifetime past the CA\'s', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--duration', '20y'], 2, 'goes past the CA\'s expiry'],
  ['a negative node lifetime', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--duration', '-5d'], 2, 'is negative'],
  ['a node lifetime that does not parse', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--duration', 'forever'], 2, 'is not a duration'],
  ['a zero node lifetime', () => ['add-node', ...h(), ...pass(), '--org', 'ACME', '--duration', '0s'], 2, 'is not positive'],
  // add-node: the CA passphrase and the home
  ['a wrong CA passphrase', () => ['add-node', ...h(), '--passphrase-file', at('wrong.pass'), '--org', 'ACME'], 1, 'wrong CA passphrase'],
  ['an empty CA passphrase file', () => ['add-node', ...h(), '--passphrase-file', at('empty.pass'), '--org', 'ACME'], 1, 'is empty'],
  ['no CA passphrase and no terminal', () => ['add-node', ...h(), '--org', 'ACME'], 1, '--passphrase-file'],
  ['a missing home', () => ['add-node', '--home', at('nope'), ...pass(), '--org', 'ACME'], 1, 'run `tbmesh init-ca` first'],
  ['a home that is a regular file', () => ['add-node', '--home', at('file'), ...pass(), '--org', 'ACME'], 1, 'no tbmesh network in'],
  ['a hand-broken state.json', () => ['add-node', '--home', at('corrupt'), '--org', 'ACME'], 1, `${join('corrupt', 'state.json')} is not valid JSON`],
  ['a TBMESH_LOCK_TIMEOUT that is not a number', () => ['add-node', ...small(), '--org', 'B'], 2, 'TBMESH_LOCK_TIMEOUT=soon is not a number of seconds', {TBMESH_LOCK_TIMEOUT: 'soon'}],
  ['no --org', () => ['add-node', ...h(), ...pass()], 2, '--org is required'],
  ['an unknown flag', () => ['add-node', ...h(), '--org', 'X', '--frobnicate'], 2, 'frobnicate'],

  // export-bundle
  ['an unknown node', () => ['export-bundle', ...h(), 'nobody'], 1, 'no node named nobody: known nodes: acme-1, umbrella-bank-1'],
  ['a bundle path under a regular file', () => ['export-bundle', ...h(), ...pass(), 'umbrella-bank-1', '--bundle-passphrase-file', at('bundle.pass'), '--out', at('file', 'b.tgz')], 1, () => `${at('file')} is not a directory`],
  ['a bundle path under a regular file, unencrypted', () => ['export-bundle', ...h(), ...pass(), 'umbrella-bank-1', '--no-encrypt', '--out', at('file', 'b.tgz')], 1, () => `${at('file')} is not a directory`],
  ['a bundle path that is a directory', () => ['export-bundle', ...h(), ...pass(), 'umbrella-bank-1', '--bundle-passphrase-file', at('bundle.pass'), '--out', at('outdir')], 1, 'is a directory'],
  ['a bundle path that exists', () => ['export-bundle', ...h(), ...pass(), 'umbrella-bank-1', '--bundle-passphrase-file', at('bundle.pass'), '--out', at('file')], 1, 'pass --force'],
  ['a bundle expiry that does not parse', () => ['export-bundle', ...h(), 'umbrella-bank-1', '--expires-in', 'later'], 2, '--expires-in "later" is not a duration'],
  ['export from a missing home', () => ['export-bundle', '--home', at('nope'), 'acme-1'], 1, 'run `tbmesh init-ca` first'],

  // the other commands, briefly
  ['renew an unknown node', () => ['renew', ...h(), ...pass(), 'nobody'], 1, 'no node named nobody'],
  ['revoke an unknown node', () => ['revoke', ...h(), 'nobody'], 1, 'no node named nobody'],
  ['list a missing home', () => ['list', '--home', at('nope')], 1, 'run `tbmesh init-ca` first'],
  ['install a file that is not a bundle', () => ['install', at('not-a-bundle.tar.gz'), '--dir', at('installed'), '--ca-fingerprint', 'a'.repeat(64)], 1, 'not-a-bundle.tar.gz'],
]

describe('every user error: one line, no stack trace, the right exit code, nothing changed on disk', () => {
  it.each(cases)('%s', async (_label, args, exit, needle, env) => {
    const before = await snapshot(dir)
    const result = await tbmesh(args(), {env})
    const stderr = String(result.stderr)
    expect(stderr.trimEnd().split('\n'), stderr).toHaveLength(1)
    expect(stderr).toMatch(/^Error: /)
    expect(stderr).toContain(typeof needle === 'function' ? needle() : needle)
    expect(stderr).not.toMatch(/^\s+at /m)
    expect(result.exitCode, stderr).toBe(exit)
    expect(await snapshot(dir)).toEqual(before)
  })

  it('--json reports the error as JSON on stdout, nothing on stderr', async () => {
    const before = await snapshot(dir)
    const result = await tbmesh(['add-node', ...small(), '--org', 'C', '--json'])
    expect(result.exitCode).toBe(1)
    expect(String(result.stderr)).toBe('')
    expect(JSON.parse(String(result.stdout)).error).toMatchObject({exit: 1, message: expect.stringContaining('has no free /30 block left')})
    expect(await snapshot(dir)).toEqual(before)
  })

  it('DEBUG=* adds the stack trace', async () => {
    const result = await tbmesh(['add-node', ...small(), '--org', 'C'], {env: {DEBUG: '*'}})
    expect(result.exitCode).toBe(1)
    expect(String(result.stderr)).toMatch(/^\s+at /m)
  })
})
