/**
 * The distribution server as a real process on 127.0.0.1: read API (tags, statements, images
 * and objects with ETag/immutable caching, HEAD, Range 206/416, If-None-Match 304, gzip/zstd
 * encodings), the batch query and the pack format, and the write API behind a bearer token
 * (401 without, 403 wrong; nothing stored), with digest checks on every upload.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { Store } from '../src/store/store.js';
import { fsverityDigest, toHex } from '../src/verity/digest.js';
import { decodeBitmap, readPack } from '../src/server/protocol.js';
import { cleanup, makeImageFamily, makeKey, signTag, startServe } from './pull-fixtures.js';
import type { ImageFamily, ServeProcess } from './pull-fixtures.js';
import { toolMissing } from './helpers.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

let base = '';
function call(method: string, path: string, opts: { headers?: Record<string, string>; body?: Buffer } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(base + path, { method, headers: opts.headers ?? {}, timeout: 10_000 }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.on('error', (e) => reject(new Error(`${method} ${path} ${JSON.stringify(opts.headers ?? {})} ${opts.body?.length}: ${e.message}`)));
    req.end(opts.body);
  });
}

/** One buffer as an async stream. */
async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

const haveZstd = spawnSync('zstd', ['--version']).status === 0;
let dir = '';
let fam: ImageFamily;
let srv: ServeProcess;
const TOKEN = 'secret-token-' + randomBytes(8).toString('hex');

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-server-'));
  fam = await makeImageFamily(join(dir, 'store'), { files: 60, large: [1500 * 1024] });
  const k = await makeKey(join(dir, 'keys'));
  await signTag(fam.storeDir, fam.name, 'v1', k.key);
  writeFileSync(join(dir, 'token'), TOKEN + '\n');
  srv = await startServe(fam.storeDir, ['--token-file', join(dir, 'token')]);
  base = srv.url;
});

after(async () => {
  await srv?.stop();
  cleanup(dir, fam?.root ?? '');
});

test('tags and statements: signed flag, DSSE media type, 404 for an unsigned tag', async () => {
  const t = await call('GET', '/v1/tags');
  assert.equal(t.status, 200);
  const tags = JSON.parse(t.body.toString()).tags as { name: string; tag: string; image: string; signed: boolean }[];
  assert.deepEqual(
    tags.map((x) => [x.name, x.tag, x.image, x.signed]),
    [
      [fam.name, 'v1', toHex(fam.v1.image), true],
      [fam.name, 'v2', toHex(fam.v2.image), false],
    ],
  );
  const s = await call('GET', `/v1/statements/${fam.name}/v1`);
  assert.equal(s.status, 200);
  assert.equal(s.headers['content-type'], 'application/vnd.dsse.envelope.v1+json');
  assert.equal(s.headers['cache-control'], 'no-cache');
  assert.ok(s.body.equals(readFileSync(join(fam.storeDir, 'signatures', fam.name, ':v1.dsse'))));
  const u = await call('GET', `/v1/statements/${fam.name}/v2`);
  assert.equal(u.status, 404);
  assert.match(JSON.parse(u.body.toString()).error, /no signed statement/);
  assert.equal((await call('GET', '/v2/whatever')).status, 404);
  assert.equal((await call('GET', '/v1/objects/nothex')).status, 400);
  assert.equal((await call('DELETE', `/v1/images/${toHex(fam.v1.image)}`)).status, 405);
});

