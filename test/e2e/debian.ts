/**
 * Debian packages of other releases, for the tests: newer Nebula builds and Docker Compose v2, fetched by package name
 * and unpacked into a cache, never installed.
 *
 * How: an apt configuration of its own per suite (sources, lists, cache and state under the cache directory; the
 * machine's `apt.conf.d` is still read, for proxies, but its update and dpkg hooks are cleared), whose one source is
 * the machine's own Debian archive entry (mirror URI and Signed-By taken at run time from
 * `/etc/apt/sources.list` and `/etc/apt/sources.list.d/`) with only the suite changed. Then `apt-get update`,
 * `apt-get download PKG`, `dpkg -x` into a staging directory that is renamed into place, so a finished entry is
 * complete. A per-suite `flock` serializes processes; a finished entry is reused with no network.
 *
 * Cache: `$TBMESH_TEST_CACHE`, else `node_modules/.cache/tbmesh-debian` of this project (gitignored, CI-local). Remove
 * it to pick up newer builds.
 *
 * CLI: `npx tsx test/e2e/debian.ts prefetch` fetches every build the e2e suites use (CI runs it before the tests).
 */

import {spawn} from 'node:child_process'
import {accessSync, constants, existsSync, statSync} from 'node:fs'
import {lstat, mkdir, readdir, readFile, rename, rm, stat, writeFile} from 'node:fs/promises'
import {basename, delimiter, dirname, join, resolve} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

/** Debian 13 (Nebula 1.9.3, Docker Compose 2.26.1 at the time of writing). */
export const DEBIAN13 = 'trixie'
/** Debian unstable: the newest Debian build. */
export const UNSTABLE = 'sid'

/** One Nebula build: a `nebula` and `nebula-cert` pair of the same version. */
export interface NebulaBuild {
  /** Short name for test titles: `debian12` (the one on PATH, named after this host's release), `debian13`, `sid`. */
  label: string
  /** What `nebula -version` prints after `Version: `, e.g. `1.6.1`. */
  version: string
  /** Absolute path of the `nebula` binary. */
  nebula: string
  /** Absolute path of the `nebula-cert` binary. */
  nebulaCert: string
}

/** Which build {@link nebulaBuild} returns: `oldest` is the one on PATH, `newest` Debian unstable's. */
export type NebulaBuildName = 'oldest' | 'installed' | 'debian13' | 'sid' | 'newest'

/** Docker Compose v2 from Debian 13, run standalone as `docker-compose`. */
export interface ComposeBuild {
  /** Absolute path of the `docker-compose` binary (Debian installs it as a docker CLI plugin). */
  binary: string
  /** What `docker-compose version` reports, e.g. `2.26.1`. */
  version: string
}

const PKG = /^[a-z0-9][a-z0-9+.-]+$/
const SUITE = /^[a-z][a-z0-9-]*$/
/** Debian release names and aliases; an archive entry is one whose suite is one of these (plus -updates etc.). */
const DEBIAN_SUITES = new Set(['buster', 'bullseye', 'bookworm', 'trixie', 'forky', 'duke', 'sid', 'oldoldstable', 'oldstable', 'stable', 'testing', 'unstable'])
const SUITE_SUFFIXES = new Set(['updates', 'backports', 'proposed-updates', 'backports-sloppy'])
/** Lists older than this are refreshed before a download (a sid package leaves the mirror soon after a new upload). */
const LISTS_MAX_AGE_MS = 6 * 3600_000
const APT_TIMEOUT_MS = 15 * 60_000
const LOCK_WAIT_S = 20 * 60

const memo = new Map<string, Promise<unknown>>()
function once<T>(key: string, make: () => Promise<T>): Promise<T> {
  let p = memo.get(key) as Promise<T> | undefined
  if (!p) {
    p = make()
    memo.set(key, p)
    p.catch(() => memo.delete(key))
  }
  return p
}

/** The cache directory: `$TBMESH_TEST_CACHE`, else this project's `node_modules/.cache/tbmesh-debian`. */
export function debianCacheDir(): string {
  const env = process.env.TBMESH_TEST_CACHE
  return env ? resolve(env) : fileURLToPath(new URL('../../node_modules/.cache/tbmesh-debian', import.meta.url))
}

