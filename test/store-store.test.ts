/**
 * Store: layout, images with their object lists, tags (grammar, nesting, atomic replace),
 * reference resolution, and the `cfsdist images` command.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { StoreError } from '../src/store/errors.js';
import { parseRef } from '../src/store/names.js';
import { fsverityDigest, toHex } from '../src/verity/digest.js';
import { CLI } from './helpers.js';

const root = mkdtempSync('/var/tmp/cfsdist-store-');
test.after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): Promise<Store> => Store.open(join(root, `s${++n}`), { create: true });
const code = (c: string) => (e: unknown) => e instanceof StoreError && e.code === c;

test('open: missing store is an error unless create; create makes the layout', async () => {
  const dir = join(root, 'new');
  await assert.rejects(Store.open(dir), code('STORE_MISSING'));
  const s = await Store.open(dir, { create: true });
  for (const d of ['objects', 'images', 'tags', 'tmp', 'quarantine', 'lock/leases', 'lock/gc']) assert.ok(existsSync(join(dir, d)), d);
  assert.equal(s.objects.dir, join(dir, 'objects'));
  await Store.open(dir); // now it exists
});

test('addImage: by fs-verity digest, with a sorted unique object list; bytes or file; idempotent', async () => {
  const s = await fresh();
  const objs = [randomBytes(100), randomBytes(5000), randomBytes(200)];
  const digests = [];
  for (const o of objs) digests.push((await s.objects.addBuffer(o)).digest);
  const img = randomBytes(20000);
  const d = await s.addImage(img, [digests[1], digests[0], digests[2], digests[0]]);
  assert.deepEqual(d, fsverityDigest(img));
  assert.equal(s.imagePath(d), join(s.dir, 'images', toHex(d)));
  assert.deepEqual(readFileSync(s.imagePath(d)), img);
  assert.equal(await s.hasImage(d), true);
  const sorted = [...digests].sort(Buffer.compare);
  assert.deepEqual(await s.imageObjects(d), sorted);
  assert.equal(readFileSync(s.imagePath(d) + '.objects', 'latin1'), sorted.map((x) => toHex(x) + '\n').join(''));

  const f = join(root, 'img-file');
  writeFileSync(f, img);
  assert.deepEqual(await s.addImage(f, digests), d);
  const img2 = randomBytes(3 << 20);
  writeFileSync(f, img2);
  const d2 = await s.addImage(f, []);
  assert.deepEqual(d2, fsverityDigest(img2));
  assert.deepEqual(await s.imageObjects(d2), []);
  assert.deepEqual(await s.listImages(), [d, d2].sort(Buffer.compare));
  assert.deepEqual(readdirSync(s.tmpDir).filter((x) => !x.includes('probe')), []);
  await assert.rejects(s.imageObjects(fsverityDigest(Buffer.from('nope'))), code('IMAGE_MISSING'));
  await assert.rejects(s.addImage(join(root, 'no-such-image'), []), (e: unknown) => e instanceof StoreError && e.message.includes('no-such-image'));
});

test('addVerifiedImageFile: moves a verified image file in (no copy); a present image keeps its own, the file goes', async () => {
  const s = await fresh();
  const obj = (await s.objects.addBuffer(randomBytes(3000))).digest;
  const img = randomBytes(70000);
  const d = fsverityDigest(img);
  const f = join(s.tmpDir, 'verified-image');
  writeFileSync(f, img);
  await s.addVerifiedImageFile(f, d, [obj]);
  assert.ok(!existsSync(f), 'the file was moved');
  assert.deepEqual(readFileSync(s.imagePath(d)), img);
  assert.deepEqual(await s.imageObjects(d), [obj]);
  writeFileSync(f, img);
  await s.addVerifiedImageFile(f, d, [obj]);
  assert.ok(!existsSync(f), 'a second copy is deleted');
  assert.deepEqual(await s.listImages(), [d]);
});

test('tags: set/get/replace/delete/list; nested names beside tags; image must exist', async () => {
  const s = await fresh();
  const a = await s.addImage(Buffer.from('image a'), []);
  const b = await s.addImage(Buffer.from('image b'), []);
  await s.setTag('library/debian', 'bookworm', a);
  await s.setTag('library/debian', 'latest', a);
  await s.setTag('library', 'x', b); // a name that is a prefix of another name
  await s.setTag('library/debian/slim', 'bookworm', b);
  assert.deepEqual(await s.getTag('library/debian', 'bookworm'), a);
  await s.setTag('library/debian', 'bookworm', b); // replace
  assert.deepEqual(await s.getTag('library/debian', 'bookworm'), b);
  assert.equal(await s.getTag('library/debian', 'nope'), undefined);
  assert.equal(await s.getTag('nothing/here', 'x'), undefined);
  assert.deepEqual(
    (await s.listTags()).map((t) => `${t.name}:${t.tag}=${toHex(t.image).slice(0, 6)}`),
    ['library:x=' + toHex(b).slice(0, 6), 'library/debian:bookworm=' + toHex(b).slice(0, 6), 'library/debian:latest=' + toHex(a).slice(0, 6), 'library/debian/slim:bookworm=' + toHex(b).slice(0, 6)],
  );
  assert.equal(readFileSync(join(s.dir, 'tags', 'library', 'debian', ':latest'), 'latin1'), toHex(a) + '\n');
  assert.equal(await s.deleteTag('library/debian', 'latest'), true);
  assert.equal(await s.deleteTag('library/debian', 'latest'), false);
  await assert.rejects(s.setTag('x', 'y', fsverityDigest(Buffer.from('absent'))), code('IMAGE_MISSING'));
  assert.deepEqual(readdirSync(s.tmpDir).filter((x) => !x.includes('probe')), []);
});

test('names and tags: OCI-like grammar, no path traversal', async () => {
  const s = await fresh();
  const img = await s.addImage(Buffer.from('i'), []);
  for (const good of ['a', 'library/debian', 'a.b', 'a_b', 'a__b', 'a---b', 'x/y/z0', 'r3g.example/ns/img']) await s.setTag(good, 'v1', img);
  for (const bad of ['', '..', '../x', 'x/../y', 'x/./y', '/x', 'x/', 'x//y', 'A', 'a:b', 'a b', '.a', 'a.', 'a_', 'a___b', 'a/.hidden', 'x'.repeat(256)]) {
    await assert.rejects(s.setTag(bad, 'v1', img), code('BAD_NAME'), JSON.stringify(bad));
    await assert.rejects(s.getTag(bad, 'v1'), code('BAD_NAME'), JSON.stringify(bad));
  }
  for (const good of ['latest', 'V1.0', '_x', '0', 'a-b_c.d', 't'.repeat(128)]) await s.setTag('a', good, img);
  for (const bad of ['', '.x', '-x', 'a/b', '..', 'a:b', 't'.repeat(129), 'a b']) await assert.rejects(s.setTag('a', bad, img), code('BAD_TAG'), JSON.stringify(bad));
  assert.deepEqual(parseRef('library/debian:bookworm'), { name: 'library/debian', tag: 'bookworm' });
  assert.deepEqual(parseRef('library/debian'), { name: 'library/debian', tag: 'latest' });
  assert.throws(() => parseRef('Library:x'), code('BAD_NAME'));
});

test('resolveImage: NAME:TAG, NAME (latest), hex, sha256:hex; typed errors', async () => {
  const s = await fresh();
  const img = await s.addImage(Buffer.from('resolve me'), []);
  await s.setTag('app', 'latest', img);
  await s.setTag('app', 'v2', img);
  assert.deepEqual(await s.resolveImage('app:v2'), img);
  assert.deepEqual(await s.resolveImage('app'), img);
  assert.deepEqual(await s.resolveImage(toHex(img)), img);
  assert.deepEqual(await s.resolveImage('sha256:' + toHex(img)), img);
  await assert.rejects(s.resolveImage('app:v3'), code('TAG_MISSING'));
  await assert.rejects(s.resolveImage(toHex(fsverityDigest(Buffer.from('z')))), code('IMAGE_MISSING'));
  await assert.rejects(s.resolveImage('../etc:passwd'), code('BAD_NAME'));
});

test('cfsdist images lists NAME:TAG  DIGEST lines (and --json)', async () => {
  const s = await fresh();
  const o = await s.objects.addBuffer(randomBytes(300));
  const img = await s.addImage(Buffer.from('cli image'), [o.digest]);
  await s.setTag('demo/app', 'v1', img);
  const text = execFileSync(process.execPath, [CLI, '--store', s.dir, 'images']).toString();
  assert.equal(text, `demo/app:v1  ${toHex(img)}  1 objects\n`);
  const json = JSON.parse(execFileSync(process.execPath, [CLI, 'images', '--store', s.dir, '--json']).toString());
  // An image added without a config (as from dir:) has null config/platform/manifest.
  assert.deepEqual(json, [{ name: 'demo/app', tag: 'v1', image: toHex(img), objects: 1, config: null, platform: null, manifest: null }]);
});
