/**
 * mkcomposefs from a real directory, checked by the kernel as an independent reader: the image
 * is mounted with erofs, then overlayfs over the digest store (data-only lower layer), and the
 * mounted tree must equal the source: contents (diff -r), lstat fields, hardlink groups, xattrs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, linkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CLI, lstatTree, notRoot, type StatEntry } from './helpers.js';

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

function skipReason(): string | false {
  const r = notRoot();
  if (r) return r;
  for (const c of ['mount', 'umount', 'getfattr', 'setfattr', 'mknod', 'diff']) if (!have(c)) return `${c} not installed`;
  const fs = execFileSync('cat', ['/proc/filesystems'], { encoding: 'utf8' });
  if (!/\berofs\b/.test(fs)) return 'kernel has no erofs';
  if (!/\boverlay\b/.test(fs)) return 'kernel has no overlayfs';
  return false;
}

function makeSource(src: string): void {
  mkdirSync(src);
  const sizes = [0, 1, 63, 64, 65, 4095, 4096, 4097, 5000, 70000, 1 << 20];
  for (const s of sizes) writeFileSync(join(src, `file-${s}`), randomBytes(s));
  writeFileSync(join(src, 'same-a'), 'identical content shared by two files, longer than sixty-four bytes!!');
  writeFileSync(join(src, 'same-b'), 'identical content shared by two files, longer than sixty-four bytes!!');
  mkdirSync(join(src, 'links'));
  linkSync(join(src, 'file-70000'), join(src, 'links', 'hard-70000'));
  linkSync(join(src, 'file-1'), join(src, 'links', 'hard-1'));
  linkSync(join(src, 'file-1'), join(src, 'links', 'hard-1b'));
  symlinkSync('../file-1', join(src, 'links', 'sym'));
  symlinkSync('x'.repeat(1000), join(src, 'links', 'sym-1000'));
  symlinkSync('/nonexistent/abs', join(src, 'links', 'dangling'));
  mkdirSync(join(src, 'special'));
  execFileSync('mkfifo', [join(src, 'special', 'fifo')]);
  execFileSync('mknod', [join(src, 'special', 'null'), 'c', '1', '3']);
  execFileSync('mknod', [join(src, 'special', 'blk'), 'b', '7', '200']);
  execFileSync('mknod', [join(src, 'special', 'bigminor'), 'c', '240', '70000']);
  execFileSync('python3', ['-c', `import socket; s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(join(src, 'special', 'sock'))})`]);
  execFileSync('chmod', ['4755', join(src, 'file-4096')]);
  execFileSync('chmod', ['1777', join(src, 'special')]);
  execFileSync('chown', ['1234:5678', join(src, 'file-63')]);
  execFileSync('chown', ['-h', '100000:100001', join(src, 'links', 'sym')]);
  execFileSync('touch', ['-h', '-d', '2001-02-03 04:05:06.123456789', join(src, 'links', 'sym')]);
  execFileSync('touch', ['-d', '1999-12-31 23:59:59.5', join(src, 'file-65')]);
  execFileSync('setfattr', ['-n', 'user.text', '-v', 'hello world', join(src, 'file-65')]);
  execFileSync('setfattr', ['-n', 'user.binary', '-v', '0x00ff0a0d3d20', join(src, 'file-65')]);
  execFileSync('setfattr', ['-n', 'user.empty', join(src, 'file-4097')]);
  execFileSync('setfattr', ['-n', 'trusted.cfsdist', '-v', 'secret', join(src, 'file-5000')]);
  execFileSync('setfattr', ['-n', 'security.capability', '-v', '0x0100000200200000000000000000000000000000', join(src, 'file-1')]);
  execFileSync('setfattr', ['-n', 'user.dir', '-v', 'on a directory', join(src, 'links')]);
  mkdirSync(join(src, 'big'));
  for (let i = 0; i < 5000; i++) writeFileSync(join(src, 'big', `entry-${String(i).padStart(5, '0')}`), i % 7 === 0 ? `${i}` : '');
  // names that are not UTF-8 and that sort before '.'
  writeFileSync(Buffer.from(join(src, 'bytes-\xff\xfe-'), 'latin1'), 'latin1 name');
  writeFileSync(join(src, '-dash'), 'sorts before dot');
}

/** Every file's xattrs (all namespaces, hex values), as sorted `# file:` blocks. */
function xattrDump(root: string): string[] {
  const r = spawnSync('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: root, encoding: 'latin1' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n\n').map((b) => b.trim()).filter(Boolean).sort();
}