/**
 * Download Debian package `pkg` (binary package name, e.g. `nebula`) from `suite` (a Debian suite or codename, e.g.
 * `trixie`, `sid`) for this host's architecture, and unpack it with `dpkg -x`. Resolves with the absolute path of the
 * extraction root (the package's `/usr/bin/x` is at `ROOT/usr/bin/x`; symlinks inside it may be absolute and point
 * outside it). Cached: once unpacked, later calls (in any process) return at once with no network. Safe to call
 * concurrently from several processes. Rejects with a one-line error when this host has no Debian archive entry in
 * its apt sources, the mirror is not Debian's, or apt/dpkg fail (message names the command and apt's error line).
 */
export function fetchDebianPackage(pkg: string, suite: string): Promise<string> {
  if (!PKG.test(pkg)) return Promise.reject(new Error(`not a Debian package name: ${JSON.stringify(pkg)}`))
  if (!SUITE.test(suite)) return Promise.reject(new Error(`not a Debian suite: ${JSON.stringify(suite)}`))
  return once(`deb:${suite}:${pkg}`, async () => {
    const final = join(debianCacheDir(), 'pkg', suite, pkg)
    const root = join(final, 'root')
    if (existsSync(join(final, 'deb.json'))) return root
    const apt = join(debianCacheDir(), 'apt', suite)
    await mkdir(apt, {recursive: true})
    return withLock(`${apt}.lock`, async () => {
      if (existsSync(join(final, 'deb.json'))) return root // another process finished it while we waited
      process.stderr.write(`debian: fetching ${pkg} from ${suite} into ${final}\n`)
      const staging = join(apt, 'staging')
      await rm(staging, {recursive: true, force: true})
      const deb = await aptDownload(apt, suite, pkg, join(staging, 'download'))
      await unpack(deb, suite, join(staging, 'out'))
      await mkdir(dirname(final), {recursive: true})
      await rm(final, {recursive: true, force: true}) // an entry without deb.json cannot exist, but be sure
      await rename(join(staging, 'out'), final)
      await rm(staging, {recursive: true, force: true})
      return root
    })
  })
}

/** `apt-get download pkg` into `dir` (refreshing stale lists first, or once more on failure); the .deb's path. */
async function aptDownload(apt: string, suite: string, pkg: string, dir: string): Promise<string> {
  const conf = await aptSetup(apt, suite)
  await mkdir(dir, {recursive: true})
  const download = () => run('apt-get', ['-q', 'download', pkg], {cwd: dir, env: {APT_CONFIG: conf}})
  let updated = false
  if (!(await listsFresh(apt))) {
    await aptUpdate(apt, conf, suite)
    updated = true
  }
  let got = await download()
  if (got.code !== 0 && !updated) {
    await aptUpdate(apt, conf, suite)
    got = await download()
  }
  if (got.code !== 0) throw new Error(`apt-get download ${pkg} (${suite}) failed: ${errorLine(got)}`)
  const debs = (await readdir(dir)).filter((f) => f.endsWith('.deb'))
  if (debs.length !== 1) throw new Error(`apt-get download ${pkg} (${suite}) left ${debs.length} .deb files, expected 1`)
  return join(dir, debs[0])
}

/** `dpkg -x deb out/root`, and `out/deb.json` with the package's name, version and architecture. */
async function unpack(deb: string, suite: string, out: string): Promise<void> {
  const fields = await check('dpkg-deb', ['-f', deb, 'Package', 'Version', 'Architecture'])
  await mkdir(out, {recursive: true})
  await check('dpkg', ['-x', deb, join(out, 'root')])
  const info: Record<string, string> = {}
  for (const m of fields.matchAll(/^([\w-]+):\s*(.*)$/gm)) info[m[1].toLowerCase()] = m[2]
  const meta = {...info, suite, file: basename(deb), fetchedAt: new Date().toISOString()}
  await writeFile(join(out, 'deb.json'), JSON.stringify(meta, null, 2) + '\n')
}