test('images and objects: immutable caching, HEAD, Range, If-None-Match', async () => {
  const hex = toHex(fam.v1.image);
  const file = readFileSync(join(fam.storeDir, 'images', hex));
  const g = await call('GET', `/v1/images/${hex}`);
  assert.equal(g.status, 200);
  assert.ok(g.body.equals(file));
  assert.equal(g.headers.etag, `"${hex}"`);
  assert.equal(g.headers['cache-control'], 'public, max-age=31536000, immutable');
  assert.equal(g.headers['accept-ranges'], 'bytes');
  assert.equal(Number(g.headers['content-length']), file.length);
  const h = await call('HEAD', `/v1/images/${hex}`);
  assert.equal(h.status, 200);
  assert.equal(h.body.length, 0);
  assert.equal(Number(h.headers['content-length']), file.length);

  const big = fam.v1.objects.find((o) => o.size > 1 << 20)!;
  const ohex = toHex(big.digest);
  const content = readFileSync(join(fam.storeDir, 'objects', ohex.slice(0, 2), ohex.slice(2)));
  const r1 = await call('GET', `/v1/objects/${ohex}`, { headers: { Range: 'bytes=100-4195' } });
  assert.equal(r1.status, 206);
  assert.equal(r1.headers['content-range'], `bytes 100-4195/${big.size}`);
  assert.ok(r1.body.equals(content.subarray(100, 4196)));
  const r2 = await call('GET', `/v1/objects/${ohex}`, { headers: { Range: 'bytes=-10' } });
  assert.equal(r2.status, 206);
  assert.ok(r2.body.equals(content.subarray(content.length - 10)));
  const r3 = await call('GET', `/v1/objects/${ohex}`, { headers: { Range: `bytes=${big.size - 5}-` } });
  assert.ok(r3.body.equals(content.subarray(big.size - 5)));
  const r4 = await call('GET', `/v1/objects/${ohex}`, { headers: { Range: `bytes=${big.size}-` } });
  assert.equal(r4.status, 416);
  assert.equal(r4.headers['content-range'], `bytes */${big.size}`);
  const r5 = await call('GET', `/v1/objects/${ohex}`, { headers: { Range: 'bytes=0-1,5-9' } });
  assert.equal(r5.status, 200, 'several ranges: served whole');
  assert.equal(r5.body.length, big.size);
  const r6 = await call('GET', `/v1/objects/${ohex}`, { headers: { 'If-None-Match': `"${ohex}"` } });
  assert.equal(r6.status, 304);
  assert.equal(r6.body.length, 0);
  assert.equal((await call('GET', `/v1/objects/${'0'.repeat(64)}`)).status, 404);
});

