/**
 * ObjectDir: objects land at DIR/xx/<62 hex> with the right content; present objects are not
 * rewritten; a wrong expected digest or size leaves nothing visible; reads can verify; the
 * directory is the same as C `mkcomposefs --digest-store` makes from the same files; fs-verity
 * enabling is probed once and never makes an add fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ObjectDir } from '../src/store/objects.js';
import { DigestMismatchError, StoreError } from '../src/store/errors.js';
import { fsverityDigest, objectPathFor, toHex } from '../src/verity/digest.js';
import { CfsError } from '../src/errors.js';
import { REFERENCE_BIN } from './helpers.js';

const root = mkdtempSync('/var/tmp/cfsdist-objects-');
test.after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): ObjectDir => new ObjectDir(join(root, `d${++n}`));

/** Every file under dir (relative paths), sorted. */
function files(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out.push(r);
    }
  };
  if (existsSync(dir)) walk('');
  return out.sort();
}

async function collect(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

test('addBuffer/addFile/addStream store content under its digest; present objects are not rewritten', async () => {
  const od = fresh();
  const a = randomBytes(10000);
  const r1 = await od.addBuffer(a);
  assert.deepEqual(r1, { digest: fsverityDigest(a), size: a.length, existed: false });
  assert.equal(od.path(r1.digest), join(od.dir, objectPathFor(r1.digest)));
  assert.deepEqual(readFileSync(od.path(r1.digest)), a);
  assert.equal(await od.has(r1.digest), true);

  // Second add: nothing written (inode unchanged), mtime refreshed.
  const ino = statSync(od.path(r1.digest)).ino;
  utimesSync(od.path(r1.digest), new Date(1e9), new Date(1e9));
  const r2 = await od.addBuffer(a);
  assert.equal(r2.existed, true);
  assert.equal(statSync(od.path(r1.digest)).ino, ino);
  assert.ok(statSync(od.path(r1.digest)).mtimeMs > Date.now() - 60_000, 'mtime refreshed');

  // Large file through the streaming path (> 1 MiB), then again: existed.
  const big = randomBytes((3 << 20) + 7);
  const bf = join(root, 'big');
  writeFileSync(bf, big);
  const r3 = await od.addFile(bf);
  assert.deepEqual(r3, { digest: fsverityDigest(big), size: big.length, existed: false });
  assert.deepEqual(readFileSync(od.path(r3.digest)), big);
  assert.equal((await od.addFile(bf)).existed, true);
  assert.equal((await od.addFile(bf, { expected: r3.digest })).existed, true);

  // Streams: Node Readable, async generator (strings too), with expected and size.
  const c = randomBytes(70000);
  const r4 = await od.addStream(Readable.from([c.subarray(0, 5), c.subarray(5, 40000), c.subarray(40000)]), { expected: fsverityDigest(c), size: c.length });
  assert.equal(r4.existed, false);
  assert.deepEqual(readFileSync(od.path(r4.digest)), c);
  async function* gen(): AsyncGenerator<string | Uint8Array> {
    yield 'hello ';
    yield new Uint8Array(Buffer.from('world\n'));
  }
  const r5 = await od.addStream(gen());
  assert.equal(toHex(r5.digest), toHex(fsverityDigest(Buffer.from('hello world\n'))));

  // A present object with expected given: the source is not read, a Node stream is destroyed.
  const src = Readable.from([c]);
  const r6 = await od.addStream(src, { expected: r4.digest });
  assert.equal(r6.existed, true);
  assert.equal(r6.size, c.length);
  assert.equal(src.destroyed, true);

  // Empty content is an object too (kernel empty digest).
  const r7 = await od.addBuffer(Buffer.alloc(0));
  assert.equal(statSync(od.path(r7.digest)).size, 0);

  // No temporary file left, nothing but objects in the directory.
  assert.deepEqual(await od.tempFiles(), []);
  for (const f of files(od.dir)) assert.match(f, /^[0-9a-f]{2}\/[0-9a-f]{62}$/);
  const scan = await od.scan();
  assert.equal(scan.objects.length, 5);
  assert.deepEqual(scan.strays, []);
});

test('wrong expected digest or size: typed error, nothing visible', async () => {
  const od = fresh();
  const data = randomBytes(50000);
  const other = fsverityDigest(Buffer.from('other'));
  await assert.rejects(od.addBuffer(data, { expected: other }), (e: unknown) => e instanceof DigestMismatchError && e instanceof CfsError && e.code === 'DIGEST_MISMATCH' && e.expected === toHex(other));
  await assert.rejects(od.addStream(Readable.from([data]), { expected: other }), DigestMismatchError);
  await assert.rejects(od.addStream(Readable.from([data]), { size: 3 }), (e: unknown) => e instanceof StoreError && e.code === 'SIZE_MISMATCH');
  const f = join(root, 'mismatch');
  writeFileSync(f, randomBytes(2 << 20));
  await assert.rejects(od.addFile(f, { expected: other }), DigestMismatchError);
  await assert.rejects(od.addFile(join(root, 'no-such-file')), (e: unknown) => e instanceof StoreError && e.message.includes('no-such-file'));
  // A stream that fails halfway.
  async function* failing(): AsyncGenerator<Uint8Array> {
    yield randomBytes(1000);
    throw new Error('network went away');
  }
  await assert.rejects(od.addStream(failing()), /network went away/);
  // A Node stream that fails before it is read (while the temporary file is being created).
  const early = new Readable({ read() {} });
  process.nextTick(() => early.destroy(new Error('open failed early')));
  await assert.rejects(od.addStream(early), /open failed early/);
  assert.equal(await od.has(fsverityDigest(data)), false);
  assert.deepEqual(files(od.dir), [], 'no object and no temporary file');
});

test('open/read with verify detect a corrupt object; missing objects are typed errors', async () => {
  const od = fresh();
  const data = randomBytes(3 << 20);
  const { digest } = await od.addBuffer(data);
  assert.deepEqual(await collect(await od.open(digest)), data);
  assert.deepEqual(await collect(await od.open(digest, { verify: true })), data);
  assert.deepEqual(await od.read(digest, { verify: true }), data);
  assert.equal(await od.verify(digest), true);

  // Flip one byte in place.
  const bad = Buffer.from(data);
  bad[2 << 20] ^= 1;
  writeFileSync(od.path(digest), bad);
  await assert.rejects(collect(await od.open(digest, { verify: true })), DigestMismatchError);
  await assert.rejects(od.read(digest, { verify: true }), DigestMismatchError);
  assert.deepEqual(await od.read(digest), bad, 'without verify the bytes are returned');
  assert.equal(await od.verify(digest), false);

  const missing = fsverityDigest(Buffer.from('missing'));
  await assert.rejects(od.open(missing), (e: unknown) => e instanceof StoreError && e.code === 'OBJECT_MISSING' && e.message.includes(toHex(missing)));
  await assert.rejects(od.read(missing), (e: unknown) => e instanceof StoreError && e.code === 'OBJECT_MISSING');
  assert.equal(await od.has(missing), false);
});

test('addFiles (worker threads): same objects as addFile, present ones not rewritten, errors named', async () => {
  const od = fresh();
  const dir = join(root, 'many');
  mkdirSync(dir);
  const paths: string[] = [];
  const datas: Buffer[] = [];
  for (let i = 0; i < 150; i++) {
    // some duplicates, one empty, a few over the 1 MiB whole-read limit
    const d = i % 50 === 7 ? randomBytes((1 << 20) + 333) : i % 10 === 3 ? datas[1] : randomBytes(i === 0 ? 0 : 1 + ((i * 7919) % 20000));
    datas.push(d);
    const p = join(dir, `f${i}`);
    writeFileSync(p, d);
    paths.push(p);
  }
  const r = await od.addFiles(paths);
  assert.equal(r.length, paths.length);
  r.forEach((x, i) => {
    assert.deepEqual(x.digest, fsverityDigest(datas[i]), paths[i]);
    assert.equal(x.size, datas[i].length);
    assert.deepEqual(readFileSync(od.path(x.digest)), datas[i]);
  });
  assert.equal(r[0].existed, false);
  const again = await od.addFiles(paths);
  assert.ok(again.every((x) => x.existed));
  assert.deepEqual(again.map((x) => x.digest), r.map((x) => x.digest));
  assert.deepEqual(await od.tempFiles(), []);
  assert.deepEqual((await od.scan()).strays, []);

  const bad = [...paths.slice(0, 40), join(dir, 'missing'), dir];
  await assert.rejects(od.addFiles(bad), (e: unknown) => e instanceof StoreError && e.code === 'READ_FAILED' && e.message.includes('missing'));
  assert.deepEqual(await od.tempFiles(), []);
  await od.sync();
});

test('scan reports files that are not in the layout', async () => {
  const od = fresh();
  const { digest } = await od.addBuffer(Buffer.from('x'));
  mkdirSync(join(od.dir, 'zz'));
  writeFileSync(join(od.dir, 'zz', 'a'), '');
  writeFileSync(join(od.dir, toHex(digest).slice(0, 2), 'short'), '');
  writeFileSync(join(od.dir, 'README'), '');
  const s = await od.scan();
  assert.deepEqual(s.objects.map((o) => o.hex), [toHex(digest)]);
  assert.deepEqual(s.strays.map((p) => p.slice(od.dir.length + 1)).sort(), ['README', `${toHex(digest).slice(0, 2)}/short`, 'zz']);
});

const MKCOMPOSEFS = join(REFERENCE_BIN, 'mkcomposefs');

test('same directory as C mkcomposefs --digest-store builds from the same files', { skip: existsSync(MKCOMPOSEFS) ? false : `${MKCOMPOSEFS} not found` }, async () => {
  const src = join(root, 'mk-src');
  mkdirSync(join(src, 'sub'), { recursive: true });
  const contents = [randomBytes(65), randomBytes(4096), randomBytes(100000), randomBytes(1 << 21)];
  const paths = contents.map((c, i) => {
    const p = join(src, i % 2 ? 'sub' : '', `f${i}`);
    writeFileSync(p, c);
    return p;
  });
  writeFileSync(join(src, 'dup'), contents[2]); // same content twice: one object
  paths.push(join(src, 'dup'));
  const theirs = join(root, 'mk-theirs');
  mkdirSync(theirs);
  execFileSync(MKCOMPOSEFS, [`--digest-store=${theirs}`, src, join(root, 'mk.img')]);
  const od = new ObjectDir(join(root, 'mk-ours'));
  for (const p of paths) await od.addFile(p);
  assert.deepEqual(files(od.dir), files(theirs));
  for (const f of files(theirs)) assert.deepEqual(readFileSync(join(od.dir, f)), readFileSync(join(theirs, f)), f);
});

test('fs-verity: probed once, adds never fail, status reported', async () => {
  const od = fresh();
  const r = await od.addBuffer(randomBytes(5000));
  assert.equal(typeof od.verity.supported, 'boolean');
  if (od.verity.supported) {
    // Enabled: the kernel's measurement must be our digest.
    const m = execFileSync('fsverity', ['measure', od.path(r.digest)]).toString();
    assert.ok(m.includes(toHex(r.digest)));
  } else {
    assert.match(od.verity.message, /fs-verity is not available/);
    if (spawnSync('fsverity', ['--version']).status === 0) assert.match(od.verity.message, /not supported|Inappropriate/i);
  }
  const before = od.verity.message;
  await od.addBuffer(randomBytes(100));
  assert.equal(od.verity.message, before, 'probed once');
  const off = new ObjectDir(join(root, 'noverity'), { enableVerity: false });
  await off.addBuffer(Buffer.from('abc'));
  assert.equal(off.verity.supported, false);
});
