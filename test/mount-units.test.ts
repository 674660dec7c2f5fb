/**
 * The parts of the mount module that need no root and no kernel: mount-table parsing, option
 * escaping, the FUSE wire encoders, verified object reads (a changed object is an error, never
 * data; lazy fetches happen once per object) and the FUSE filesystem's answers for an image
 * (node ids, listings, inline and object content, xattr visibility).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseMountInfo, canonicalMountpoint, unescapeField } from '../src/mount/mountinfo.js';
import { compatFromEnv, escapeLowerdir } from '../src/mount/compat.js';
import { SIZE, attrOut, direntSize, entryOut, readInHeader, reply, writeDirent } from '../src/mount/fuse/protocol.js';
import { IntegrityError, MissingObjectError, VerifiedObjects } from '../src/mount/fuse/verified.js';
import { ImageFs } from '../src/mount/fuse/fs.js';
import { FuseErrno } from '../src/mount/fuse/server.js';
import { DirectoryFetcher } from '../src/mount/fetcher.js';
import { ObjectDir } from '../src/store/objects.js';
import { ErofsImage } from '../src/erofs/reader.js';
import { writeImage } from '../src/erofs/writer.js';
import { S_IFDIR, S_IFLNK, S_IFREG, newInode, setXattr } from '../src/tree/tree.js';
import type { Inode } from '../src/tree/tree.js';
import { fsverityDigest, objectPathFor } from '../src/verity/digest.js';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'cfsdist-mount-units-'));
}

test('mountinfo lines parse with optional fields and octal escapes', () => {
  const text =
    '36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n' +
    '46 27 0:41 / /tmp/cfs/mnt ro,relatime - overlay cfsdist ro,lowerdir+=/,datadir+=/s/objects,metacopy=on\n' +
    'garbage\n';
  const m = parseMountInfo(text);
  assert.equal(m.length, 2);
  assert.equal(m[0]!.mountpoint, '/mnt/with space');
  assert.equal(m[0]!.fstype, 'ext3');
  assert.equal(m[0]!.source, '/dev/root');
  assert.equal(m[1]!.fstype, 'overlay');
  assert.equal(m[1]!.source, 'cfsdist');
  assert.match(m[1]!.superOptions, /datadir\+=\/s\/objects/);
  assert.equal(unescapeField('a\\134b\\011c'), 'a\\b\tc');
});

test('mount points are canonical without touching the mount point itself', () => {
  const dir = tmp();
  try {
    mkdirSync(join(dir, 'real'));
    symlinkSync(join(dir, 'real'), join(dir, 'link'));
    assert.equal(canonicalMountpoint(join(dir, 'link', 'mnt')), join(dir, 'real', 'mnt'));
    assert.equal(canonicalMountpoint(join(dir, 'real', 'x', '..', 'mnt')), join(dir, 'real', 'mnt'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lowerdir= paths escape ":" and "\\"; fallback switches parse and reject unknown words', () => {
  assert.equal(escapeLowerdir('/a:b\\c'), '/a\\:b\\\\c');
  assert.deepEqual(compatFromEnv('loop, staging,mount8'), { loop: true, staging: true, mount8: true });
  assert.deepEqual(compatFromEnv(''), {});
  assert.throws(() => compatFromEnv('loop,turbo'), /unknown switch "turbo"/);
});

test('FUSE wire structures have the kernel sizes and layout', () => {
  const attr = { ino: 2 ** 40 + 5, size: 123, blocks: 8, mtimeSec: 1700000000, mtimeNsec: 42, mode: 0o100644, nlink: 2, uid: 1000, gid: 100, rdev: 0 };
  const e = entryOut(7, attr, 86400);
  assert.equal(e.length, SIZE.entryOut);
  assert.equal(e.readBigUInt64LE(0), 7n);
  assert.equal(e.readBigUInt64LE(40), BigInt(2 ** 40 + 5), 'attr.ino after the 40-byte entry header');
  assert.equal(e.readUInt32LE(40 + 60), 0o100644, 'attr.mode');
  assert.equal(e.readBigInt64LE(40 + 32), 1700000000n, 'attr.mtime');
  assert.equal(e.readUInt32LE(40 + 52), 42, 'attr.mtimensec');
  const a = attrOut(attr, 5);
  assert.equal(a.length, SIZE.attrOut);
  assert.equal(a.readUInt32LE(16 + 64), 2, 'nlink');
  assert.equal(direntSize(1), 32);
  assert.equal(direntSize(8), 32);
  assert.equal(direntSize(9), 40);
  const b = Buffer.alloc(64, 0xff);
  assert.equal(writeDirent(b, 0, 9, 3, 8, Buffer.from('hello')), 32);
  assert.equal(b.readUInt32LE(16), 5);
  assert.equal(b.toString('latin1', 24, 29), 'hello');
  assert.deepEqual([...b.subarray(29, 32)], [0, 0, 0], 'padding is zeroed');
  const r = reply(0x1234567890n, -2);
  assert.equal(r.readUInt32LE(0), 16);
  assert.equal(r.readInt32LE(4), -2);
  assert.equal(r.readBigUInt64LE(8), 0x1234567890n);
  const h = Buffer.alloc(40);
  h.writeUInt32LE(40, 0);
  h.writeUInt32LE(1, 4);
  h.writeBigUInt64LE(99n, 8);
  h.writeBigUInt64LE(BigInt(2 ** 33 + 1), 16);
  assert.deepEqual(readInHeader(h), { len: 40, opcode: 1, unique: 99n, nodeid: 2 ** 33 + 1, uid: 0, gid: 0, pid: 0 });
});

/** Put content into an objects dir under its digest; returns the digest. */
function putObject(dir: string, data: Buffer): Buffer {
  const d = fsverityDigest(data);
  const p = join(dir, objectPathFor(d));
  mkdirSync(join(p, '..'), { recursive: true });
  writeFileSync(p, data);
  return d;
}

