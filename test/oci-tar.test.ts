import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, mkdirSync, symlinkSync, linkSync, rmSync, lstatSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTar, readBody, type TarEntry } from '../src/oci/tar.js';
import { TarError } from '../src/oci/errors.js';
import { CfsError } from '../src/errors.js';
import { tarball, member, chunked, header, fixChecksum, paxRecords } from './fixtures/oci/tar-writer.js';
import { rng } from './random-tree.js';

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

interface Got extends Omit<TarEntry, 'body'> {
  content: Buffer;
}

async function readAll(src: AsyncIterable<Buffer>, opts = {}): Promise<Got[]> {
  const out: Got[] = [];
  for await (const e of readTar(src, opts)) {
    const { body: _b, ...rest } = e;
    out.push({ ...rest, content: await readBody(e) });
  }
  return out;
}

async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof TarError, `expected TarError, got ${String(err)}`);
    assert.equal((err as TarError).code, code, (err as Error).message);
    return true;
  });
}

test('ustar members of every type are read with their metadata, whatever the chunking', async () => {
  const tar = tarball([
    { path: 'dir/', type: 'dir', mode: 0o1755, uid: 1000, gid: 100, mtime: 1234567890 },
    { path: 'dir/file', content: 'hello world\n', mode: 0o4755 },
    { path: 'dir/empty' },
    { path: 'dir/hard', type: 'link', linkpath: 'dir/file' },
    { path: 'dir/sym', type: 'symlink', linkpath: '../target with space' },
    { path: 'dev/null', type: 'chr', devmajor: 1, devminor: 3, mode: 0o666 },
    { path: 'dev/loop0', type: 'blk', devmajor: 7, devminor: 0 },
    { path: 'fifo', type: 'fifo', mode: 0o600 },
  ]);
  for (const src of [once(tar), chunked(tar), chunked(tar, [1]), chunked(tar, [3, 1000])]) {
    const got = await readAll(src);
    assert.deepEqual(got.map((e) => [e.path.toString(), e.type]), [
      ['dir/', 'dir'], ['dir/file', 'file'], ['dir/empty', 'file'], ['dir/hard', 'link'], ['dir/sym', 'symlink'],
      ['dev/null', 'chr'], ['dev/loop0', 'blk'], ['fifo', 'fifo'],
    ]);
    assert.equal(got[0]!.mode, 0o1755);
    assert.equal(got[0]!.uid, 1000);
    assert.equal(got[0]!.gid, 100);
    assert.equal(got[0]!.mtimeSec, 1234567890);
    assert.equal(got[1]!.content.toString(), 'hello world\n');
    assert.equal(got[1]!.size, 12);
    assert.equal(got[1]!.mode, 0o4755);
    assert.equal(got[2]!.size, 0);
    assert.equal(got[3]!.linkpath.toString(), 'dir/file');
    assert.equal(got[4]!.linkpath.toString(), '../target with space');
    assert.deepEqual([got[5]!.devmajor, got[5]!.devminor], [1, 3]);
    assert.deepEqual([got[6]!.devmajor, got[6]!.devminor], [7, 0]);
  }
});

test('the ustar prefix field is joined to the name', async () => {
  const h = header({ name: Buffer.from('leaf.txt'), prefix: Buffer.from('a/very/deep/prefix'), mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 1, flag: '0' });
  const got = await readAll(once(Buffer.concat([h, Buffer.alloc(1024)])));
  assert.equal(got[0]!.path.toString(), 'a/very/deep/prefix/leaf.txt');
});

test('GNU L/K long names and links, and PAX path/linkpath, override the header fields', async () => {
  const long = 'd/' + 'x'.repeat(150) + '/' + 'y'.repeat(200);
  const longTarget = '/' + 'z'.repeat(300);
  const got = await readAll(chunked(tarball([
    { path: long, content: 'gnu', gnuLong: true },
    { path: long + '2', type: 'symlink', linkpath: longTarget, gnuLong: true },
    { path: long + '3', content: 'pax' },
    { path: long + '4', type: 'link', linkpath: longTarget },
  ])));
  assert.equal(got[0]!.path.toString(), long);
  assert.equal(got[0]!.content.toString(), 'gnu');
  assert.equal(got[1]!.linkpath.toString(), longTarget);
  assert.equal(got[2]!.path.toString(), long + '3');
  assert.equal(got[3]!.linkpath.toString(), longTarget);
});

