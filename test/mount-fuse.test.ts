/**
 * `cfsdist mount --fuse`: the merged Debian image served in userspace over /dev/fuse must show
 * what `umoci unpack` shows and run its programs; every object is verified before its bytes
 * are returned (a changed object is EIO, never wrong data); with `--remote` missing objects are
 * fetched on first access, exactly those read; `umount` stops the daemon and cleans up, also
 * after the daemon was killed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, closeSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, REPO, runCli } from './helpers.js';
import { pathToFileURL } from 'node:url';
import { debianImageUnavailable } from './fixtures/oci/debian-image.js';
import { debianStore, removeUnlessMounted, storeWithoutObjects } from './mount-fixtures.js';
import { fuseUnavailable, listStates, mountAt, waitForMount } from '../src/mount/index.js';
import { logPath, statePath } from '../src/mount/state.js';

function skipReason(): string | false {
  const f = fuseUnavailable();
  if (f) return f;
  const d = debianImageUnavailable();
  if (d) return d;
  for (const c of ['perl', 'diff', 'getfattr', 'chroot']) if (spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0) return `${c} is not installed`;
  return false;
}
const skip = skipReason();

let work: string;
let storeDir: string;
let rootfs: string;

before(async () => {
  if (skip) return;
  ({ work, storeDir, rootfs } = await debianStore('cfsdist-mount-fuse-'));
});

after(() => removeUnlessMounted(work));

function newMountpoint(name: string): string {
  const mp = join(work, name);
  mkdirSync(mp, { recursive: true });
  return mp;
}

/** A store with the image and tag of the test store but no objects. */
function emptyStore(name: string): string {
  return storeWithoutObjects(storeDir, join(work, name));
}

function mountFuse(mp: string, store: string, extra: string[] = []): number {
  const r = runCli(['mount', 'debian:final', mp, '--store', store, '--fuse', '--json', ...extra]);
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { pid: number };
  assert.equal(mountAt(mp)?.fstype, 'fuse.cfsdist');
  return j.pid;
}

function umount(mp: string): void {
  if (mountAt(mp) || existsSync(statePath(mp))) {
    const r = runCli(['umount', mp]);
    assert.equal(r.status, 0, r.stderr);
  }
}

function assertClean(mp: string, pid?: number): void {
  assert.equal(mountAt(mp), undefined, `${mp} is still mounted`);
  assert.equal(existsSync(statePath(mp)), false, 'the mount record is left');
  if (pid) assert.ok(!running(pid), `the FUSE daemon ${pid} still runs`);
}