test('verified reads: correct bytes; a block changed after verification, a changed object, a wrong size and a missing object are errors', async () => {
  const dir = tmp();
  try {
    const data = randomBytes(5 * 4096 + 100);
    const d = putObject(dir, data);
    const vo = new VerifiedObjects(dir);
    const f = await vo.open(d, data.length);
    assert.ok(f.read(0, data.length).equals(data));
    assert.ok(f.read(4090, 20).equals(data.subarray(4090, 4110)), 'a read across a block boundary');
    assert.ok(f.read(5 * 4096 + 50, 1000).equals(data.subarray(5 * 4096 + 50)), 'a read of the partial last block');
    assert.equal(f.read(data.length, 10).length, 0);
    // Changed on disk after the object was verified: the block is checked on every read.
    const changed = Buffer.from(data);
    changed[3 * 4096 + 1] ^= 1;
    writeFileSync(vo.path(d), changed);
    assert.throws(() => f.read(3 * 4096, 4096), IntegrityError);
    assert.throws(() => f.read(0, data.length), /block 3 does not match/);
    assert.ok(f.read(0, 3 * 4096).equals(data.subarray(0, 3 * 4096)), 'untouched blocks still read');
    f.close();
    // The same change seen by a fresh process (no cached hashes): the whole-object check fails.
    const fresh = new VerifiedObjects(dir);
    await assert.rejects(fresh.open(d, data.length), /content was changed/);
    assert.equal(fresh.stats.corrupt, 1);
    writeFileSync(vo.path(d), data.subarray(0, 100));
    await assert.rejects(new VerifiedObjects(dir).open(d, data.length), /100 bytes, the image says/);
    await assert.rejects(new VerifiedObjects(dir).open(fsverityDigest(Buffer.from('absent')), 6), MissingObjectError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('lazy fetch: a missing object is fetched once even when opened concurrently, then verified', async () => {
  const remote = tmp();
  const local = tmp();
  try {
    const data = randomBytes(70_000);
    const d = putObject(remote, data);
    const bad = randomBytes(9000);
    const dBad = fsverityDigest(bad);
    // A remote that serves wrong content under a digest: the store refuses it.
    const p = join(remote, objectPathFor(dBad));
    mkdirSync(join(p, '..'), { recursive: true });
    writeFileSync(p, randomBytes(9000));
    const fetcher = new DirectoryFetcher(remote, new ObjectDir(local));
    let calls = 0;
    const counting = { fetch: (x: Buffer) => (calls++, fetcher.fetch(x)) };
    const vo = new VerifiedObjects(local, { fetcher: counting });
    const [a, b] = await Promise.all([vo.open(d, data.length), vo.open(d, data.length)]);
    assert.equal(calls, 1);
    assert.deepEqual(fetcher.fetched, [d.toString('hex')]);
    assert.ok(a.read(0, data.length).equals(data) && b.read(60_000, 10_000).equals(data.subarray(60_000)));
    a.close();
    b.close();
    assert.equal(vo.stats.fetched, 1);
    await assert.rejects(vo.open(dBad, 9000), (e: Error) => e instanceof MissingObjectError && /fetching it failed/.test(e.message));
  } finally {
    rmSync(remote, { recursive: true, force: true });
    rmSync(local, { recursive: true, force: true });
  }
});

test('the FUSE filesystem answers from the image: node ids, listings, inline and object content, links, xattr visibility', async () => {
  const objects = tmp();
  try {
    const big = randomBytes(20_000);
    const digest = putObject(objects, big);
    const file = newInode(S_IFREG | 0o644, { size: big.length, digest, payload: Buffer.from(objectPathFor(digest)), mtimeSec: 1700000000, mtimeNsec: 5 });
    setXattr(file, 'user.note', Buffer.from([0, 1, 2]));
    setXattr(file, 'trusted.secret', 'root only');
    const small = newInode(S_IFREG | 0o600, { size: 5, content: Buffer.from('small'), uid: 7 });
    const link = newInode(S_IFLNK | 0o777, { size: 3, target: Buffer.from('big') });
    const sub = newInode(S_IFDIR | 0o755);
    sub.entries!.set('hard', file);
    const root: Inode = newInode(S_IFDIR | 0o755);
    root.entries!.set('big', file);
    root.entries!.set('small', small);
    root.entries!.set('link', link);
    root.entries!.set('sub', sub);
    file.nlink = 2;
    const img = ErofsImage.fromBuffer(writeImage(root), 'unit-image');
    const fs = new ImageFs(img, new VerifiedObjects(objects), { log: () => undefined });

    assert.equal(fs.getattr(1).mode & 0o170000, S_IFDIR, 'node 1 is the root');
    const eBig = fs.lookup(1, Buffer.from('big'))!;
    const eHard = fs.lookup(fs.lookup(1, Buffer.from('sub'))!.nodeid, Buffer.from('hard'))!;
    assert.equal(eBig.nodeid, eHard.nodeid, 'a hardlink is one node');
    assert.equal(eBig.attr.size, 20_000);
    assert.equal(eBig.attr.nlink, 2);
    assert.equal(eBig.attr.mtimeSec, 1700000000);
    assert.equal(eBig.attr.ino, eBig.nodeid);
    assert.equal(fs.lookup(1, Buffer.from('nope')), undefined);
    assert.throws(() => fs.lookup(eBig.nodeid, Buffer.from('x')), (e: FuseErrno) => e.errno === 20, 'ENOTDIR');
    const names = fs.readdir(1).map((i) => i.name.toString());
    assert.deepEqual(names, ['.', '..', 'big', 'link', 'small', 'sub']);
    assert.deepEqual(fs.readdir(1).map((i) => i.type), [4, 4, 8, 10, 8, 4]);
    const eLink = fs.lookup(1, Buffer.from('link'))!;
    assert.equal(fs.readlink(eLink.nodeid).toString(), 'big');

    const fh = await fs.open(eBig.nodeid);
    assert.ok(Buffer.concat([fs.read(fh, 0, 8192), fs.read(fh, 8192, 20_000)]).equals(big));
    fs.release(fh);
    const eSmall = fs.lookup(1, Buffer.from('small'))!;
    const fh2 = await fs.open(eSmall.nodeid);
    assert.equal(fs.read(fh2, 0, 100).toString(), 'small');
    assert.equal(fs.read(fh2, 2, 2).toString(), 'al');
    fs.release(fh2);
    assert.equal(fs.openHandles, 0);

    assert.deepEqual(fs.getxattr(eBig.nodeid, Buffer.from('user.note'), 1000), Buffer.from([0, 1, 2]));
    assert.equal(fs.getxattr(eBig.nodeid, Buffer.from('trusted.secret'), 1000), undefined, 'trusted.* hidden from non-root');
    assert.equal(fs.getxattr(eBig.nodeid, Buffer.from('trusted.secret'), 0)?.toString(), 'root only');
    assert.deepEqual(fs.listxattr(eBig.nodeid, 1000).map(String), ['user.note']);
    assert.deepEqual(fs.listxattr(eBig.nodeid, 0).map(String).sort(), ['trusted.secret', 'user.note']);
    assert.equal(fs.getxattr(eBig.nodeid, Buffer.from('trusted.overlay.metacopy'), 0), undefined, 'composefs overlay xattrs are not shown');
    assert.equal(fs.hasXattrs(), true, 'an image with a visible xattr says so');
    // Without any visible xattr (the metacopy and redirect ones are overlay-private), the
    // session may answer xattr requests with ENOSYS once for the whole mount; one xattr three
    // directories down is enough to keep them.
    const bare = (deep: boolean): ImageFs => {
      const leaf = newInode(S_IFREG | 0o644, { size: big.length, digest, payload: Buffer.from(objectPathFor(digest)) });
      if (deep) setXattr(leaf, 'security.capability', Buffer.from([1, 0, 0, 2]));
      const r: Inode = newInode(S_IFDIR | 0o755);
      let d = r;
      for (const n of ['a', 'b', 'c']) {
        const c = newInode(S_IFDIR | 0o755);
        d.entries!.set(n, c);
        d.entries!.set(`${n}-file`, newInode(S_IFREG | 0o644, { size: big.length, digest, payload: Buffer.from(objectPathFor(digest)) }));
        d = c;
      }
      d.entries!.set('leaf', leaf);
      return new ImageFs(ErofsImage.fromBuffer(writeImage(r), 'bare'), new VerifiedObjects(objects), { log: () => undefined });
    };
    assert.equal(bare(false).hasXattrs(), false, 'only overlay-private xattrs: none visible');
    assert.equal(bare(true).hasXattrs(), true, 'a visible xattr deep in the tree is found');

    // Zero-message opens: reads by node, files kept open between reads.
    assert.ok(Buffer.concat([await fs.readNode(eBig.nodeid, 0, 10_000), await fs.readNode(eBig.nodeid, 10_000, 10_000)]).equals(big));
    assert.equal((await fs.readNode(eSmall.nodeid, 1, 3)).toString(), 'mal');
    fs.closeAll();

    // A changed object: open fails with EIO and the reason is logged.
    const logged: string[] = [];
    writeFileSync(join(objects, objectPathFor(digest)), randomBytes(20_000));
    const fs2 = new ImageFs(img, new VerifiedObjects(objects), { log: (l) => logged.push(l) });
    await assert.rejects(fs2.open(eBig.nodeid), (e: FuseErrno) => e.errno === 5);
    await assert.rejects(fs2.readNode(eBig.nodeid, 0, 100), (e: FuseErrno) => e.errno === 5);
    assert.match(logged.join('\n'), /content was changed/);
    // A failure is not remembered: once the object is right again, it reads.
    writeFileSync(join(objects, objectPathFor(digest)), big);
    assert.ok((await fs2.readNode(eBig.nodeid, 0, 20_000)).equals(big));
    fs2.closeAll();
  } finally {
    rmSync(objects, { recursive: true, force: true });
  }
});
