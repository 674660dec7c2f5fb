/**
 * A real two-version image family from Debian packages, built with real tools and cached:
 *
 *   base layer  = `debootstrap --variant=minbase bookworm` (apt caches and lists removed, as
 *                 official images do)
 *   apps layer  = files of real .deb packages (`apt-get download` + `dpkg-deb -x`), plus
 *                 /etc/cfsdist-release; v2 drops a package, adds two, and whites out /etc/motd
 *                 and a non-root user `demo` (uid 1000, also in group `users`) with a greeting
 *                 entrypoint, /usr/local/bin/cfsdist-hello
 *   OCI layout  = `umoci init/new` + `umoci raw add-layer` (tags v1 and v2) + `umoci config`:
 *                 Entrypoint cfsdist-hello, Cmd `jq --version`, Env, User demo, WorkingDir
 *                 /home/demo/work (not in the image: run creates it), a label
 *
 * Used by `cfsdist demo`, the benchmarks and tests that need real data. Needs root.
 */
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CfsError } from '../errors.js';

/** Bump when the recipe changes, so caches are rebuilt. */
export const FAMILY_VERSION = 'debian-family-4';

/** Packages of the apps layer per version (dependencies beyond minbase listed explicitly). */
export const FAMILY_PACKAGES: Record<string, string[]> = {
  v1: ['jq', 'libjq1', 'libonig5', 'less', 'file', 'libmagic1', 'libmagic-mgc'],
  v2: ['jq', 'libjq1', 'libonig5', 'file', 'libmagic1', 'libmagic-mgc', 'tree', 'bc'],
};

/** Where the family lives once built. */
export interface Family {
  /** OCI image layout directory with tags v1 and v2. */
  layout: string;
  tags: string[];
  /** The extracted base rootfs (debootstrap output). */
  rootfs: string;
  /** Uncompressed layer tars: base, apps-v1, apps-v2. */
  layers: Record<string, string>;
}

/** A step of the recipe failed. */
export class FamilyError extends CfsError {}

/** Progress lines go here. */
export type Log = (line: string) => void;

/** Default cache directory. */
export function defaultCacheDir(): string {
  return process.env.CFSDIST_CACHE ?? '/var/tmp/cfsdist-cache';
}

/** Build (or reuse) the family under `cacheDir/FAMILY_VERSION`. */
export async function ensureDebianFamily(cacheDir = defaultCacheDir(), log: Log = () => {}): Promise<Family> {
  const dir = join(cacheDir, FAMILY_VERSION);
  mkdirSync(dir, { recursive: true });
  const rootfs = join(dir, 'rootfs');
  const layers = { base: join(dir, 'base.tar'), 'apps-v1': join(dir, 'apps-v1.tar'), 'apps-v2': join(dir, 'apps-v2.tar') };
  const layout = join(dir, 'oci');
  const family: Family = { layout, tags: ['v1', 'v2'], rootfs, layers };
  if (existsSync(join(dir, 'done'))) return family;

  if (process.getuid?.() !== 0) throw new FamilyError('NEEDS_ROOT', 'building the Debian image family needs root (debootstrap)');
  await step(join(dir, 'rootfs.done'), async () => {
    log('debootstrap --variant=minbase bookworm (about a minute, once)…');
    const tmp = rootfs + '.tmp';
    rmSync(tmp, { recursive: true, force: true });
    await run('debootstrap', ['--variant=minbase', 'bookworm', tmp, debianMirror()]);
    rmSync(join(tmp, 'var/cache/apt/archives'), { recursive: true, force: true });
    mkdirSync(join(tmp, 'var/cache/apt/archives/partial'), { recursive: true });
    for (const f of readdirSync(join(tmp, 'var/lib/apt/lists'))) if (f !== 'partial' && f !== 'lock') rmSync(join(tmp, 'var/lib/apt/lists', f), { force: true });
    rmSync(rootfs, { recursive: true, force: true });
    renameSync(tmp, rootfs);
  });
  await step(join(dir, 'debs.done'), async () => {
    const debs = join(dir, 'debs');
    mkdirSync(debs, { recursive: true });
    const all = [...new Set(Object.values(FAMILY_PACKAGES).flat())];
    log(`apt-get download ${all.join(' ')}`);
    try {
      await run('apt-get', ['download', ...all], { cwd: debs });
    } catch {
      await run('apt-get', ['update', '-qq']);
      await run('apt-get', ['download', ...all], { cwd: debs });
    }
  });
  await step(join(dir, 'layers.done'), async () => {
    log('writing layer tars…');
    await tarDir(rootfs, layers.base);
    for (const v of ['v1', 'v2']) {
      const stage = join(dir, `stage-${v}`);
      rmSync(stage, { recursive: true, force: true });
      mkdirSync(stage);
      for (const pkg of FAMILY_PACKAGES[v]!) {
        const deb = readdirSync(join(dir, 'debs')).find((f) => f.startsWith(`${pkg}_`));
        if (!deb) throw new FamilyError('MISSING_DEB', `no .deb downloaded for ${pkg}`);
        await run('dpkg-deb', ['-x', join(dir, 'debs', deb), stage]);
      }
      mkdirSync(join(stage, 'etc'), { recursive: true });
      writeFileSync(join(stage, 'etc', 'cfsdist-release'), `cfsdist demo image ${v}\npackages: ${FAMILY_PACKAGES[v]!.join(' ')}\n`);
      addDemoUser(rootfs, stage);
      if (v === 'v2') writeFileSync(join(stage, 'etc', '.wh.motd'), '');
      await tarDir(stage, layers[`apps-${v}` as 'apps-v1' | 'apps-v2']);
      rmSync(stage, { recursive: true, force: true });
    }
  });
  await step(join(dir, 'oci.done'), async () => {
    log('umoci: OCI layout with tags v1 and v2…');
    rmSync(layout, { recursive: true, force: true });
    await run('umoci', ['init', '--layout', layout]);
    for (const v of ['v1', 'v2']) {
      await run('umoci', ['new', '--image', `${layout}:${v}`]);
      await run('umoci', ['raw', 'add-layer', '--image', `${layout}:${v}`, layers.base]);
      await run('umoci', ['raw', 'add-layer', '--image', `${layout}:${v}`, layers[`apps-${v}` as 'apps-v1' | 'apps-v2']]);
      await run('umoci', ['config', '--image', `${layout}:${v}`, ...DEMO_CONFIG_ARGS, '--config.label', `org.opencontainers.image.version=${v}`]);
    }
  });
  writeFileSync(join(dir, 'done'), new Date().toISOString() + '\n');
  return family;
}

