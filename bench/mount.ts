/**
 * Mount benchmark, on the real 3-layer Debian image of the oracle fixture
 * (test/fixtures/oci/debian-image.ts), all figures from one run on the same data:
 *
 *  - `ls -lR` with cold caches (sync + drop_caches before every run) over the cfsdist kernel
 *    mount (file-backed EROFS + overlayfs over the objects) against
 *    (a) a plain EROFS image of the same tree made with `mkfs.erofs` and mounted the same way
 *        (file-backed) — the floor: lazy data-layer lookup should make the overlay nearly free;
 *    (b) overlayfs over the extracted layers (what runtimes do today);
 *    and the extracted rootfs on the host filesystem, and the FUSE mount. Runs alternate the
 *    order of the mounts; figures are medians.
 *  - Reading every file with cold caches (`find -type f | xargs cat`): kernel mount, FUSE mount
 *    (verifies every block), extracted rootfs.
 *  - Disk use of two image families in one store against the same images kept as extracted
 *    layers (what a containerd snapshotter keeps: each distinct layer once, extracted):
 *    a layered family — v1 (base), v2 (+ a build layer), final (+ a hand-written layer) and a
 *    rebuild from scratch — where the layers themselves share the base; and releases rebuilt
 *    from scratch (single-layer images, a few files changed each), where they share nothing.
 *
 * Runnable directly: `node dist/bench/mount.js` (root; erofs, overlayfs, FUSE).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { BenchRow } from './types.js';
export type { BenchRow };

const SELF = fileURLToPath(import.meta.url);
const REPO = resolve(dirname(SELF), '..', '..');
const CLI = join(REPO, 'bin', 'cfsdist');
const ROUNDS = 5;

function sh(cmd: string, args: string[], opts: { allowFail?: boolean } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0 && !opts.allowFail) throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.error?.message || '').trim().slice(0, 400)}`);
  return r.stdout;
}

function cfsdist(args: string[]): string {
  return sh(process.execPath, [CLI, ...args]);
}

function dropCaches(): void {
  execFileSync('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
}

/** Wall seconds of a command with stdout to /dev/null. */
function timeRun(cmd: string, args: string[]): Promise<number> {
  return new Promise((res, rej) => {
    const devnull = openSync('/dev/null', 'w');
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, args, { stdio: ['ignore', devnull, 'pipe'] });
    let err = '';
    c.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    c.on('exit', (code) => {
      closeSync(devnull);
      if (code !== 0) rej(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.slice(0, 300)}`));
      else res(Number(process.hrtime.bigint() - t0) / 1e9);
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Layer blobs of a tag in an OCI layout, bottom first. */
function layerBlobs(layout: string, tag: string): string[] {
  const blob = (d: string): string => join(layout, 'blobs', ...d.split(':'));
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const m = index.manifests.find((x) => x.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!m) throw new Error(`${layout}: no tag ${tag}`);
  const manifest = JSON.parse(readFileSync(blob(m.digest), 'utf8')) as { layers: { digest: string }[] };
  return manifest.layers.map((l) => blob(l.digest));
}

/** Extract one layer as an overlayfs lower directory: OCI whiteouts become overlay whiteouts. */
function extractLayer(tarball: string, dir: string): void {
  mkdirSync(dir, { recursive: true });
  // GNU tar may refuse a few members umoci writes below replaced paths; the rest is extracted.
  sh('tar', ['-xzf', tarball, '-C', dir, '--numeric-owner', '--same-permissions', '--xattrs', '--xattrs-include=*'], { allowFail: true });
  const walk = (d: string): void => {
    for (const n of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, n.name);
      if (n.name === '.wh..wh..opq') {
        rmSync(p);
        sh('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', d]);
      } else if (n.name.startsWith('.wh.')) {
        rmSync(p);
        const target = join(d, n.name.slice(4));
        rmSync(target, { recursive: true, force: true });
        sh('mknod', [target, 'c', '0', '0']);
      } else if (n.isDirectory()) walk(p);
    }
  };
  walk(dir);
}

/** Bytes on disk of some paths together (hardlinks counted once). */
function diskUse(paths: string[]): number {
  const out = sh('du', ['-s', '-c', '-B1', ...paths]);
  return Number(/(\d+)\s+total\s*$/.exec(out.trim())![1]);
}

/** Mount a plain EROFS image file-backed (as cfsdist mounts its images), via the new mount API. */
async function mountErofsFile(image: string, target: string): Promise<void> {
  const { MountApi, MOUNT_ATTR_RDONLY } = await import('../src/mount/syscalls.js');
  const api = await MountApi.start();
  if (!api) {
    sh('mount', ['-t', 'erofs', '-o', 'ro', image, target]);
    return;
  }
  try {
    const ctx = await api.fsopen('erofs');
    await api.setFlag(ctx, 'ro');
    await api.setString(ctx, 'source', image);
    await api.create(ctx, 'erofs');
    const m = await api.fsmount(ctx, MOUNT_ATTR_RDONLY, 'erofs');
    await api.moveMount(m, target);
  } finally {
    await api.end();
  }
}

/** Sum of regular file sizes under a tree (hardlinks once). */
function contentBytes(root: string): number {
  const out = sh('find', [root, '-type', 'f', '-printf', '%i %s\n']);
  const seen = new Map<string, number>();
  for (const l of out.split('\n')) {
    const [ino, size] = l.split(' ');
    if (ino) seen.set(ino, Number(size));
  }
  let t = 0;
  for (const v of seen.values()) t += v;
  return t;
}

/** Run the benchmark (see the file comment). */
export async function run(): Promise<BenchRow[]> {
  if (process.getuid?.() !== 0) throw new Error('the mount benchmark needs root');
  const { debianImage, debianImageUnavailable } = await import('../test/fixtures/oci/debian-image.js');
  const why = debianImageUnavailable();
  if (why) throw new Error(`Debian fixture unavailable: ${why}`);
  const img = await debianImage();
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-bench-mount-'));
  const mounted: string[] = [];
  const cfsMounts: string[] = [];
  const rows: BenchRow[] = [];
  try {
    // ---- disk use: two image families, each in one store vs as extracted layers ----
    const rebuilt = join(work, 'rebuilt-layout');
    const rebuiltTags = buildRebuilt(img.rootfs, rebuilt, work, 3);
    const layersDir = join(work, 'layers');
    const extracted = new Map<string, string>(); // blob -> directory, each distinct layer once
    const family = (store: string, images: [string, string, string][]): { storeBytes: number; layerBytes: number; layers: number } => {
      const dirs = new Set<string>();
      for (const [layout, tag, name] of images) {
        cfsdist(['import', `oci:${layout}:${tag}`, name, '--store', store, '--quiet']);
        for (const b of layerBlobs(layout, tag)) {
          let d = extracted.get(b);
          if (!d) {
            d = join(layersDir, `layer-${extracted.size + 1}`);
            extractLayer(b, d);
            extracted.set(b, d);
          }
          dirs.add(d);
        }
      }
      sh('sync', []);
      return { storeBytes: diskUse([store]), layerBytes: diskUse([...dirs]), layers: dirs.size };
    };
    const store = join(work, 'store');
    const a = family(store, [
      [img.layout, 'base', 'family:v1'],
      [img.layout, 'v2', 'family:v2'],
      [img.layout, 'final', 'family:final'],
      [rebuilt, rebuiltTags[0]!, 'family:rebuilt'],
    ]);
    rows.push({
      name: 'disk use, layered family (v1; v2 = v1 + a layer; final = v2 + a layer; one rebuild from scratch): one store vs extracted layers',
      value: a.storeBytes / 2 ** 20,
      unit: 'MiB',
      reference: a.layerBytes / 2 ** 20,
      ratio: a.storeBytes / a.layerBytes,
      target: '≤ 0.5×',
      note: `${a.layers} distinct layers; the layered images share their base layer, so the layers hold 2 copies of the tree and no store can go below ~0.5× here (it needs at least the union of the files); store = objects + 4 images (du -B1)`,
    });
    const b = family(join(work, 'store-releases'), rebuiltTags.map((t, i) => [rebuilt, t, `releases:r${i + 1}`] as [string, string, string]));
    rows.push({
      name: `disk use, releases rebuilt from scratch (${rebuiltTags.length} single-layer images, a few files changed each): one store vs extracted layers`,
      value: b.storeBytes / 2 ** 20,
      unit: 'MiB',
      reference: b.layerBytes / 2 ** 20,
      ratio: b.storeBytes / b.layerBytes,
      target: '≤ 0.5×',
      note: `${b.layers} layers; store = objects + ${rebuiltTags.length} images (du -B1)`,
    });
    const finalLayers = layerBlobs(img.layout, 'final');

    // ---- the mounts compared ----
    const mk = (n: string): string => {
      const p = join(work, 'mnt', n);
      mkdirSync(p, { recursive: true });
      return p;
    };
    const cfsKernel = mk('cfsdist-kernel');
    cfsdist(['mount', 'family:final', cfsKernel, '--store', store, '--no-verity', '--quiet']);
    cfsMounts.push(cfsKernel);
    const plainImage = join(work, 'plain.erofs');
    sh('mkfs.erofs', ['--quiet', plainImage, img.rootfs]);
    const plain = mk('plain-erofs');
    await mountErofsFile(plainImage, plain);
    mounted.push(plain);
    const plainLoop = mk('plain-erofs-loop');
    sh('mount', ['-t', 'erofs', '-o', 'ro,loop', plainImage, plainLoop]);
    mounted.push(plainLoop);
    const ovl = mk('overlay-layers');
    const lowers = finalLayers.map((l) => extracted.get(l)!).reverse();
    sh('mount', ['-t', 'overlay', 'overlay', '-o', `ro,lowerdir=${lowers.join(':')}`, ovl]);
    mounted.push(ovl);
    const fuse = mk('cfsdist-fuse');
    cfsdist(['mount', 'family:final', fuse, '--store', store, '--fuse', '--quiet']);
    cfsMounts.push(fuse);

    // Sanity: every mount lists the same tree. The naive layer extraction (tar) does not resolve
    // layer 3's hardlink to a lower-layer file and its write through a lower symlink, which a
    // real applier handles; that leaves the overlay of extracted layers a couple of lines apart.
    const lines = (p: string): number => sh('ls', ['-lR', p]).split('\n').length;
    const n0 = lines(img.rootfs);
    for (const p of [cfsKernel, plain, plainLoop, fuse]) if (lines(p) !== n0) throw new Error(`ls -lR of ${p} differs from the rootfs (${lines(p)} vs ${n0} lines)`);
    const nOvl = lines(ovl);
    if (Math.abs(nOvl - n0) > 5) throw new Error(`ls -lR of the overlay of extracted layers differs from the rootfs (${nOvl} vs ${n0} lines)`);

    const targets: [string, string][] = [
      ['rootfs', img.rootfs],
      ['kernel', cfsKernel],
      ['plain', plain],
      ['plainLoop', plainLoop],
      ['overlay', ovl],
      ['fuse', fuse],
    ];
    const ls = new Map<string, number[]>(targets.map(([k]) => [k, []]));
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? targets : [...targets].reverse();
      for (const [k, p] of order) {
        dropCaches();
        ls.get(k)!.push(await timeRun('ls', ['-lR', p]));
      }
    }
    const m = (k: string): number => median(ls.get(k)!);
    const floor = Math.min(m('plain'), m('plainLoop'));
    rows.push({
      name: 'ls -lR, cold caches: cfsdist kernel mount vs plain EROFS image of the same tree (mkfs.erofs)',
      value: m('kernel'),
      unit: 's',
      reference: floor,
      ratio: m('kernel') / floor,
      target: '≤ 1.15×',
      note: `${n0} lines; plain EROFS file-backed ${m('plain').toFixed(3)} s, on a loop device ${m('plainLoop').toFixed(3)} s (the faster is the reference); median of ${ROUNDS}`,
    });
    rows.push({
      name: 'ls -lR, cold caches: cfsdist kernel mount vs overlayfs of the extracted layers',
      value: m('kernel'),
      unit: 's',
      reference: m('overlay'),
      ratio: m('kernel') / m('overlay'),
      target: 'report',
      note: `${finalLayers.length} layers extracted with tar (${nOvl} vs ${n0} lines); median of ${ROUNDS}`,
    });
    rows.push({
      name: 'ls -lR, cold caches: extracted rootfs on the host filesystem',
      value: m('rootfs'),
      unit: 's',
      target: 'report',
      note: 'reference point',
    });
    rows.push({
      name: 'ls -lR, cold kernel caches: cfsdist FUSE mount vs cfsdist kernel mount',
      value: m('fuse'),
      unit: 's',
      reference: m('kernel'),
      ratio: m('fuse') / m('kernel'),
      target: 'report',
      note: 'ls -l asks for xattrs of every file (security.selinux, security.capability); an image with no visible xattr answers the first with ENOSYS, which the kernel keeps for the mount, so entries cost no xattr round trips; the daemon keeps the verified image in memory',
    });

    // ---- reading every file, cold ----
    const bytes = contentBytes(img.rootfs);
    const readAll = (p: string): Promise<number> => timeRun('sh', ['-c', 'find "$1" -type f -print0 | xargs -0 cat', 'sh', p]);
    const rd = new Map<string, number[]>([['rootfs', []], ['kernel', []], ['fuse', []]]);
    for (let r = 0; r < 3; r++) {
      for (const [k, p] of [['rootfs', img.rootfs], ['kernel', cfsKernel], ['fuse', fuse]] as const) {
        dropCaches();
        // A fresh daemon each round, so its verified-hash cache is cold too.
        if (k === 'fuse') {
          cfsdist(['umount', fuse, '--quiet']);
          cfsdist(['mount', 'family:final', fuse, '--store', store, '--fuse', '--quiet']);
        }
        rd.get(k)!.push(await readAll(p));
      }
    }
    const mb = (k: string): number => bytes / 2 ** 20 / median(rd.get(k)!);
    rows.push({
      name: 'read every file, cold: cfsdist FUSE mount (verifies every block) vs kernel mount',
      value: mb('fuse'),
      unit: 'MiB/s',
      reference: mb('kernel'),
      ratio: mb('fuse') / mb('kernel'),
      target: 'report',
      note: `${(bytes / 2 ** 20).toFixed(0)} MiB in ${sh('find', [img.rootfs, '-type', 'f']).split('\n').length - 1} files; higher is better`,
    });
    rows.push({
      name: 'read every file, cold: cfsdist kernel mount vs extracted rootfs',
      value: mb('kernel'),
      unit: 'MiB/s',
      reference: mb('rootfs'),
      ratio: mb('kernel') / mb('rootfs'),
      target: 'report',
      note: 'higher is better; kernel mount without fs-verity here',
    });
  } finally {
    for (const p of cfsMounts) spawnSync(process.execPath, [CLI, 'umount', p, '--quiet']);
    for (const p of mounted.reverse()) spawnSync('umount', [p]);
    if (![...cfsMounts, ...mounted].some((p) => spawnSync('mountpoint', ['-q', p]).status === 0)) rmSync(work, { recursive: true, force: true });
  }
  return rows;
}

/**
 * Single-layer images "rebuilt from scratch" from the final tree into one layout, tags
 * `rebuilt-1` … `rebuilt-N`; rebuild i changes i + 1 files (a version file, a new file, and
 * i - 1 bytes flipped in the biggest binaries), as a release rebuilt on fresh packages would.
 */
function buildRebuilt(rootfs: string, layout: string, work: string, count: number): string[] {
  const tags: string[] = [];
  sh('umoci', ['init', '--layout', layout]);
  for (let i = 1; i <= count; i++) {
    const tag = `rebuilt-${i}`;
    const bundle = join(work, `bundle-${tag}`);
    sh('umoci', ['new', '--image', `${layout}:${tag}`]);
    sh('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle]);
    const root = join(bundle, 'rootfs');
    sh('cp', ['-a', rootfs + '/.', root + '/']);
    writeFileSync(join(root, 'etc', 'debian_version'), `12.${90 + i}-rebuilt\n`);
    writeFileSync(join(root, 'opt', 'rebuilt.txt'), `rebuild ${i}: most files are the same bytes as in every other release of this image\n`);
    for (const rel of ['opt/app/bin', 'usr/bin/dpkg', 'usr/bin/bash', 'usr/bin/apt-get'].slice(0, i - 1)) {
      const f = join(root, rel);
      if (!existsSync(f)) continue;
      const b = readFileSync(f);
      b[b.length >> 1] ^= i;
      writeFileSync(f, b);
    }
    sh('umoci', ['repack', '--image', `${layout}:${tag}`, bundle]);
    rmSync(bundle, { recursive: true, force: true });
    tags.push(tag);
  }
  return tags;
}

if (process.argv[1] === SELF) {
  const rows = await run();
  for (const r of rows) {
    const ref = r.reference !== undefined ? `  reference ${r.reference.toFixed(3)} ${r.unit}` : '';
    const ratio = r.ratio !== undefined ? `  ratio ${r.ratio.toFixed(3)}` : '';
    console.log(`${r.name}: ${r.value.toFixed(3)} ${r.unit}${ref}${ratio}${r.target ? `  target ${r.target}` : ''}${r.note ? `  (${r.note})` : ''}`);
  }
}
