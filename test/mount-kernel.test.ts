/**
 * `cfsdist mount` / `umount`, kernel path: the merged 3-layer Debian image (built with umoci and
 * imported by cfsdist) mounted with EROFS + overlayfs over the store's objects must show exactly
 * what `umoci unpack` of the same image shows, run its programs, list without touching a single
 * object, and leave nothing behind after `umount` — also after the mounting process was killed,
 * and on every fallback path (loop device, staging mount, `lowerdir=`, mount(8)).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, lstatTree, runCli, type StatEntry } from './helpers.js';
import { debianImageUnavailable } from './fixtures/oci/debian-image.js';
import { debianStore, removeUnlessMounted } from './mount-fixtures.js';
import { kernelMountUnavailable, listLoops, mountAt, readMountInfo, runDir } from '../src/mount/index.js';
import { statePath } from '../src/mount/state.js';

function skipReason(): string | false {
  const k = kernelMountUnavailable();
  if (k) return k;
  const d = debianImageUnavailable();
  if (d) return d;
  for (const c of ['perl', 'losetup', 'diff', 'getfattr', 'chroot']) if (spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0) return `${c} is not installed`;
  return false;
}
const skip = skipReason();

let work: string;
let storeDir: string;
let rootfs: string;
let imagePath: string;

before(async () => {
  if (skip) return;
  ({ work, storeDir, rootfs, imagePath } = await debianStore('cfsdist-mount-kernel-'));
});

after(() => removeUnlessMounted(work));

function newMountpoint(name: string): string {
  const mp = join(work, name);
  mkdirSync(mp, { recursive: true });
  return mp;
}

/** Nothing of a mount is left: no mount at or under it, no staging mount, no loop device for the image, no record. */
async function assertClean(mp: string, image = imagePath): Promise<void> {
  const mounts = readMountInfo();
  assert.equal(mountAt(mp, mounts), undefined, `${mp} is still mounted`);
  assert.deepEqual(mounts.filter((m) => m.mountpoint.startsWith(join(runDir(), 'mounts'))).map((m) => m.mountpoint), [], 'a staging mount is left');
  assert.deepEqual((await listLoops()).filter((l) => l.backFile === image).map((l) => l.name), [], 'a loop device is left');
  assert.equal(existsSync(statePath(mp)), false, 'the mount record is left');
}

function umount(mp: string): void {
  if (mountAt(mp) || existsSync(statePath(mp))) {
    const r = runCli(['umount', mp]);
    assert.equal(r.status, 0, r.stderr);
  }
}

/** Compare lstat fields and hardlink groups of two trees; returns the differences. */
function compareTrees(want: string, got: string): string[] {
  const a = lstatTree(want);
  const b = lstatTree(got);
  const diffs: string[] = [];
  for (const p of new Set([...a.keys(), ...b.keys()])) if (!a.has(p) || !b.has(p)) diffs.push(`${p}: only in ${a.has(p) ? want : got}`);
  const pick = (e: StatEntry) => ({ type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtimeNs: e.mtimeNs, rdev: e.rdev, size: e.type === 'dir' ? 0n : e.size, nlink: e.type === 'dir' ? 0n : e.nlink });
  const groups = (m: Map<string, StatEntry>) => {
    const g = new Map<bigint, string[]>();
    for (const [p, e] of m) if (e.type !== 'dir') (g.get(e.ino) ?? g.set(e.ino, []).get(e.ino)!).push(p);
    return [...g.values()].filter((v) => v.length > 1).map((v) => v.sort().join(' ')).sort();
  };
  for (const [p, ea] of a) {
    const eb = b.get(p);
    if (eb && JSON.stringify(pick(ea), (_k, v) => (typeof v === 'bigint' ? v.toString() : v)) !== JSON.stringify(pick(eb), (_k, v) => (typeof v === 'bigint' ? v.toString() : v))) {
      diffs.push(`${p}: ${JSON.stringify(pick(ea), (_k, v) => (typeof v === 'bigint' ? v.toString() : v))} vs ${JSON.stringify(pick(eb), (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}`);
    }
  }
  const ga = groups(a);
  const gb = groups(b);
  if (JSON.stringify(ga) !== JSON.stringify(gb)) diffs.push(`hardlink groups differ: ${JSON.stringify(ga)} vs ${JSON.stringify(gb)}`);
  if (a.size < 1000) diffs.push(`only ${a.size} entries in ${want}`);
  return diffs;
}