function running(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return !/^[ZX]/.test(st.slice(st.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

function digestOf(file: string): string {
  return execFileSync(process.execPath, [CLI, 'digest', file], { encoding: 'utf8' }).split(/\s+/)[0]!;
}

function objectsIn(store: string): string[] {
  const dir = join(store, 'objects');
  const out: string[] = [];
  for (const d of readdirSync(dir)) if (/^[0-9a-f]{2}$/.test(d)) for (const n of readdirSync(join(dir, d))) out.push(d + n);
  return out.sort();
}

function walkStats(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const inos = new Map<bigint, string>();
  const rec = (rel: string): void => {
    const p = Buffer.from(root + rel, 'latin1');
    const st = lstatSync(p, { bigint: true });
    const dir = st.isDirectory();
    let group = '';
    if (!dir) {
      group = inos.get(st.ino) ?? rel;
      inos.set(st.ino, group);
    }
    out.set(rel || '/', [st.mode, st.uid, st.gid, st.mtimeNs, st.rdev, dir ? 0 : st.size, dir ? 0 : st.nlink, group].join(' '));
    if (dir) for (const n of readdirSync(p, { encoding: 'buffer' }) as Buffer[]) rec(rel + '/' + n.toString('latin1'));
  };
  rec('');
  return out;
}

function xattrDump(root: string): string[] {
  const r = spawnSync('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root, encoding: 'latin1', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n\n').map((b) => b.trim()).filter(Boolean).sort();
}

function readErrno(path: string): string | undefined {
  try {
    readFileSync(path);
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
}

test('FUSE mount of the merged Debian image equals the umoci unpack oracle, and its programs run', { skip }, () => {
  const mp = newMountpoint('full');
  let pid: number | undefined;
  try {
    pid = mountFuse(mp, storeDir);
    const d = spawnSync('diff', ['-r', '--no-dereference', rootfs, mp], { encoding: 'latin1', maxBuffer: 1 << 26 });
    const real = d.stdout.split('\n').filter((l) => l && !/^File .* is a (.+) while file .* is a \1$/.test(l));
    assert.ok(d.status === 0 || d.status === 1, d.stderr);
    assert.deepEqual(real, [], 'diff -r against the umoci rootfs');
    const want = walkStats(rootfs);
    const got = walkStats(mp);
    assert.ok(want.size > 1000);
    const diffs = [...new Set([...want.keys(), ...got.keys()])].filter((p) => want.get(p) !== got.get(p)).map((p) => `${p}: ${want.get(p)} vs ${got.get(p)}`);
    assert.deepEqual(diffs, [], 'lstat fields and hardlink groups');
    assert.deepEqual(xattrDump(mp), xattrDump(rootfs));
    assert.equal(execFileSync('chroot', [mp, '/bin/sh', '-c', 'echo $((6*7)); /bin/ls /opt/app/sub'], { encoding: 'utf8' }), '42\nh3\n');
    assert.ok(existsSync(logPath(mp)), 'the daemon logs to the run directory');
  } finally {
    umount(mp);
  }
  assertClean(mp, pid);
});

test('a changed object fails with EIO on the FUSE mount, never with wrong bytes', { skip }, () => {
  const copy = join(work, 'tamper-store');
  cpSync(storeDir, copy, { recursive: true });
  const mp = newMountpoint('tamper');
  try {
    mountFuse(mp, copy);
    // 1. Changed before the first open: the whole-object check fails.
    const a = digestOf(join(rootfs, 'opt/app/bin'));
    const objA = join(copy, 'objects', a.slice(0, 2), a.slice(2));
    const dataA = readFileSync(objA);
    dataA[123_456] ^= 1;
    writeFileSync(objA, dataA);
    assert.equal(readErrno(join(mp, 'opt/app/bin')), 'EIO');
    // 2. Changed after it was verified and read: each block is checked again on every read.
    const bRel = 'usr/bin/dpkg';
    const good = readFileSync(join(rootfs, bRel));
    assert.ok(good.length > 3 * 4096);
    assert.ok(readFileSync(join(mp, bRel)).equals(good), 'reads correctly before the change');
    const b = digestOf(join(rootfs, bRel));
    const objB = join(copy, 'objects', b.slice(0, 2), b.slice(2));
    const dataB = Buffer.from(good);
    dataB[2 * 4096 + 7] ^= 0x80;
    writeFileSync(objB, dataB);
    execFileSync('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
    assert.equal(readErrno(join(mp, bRel)), 'EIO');
    // The unchanged first block still reads, and correctly.
    const fd = openSync(join(mp, bRel), 'r');
    try {
      const head = Buffer.alloc(4096);
      assert.equal(readSync(fd, head, 0, 4096, 0), 4096);
      assert.ok(head.equals(good.subarray(0, 4096)));
    } finally {
      closeSync(fd);
    }
    // 3. Truncated (a different size than the image says).
    const c = digestOf(join(rootfs, 'etc/login.defs'));
    const objC = join(copy, 'objects', c.slice(0, 2), c.slice(2));
    writeFileSync(objC, readFileSync(objC).subarray(0, 100));
    assert.equal(readErrno(join(mp, 'etc/login.defs')), 'EIO');
    // Untouched files are fine.
    assert.ok(readFileSync(join(mp, 'usr/bin/ls')).equals(readFileSync(join(rootfs, 'usr/bin/ls'))));
    const log = readFileSync(logPath(mp), 'utf8');
    assert.match(log, new RegExp(`object ${a}.*content was changed`));
    assert.match(log, new RegExp(`object ${b}.*block 2 does not match`));
  } finally {
    umount(mp);
  }
  assertClean(mp);
});

/** A cfsdist server over `store` in its own process (the test process blocks on mount reads):
 * its URL, its request log, and a stop function. */
async function startServe(store: string): Promise<{ url: string; log: string[]; stop: () => void }> {
  const mod = (p: string) => JSON.stringify(pathToFileURL(join(REPO, 'dist', 'src', p)).href);
  const script = [
    `import { Store } from ${mod('store/store.js')};`,
    `import { startServer } from ${mod('server/server.js')};`,
    'const store = await Store.open(process.argv[1]);',
    "const srv = await startServer({ store, host: '127.0.0.1', port: 0, log: (l) => process.stdout.write('LOG ' + l + '\\n') });",
    "process.stdout.write('URL ' + srv.url + '\\n');",
  ].join('\n');
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, store], { stdio: ['ignore', 'pipe', 'inherit'] });
  const log: string[] = [];
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.startsWith('URL ')) resolve(line.slice(4));
        else if (line.startsWith('LOG ')) log.push(line.slice(4));
      }
    });
    child.on('exit', (code) => reject(new Error(`the server exited (${code})`)));
  });
  return { url, log, stop: () => child.kill('SIGTERM') };
}