/**
 * Nebula 1.6.1-era build on PATH (Debian 12's, labelled after this host's release), Debian 13's and Debian unstable's,
 * oldest first. Fetches what is missing (see {@link fetchDebianPackage}). Rejects with a one-line error when any build
 * cannot be had or does not run (`-version`), or a `nebula-cert` reports another version than its `nebula`.
 */
export async function nebulaBuilds(): Promise<NebulaBuild[]> {
  return Promise.all([nebulaBuild('installed'), nebulaBuild('debian13'), nebulaBuild('sid')])
}

/**
 * One build: `installed`/`oldest` (the `nebula` and `nebula-cert` on PATH), `debian13` (trixie's package) or
 * `sid`/`newest` (Debian unstable's). Only what is asked for is fetched. Errors as {@link nebulaBuilds}.
 */
export function nebulaBuild(which: NebulaBuildName): Promise<NebulaBuild> {
  if (which === 'oldest' || which === 'installed') {
    return once('nebula:installed', async () => {
      const nebula = onPath('nebula')
      const nebulaCert = onPath('nebula-cert')
      if (!nebula || !nebulaCert) {
        throw new Error('nebula build on PATH: nebula and nebula-cert are not on PATH (apt-get install -y nebula)')
      }
      return verifiedBuild(await hostLabel(), nebula, nebulaCert)
    })
  }
  const [label, suite] = which === 'debian13' ? ['debian13', DEBIAN13] : ['sid', UNSTABLE]
  return once(`nebula:${suite}`, async () => {
    let root: string
    try {
      root = await fetchDebianPackage('nebula', suite)
    } catch (e) {
      throw new Error(`nebula build ${label}: ${(e as Error).message}`)
    }
    return verifiedBuild(label, join(root, 'usr/bin/nebula'), join(root, 'usr/bin/nebula-cert'))
  })
}

/**
 * Path of Docker Compose v2 (`docker-compose`, standalone) from Debian 13's package `docker-compose`. Fetches it when
 * missing; checks that `docker-compose version` runs and reports v2. Rejects with a one-line error otherwise.
 */
export async function composeBinary(): Promise<string> {
  return (await composeBuild()).binary
}

/** {@link composeBinary} with the version it reports. */
export function composeBuild(): Promise<ComposeBuild> {
  return once('compose', async () => {
    let root: string
    try {
      root = await fetchDebianPackage('docker-compose', DEBIAN13)
    } catch (e) {
      throw new Error(`docker-compose from ${DEBIAN13}: ${(e as Error).message}`)
    }
    const candidates = ['usr/libexec/docker/cli-plugins', 'usr/lib/docker/cli-plugins', 'usr/bin'].map((d) => `${d}/docker-compose`)
    let binary: string | undefined
    for (const c of candidates) {
      const st = await lstat(join(root, c)).catch(() => undefined) // symlinks may be absolute: take regular files only
      if (st?.isFile()) {
        binary = join(root, c)
        break
      }
    }
    if (!binary) {
      throw new Error(`docker-compose from ${DEBIAN13}: no docker-compose binary in the package under ${root} (${candidates})`)
    }
    const r = await run(binary, ['version'], {timeoutMs: 30_000})
    const m = /Docker Compose version v?(\d+\.\S+)/.exec(r.stdout)
    if (r.code !== 0 || !m) throw new Error(`docker-compose from ${DEBIAN13}: '${binary} version' failed: ${errorLine(r)}`)
    if (!m[1].startsWith('2.')) throw new Error(`docker-compose from ${DEBIAN13}: version ${m[1]}, need v2`)
    return {binary, version: m[1]}
  })
}

async function verifiedBuild(label: string, nebula: string, nebulaCert: string): Promise<NebulaBuild> {
  const version = await binaryVersion(label, nebula)
  const certVersion = await binaryVersion(label, nebulaCert)
  if (certVersion !== version) throw new Error(`nebula build ${label}: ${nebulaCert} is ${certVersion}, ${nebula} is ${version}`)
  return {label, version, nebula, nebulaCert}
}