function xattrDump(root: string): string[] {
  const r = spawnSync('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root, encoding: 'latin1', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n\n').map((b) => b.trim()).filter(Boolean).sort();
}

function diffR(a: string, b: string): string[] {
  const d = spawnSync('diff', ['-r', '--no-dereference', a, b], { encoding: 'latin1', maxBuffer: 1 << 26 });
  assert.ok(d.status === 0 || d.status === 1, d.stderr);
  // Special files of the same type are reported as "File A is a fifo while file B is a fifo".
  return d.stdout.split('\n').filter((l) => l && !/^File .* is a (.+) while file .* is a \1$/.test(l));
}

test('kernel mount of the merged Debian image equals the umoci unpack oracle, and its programs run', { skip }, async () => {
  const mp = newMountpoint('full');
  try {
    const r = runCli(['mount', 'debian:final', mp, '--store', storeDir, '--no-verity']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /NO fs-verity/);
    const m = mountAt(mp)!;
    assert.equal(m.fstype, 'overlay');
    assert.match(m.superOptions, /metacopy=on/);
    assert.match(m.superOptions, /redirect_dir=on/);
    assert.match(m.superOptions, /datadir\+=|::/, 'the objects are a data-only layer');
    assert.deepEqual(diffR(rootfs, mp), [], 'diff -r against the umoci rootfs');
    assert.deepEqual(compareTrees(rootfs, mp), []);
    const xa = xattrDump(rootfs);
    assert.ok(xa.some((b) => b.includes('security.capability')), 'the oracle has file capabilities');
    assert.deepEqual(xattrDump(mp), xa);
    assert.equal(execFileSync('chroot', [mp, '/bin/sh', '-c', 'echo $((6*7)); /bin/ls /opt/app/sub'], { encoding: 'utf8' }), '42\nh3\n');
    // The mount refuses a second mount on the same point.
    const again = runCli(['mount', 'debian:final', mp, '--store', storeDir, '--no-verity']);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /already has a cfsdist mount/);
  } finally {
    umount(mp);
  }
  await assertClean(mp);
});

test('lazy lower data: with the objects dir empty, ls -lR and stat succeed and reads fail with an error', { skip }, async () => {
  const empty = join(work, 'empty-store');
  mkdirSync(join(empty, 'objects'), { recursive: true });
  for (const d of ['images', 'tags']) cpSync(join(storeDir, d), join(empty, d), { recursive: true });
  const mp = newMountpoint('lazy');
  try {
    const r = runCli(['mount', 'debian:final', mp, '--store', empty, '--no-verity']);
    assert.equal(r.status, 0, r.stderr);
    const ls = spawnSync('ls', ['-lR', mp], { encoding: 'latin1', maxBuffer: 1 << 26 });
    assert.equal(ls.status, 0, ls.stderr);
    const want = spawnSync('ls', ['-lR', rootfs], { encoding: 'latin1', maxBuffer: 1 << 26 }).stdout;
    assert.equal(ls.stdout.split('\n').length, want.split('\n').length, 'ls -lR lists as many lines as on the oracle');
    assert.deepEqual(compareTrees(rootfs, mp), [], 'every stat succeeds and matches without any object');
    // Content stored in the image (small files) reads; content in objects fails, never with data.
    assert.equal(readFileSync(join(mp, 'opt/app/small.txt'), 'utf8'), 'ten bytes\n');
    for (const f of ['bin/ls', 'opt/app/bin', 'etc/login.defs']) {
      assert.ok(lstatSync(join(mp, f)).size > 64);
      assert.throws(() => readFileSync(join(mp, f)), (e: NodeJS.ErrnoException) => ['ENOENT', 'EIO'].includes(e.code ?? ''), `${f} must not read`);
    }
    assert.deepEqual(readdirSync(join(empty, 'objects')), [], 'nothing was written into the objects dir');
  } finally {
    umount(mp);
  }
  await assertClean(mp);
});