test('lazy pull: FUSE mount with --remote against a running server fetches exactly the objects of the files read', { skip }, async () => {
  const local = emptyStore('lazy-local');
  const mp = newMountpoint('lazy');
  const srv = await startServe(storeDir);
  try {
    mountFuse(mp, local, ['--remote', srv.url]);
    const ls = spawnSync('ls', ['-lR', mp], { encoding: 'latin1', maxBuffer: 1 << 26 });
    assert.equal(ls.status, 0, ls.stderr);
    assert.deepEqual(objectsIn(local), [], 'ls -lR fetched nothing');
    const files = ['opt/app/bin', 'usr/bin/ls', 'etc/login.defs'];
    for (const f of files) assert.ok(readFileSync(join(mp, f)).equals(readFileSync(join(rootfs, f))), f);
    // A second read of the same files fetches nothing more.
    for (const f of files) readFileSync(join(mp, f));
    const want = files.map((f) => digestOf(join(rootfs, f))).sort();
    assert.deepEqual(objectsIn(local), want, 'exactly the objects of the files read are in the local store');
    await new Promise((r) => setTimeout(r, 100)); // let the server's log lines arrive
    const fetched = srv.log.filter((l) => /\/objects\/[0-9a-f]{64} 200/.test(l)).map((l) => /([0-9a-f]{64})/.exec(l)![1]!).sort();
    assert.deepEqual(fetched, want, `the server served exactly those objects:\n${srv.log.join('\n')}`);
  } finally {
    umount(mp);
    srv.stop();
  }
  assertClean(mp);
});

test('lazy pull from another store directory (--remote DIR) also fetches only what is read', { skip }, () => {
  const local = emptyStore('lazy-dir-local');
  const mp = newMountpoint('lazy-dir');
  try {
    mountFuse(mp, local, ['--remote', storeDir]);
    assert.equal(readFileSync(join(mp, 'usr/bin/dpkg')).length, lstatSync(join(rootfs, 'usr/bin/dpkg')).size);
    assert.deepEqual(objectsIn(local), [digestOf(join(rootfs, 'usr/bin/dpkg'))]);
  } finally {
    umount(mp);
  }
  assertClean(mp);
});

test('without --remote a missing object fails with EIO while the tree lists fine', { skip }, () => {
  const local = emptyStore('missing-local');
  const mp = newMountpoint('missing');
  try {
    mountFuse(mp, local);
    assert.equal(spawnSync('ls', ['-lR', mp], { stdio: 'ignore' }).status, 0);
    assert.equal(readErrno(join(mp, 'usr/bin/ls')), 'EIO');
    assert.equal(readFileSync(join(mp, 'opt/app/small.txt'), 'utf8'), 'ten bytes\n', 'inline content needs no object');
    // The daemon's log is written by its main thread after the reply went to the kernel: wait for it.
    let log = '';
    for (let i = 0; i < 200 && !/is not in .*objects/.test(log); i++) {
      log = readFileSync(logPath(mp), 'utf8');
      if (!/is not in .*objects/.test(log)) spawnSync('sleep', ['0.01']);
    }
    assert.match(log, /is not in .*objects/);
  } finally {
    umount(mp);
  }
  assertClean(mp);
});

test('umount cleans up after the FUSE daemon was killed; a --foreground mount stops on umount', { skip }, async () => {
  const mp = newMountpoint('killed');
  let pid: number | undefined;
  try {
    pid = mountFuse(mp, storeDir);
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 100 && running(pid); i++) await new Promise((r) => setTimeout(r, 20));
    assert.throws(() => readdirSync(mp), /ENOTCONN|ECONNABORTED/, 'the dead mount fails every access');
  } finally {
    umount(mp);
  }
  assertClean(mp, pid);

  const fg = newMountpoint('foreground');
  const child = spawn(process.execPath, [CLI, 'mount', 'debian:final', fg, '--store', storeDir, '--fuse', '--foreground'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  try {
    assert.ok(await waitForMount(fg, { timeoutMs: 10_000 }), `the foreground mount went live: ${err}`);
    assert.equal((await listStates()).find((s) => s.mountpoint === fg)?.kind, 'fuse');
    assert.equal(readFileSync(join(fg, 'opt/app/small.txt'), 'utf8'), 'ten bytes\n');
  } finally {
    umount(fg);
  }
  assert.equal(await exited, 0, err);
  assert.match(err, /unmounted; \d+ objects verified/);
  assertClean(fg, child.pid);
});
