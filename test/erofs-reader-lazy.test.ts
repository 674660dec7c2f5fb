/**
 * The lazy API (what a userspace mount uses): lookup / stat / readdir / readlink / readData over
 * a file descriptor with a tiny cache agree with the in-memory image and the materialised tree;
 * stubs stay hidden; misuse gives typed errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ErofsError, ErofsImage } from '../src/erofs/reader.js';
import { formatDumpfile } from '../src/dumpfile/writer.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, walk } from '../src/tree/tree.js';
import { VECTORS, vectorsMissing } from './helpers.js';

const skip = vectorsMissing();
const golden = (set: string, name: string): string => join(VECTORS, set, 'golden', name);
const ALL = [
  ['extra', 'bigdir.dump.cfs'],
  ['extra', 'escapes.dump.cfs'],
  ['extra', 'external.dump.cfs'],
  ['extra', 'hardlinks.dump.cfs'],
  ['extra', 'inline-sizes.dump.cfs'],
  ['extra', 'special-files.dump.cfs'],
  ['extra', 'whiteouts-overlay.dump.cfs'],
  ['extra', 'xattrs.dump.cfs'],
  ['upstream', 'longlink.dump.cfs'],
  ['upstream', 'special.dump.cfs'],
] as const;

function hexXattrs(xs: { key: Buffer; value: Buffer }[]): string[] {
  return xs.map((x) => `${x.key.toString('hex')}=${x.value.toString('hex')}`);
}

test('lazy (fd, 16 KiB cache) and in-memory images agree on every path, and with the tree', { skip }, () => {
  for (const [set, name] of ALL) {
    const path = golden(set, name);
    const mem = ErofsImage.open(path);
    const lazy = ErofsImage.open(path, { lazy: true, cacheBytes: 16 * 1024 });
    try {
      const tree = mem.toTree();
      assert.ok(formatDumpfile(lazy.toTree()).equals(formatDumpfile(tree)), `${name}: lazy toTree differs`);
      for (const [p, n] of walk(tree)) {
        const what = `${name} ${p.toString('latin1')}`;
        const nid = lazy.lookup(p);
        assert.equal(nid, mem.lookup(p), what);
        assert.ok(nid !== undefined, what);
        const a = lazy.stat(nid);
        const b = mem.stat(nid);
        assert.equal(a.mode, n.mode, what);
        assert.equal(b.mode, n.mode, what);
        assert.deepEqual([a.nlink, a.uid, a.gid, a.rdev, a.size, a.mtimeSec, a.mtimeNsec], [n.nlink, n.uid, n.gid, n.rdev, n.size, n.mtimeSec, n.mtimeNsec], what);
        assert.deepEqual(hexXattrs(a.xattrs), hexXattrs(n.xattrs), what);
        assert.deepEqual(hexXattrs(lazy.rawXattrs(nid)), hexXattrs(mem.rawXattrs(nid)), what);
        assert.equal(a.payload?.toString('hex'), n.payload?.toString('hex'), what);
        assert.equal(a.digest?.toString('hex'), n.digest?.toString('hex'), what);
        const type = n.mode & S_IFMT;
        if (type === S_IFLNK) assert.ok(lazy.readlink(nid).equals(n.target!), what);
        if (type === S_IFREG && n.content) assert.ok(lazy.readData(nid).equals(n.content), what);
        if (type === S_IFDIR) {
          const names = lazy.readdir(nid).map((e) => e.name.toString('latin1'));
          assert.deepEqual(names, [...n.entries!.keys()], what);
          for (const e of lazy.readdir(nid)) assert.equal(lazy.lookupIn(nid, e.name), e.nid, `${what}/${e.name.toString('latin1')}`);
        }
      }
    } finally {
      lazy.close();
    }
  }
});

test('lookup: `.` and `..` resolve, missing names and paths through files do not, stubs are hidden', { skip }, () => {
  const img = ErofsImage.open(golden('extra', 'hardlinks.dump.cfs'));
  const root = img.rootNid;
  const a = img.lookup('/a')!;
  assert.equal(img.lookup('/a/..'), root);
  assert.equal(img.lookup('/a/.'), a);
  assert.equal(img.lookup('//a///link1'), img.lookup('/a/link1'));
  assert.equal(img.lookup('/a/nope'), undefined);
  assert.equal(img.lookup('/a/link1/x'), undefined);
  assert.equal(img.lookup('/zzzz'), undefined);
  // hardlinks.dump has no root entries named 00..ff, so the image holds all 256 stubs
  assert.equal(img.lookup('/00'), undefined);
  assert.equal(img.lookup('/ff'), undefined);
  assert.ok(!img.readdir(root).some((e) => /^[0-9a-f]{2}$/.test(e.name.toString('latin1'))));
  // hardlinked names are one inode
  assert.equal(img.lookup('/a/link1'), img.lookup('/chain1'));
  // whiteouts-overlay has real entries named 00, 7f, ff: they are found
  const wo = ErofsImage.open(golden('extra', 'whiteouts-overlay.dump.cfs'));
  assert.equal((wo.stat(wo.lookup('/00')!).mode & S_IFMT), S_IFDIR);
  assert.equal(wo.readlink(wo.lookup('/ff')!).toString(), 'x');
  const wh = wo.stat(wo.lookup('/sub/wh')!);
  assert.equal(wh.whiteout, true);
  assert.equal(wh.mode, 0o20644);
  assert.equal(wh.raw.mode & S_IFMT, S_IFREG);
});

test('binary search finds every entry of a 5000-entry directory spread over many blocks', { skip }, () => {
  const img = ErofsImage.open(golden('extra', 'bigdir.dump.cfs'), { lazy: true, cacheBytes: 8192 });
  try {
    let checked = 0;
    for (const dir of img.readdir(img.rootNid)) {
      if ((img.stat(dir.nid).mode & S_IFMT) !== S_IFDIR) continue;
      for (const e of img.readdir(dir.nid)) {
        assert.equal(img.lookupIn(dir.nid, e.name), e.nid);
        const miss = Buffer.concat([e.name, Buffer.from('~')]);
        assert.equal(img.lookupIn(dir.nid, miss), undefined);
        checked++;
      }
    }
    assert.ok(checked >= 5000, `checked ${checked}`);
  } finally {
    img.close();
  }
});

test('readData reads ranges across the block/tail boundary', { skip }, () => {
  const img = ErofsImage.open(golden('extra', 'inline-sizes.dump.cfs'));
  const tree = img.toTree();
  let checked = 0;
  for (const [p, n] of walk(tree)) {
    if (!n.content || n.content.length < 4097) continue;
    const nid = img.lookup(p)!;
    for (const [off, len] of [[0, 10], [4090, 20], [4096, 5], [n.content.length - 3, 10], [n.content.length + 5, 4]] as const) {
      assert.ok(img.readData(nid, off, len).equals(n.content.subarray(off, off + len)), `${p.toString()} ${off}+${len}`);
    }
    checked++;
  }
  assert.ok(checked > 0);
});

test('header facts: composefs version and the ACL flag', { skip }, () => {
  assert.equal(ErofsImage.open(golden('extra', 'whiteouts-overlay.dump.cfs')).info.composefsVersion, 1);
  assert.equal(ErofsImage.open(golden('extra', 'whiteouts-overlay.dump.min0_max0.cfs')).info.composefsVersion, 0);
  assert.equal(ErofsImage.open(golden('extra', 'xattrs.dump.cfs')).info.hasAcl, true);
  assert.equal(ErofsImage.open(golden('extra', 'hardlinks.dump.cfs')).info.hasAcl, false);
  assert.equal(ErofsImage.open(golden('extra', 'hardlinks.dump.cfs')).info.rootNid, 36);
});

test('misuse gives typed errors naming the image and nid', { skip }, () => {
  const path = golden('extra', 'external.dump.cfs');
  const img = ErofsImage.open(path);
  const code = (f: () => unknown): string => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof ErofsError, String(e));
      assert.ok(e.message.startsWith(path), e.message);
      return e.code;
    }
    return 'no error';
  };
  assert.equal(code(() => img.readlink(img.rootNid)), 'NOT_A_SYMLINK');
  assert.equal(code(() => img.readData(img.lookup('/sz4096')!)), 'NO_INLINE_DATA');
  assert.equal(code(() => img.readdir(img.lookup('/empty')!)), 'NOT_A_DIRECTORY');
  assert.equal(code(() => img.inode(-1)), 'BAD_NID');
  assert.equal(code(() => img.inode(1e9)), 'OUT_OF_RANGE');
  assert.equal(code(() => ErofsImage.fromBuffer(Buffer.alloc(4096), path)), 'BAD_MAGIC');
});