test('without fs-verity the kernel mount is refused unless --no-verity, saying what is lost', { skip }, async (t) => {
  const mp = newMountpoint('verity');
  try {
    const probe = spawnSync('fsverity', ['enable', join(storeDir, 'images', readdirSync(join(storeDir, 'images'))[0]!)], { encoding: 'utf8' });
    if (probe.status === 0) return t.skip('this filesystem has fs-verity; the refusal does not apply');
    const r = runCli(['mount', 'debian:final', mp, '--store', storeDir]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /fs-verity is not available/);
    assert.match(r.stderr, /does not check object contents/);
    assert.match(r.stderr, /--no-verity/);
    assert.equal(mountAt(mp), undefined);
  } finally {
    umount(mp);
  }
  await assertClean(mp);
});

test('--no-verity, documented: an object changed on disk after the pull is served as changed by the kernel mount', { skip }, async () => {
  // Own copy of the store: this test corrupts an object.
  const copy = join(work, 'tamper-store');
  cpSync(storeDir, copy, { recursive: true });
  const mp = newMountpoint('tamper');
  try {
    const r = runCli(['mount', 'debian:final', mp, '--store', copy, '--no-verity']);
    assert.equal(r.status, 0, r.stderr);
    const digest = execFileSync(process.execPath, [CLI, 'digest', join(rootfs, 'opt/app/bin')], { encoding: 'utf8' }).split(/\s+/)[0]!;
    const obj = join(copy, 'objects', digest.slice(0, 2), digest.slice(2));
    const data = readFileSync(obj);
    data[1000] ^= 0xff;
    writeFileSync(obj, data);
    execFileSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
    const got = readFileSync(join(mp, 'opt/app/bin'));
    // What is lost without fs-verity: the kernel returns the changed bytes without an error.
    assert.ok(got.equals(data), 'the changed content is read as is');
    assert.ok(!got.equals(readFileSync(join(rootfs, 'opt/app/bin'))));
  } finally {
    umount(mp);
  }
  await assertClean(mp, join(copy, 'images', readdirSync(join(copy, 'images')).find((n) => !n.endsWith('.objects'))!));
});

test('every fallback path (loop device, staging mount, lowerdir=, mount(8)) mounts the same tree; umount leaves nothing', { skip }, async () => {
  const want = spawnSync('ls', ['-lR', rootfs], { encoding: 'latin1', maxBuffer: 1 << 26 }).stdout.split('\n').length;
  const bin = readFileSync(join(rootfs, 'opt/app/bin'));
  const seen = new Set<string>();
  for (const compat of ['', 'loop', 'staging', 'lowerdir', 'loop,staging,lowerdir', 'mount8', 'mount8,lowerdir']) {
    const mp = newMountpoint(`compat-${compat.replace(/,/g, '-') || 'none'}`);
    try {
      const r = runCli(['mount', 'debian:final', mp, '--store', storeDir, '--no-verity', '--json'], { CFSDIST_MOUNT_COMPAT: compat });
      assert.equal(r.status, 0, `${compat}: ${r.stderr}`);
      const how = JSON.parse(r.stdout) as { api: string; erofs: string; layers: string };
      seen.add(`${how.api}/${how.erofs}/${how.layers}`);
      if (compat.includes('loop')) assert.equal(how.erofs, 'loop');
      if (compat.includes('lowerdir')) assert.equal(how.layers, 'lowerdir');
      if (compat.includes('mount8')) assert.equal(how.api, 'mount(8)');
      assert.equal(spawnSync('ls', ['-lR', mp], { encoding: 'latin1', maxBuffer: 1 << 26 }).stdout.split('\n').length, want, compat);
      assert.ok(readFileSync(join(mp, 'opt/app/bin')).equals(bin), compat);
      // Only the overlay is left in the mount table: the staging mount is gone once mounted.
      assert.deepEqual(readMountInfo().filter((m) => m.mountpoint.startsWith(join(runDir(), 'mounts'))), []);
    } finally {
      umount(mp);
    }
    await assertClean(mp);
  }
  assert.ok(seen.size >= 5, `distinct paths taken: ${[...seen].join(', ')}`);
});