test('PAX size, uid, gid and fractional / negative mtimes are honoured', async () => {
  const got = await readAll(once(tarball([
    { path: 'a', content: 'x', pax: [['uid', '4000000000'], ['gid', '3000000000'], ['uname', 'ünï']], paxMtime: '1700000000.123456789' },
    { path: 'b', paxMtime: '1700000000.5' },
    { path: 'c', paxMtime: '-1.25' },
    { path: 'd', paxMtime: '42' },
    { path: 'e', paxMtime: '1.1234567899' },
  ])));
  assert.equal(got[0]!.uid, 4000000000);
  assert.equal(got[0]!.gid, 3000000000);
  assert.equal(got[0]!.uname, 'ünï');
  assert.deepEqual([got[0]!.mtimeSec, got[0]!.mtimeNsec], [1700000000, 123456789]);
  assert.deepEqual([got[1]!.mtimeSec, got[1]!.mtimeNsec], [1700000000, 500000000]);
  assert.deepEqual([got[2]!.mtimeSec, got[2]!.mtimeNsec], [-2, 750000000]);
  assert.deepEqual([got[3]!.mtimeSec, got[3]!.mtimeNsec], [42, 0]);
  assert.deepEqual([got[4]!.mtimeSec, got[4]!.mtimeNsec], [1, 123456789]);
  // PAX size wins over the header's size field.
  const body = Buffer.alloc(700, 7);
  const d = paxRecords([['size', '700']]);
  const tar = Buffer.concat([
    header({ name: Buffer.from('PaxHeader'), mode: 0o644, uid: 0, gid: 0, size: d.length, mtime: 0, flag: 'x' }), d, Buffer.alloc(512 - d.length),
    header({ name: Buffer.from('big'), mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0, flag: '0' }), body, Buffer.alloc(1024 - 700),
    Buffer.alloc(1024),
  ]);
  const g2 = await readAll(chunked(tar));
  assert.equal(g2[0]!.size, 700);
  assert.deepEqual(g2[0]!.content, body);
});

test('binary xattr values (every byte value, NUL and newline included) survive SCHILY and LIBARCHIVE records', async () => {
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const cap = Buffer.from('0100000200000000000000000000000000000000', 'hex');
  const weirdName = Buffer.from([0x75, 0x73, 0x65, 0x72, 0x2e, 0xff, 0x3d, 0x25, 0x20]); // "user.\xff=% "
  const got = await readAll(chunked(tarball([
    { path: 'f', content: 'x', xattrs: [['user.all', all], ['security.capability', cap], ['user.empty', '']] },
    { path: 'g', libarchiveXattrs: [[weirdName, all], ['user.b', 'plain']] },
    { path: 'h', xattrs: [['user.dup', 'one']], libarchiveXattrs: [['user.dup', 'two']] },
  ])));
  assert.deepEqual(got[0]!.xattrs.map((x) => [x.key.toString(), x.value]), [
    ['user.all', all], ['security.capability', cap], ['user.empty', Buffer.alloc(0)],
  ]);
  assert.deepEqual(got[1]!.xattrs.map((x) => [x.key, x.value]), [[weirdName, all], [Buffer.from('user.b'), Buffer.from('plain')]]);
  assert.deepEqual(got[2]!.xattrs.map((x) => [x.key.toString(), x.value.toString()]), [['user.dup', 'two']]);
});

test('PAX global headers give defaults to later members', async () => {
  const d = paxRecords([['uid', '77'], ['SCHILY.xattr.user.g', 'global'], ['comment', 'git archive']]);
  const tar = Buffer.concat([
    header({ name: Buffer.from('pax_global_header'), mode: 0o644, uid: 0, gid: 0, size: d.length, mtime: 0, flag: 'g' }), d, Buffer.alloc(512 - d.length),
    member({ path: 'a', content: 'A' }),
    member({ path: 'b', xattrs: [['user.g', 'local']], pax: [['uid', '5']] }),
    Buffer.alloc(1024),
  ]);
  const got = await readAll(once(tar));
  assert.deepEqual(got.map((e) => e.path.toString()), ['a', 'b']);
  assert.equal(got[0]!.uid, 77);
  assert.equal(got[0]!.xattrs[0]!.value.toString(), 'global');
  assert.equal(got[1]!.uid, 5);
  assert.equal(got[1]!.xattrs[0]!.value.toString(), 'local');
});

