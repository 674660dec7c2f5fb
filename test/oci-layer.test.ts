import { test } from 'node:test';
import assert from 'node:assert/strict';
import { S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG, S_IFBLK, getXattr, isWhiteout, lookup, walk, type Inode } from '../src/tree/tree.js';
import { readLayer, makedev, INLINE_MAX, type LayerResult } from '../src/oci/layer.js';
import { readTar } from '../src/oci/tar.js';
import { LayerError } from '../src/oci/errors.js';
import { mergeLayers, Merger, OPAQUE_XATTR } from '../src/merge/merge.js';
import { fsverityDigest, objectPathFor } from '../src/verity/digest.js';
import { tarball, chunked, type TEntry } from './fixtures/oci/tar-writer.js';
import { MemorySink } from './fixtures/oci/memory-sink.js';

async function layerOf(entries: TEntry[], lower?: Inode, sink = new MemorySink()): Promise<LayerResult> {
  return readLayer(readTar(chunked(tarball(entries))), sink, { lower });
}

function paths(root: Inode): string[] {
  return [...walk(root)].map(([p]) => p.toString());
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof LayerError, `expected LayerError, got ${String(err)}`);
    assert.equal((err as LayerError).code, code, (err as Error).message);
    return true;
  });
}

test('members become inodes with their metadata; contents are inline up to INLINE_MAX (4096) bytes, else objects', async () => {
  const sink = new MemorySink();
  const big = Buffer.alloc(100_000, 0x61);
  const l = await layerOf([
    { path: './', type: 'dir', mode: 0o755, mtime: 5 },
    { path: './etc/', type: 'dir', mode: 0o750, uid: 3, gid: 4, mtime: 10, xattrs: [['user.x', Buffer.from([0, 255])]] },
    { path: './etc/empty' },
    { path: './etc/small', content: 'x'.repeat(INLINE_MAX), mode: 0o600 },
    { path: './etc/medium', content: 'y'.repeat(INLINE_MAX + 1), paxMtime: '7.25' },
    { path: './etc/big', content: big, mode: 0o4755 },
    { path: './etc/link', type: 'symlink', linkpath: 'big', mode: 0o644 },
    { path: './dev/null', type: 'chr', devmajor: 1, devminor: 3, mode: 0o666 },
    { path: './dev/sda', type: 'blk', devmajor: 8, devminor: 300 },
    { path: './fifo', type: 'fifo', mode: 0o644 },
  ], undefined, sink);
  assert.equal(l.implicit.has(l.root), false, 'root listed by ./');
  assert.equal(l.root.mtimeSec, 5);
  const etc = lookup(l.root, 'etc')!;
  assert.deepEqual([etc.mode, etc.uid, etc.gid, etc.mtimeSec], [S_IFDIR | 0o750, 3, 4, 10]);
  assert.deepEqual(getXattr(etc, 'user.x'), Buffer.from([0, 255]));
  const empty = lookup(l.root, 'etc/empty')!;
  assert.deepEqual([empty.size, empty.content, empty.payload, empty.digest], [0, undefined, undefined, undefined]);
  const small = lookup(l.root, 'etc/small')!;
  assert.equal(INLINE_MAX, 4096, 'one EROFS block');
  assert.equal(small.content!.toString(), 'x'.repeat(INLINE_MAX));
  assert.equal(small.payload, undefined);
  assert.equal(small.mode, S_IFREG | 0o600);
  const medium = lookup(l.root, 'etc/medium')!;
  assert.equal(medium.content, undefined);
  assert.deepEqual(medium.digest, fsverityDigest(Buffer.from('y'.repeat(INLINE_MAX + 1))));
  assert.equal(medium.payload!.toString(), objectPathFor(medium.digest!));
  assert.deepEqual([medium.mtimeSec, medium.mtimeNsec], [7, 250_000_000]);
  const bigNode = lookup(l.root, 'etc/big')!;
  assert.equal(bigNode.size, 100_000);
  assert.equal(bigNode.mode, S_IFREG | 0o4755);
  assert.ok(sink.objects.get(bigNode.digest!.toString('hex'))!.equals(big));
  const link = lookup(l.root, 'etc/link')!;
  assert.deepEqual([link.mode, link.target!.toString(), link.size], [S_IFLNK | 0o777, 'big', 3]);
  assert.equal(lookup(l.root, 'dev/null')!.rdev, makedev(1, 3));
  assert.equal(lookup(l.root, 'dev/null')!.mode, S_IFCHR | 0o666);
  assert.equal(lookup(l.root, 'dev/sda')!.rdev, (8 << 8) | (300 & 0xff) | ((300 & ~0xff) << 12));
  assert.equal(lookup(l.root, 'dev/sda')!.mode & 0o170000, S_IFBLK);
  assert.equal(lookup(l.root, 'fifo')!.mode, S_IFIFO | 0o644);
  assert.ok(l.implicit.has(lookup(l.root, 'dev')!), 'dev/ had no member: implicit');
  assert.deepEqual([l.stats.files, l.stats.inlined, l.stats.objects, l.stats.objectsNew], [4, 1, 2, 2]);
});