test('umount removes everything also after the mounting process was killed half way', { skip }, async () => {
  const cases: { compat: string; step: string; live: (mp: string) => Promise<void> }[] = [
    { compat: '', step: 'overlay', live: async () => undefined },
    {
      compat: 'loop,staging',
      step: 'overlay',
      live: async () => {
        assert.ok(readMountInfo().some((m) => m.mountpoint.startsWith(join(runDir(), 'mounts'))), 'the staging mount exists when killed');
        assert.ok((await listLoops()).some((l) => l.backFile === imagePath), 'the loop device exists when killed');
      },
    },
    {
      compat: 'mount8,loop',
      step: 'overlay',
      live: async () => assert.ok(readMountInfo().some((m) => m.mountpoint.startsWith(join(runDir(), 'mounts')))),
    },
    { compat: 'loop', step: 'erofs', live: async () => assert.ok((await listLoops()).some((l) => l.backFile === imagePath)) },
  ];
  for (const c of cases) {
    const mp = newMountpoint(`killed-${c.compat.replace(/,/g, '-') || 'none'}-${c.step}`);
    const child = spawn(process.execPath, [CLI, 'mount', 'debian:final', mp, '--store', storeDir, '--no-verity'], {
      env: { ...process.env, CFSDIST_MOUNT_COMPAT: c.compat, CFSDIST_MOUNT_PAUSE: c.step },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        let err = '';
        child.stderr!.on('data', (d: Buffer) => {
          err += d.toString();
          if (err.includes('paused at')) resolve();
        });
        child.on('exit', (code) => reject(new Error(`mount exited (${code}) before pausing: ${err}`)));
      });
      assert.ok(existsSync(statePath(mp)), 'the record is written before anything is created');
      await c.live(mp);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const r = runCli(['umount', mp]);
      assert.equal(r.status, 0, `${c.compat}/${c.step}: ${r.stderr}`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      umount(mp);
    }
    await assertClean(mp);
  }
});

test('umount refuses what cfsdist did not mount, and reports what is not mounted', { skip }, async () => {
  const mp = newMountpoint('foreign');
  execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', mp]);
  try {
    const r = runCli(['umount', mp]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not a cfsdist mount/);
    assert.ok(mountAt(mp), 'the foreign mount is left alone');
  } finally {
    execFileSync('umount', [mp]);
  }
  const r = runCli(['umount', mp]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /is not mounted/);
});

test('new mount API: a refused fsconfig leaves the context usable (reading its log does not close it)', { skip }, async () => {
  const { MountApi, SyscallError } = await import('../src/mount/syscalls.js');
  const api = await MountApi.start();
  assert.ok(api, 'the fsopen co-process starts');
  try {
    const ctx = await api.fsopen('overlay');
    // An unknown option fails with the kernel's own words from the context log …
    const e = await api.setString(ctx, 'no-such-option', 'x').then(() => undefined, (err: unknown) => err);
    assert.ok(e instanceof SyscallError, String(e));
    assert.equal(e.errnoName, 'EINVAL');
    assert.match(e.log.join('\n'), /no-such-option/);
    // … and the same context takes the next option (it was EBADF when the log read closed the fd).
    await api.setString(ctx, 'metacopy', 'on');
    await api.setFlag(ctx, 'ro');
    await api.close(ctx);
  } finally {
    await api.end();
  }
});