test('base-256 numeric fields are decoded', async () => {
  const got = await readAll(once(tarball([{ path: 'big-uid', uid: 2 ** 40, content: 'abc', base256: true }])));
  assert.equal(got[0]!.uid, 2 ** 40);
  assert.equal(got[0]!.size, 3);
  assert.equal(got[0]!.content.toString(), 'abc');
});

test('a v7 header and a GNU-format header are read', async () => {
  const got = await readAll(once(tarball([
    { path: 'old/', format: 'v7', type: '\0' },
    { path: 'old/file', format: 'v7', type: '\0', content: 'v7' },
    { path: 'gnu', format: 'gnu', content: 'g' },
  ])));
  assert.deepEqual(got.map((e) => [e.path.toString(), e.type]), [['old/', 'dir'], ['old/file', 'file'], ['gnu', 'file']]);
});

test('unread bodies are skipped, and a body read after moving on is an error', async () => {
  const tar = tarball([
    { path: 'a', content: Buffer.alloc(5000, 1) },
    { path: 'b', content: Buffer.alloc(3, 2) },
  ]);
  const names: string[] = [];
  let stale: TarEntry | undefined;
  for await (const e of readTar(chunked(tar))) {
    names.push(e.path.toString());
    if (!stale) {
      // Read only a part of the first body.
      for await (const _c of e.body) break;
      stale = e;
    }
  }
  assert.deepEqual(names, ['a', 'b']);
  // The generator is finished; iterating a stale body must not yield data silently.
  const gen = readTar(once(tar));
  const first = (await gen.next()).value as TarEntry;
  await gen.next();
  await assert.rejects((async () => {
    for await (const _c of first.body) { /* nothing */ }
  })(), (err: unknown) => err instanceof TarError && err.code === 'TAR_BODY_STALE');
  await gen.return(undefined);
});

test('a checksum mismatch is a TAR_CHECKSUM error naming the offset', async () => {
  const tar = tarball([{ path: 'a', content: 'x' }, { path: 'b', content: 'y' }]);
  tar[1024 + 10] ^= 0x01; // second member's name, checksum not fixed
  await rejectsCode(readAll(once(tar)), 'TAR_CHECKSUM');
  await assert.rejects(readAll(once(tar)), /tar offset 1024/);
});

test('truncation anywhere is a TAR_TRUNCATED error', async () => {
  const tar = tarball([{ path: 'a', content: Buffer.alloc(1000, 1) }, { path: 'b', content: 'y' }]);
  // Inside the first header, inside the body, inside the padding, between members, before the end blocks.
  for (const cut of [100, 700, 1500, 1536, 2560]) {
    await rejectsCode(readAll(once(tar.subarray(0, cut))), 'TAR_TRUNCATED');
  }
  // The lenient mode accepts a missing end-of-archive marker at a member boundary.
  const got = await readAll(once(tar.subarray(0, 2560)), { requireEnd: false });
  assert.equal(got.length, 2);
  // An empty stream is not an archive.
  await rejectsCode(readAll(once(Buffer.alloc(0))), 'TAR_TRUNCATED');
});

test('an absurd PAX header size is refused before anything is buffered', async () => {
  const h = header({ name: Buffer.from('PaxHeader'), mode: 0o644, uid: 0, gid: 0, size: 0o77777777777, mtime: 0, flag: 'x' });
  await rejectsCode(readAll(once(Buffer.concat([h, Buffer.alloc(1024)]))), 'TAR_HEADER_TOO_LARGE');
  const l = header({ name: Buffer.from('././@LongLink'), mode: 0, uid: 0, gid: 0, size: 2 ** 30, mtime: 0, flag: 'L', format: 'gnu' });
  await rejectsCode(readAll(once(Buffer.concat([l, Buffer.alloc(1024)]))), 'TAR_HEADER_TOO_LARGE');
  // A member claiming 8 GiB of content in a tiny stream is a truncation, found when read.
  const big = header({ name: Buffer.from('big'), mode: 0o644, uid: 0, gid: 0, size: 2 ** 33, mtime: 0, flag: '0', base256: true });
  let streamed = 0;
  await rejectsCode((async () => {
    for await (const e of readTar(once(Buffer.concat([big, Buffer.alloc(4096)])))) for await (const c of e.body) streamed += c.length;
  })(), 'TAR_TRUNCATED');
  assert.equal(streamed, 4096);
  // Skipping that body instead of reading it is a truncation as well.
  await rejectsCode((async () => {
    for await (const _e of readTar(once(Buffer.concat([big, Buffer.alloc(4096)])))) { /* skip */ }
  })(), 'TAR_TRUNCATED');
});