/** The demo image's config (umoci config flags). */
export const DEMO_CONFIG_ARGS = [
  '--config.entrypoint', '/usr/local/bin/cfsdist-hello',
  '--config.cmd', 'jq', '--config.cmd', '--version',
  '--config.env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  '--config.env', 'GREETING=hello from a cfsdist image',
  '--config.user', 'demo',
  '--config.workingdir', '/home/demo/work',
  '--config.stopsignal', 'SIGTERM',
  '--config.label', 'org.opencontainers.image.title=cfsdist demo',
];

/** The user `demo` (uid/gid 1000, supplementary group `users`), its home and the entrypoint,
 * into the apps layer: passwd/group are the base's with the new lines appended. */
function addDemoUser(rootfs: string, stage: string): void {
  const passwd = readFileSync(join(rootfs, 'etc', 'passwd'), 'utf8');
  const group = readFileSync(join(rootfs, 'etc', 'group'), 'utf8')
    .split('\n')
    .map((l) => (l.startsWith('users:') ? l.replace(/:$/, ':demo').replace(/:([^:]+)$/, (m, u: string) => (u.split(',').includes('demo') ? m : `:${u},demo`)) : l))
    .join('\n');
  writeFileSync(join(stage, 'etc', 'passwd'), passwd + 'demo:x:1000:1000:cfsdist demo:/home/demo:/bin/sh\n');
  writeFileSync(join(stage, 'etc', 'group'), group + 'demo:x:1000:\n');
  mkdirSync(join(stage, 'home', 'demo'), { recursive: true });
  chownSync(join(stage, 'home', 'demo'), 1000, 1000);
  mkdirSync(join(stage, 'usr', 'local', 'bin'), { recursive: true });
  const hello = join(stage, 'usr', 'local', 'bin', 'cfsdist-hello');
  writeFileSync(
    hello,
    '#!/bin/sh\n' +
      '# Entrypoint of the cfsdist demo image: say who and where we are, then run the command.\n' +
      'echo "$GREETING: $(head -n1 /etc/cfsdist-release), user $(id -un) (uid $(id -u) gid $(id -g) groups $(id -G)), cwd $(pwd)"\n' +
      'exec "$@"\n',
  );
  chmodSync(hello, 0o755);
}

async function step(marker: string, fn: () => Promise<void>): Promise<void> {
  if (existsSync(marker)) return;
  await fn();
  writeFileSync(marker, '');
}

/** The Debian mirror this machine's apt uses (deb822 or one-line sources). */
export function debianMirror(): string {
  const candidates = ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list'];
  for (const f of candidates) {
    if (!existsSync(f)) continue;
    const text = readFileSync(f, 'utf8');
    const m = /^URIs:\s*(\S+\/debian)\s*$/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+\/debian)\s+bookworm\b/m.exec(text);
    if (m) return m[1]!;
  }
  return 'http://deb.debian.org/debian';
}

/** A POSIX (pax) tar of `dir`'s contents with xattrs and numeric owners, names without "./". */
async function tarDir(dir: string, out: string): Promise<void> {
  const entries = readdirSync(dir).sort();
  await run('tar', ['--format=posix', '--numeric-owner', '--xattrs', '--xattrs-include=*', '--sort=name', '-C', dir, '-cf', out + '.tmp', '--', ...entries]);
  renameSync(out + '.tmp', out);
}

/** Run a command; on failure throw with the tail of its stderr. */
export function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    child.stderr.on('data', (c: Buffer) => {
      err.push(c);
      if (err.length > 200) err.splice(0, 100);
    });
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(new FamilyError('TOOL_MISSING', e.code === 'ENOENT' ? `${cmd} not found: install it (Debian package)` : `${cmd}: ${e.message}`)),
    );
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new FamilyError('TOOL_FAILED', `${cmd} ${args.slice(0, 4).join(' ')}… exited ${code}: ${Buffer.concat(err).toString().trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}