test('mkcomposefs DIR: the kernel mount (erofs + overlay over the digest store) equals the source', { skip: skipReason() }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-mkdir-'));
  const src = join(work, 'src');
  const store = join(work, 'store');
  const img = join(work, 'image.cfs');
  const emnt = join(work, 'erofs');
  const mnt = join(work, 'mnt');
  mkdirSync(emnt);
  mkdirSync(mnt);
  const mounted: string[] = [];
  try {
    makeSource(src);
    const r = spawnSync(process.execPath, [CLI, 'mkcomposefs', src, img, '--digest-store', store], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    execFileSync('mount', ['-t', 'erofs', '-o', 'ro', img, emnt]);
    mounted.unshift(emnt);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,metacopy=on,redirect_dir=on,lowerdir=${emnt}::${store}`, mnt]);
    mounted.unshift(mnt);

    // 1. contents: diff -r (symlinks compared as links, special files by type)
    // diff reports special files of the same type as "File A is a fifo while file B is a fifo";
    // those are checked by the stat walk below, anything else is a difference.
    const d = spawnSync('diff', ['-r', '--no-dereference', src, mnt], { encoding: 'latin1' });
    const real = d.stdout.split('\n').filter((l) => l && !/^File .* is a (.+) while file .* is a \1$/.test(l));
    assert.ok(d.status === 0 || d.status === 1, d.stderr);
    assert.deepEqual(real, [], `diff -r found differences:\n${real.join('\n')}`);

    // 2. lstat fields and hardlink groups
    const a = lstatTree(src);
    const b = lstatTree(mnt);
    assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
    const groupsA = new Map<bigint, string[]>();
    const groupsB = new Map<bigint, string[]>();
    for (const [p, ea] of a) {
      const eb = b.get(p)!;
      const pick = (e: StatEntry) => ({ type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtimeNs: e.mtimeNs, rdev: e.rdev, size: e.type === 'dir' ? 0n : e.size, nlink: e.type === 'dir' ? 0n : e.nlink });
      assert.deepEqual(pick(eb), pick(ea), `stat of ${p}`);
      if (ea.type !== 'dir') {
        (groupsA.get(ea.ino) ?? groupsA.set(ea.ino, []).get(ea.ino)!).push(p);
        (groupsB.get(eb.ino) ?? groupsB.set(eb.ino, []).get(eb.ino)!).push(p);
      }
    }
    const norm = (g: Map<bigint, string[]>) => [...g.values()].map((v) => v.sort().join(' ')).sort();
    assert.deepEqual(norm(groupsB), norm(groupsA), 'hardlink groups');
    assert.ok(norm(groupsA).some((g) => g.includes('hard-1b')), 'source has a 3-link group');

    // 3. xattrs, all namespaces
    const xa = xattrDump(src);
    assert.ok(xa.length >= 6, 'source has xattrs on several files');
    assert.deepEqual(xattrDump(mnt), xa);
    t.diagnostic(`${a.size} entries compared`);
  } finally {
    for (const m of mounted) spawnSync('umount', [m]);
    if (!mounted.length || mounted.every((m) => !existsSync(m) || readdirSync(m).length === 0)) rmSync(work, { recursive: true, force: true });
  }
});