test('malformed PAX records, octal fields and unsupported types are typed errors', async () => {
  const bad = (recs: Buffer): Buffer => Buffer.concat([
    header({ name: Buffer.from('PaxHeader'), mode: 0o644, uid: 0, gid: 0, size: recs.length, mtime: 0, flag: 'x' }), recs, Buffer.alloc(512 - recs.length),
    member({ path: 'a' }), Buffer.alloc(1024),
  ]);
  await rejectsCode(readAll(once(bad(Buffer.from('99 path=a\n')))), 'TAR_PAX');
  await rejectsCode(readAll(once(bad(Buffer.from('12 path=ab\r')))), 'TAR_PAX');
  await rejectsCode(readAll(once(bad(Buffer.from('x path=a\n')))), 'TAR_PAX');
  await rejectsCode(readAll(once(bad(paxRecords([['mtime', '12abc']])))), 'TAR_PAX');
  await rejectsCode(readAll(once(bad(paxRecords([['size', '-5']])))), 'TAR_PAX');
  await rejectsCode(readAll(once(bad(paxRecords([['GNU.sparse.major', '1']])))), 'TAR_UNSUPPORTED');
  const h = header({ name: Buffer.from('a'), mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0, flag: '0' });
  h.write('9', 108, 'latin1');
  await rejectsCode(readAll(once(Buffer.concat([fixChecksum(h), Buffer.alloc(1024)]))), 'TAR_BAD_HEADER');
  await rejectsCode(readAll(once(tarball([{ path: 'sparse', type: 'S' }]))), 'TAR_UNSUPPORTED');
  await rejectsCode(readAll(once(tarball([{ path: 'weird', type: 'Q' }]))), 'TAR_UNSUPPORTED');
});

test('trailing bytes after the end-of-archive blocks are drained, not parsed', async () => {
  const tar = Buffer.concat([tarball([{ path: 'a', content: 'x' }]), Buffer.from('junk that is not a header')]);
  let seen = 0;
  const src = (async function* () {
    for await (const c of chunked(tar)) {
      seen += c.length;
      yield c;
    }
  })();
  const got = await readAll(src);
  assert.equal(got.length, 1);
  assert.equal(seen, tar.length);
});