test('identical contents are stored once; the second is counted as already present', async () => {
  const sink = new MemorySink();
  const l = await layerOf([{ path: 'a', content: 'z'.repeat(10_000) }, { path: 'b', content: 'z'.repeat(10_000) }], undefined, sink);
  assert.equal(sink.objects.size, 1);
  assert.deepEqual([l.stats.objects, l.stats.objectsNew, l.stats.bytes, l.stats.bytesNew], [2, 1, 20_000, 10_000]);
});

test('whiteouts become char devices 0/0, opaque markers an xattr; whiteouts only hit lower layers', async () => {
  const l = await layerOf([
    { path: 'etc/', type: 'dir' },
    { path: 'etc/.wh.passwd' },
    { path: 'opq/', type: 'dir' },
    { path: 'opq/.wh..wh..opq' },
    { path: 'opq/kept', content: 'k' },
    { path: 'own', content: 'mine' },
    { path: '.wh.own' }, // after this layer's own file: removes nothing of it
    { path: 'owndir/', type: 'dir' },
    { path: 'owndir/x', content: 'x' },
    { path: '.wh.owndir' }, // after this layer's own dir: the dir becomes opaque
    { path: '.wh.recreated' },
    { path: 'recreated/', type: 'dir' }, // dir after its whiteout: opaque
    { path: 'etc/.wh..wh.plnk' }, // aufs metadata: ignored
  ]);
  const wh = lookup(l.root, 'etc/passwd')!;
  assert.ok(isWhiteout(wh));
  assert.equal(wh.mode & 0o170000, S_IFCHR);
  assert.deepEqual(getXattr(lookup(l.root, 'opq')!, OPAQUE_XATTR), Buffer.from('y'));
  assert.equal(lookup(l.root, 'own')!.content!.toString(), 'mine');
  assert.deepEqual(getXattr(lookup(l.root, 'owndir')!, OPAQUE_XATTR), Buffer.from('y'));
  assert.ok(lookup(l.root, 'owndir/x'));
  assert.deepEqual(getXattr(lookup(l.root, 'recreated')!, OPAQUE_XATTR), Buffer.from('y'));
  assert.equal(lookup(l.root, 'etc/.wh..wh.plnk'), undefined);
  assert.deepEqual(paths(l.root), ['/', '/etc', '/etc/passwd', '/opq', '/opq/kept', '/own', '/owndir', '/owndir/x', '/recreated']);
});

test('whiteouts below lower directories create implicit directories; elsewhere they are dropped', async () => {
  const lower = (await layerOf([{ path: 'usr/lib/a', content: 'a' }, { path: 'file', content: 'f' }])).root;
  const l = await layerOf([
    { path: 'usr/lib/.wh.a' },
    { path: 'nowhere/deep/.wh.x' },
    { path: 'file/.wh.x' }, // below a lower file (umoci emits these): ignored
    { path: 'nowhere2/.wh..wh..opq' },
  ], lower);
  assert.deepEqual(paths(l.root), ['/', '/usr', '/usr/lib', '/usr/lib/a']);
  assert.ok(l.implicit.has(lookup(l.root, 'usr')!) && l.implicit.has(lookup(l.root, 'usr/lib')!));
  const merged = mergeLayers([{ root: lower }, l]);
  assert.deepEqual(paths(merged), ['/', '/file', '/usr', '/usr/lib']);
});

test('hostile paths: ../ and absolute names are cleaned to stay inside the root', async () => {
  const l = await layerOf([
    { path: '../../../etc/passwd', content: 'evil1' },
    { path: '/abs/file', content: 'evil2' },
    { path: 'a/../../b', content: 'evil3' },
    { path: './x/./y//z', content: 'ok' },
  ]);
  assert.deepEqual(paths(l.root), ['/', '/abs', '/abs/file', '/b', '/etc', '/etc/passwd', '/x', '/x/y', '/x/y/z']);
});

test('hostile symlinks: a write through a symlink lands where it points, inside the image', async () => {
  const l = await layerOf([
    { path: 'escape', type: 'symlink', linkpath: '/etc' },
    { path: 'escape/passwd', content: 'through an absolute symlink' },
    { path: 'up', type: 'symlink', linkpath: '../../../../..' },
    { path: 'up/rootfile', content: 'through ..' },
    { path: 'rel', type: 'symlink', linkpath: 'etc/../var/./' },
    { path: 'rel/log', content: 'relative' },
  ]);
  assert.equal(lookup(l.root, 'etc/passwd')!.content!.toString(), 'through an absolute symlink');
  assert.equal(lookup(l.root, 'rootfile')!.content!.toString(), 'through ..');
  assert.equal(lookup(l.root, 'var/log')!.content!.toString(), 'relative');
  assert.equal(lookup(l.root, 'escape')!.target!.toString(), '/etc', 'the symlink itself is unchanged');
  // A symlink loop is an error, not a hang.
  await rejectsCode(layerOf([
    { path: 'a', type: 'symlink', linkpath: 'b' },
    { path: 'b', type: 'symlink', linkpath: 'a' },
    { path: 'a/x', content: 'loop' },
  ]), 'SYMLINK_LOOP');
});