async function binaryVersion(label: string, bin: string): Promise<string> {
  const r = await run(bin, ['-version'], {timeoutMs: 30_000})
  const m = /Version:\s*(\S+)/.exec(r.stdout + r.stderr)
  if (r.code !== 0 || !m) throw new Error(`nebula build ${label}: '${bin} -version' failed: ${errorLine(r)}`)
  return m[1]
}

/** `debian12` on a Debian 12 host, else `installed`. */
async function hostLabel(): Promise<string> {
  const os = await readFile('/etc/os-release', 'utf8').catch(() => '')
  const id = /^ID="?([^"\n]*)"?$/m.exec(os)?.[1]
  const ver = /^VERSION_ID="?(\d+)"?$/m.exec(os)?.[1]
  return id === 'debian' && ver ? `debian${ver}` : 'installed'
}

function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue
    const p = resolve(dir, cmd)
    try {
      accessSync(p, constants.X_OK)
      if (statSync(p).isFile()) return p
    } catch {}
  }
  return undefined
}

/** This host's Debian archive entry, from its apt sources: the first `deb` entry of a Debian suite with `main`. */
interface Mirror {
  file: string
  uri: string
  /** deb822 `Signed-By` value as written (a keyring path, fingerprints, or an inline key on continuation lines). */
  signedBy?: string
  trusted?: string
}

async function hostMirror(): Promise<Mirror> {
  const files = existsSync('/etc/apt/sources.list') ? ['/etc/apt/sources.list'] : []
  const dir = '/etc/apt/sources.list.d'
  const parts = existsSync(dir) ? (await readdir(dir)).filter((f) => /^[\w.-]+\.(list|sources)$/.test(f)).sort() : []
  files.push(...parts.map((f) => join(dir, f)))
  const debianSuite = (s: string) => {
    const [base, ...rest] = s.split('-')
    return DEBIAN_SUITES.has(base) && (rest.length === 0 || SUITE_SUFFIXES.has(rest.join('-')))
  }
  for (const file of files) {
    const text = await readFile(file, 'utf8')
    const entries = file.endsWith('.sources') ? parseDeb822(text) : parseOneLine(text)
    for (const e of entries) {
      const uri = e.uris.find((u) => !u.startsWith('cdrom:'))
      if (uri && e.types.includes('deb') && e.components.includes('main') && e.suites.some((suite) => debianSuite(suite))) {
        return {file, uri, signedBy: e.signedBy, trusted: e.trusted}
      }
    }
  }
  throw new Error(`no Debian archive entry (deb, a Debian suite, main) in /etc/apt/sources.list or ${dir}/*.{list,sources}`)
}

interface SourceEntry {
  types: string[]
  uris: string[]
  suites: string[]
  components: string[]
  signedBy?: string
  trusted?: string
}

function parseDeb822(text: string): SourceEntry[] {
  const out: SourceEntry[] = []
  for (const stanza of text.split(/\n[ \t]*\n/)) {
    const fields = new Map<string, string>()
    let last: string | undefined
    for (const line of stanza.split('\n')) {
      if (line.startsWith('#')) continue
      if (/^[ \t]/.test(line) && last) fields.set(last, `${fields.get(last)}\n${line}`)
      else if (/^[\w-]+:/.test(line)) {
        last = line.slice(0, line.indexOf(':')).toLowerCase()
        fields.set(last, line.slice(line.indexOf(':') + 1).trim())
      }
    }
    if (fields.get('enabled')?.toLowerCase() === 'no' || !fields.has('uris')) continue
    const list = (k: string) => (fields.get(k) ?? '').split(/\s+/).filter(Boolean)
    out.push({
      types: list('types'),
      uris: list('uris'),
      suites: list('suites'),
      components: list('components'),
      signedBy: fields.get('signed-by'),
      trusted: fields.get('trusted'),
    })
  }
  return out
}

