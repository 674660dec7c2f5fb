/**
 * Packed units (src/client/unpack.ts): the worker pool decompresses, verifies and writes each
 * object, and refuses bad content, bad frames and objects past a frame's end with typed errors;
 * unpackInline yields the same objects on the calling thread.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { UnpackPool, unpackInline, unitBytes, unitCount } from '../src/client/unpack.js';
import type { PackedUnit } from '../src/client/unpack.js';
import { fsverityDigest, objectPathFor } from '../src/verity/digest.js';

/** A unit of `frames` gzip frames holding the given contents back to back. */
function unitOf(frames: Buffer[][], encoding: 'gzip' | 'identity' = 'gzip'): PackedUnit {
  const parts: Buffer[] = [];
  let off = 0;
  const out: PackedUnit['frames'] = [];
  frames.forEach((contents, i) => {
    const plain = Buffer.concat(contents);
    const bytes = encoding === 'gzip' ? gzipSync(plain) : plain;
    let at = 0;
    out.push({
      off,
      len: bytes.length,
      maxOut: 4 << 20,
      what: `test frame ${i}`,
      objects: contents.map((c) => {
        const o = { digest: fsverityDigest(c), size: c.length, at };
        at += c.length;
        return o;
      }),
    });
    parts.push(bytes);
    off += bytes.length;
  });
  return { data: Buffer.concat(parts), encoding, frames: out };
}

function withDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfsdist-unpack-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('the pool writes every object of gzip and identity units under its digest', withDir(async (dir) => {
  const contents = [[randomBytes(5000), randomBytes(10), Buffer.alloc(70000, 7)], [randomBytes(300000)]];
  const gz = unitOf(contents);
  const small = randomBytes(1234);
  const plain = unitOf([[small]], 'identity');
  assert.equal(unitCount(gz), 4);
  assert.equal(unitBytes(gz), 5000 + 10 + 70000 + 300000);
  const pool = new UnpackPool(dir, 2);
  try {
    await Promise.all([pool.run(gz), pool.run(plain)]);
  } finally {
    await pool.close();
  }
  for (const c of [...contents.flat(), small]) assert.deepEqual(readFileSync(join(dir, objectPathFor(fsverityDigest(c)))), c);
}));

test('a unit whose Buffer is a slice of a shared pool is copied, not transferred', withDir(async (dir) => {
  const content = Buffer.from('small object content');
  const u = unitOf([[content]], 'identity');
  // Buffer.from of a short string lands in Node's shared allocation pool.
  const pooled = Buffer.from(u.data.toString('latin1'), 'latin1');
  const neighbour = Buffer.from('neighbour in the same pool');
  assert.ok(pooled.byteOffset > 0 || pooled.buffer.byteLength > pooled.length, 'expected a pooled Buffer');
  const pool = new UnpackPool(dir, 1);
  try {
    await pool.run({ ...u, data: pooled });
  } finally {
    await pool.close();
  }
  assert.equal(neighbour.toString(), 'neighbour in the same pool');
  assert.equal(pooled.toString('latin1'), content.toString('latin1'));
  assert.deepEqual(readFileSync(join(dir, objectPathFor(fsverityDigest(content)))), content);
}));

test('content that does not match its digest is refused (OBJECT_CORRUPT) and not written', withDir(async (dir) => {
  const good = randomBytes(9000);
  const bad = randomBytes(9000);
  const u = unitOf([[good, bad]]);
  const wrong = fsverityDigest(randomBytes(9000));
  u.frames[0]!.objects[1]!.digest = wrong;
  const pool = new UnpackPool(dir, 1);
  try {
    await assert.rejects(pool.run(u), (e: Error & { code?: string }) => e.code === 'OBJECT_CORRUPT' && /does not match the signed image/.test(e.message) && e.message.includes('test frame 0'));
  } finally {
    await pool.close();
  }
  assert.ok(!existsSync(join(dir, objectPathFor(wrong))));
}));

test('a frame that does not decompress is BAD_FRAME; an object past its end is BAD_INDEX', withDir(async (dir) => {
  const u = unitOf([[randomBytes(100)]]);
  u.data = Buffer.from(u.data);
  u.data[12] ^= 0xff; // inside the deflate stream
  u.data[u.data.length - 5] ^= 0xff; // and the CRC, so gunzip must fail either way
  const past = unitOf([[randomBytes(100)]]);
  past.frames[0]!.objects[0]!.at = 50;
  const bomb = unitOf([[Buffer.alloc(1 << 20)]]);
  bomb.frames[0]!.maxOut = 1000;
  const pool = new UnpackPool(dir, 1);
  try {
    await assert.rejects(pool.run(u), (e: Error & { code?: string }) => e.code === 'BAD_FRAME' && /does not decompress/.test(e.message));
    await assert.rejects(pool.run(past), (e: Error & { code?: string }) => e.code === 'BAD_INDEX' && /past the end/.test(e.message));
    await assert.rejects(pool.run(bomb), (e: Error & { code?: string }) => e.code === 'BAD_FRAME');
  } finally {
    await pool.close();
  }
}));

test('unpackInline yields the same objects, and the same errors', async () => {
  const contents = [[randomBytes(4000), randomBytes(4097)], [randomBytes(77)]];
  const got: Buffer[] = [];
  for await (const o of unpackInline(unitOf(contents))) {
    const parts: Buffer[] = [];
    for await (const c of o.body) parts.push(c);
    const b = Buffer.concat(parts);
    assert.equal(b.length, o.size);
    assert.ok(fsverityDigest(b).equals(o.digest));
    got.push(b);
  }
  assert.deepEqual(got, contents.flat());
  const past = unitOf([[randomBytes(100)]]);
  past.frames[0]!.objects[0]!.size = 101;
  await assert.rejects(async () => {
    for await (const o of unpackInline(past)) void o;
  }, (e: Error & { code?: string }) => e.code === 'BAD_INDEX');
});