test('a symlinked directory of a lower layer is followed (usrmerge: lib -> usr/lib)', async () => {
  const lower = (await layerOf([{ path: 'usr/lib/', type: 'dir' }, { path: 'lib', type: 'symlink', linkpath: 'usr/lib' }])).root;
  const l = await layerOf([{ path: 'lib/libnew.so', content: 'n' }], lower);
  assert.deepEqual(paths(l.root), ['/', '/usr', '/usr/lib', '/usr/lib/libnew.so']);
  const merged = mergeLayers([{ root: lower }, l]);
  assert.equal(lookup(merged, 'lib')!.target!.toString(), 'usr/lib');
  assert.ok(lookup(merged, 'usr/lib/libnew.so'));
});

test('hardlinks share one inode, also to files of lower layers; bad targets are errors', async () => {
  const l = await layerOf([
    { path: 'bin/', type: 'dir' },
    { path: 'bin/prog', content: 'p'.repeat(200), mode: 0o755 },
    { path: 'bin/alias', type: 'link', linkpath: './bin/prog' },
    { path: 'bin/alias2', type: 'link', linkpath: '/bin/alias' },
  ]);
  const prog = lookup(l.root, 'bin/prog');
  assert.equal(lookup(l.root, 'bin/alias'), prog);
  assert.equal(lookup(l.root, 'bin/alias2'), prog);
  const m = new Merger();
  m.apply(l);
  const l2 = await layerOf([{ path: 'sbin/prog', type: 'link', linkpath: 'bin/prog' }], m.tree);
  m.apply(l2);
  const merged = m.finish();
  assert.equal(lookup(merged, 'sbin/prog'), lookup(merged, 'bin/prog'));
  assert.equal(lookup(merged, 'bin/prog')!.nlink, 4);
  // Hardlink to something that is not there (outside the layer: cleaned, still missing).
  await rejectsCode(layerOf([{ path: 'x', type: 'link', linkpath: '../../../etc/shadow' }]), 'HARDLINK_TARGET_MISSING');
  await rejectsCode(layerOf([{ path: 'd/', type: 'dir' }, { path: 'x', type: 'link', linkpath: 'd' }]), 'HARDLINK_TO_DIRECTORY');
  await rejectsCode(layerOf([{ path: 'f', content: 'f' }, { path: '.wh.f' }, { path: 'x', type: 'link', linkpath: 'gone' }]), 'HARDLINK_TARGET_MISSING');
  await rejectsCode(layerOf([{ path: 'f', content: 'f' }, { path: 'f', type: 'link', linkpath: './f' }]), 'HARDLINK_SELF');
  // The same hardlink member twice is just a duplicate, not a self-link.
  const dup = await layerOf([{ path: 'f', content: 'f' }, { path: 'g', type: 'link', linkpath: 'f' }, { path: 'g', type: 'link', linkpath: 'f' }]);
  assert.equal(lookup(dup.root, 'g'), lookup(dup.root, 'f'));
});

test('duplicate members: the later one wins; a directory over a directory keeps its children', async () => {
  const l = await layerOf([
    { path: 'f', content: 'first' },
    { path: 'f', content: 'second' },
    { path: 'd/', type: 'dir', mode: 0o700 },
    { path: 'd/child', content: 'c' },
    { path: 'd/', type: 'dir', mode: 0o711 },
    { path: 'g/', type: 'dir' },
    { path: 'g/child', content: 'c' },
    { path: 'g', content: 'g is now a file' },
  ]);
  assert.equal(lookup(l.root, 'f')!.content!.toString(), 'second');
  assert.equal(lookup(l.root, 'd')!.mode & 0o7777, 0o711);
  assert.ok(lookup(l.root, 'd/child'));
  assert.equal(lookup(l.root, 'g')!.content!.toString(), 'g is now a file');
});

test('invalid members are typed errors', async () => {
  await rejectsCode(layerOf([{ path: './', type: 'symlink', linkpath: '/' }]), 'ROOT_NOT_DIRECTORY');
  await rejectsCode(layerOf([{ path: 'f', content: 'x' }, { path: 'f/child', content: 'y' }]), 'PARENT_NOT_DIRECTORY');
  await rejectsCode(layerOf([{ path: 'n'.repeat(256), content: 'x' }]), 'NAME_TOO_LONG');
  await rejectsCode(layerOf([{ path: 'empty', type: 'symlink', linkpath: '' }]), 'EMPTY_SYMLINK');
  await rejectsCode(layerOf([{ path: '.wh.' }]), 'BAD_WHITEOUT');
});

test('trusted.overlay.* xattrs from the tar are dropped, others kept byte for byte', async () => {
  const l = await layerOf([
    { path: 'd/', type: 'dir', xattrs: [['trusted.overlay.opaque', 'y'], ['trusted.overlay.redirect', '/x'], ['security.capability', Buffer.from([1, 0, 0, 2])]] },
  ]);
  const d = lookup(l.root, 'd')!;
  assert.deepEqual(d.xattrs.map((x) => x.key.toString()), ['security.capability']);
});
