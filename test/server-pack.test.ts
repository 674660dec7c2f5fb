/**
 * The pack format and its reader, independent of HTTP: any split of a valid pack into chunks
 * reads back the same objects; a pack cut at any byte fails (never reads as complete); frames
 * that were not requested, arrive twice, have another size, are absent, or trail garbage fail
 * with their own codes; unread bodies are skipped correctly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { ABSENT, frameHeader, readPack, trailer } from '../src/server/protocol.js';

function objects(n: number): { digest: Buffer; data: Buffer }[] {
  return Array.from({ length: n }, (_, i) => {
    const data = randomBytes(i % 5 === 0 ? 0 : (i * 977) % 9000);
    return { digest: createHash('sha256').update(data).update(String(i)).digest(), data };
  });
}

function pack(objs: { digest: Buffer; data: Buffer }[], extra: Buffer[] = []): Buffer {
  return Buffer.concat([...objs.flatMap((o) => [frameHeader(o.digest, o.data.length), o.data]), ...extra, trailer()]);
}

async function* chunked(b: Buffer, sizes: () => number): AsyncGenerator<Buffer> {
  for (let off = 0; off < b.length; ) {
    const n = Math.max(1, Math.min(sizes(), b.length - off));
    yield b.subarray(off, off + n);
    off += n;
  }
}

async function readAll(src: AsyncIterable<Buffer>, expected?: Map<string, number>, skipEvery = 0): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  let i = 0;
  for await (const e of readPack(src, 'test pack', { expected })) {
    if (skipEvery && i++ % skipEvery === 0) continue; // leave the body unread
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(c);
    out.set(e.digest.toString('hex'), Buffer.concat(parts));
  }
  return out;
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

test('any chunking of a pack reads back the same objects; unread bodies are skipped', async () => {
  const objs = objects(40);
  const b = pack(objs);
  const expected = new Map(objs.map((o) => [o.digest.toString('hex'), o.data.length]));
  for (const sizes of [() => 1, () => 7, () => 40, () => 1 + Math.floor(Math.random() * 5000), () => 1 << 20]) {
    const got = await readAll(chunked(b, sizes), expected);
    assert.equal(got.size, objs.length);
    for (const o of objs) assert.ok(got.get(o.digest.toString('hex'))!.equals(o.data));
    const some = await readAll(chunked(b, sizes), expected, 3);
    for (const [k, v] of some) assert.ok(v.equals(objs.find((o) => o.digest.toString('hex') === k)!.data));
  }
});

test('a pack cut at any byte never reads as complete', async () => {
  const objs = objects(6);
  const b = pack(objs);
  const expected = new Map(objs.map((o) => [o.digest.toString('hex'), o.data.length]));
  for (let cut = 0; cut < b.length; cut += 1 + Math.floor(Math.random() * 97)) {
    const code = await codeOf(readAll(chunked(b.subarray(0, cut), () => 333), expected));
    assert.ok(code === 'TRUNCATED' || code === 'INCOMPLETE', `cut at ${cut}: ${code}`);
  }
});

test('protocol violations fail with their own codes', async () => {
  const objs = objects(4);
  const expected = new Map(objs.map((o) => [o.digest.toString('hex'), o.data.length]));
  const one = (b: Buffer) => codeOf(readAll(chunked(b, () => 100), expected));
  const stranger = { digest: randomBytes(32), data: randomBytes(10) };
  assert.equal(await one(pack([...objs, stranger])), 'UNEXPECTED_OBJECT');
  assert.equal(await one(pack([objs[0]!, objs[0]!])), 'UNEXPECTED_OBJECT');
  assert.equal(await one(pack([{ digest: objs[1]!.digest, data: Buffer.concat([objs[1]!.data, Buffer.from('x')]) }])), 'SIZE_MISMATCH');
  assert.equal(await one(Buffer.concat([frameHeader(objs[1]!.digest, ABSENT), trailer()])), 'OBJECT_ABSENT');
  assert.equal(await one(pack(objs.slice(1))), 'INCOMPLETE');
  assert.equal(await one(Buffer.concat([pack(objs), Buffer.from('garbage')])), 'TRAILING_DATA');
  assert.equal(await codeOf(readAll(chunked(pack(objs), () => 64), undefined)), undefined, 'an upload pack without expectations reads');
  assert.equal(await codeOf((async () => {
    for await (const e of readPack(chunked(pack([{ digest: randomBytes(32), data: randomBytes(5000) }]), () => 64), 'up', { maxSize: 4096 })) void e;
  })()), 'TOO_LARGE');
});