function parseOneLine(text: string): SourceEntry[] {
  const out: SourceEntry[] = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim()
    const m = /^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line)
    if (!m) continue
    const opts = new Map<string, string>()
    for (const o of (m[2] ?? '').split(/\s+/)) {
      const eq = o.indexOf('=')
      if (eq > 0) opts.set(o.slice(0, eq).toLowerCase(), o.slice(eq + 1))
    }
    const components = m[5].split(/\s+/).filter(Boolean)
    out.push({types: [m[1]], uris: [m[3]], suites: [m[4]], components, signedBy: opts.get('signed-by'), trusted: opts.get('trusted')})
  }
  return out
}

/**
 * Write the apt configuration of `suite` under `apt` and return the path for APT_CONFIG. apt reads APT_CONFIG first,
 * then `/etc/apt/apt.conf.d`, then `Dir::Etc::main`, which we point at our second file so our settings win.
 */
async function aptSetup(apt: string, suite: string): Promise<string> {
  const mirror = await hostMirror()
  const arch = (await check('dpkg', ['--print-architecture'])).trim()
  for (const d of ['state/lists/partial', 'cache/archives/partial', 'sources.list.d', 'preferences.d']) {
    await mkdir(join(apt, d), {recursive: true})
  }
  if (!existsSync(join(apt, 'state/status'))) await writeFile(join(apt, 'state/status'), '')
  const source = [
    `# Written by tbmesh's tests from ${mirror.file}: the same archive, suite ${suite}.`,
    'Types: deb',
    `URIs: ${mirror.uri}`,
    `Suites: ${suite}`,
    'Components: main',
    `Architectures: ${arch}`,
    'Targets: Packages',
    ...(mirror.signedBy ? [`Signed-By: ${mirror.signedBy}`] : []),
    ...(mirror.trusted ? [`Trusted: ${mirror.trusted}`] : []),
  ]
  await writeFile(join(apt, 'tbmesh.sources'), source.join('\n') + '\n')
  const q = (s: string) => JSON.stringify(s)
  await writeFile(join(apt, 'apt.conf'), `Dir::Etc::main ${q(join(apt, 'apt-last.conf'))};\n`)
  const last = [
    existsSync('/etc/apt/apt.conf') ? '#include "/etc/apt/apt.conf";' : '',
    `Dir::State ${q(join(apt, 'state'))};`,
    `Dir::State::status ${q(join(apt, 'state/status'))};`,
    `Dir::Cache ${q(join(apt, 'cache'))};`,
    'Dir::Cache::pkgcache "";',
    'Dir::Cache::srcpkgcache "";',
    `Dir::Etc::SourceList ${q(join(apt, 'tbmesh.sources'))};`,
    `Dir::Etc::SourceParts ${q(join(apt, 'sources.list.d'))};`,
    `Dir::Etc::Preferences ${q(join(apt, 'preferences'))};`,
    `Dir::Etc::PreferencesParts ${q(join(apt, 'preferences.d'))};`,
    'Acquire::Languages "none";',
    'APT::Sandbox::User "root";', // our directories are not the _apt user's
    '#clear APT::Update::Pre-Invoke;',
    '#clear APT::Update::Post-Invoke;',
    '#clear APT::Update::Post-Invoke-Success;',
    '#clear DPkg::Pre-Invoke;',
    '#clear DPkg::Post-Invoke;',
  ]
  await writeFile(join(apt, 'apt-last.conf'), last.filter(Boolean).join('\n') + '\n')
  return join(apt, 'apt.conf')
}

async function listsFresh(apt: string): Promise<boolean> {
  const st = await stat(join(apt, 'updated')).catch(() => undefined)
  return st !== undefined && Date.now() - st.mtimeMs < LISTS_MAX_AGE_MS
}