test('GNU tar --xattrs --format=posix archives of a real tree read back exactly', { skip: process.getuid?.() !== 0 ? 'needs root for trusted.* xattrs and mknod' : undefined }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-tar-'));
  try {
    const root = join(dir, 'root');
    mkdirSync(join(root, 'sub', 'x'.repeat(120)), { recursive: true });
    const long = join('sub', 'x'.repeat(120), 'y'.repeat(150));
    writeFileSync(join(root, long), 'long name content');
    writeFileSync(join(root, 'sub', 'file'), Buffer.alloc(100_000, 3));
    linkSync(join(root, 'sub', 'file'), join(root, 'hard'));
    symlinkSync('sub/file', join(root, 'sym'));
    execFileSync('mknod', [join(root, 'null'), 'c', '1', '3']);
    execFileSync('mkfifo', [join(root, 'fifo')]);
    // Binary xattr values, set as hex.
    execFileSync('setfattr', ['-n', 'user.bin', '-v', '0x00ff0a3d00', join(root, 'sub', 'file')]);
    execFileSync('setfattr', ['-n', 'trusted.t', '-v', '0x0102', join(root, 'sub')]);
    const tarFile = join(dir, 'a.tar');
    execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--format=posix', '-C', root, '-cf', tarFile, '.']);
    const got = await readAll(chunked(readFileSync(tarFile)));
    const by = new Map(got.map((e) => [e.path.toString().replace(/^\.\//, '').replace(/\/$/, ''), e]));
    assert.equal(by.get(long)!.content.toString(), 'long name content');
    const pair = [by.get('hard')!, by.get('sub/file')!];
    const links = pair.filter((e) => e.type === 'link');
    assert.equal(links.length, 1, 'one of the two names is archived as a hardlink');
    assert.ok(['hard', 'sub/file'].includes(links[0]!.linkpath.toString().replace(/^\.\//, '')));
    const file = pair.find((e) => e.type === 'file')!;
    assert.equal(file.content.length, 100_000);
    assert.deepEqual(file.xattrs.find((x) => x.key.toString() === 'user.bin')?.value, Buffer.from('00ff0a3d00', 'hex'));
    assert.deepEqual(by.get('sub')!.xattrs.find((x) => x.key.toString() === 'trusted.t')?.value, Buffer.from('0102', 'hex'));
    assert.equal(by.get('sym')!.linkpath.toString(), 'sub/file');
    assert.deepEqual([by.get('null')!.type, by.get('null')!.devmajor, by.get('null')!.devminor], ['chr', 1, 3]);
    assert.equal(by.get('fifo')!.type, 'fifo');
    const st = lstatSync(join(root, 'sub', 'file'));
    assert.equal(file.mode, st.mode & 0o7777);
    assert.equal(file.mtimeSec, Math.floor(st.mtimeMs / 1000));
    // GNU format: long names become L/K members.
    execFileSync('tar', ['--format=gnu', '-C', root, '-cf', tarFile, '.']);
    const gnu = await readAll(chunked(readFileSync(tarFile), [4096]));
    assert.ok(gnu.some((e) => e.path.toString() === './' + long && e.content.toString() === 'long name content'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});


test('fuzz: 5,000 mutated archives each give entries or a typed error, never a crash or hang', async () => {
  const base = tarball([
    { path: 'dir/', type: 'dir' },
    { path: 'dir/file', content: Buffer.alloc(1500, 0x41), xattrs: [['user.a', Buffer.from([0, 1, 2])]], paxMtime: '1.5' },
    { path: 'dir/' + 'l'.repeat(130), content: 'long', gnuLong: true },
    { path: 'dir/link', type: 'link', linkpath: 'dir/file' },
    { path: 'dir/sym', type: 'symlink', linkpath: 'file' },
    { path: 'dev', type: 'chr', devmajor: 1, devminor: 5 },
    { path: 'x', libarchiveXattrs: [['user.q', 'v']] },
  ]);
  const rand = rng(12345);
  let ok = 0;
  let typed = 0;
  const started = Date.now();
  for (let i = 0; i < 5000; i++) {
    const buf = Buffer.from(base);
    const kind = i % 5;
    const n = 1 + Math.floor(rand() * 8);
    let data = buf;
    if (kind === 0 || kind === 1) {
      // Random byte flips; in kind 1 the checksums are repaired so the mutation reaches the parser.
      for (let k = 0; k < n; k++) buf[Math.floor(rand() * buf.length)] = Math.floor(rand() * 256);
      if (kind === 1) for (let off = 0; off + 512 <= buf.length; off += 512) if (buf[off + 257] === 0x75) fixChecksum(buf.subarray(off, off + 512));
    } else if (kind === 2) {
      data = buf.subarray(0, Math.floor(rand() * buf.length));
    } else if (kind === 3) {
      // Numeric fields of a header: set to random digits / high bytes, checksum fixed.
      const off = 512 * Math.floor(rand() * (buf.length / 512));
      const field = [100, 108, 116, 124, 136, 329, 337][Math.floor(rand() * 7)]!;
      for (let k = 0; k < 8; k++) buf[off + field + k] = rand() < 0.5 ? 0x30 + Math.floor(rand() * 10) : Math.floor(rand() * 256);
      fixChecksum(buf.subarray(off, off + 512));
    } else {
      // Splice: duplicate or drop a random range.
      const a = Math.floor(rand() * buf.length);
      const b2 = Math.min(buf.length, a + Math.floor(rand() * 3000));
      data = rand() < 0.5 ? Buffer.concat([buf.subarray(0, b2), buf.subarray(a)]) : Buffer.concat([buf.subarray(0, a), buf.subarray(b2)]);
    }
    try {
      for await (const e of readTar(chunked(data, [1 + Math.floor(rand() * 2000)]))) {
        if (rand() < 0.7) for await (const _c of e.body) { /* consume */ }
      }
      ok++;
    } catch (err) {
      assert.ok(err instanceof CfsError, `case ${i}: untyped error ${String(err)}`);
      assert.ok(err.message.length > 0);
      typed++;
    }
  }
  assert.equal(ok + typed, 5000);
  assert.ok(typed > 1000 && ok > 100, `both outcomes must occur (ok ${ok}, typed ${typed})`);
  assert.ok(Date.now() - started < 30_000, 'fuzz must not hang');
});