test('encodings: gzip and zstd bodies decode to the same bytes', async (t) => {
  const hex = toHex(fam.v1.image);
  const file = readFileSync(join(fam.storeDir, 'images', hex));
  const gz = await call('GET', `/v1/images/${hex}`, { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(gz.headers['content-encoding'], 'gzip');
  assert.ok(gunzipSync(gz.body).equals(file));
  assert.ok(gz.body.length < file.length, 'a metadata image compresses');
  if (!haveZstd) toolMissing(t, 'zstd (Debian package zstd) not installed: the zstd encoding is not checked');
  else {
    const z = await call('GET', `/v1/images/${hex}`, { headers: { 'Accept-Encoding': 'zstd, gzip' } });
    assert.equal(z.headers['content-encoding'], 'zstd');
    const d = spawnSync('zstd', ['-d', '-c'], { input: z.body });
    assert.ok(Buffer.from(d.stdout).equals(file));
  }
  const id = await call('GET', `/v1/images/${hex}`, { headers: { 'Accept-Encoding': 'identity' } });
  assert.equal(id.headers['content-encoding'], undefined);
});

test('query answers presence as a bitmap; a pack frames every object and marks absent ones', async () => {
  const objs = fam.v1.objects.slice(0, 9);
  const absent = fsverityDigest(randomBytes(100));
  const asked = [...objs.map((o) => o.digest), absent];
  const q = await call('POST', '/v1/objects/query', { body: Buffer.concat(asked) });
  assert.equal(q.status, 200);
  assert.deepEqual(decodeBitmap(q.body, asked.length), [...objs.map(() => true), false]);
  assert.equal(q.headers['x-cfsdist-present'], String(objs.length));
  assert.equal((await call('POST', '/v1/objects/query', { body: Buffer.alloc(33) })).status, 400);

  const p = await call('POST', '/v1/objects/pack', { body: Buffer.concat(objs.map((o) => o.digest)) });
  assert.equal(p.status, 200);
  assert.equal(p.headers['content-type'], 'application/vnd.cfsdist.pack.v1');
  const got: string[] = [];
  for await (const e of readPack(once(p.body), 'pack', { expected: new Map(objs.map((o) => [toHex(o.digest), o.size])) })) {
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(c);
    assert.ok(fsverityDigest(Buffer.concat(parts)).equals(e.digest));
    got.push(toHex(e.digest));
  }
  assert.deepEqual(got, objs.map((o) => toHex(o.digest)));
  const pa = await call('POST', '/v1/objects/pack', { body: Buffer.concat([objs[0]!.digest, absent]) });
  await assert.rejects(
    (async () => {
      for await (const e of readPack(once(pa.body), 'pack')) for await (const _ of e.body) void _;
    })(),
    (e: Error & { code?: string }) => e.code === 'OBJECT_ABSENT',
  );
  // a truncated pack is detected (the trailer is missing)
  await assert.rejects(
    (async () => {
      for await (const e of readPack(once(p.body.subarray(0, p.body.length - 40)), 'pack')) for await (const _ of e.body) void _;
    })(),
    (e: Error & { code?: string }) => e.code === 'TRUNCATED',
  );
});

test('write API: 401 without a token, 403 with a wrong one, nothing stored; uploads are verified', async () => {
  const data = randomBytes(3000);
  const d = fsverityDigest(data);
  const path = `/v1/objects/${toHex(d)}`;
  const store = await Store.open(fam.storeDir);
  const none = await call('PUT', path, { body: data });
  assert.equal(none.status, 401);
  assert.match(String(none.headers['www-authenticate']), /^Bearer/);
  const wrong = await call('PUT', path, { body: data, headers: { Authorization: 'Bearer nope' } });
  assert.equal(wrong.status, 403);
  for (const p of ['/v1/objects/pack', `/v1/images/${toHex(d)}`, `/v1/statements/${fam.name}/v2`]) {
    assert.equal((await call('PUT', p, { body: data })).status, 401, p);
    assert.equal((await call('PUT', p, { body: data, headers: { Authorization: `Bearer ${TOKEN}x` } })).status, 403, p);
  }
  assert.equal(await store.objects.has(d), false);
  const auth = { Authorization: `Bearer ${TOKEN}` };
  // content that does not match the URL's digest is refused and not stored
  const bad = await call('PUT', path, { body: Buffer.concat([data, Buffer.from('x')]), headers: auth });
  assert.equal(bad.status, 400);
  assert.match(JSON.parse(bad.body.toString()).error, /digest mismatch/);
  assert.equal(await store.objects.has(d), false);
  const ok = await call('PUT', path, { body: data, headers: auth });
  assert.equal(ok.status, 201);
  assert.ok((await store.objects.read(d)).equals(data));
  assert.equal((await call('PUT', path, { body: data, headers: auth })).status, 200);
  // an image whose objects are missing is refused with the list
  const img = readFileSync(join(fam.storeDir, 'images', toHex(fam.v2.image)));
  const missingObj = fam.v2.objects[0]!;
  const objPath = store.objects.path(missingObj.digest);
  const saved = readFileSync(objPath);
  unlinkSync(objPath);
  try {
    const r = await call('PUT', `/v1/images/${toHex(fam.v2.image)}`, { body: img, headers: auth });
    assert.equal(r.status, 409);
    assert.deepEqual(JSON.parse(r.body.toString()).missing, [toHex(missingObj.digest)]);
  } finally {
    writeFileSync(objPath, saved);
  }
  // an image under the wrong digest
  const r2 = await call('PUT', `/v1/images/${toHex(d)}`, { body: img, headers: auth });
  assert.equal(r2.status, 400);
});