async function aptUpdate(apt: string, conf: string, suite: string): Promise<void> {
  const r = await run('apt-get', ['-q', 'update'], {env: {APT_CONFIG: conf}})
  // apt-get update exits 0 on some fetch failures; its `Err:`/`W: Failed to fetch` lines then say so.
  const failed = /^(E:|Err:|W: (Failed to fetch|Some index files failed))/m.test(r.stdout + r.stderr)
  if (r.code !== 0 || failed) throw new Error(`apt-get update (${suite}) failed: ${errorLine(r)}`)
  const lists = join(apt, 'state/lists')
  const release = (await readdir(lists)).find((f) => f.endsWith('_InRelease') || f.endsWith('_Release'))
  const origin = release ? /^Origin:\s*(.*)$/m.exec(await readFile(join(lists, release), 'utf8'))?.[1] : undefined
  if (origin !== 'Debian') {
    throw new Error(`apt-get update (${suite}): the mirror's Release file has Origin ${origin ?? '(none)'}, expected Debian`)
  }
  await writeFile(join(apt, 'updated'), new Date().toISOString() + '\n')
}

/**
 * Run `fn` holding an exclusive flock(1) on `file`. The holder is a `flock … cat` child reading our pipe: the kernel
 * releases the lock when it exits, which it does when we close the pipe or die.
 */
async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const holder = spawn('flock', ['-w', String(LOCK_WAIT_S), file, 'sh', '-c', 'echo locked; exec cat >/dev/null'])
  let stderr = ''
  holder.stderr.on('data', (d) => (stderr += d))
  const exited = new Promise<number | null>((res) => {
    holder.on('close', (code) => res(code))
  })
  await new Promise<void>((res, rej) => {
    holder.stdout.once('data', () => res())
    holder.once('error', (e) => rej(new Error(`flock (util-linux) failed: ${e.message}`)))
    void exited.then((code) => rej(new Error(`could not lock ${file} in ${LOCK_WAIT_S} s (flock: exit ${code} ${stderr.trim()})`)))
  })
  try {
    return await fn()
  } finally {
    holder.stdin.end()
    await exited
  }
}

interface Ran {
  command: string
  code: number | null
  stdout: string
  stderr: string
}

interface RunOptions {
  cwd?: string
  /** Added to this process's environment (with LC_ALL=C). */
  env?: Record<string, string>
  /** SIGTERM after this long. Default 15 minutes (apt on a slow mirror). */
  timeoutMs?: number
}

function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<Ran> {
  return new Promise((res) => {
    const command = [cmd, ...args].join(' ')
    const env = {...process.env, LC_ALL: 'C', ...opts.env}
    const child = spawn(cmd, args, {cwd: opts.cwd, env, stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? APT_TIMEOUT_MS})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', (e) => res({command, code: null, stdout, stderr: stderr + e.message}))
    child.on('close', (code) => res({command, code, stdout, stderr}))
  })
}

async function check(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args)
  if (r.code !== 0) throw new Error(`${r.command} failed: ${errorLine(r)}`)
  return r.stdout
}

/** The most telling line of a failed command's output: apt's first `E:`/`Err:`/`W:` line, else the last line. */
function errorLine(r: Ran): string {
  const lines = (r.stderr + '\n' + r.stdout).split('\n').map((l) => l.trim()).filter(Boolean)
  const line = lines.find((l) => /^(E|Err|W):/.test(l)) ?? lines.at(-1) ?? '(no output)'
  return `exit ${r.code ?? 'killed'}: ${line}`
}

async function prefetch(): Promise<void> {
  const started = Date.now()
  const [builds, compose] = await Promise.all([nebulaBuilds(), composeBuild()])
  for (const b of builds) process.stdout.write(`nebula ${b.label} ${b.version} ${b.nebula} ${b.nebulaCert}\n`)
  process.stdout.write(`docker-compose ${compose.version} ${compose.binary}\n`)
  process.stdout.write(`prefetch done in ${((Date.now() - started) / 1000).toFixed(1)} s (cache ${debianCacheDir()})\n`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [cmd, ...rest] = process.argv.slice(2)
  if (cmd === 'prefetch' && rest.length === 0) {
    try {
      await prefetch()
    } catch (error) {
      process.stderr.write(`debian: ${(error as Error).message.split('\n')[0]}\n`)
      process.exitCode = 1
    }
  } else {
    process.stderr.write('usage: tsx test/e2e/debian.ts prefetch\n')
    process.exitCode = 2
  }
}
