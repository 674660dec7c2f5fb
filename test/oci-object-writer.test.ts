import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ObjectWriter } from '../src/oci/object-writer.js';
import { fsverityDigest, objectPathFor } from '../src/verity/digest.js';
import { chunked } from './fixtures/oci/tar-writer.js';
import { rng } from './random-tree.js';


async function* failing(data: Buffer, after: number): AsyncGenerator<Buffer> {
  yield data.subarray(0, after);
  throw new Error('source broke');
}

test('objects land under their fs-verity digest, through a small ring that wraps many times', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-ow-'));
  try {
    const w = new ObjectWriter({ dir: join(dir, 'objects'), tmpDir: join(dir, 'tmp'), ringSize: 64 << 10, chunkSize: 16 << 10 });
    const rand = rng(1);
    const datas: Buffer[] = [];
    const results = [];
    for (let i = 0; i < 300; i++) {
      const size = [65, 4096, 16 << 10, (16 << 10) + 1, 100_000][i % 5]! + Math.floor(rand() * 3000);
      const data = randomBytes(size);
      datas.push(data);
      const { done } = await w.put(chunked(data, [1 + Math.floor(rand() * 9000)]), size);
      results.push(done);
    }
    // The same content again: reported as present, not written twice. (Results may wait for
    // flush(): the writer batches.)
    const againP = (await w.put(chunked(datas[3]!), datas[3]!.length)).done;
    await w.flush();
    const again = await againP;
    const rs = await Promise.all(results);
    await w.close();
    for (let i = 0; i < datas.length; i++) {
      const d = fsverityDigest(datas[i]!);
      assert.deepEqual(rs[i]!.digest, d);
      assert.equal(rs[i]!.size, datas[i]!.length);
      assert.equal(rs[i]!.existed, false);
      assert.ok(readFileSync(join(dir, 'objects', objectPathFor(d))).equals(datas[i]!), `object ${i}`);
    }
    assert.equal(again.existed, true);
    assert.deepEqual(readdirSync(join(dir, 'tmp')), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a source that fails mid-file rejects that put only; later objects are intact; no temp file is left', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-ow-'));
  try {
    const w = new ObjectWriter({ dir: join(dir, 'objects'), tmpDir: join(dir, 'tmp'), ringSize: 64 << 10, chunkSize: 16 << 10 });
    const good1 = randomBytes(30_000);
    const p1 = (await w.put(chunked(good1), good1.length)).done;
    const big = randomBytes(200_000);
    await assert.rejects(w.put(failing(big, 50_000), big.length), /source broke/);
    const small = randomBytes(5000);
    await assert.rejects(w.put(failing(small, 100), small.length), /source broke/);
    await assert.rejects(w.put(chunked(small), small.length + 1), /expected 5001/);
    await assert.rejects(w.put(chunked(big), big.length - 1), /longer than its size/);
    const good2 = randomBytes(70_000);
    const p2 = (await w.put(chunked(good2, [3333]), good2.length)).done;
    await w.flush();
    const [r1, r2] = await Promise.all([p1, p2]);
    await w.close();
    assert.ok(readFileSync(join(dir, 'objects', objectPathFor(r1.digest))).equals(good1));
    assert.ok(readFileSync(join(dir, 'objects', objectPathFor(r2.digest))).equals(good2));
    assert.equal(existsSync(join(dir, 'objects', objectPathFor(fsverityDigest(big)))), false);
    assert.deepEqual(readdirSync(join(dir, 'tmp')), [], 'aborted temp files removed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('with an fs-verity hook, each new object is handed back, hooked, then renamed into place', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-ow-'));
  try {
    const hooked: string[] = [];
    const w = new ObjectWriter({ dir: join(dir, 'objects'), tmpDir: join(dir, 'tmp'), enableVerity: async (p) => { hooked.push(p); } });
    const a = randomBytes(10_000);
    const p = (await w.put(chunked(a), a.length)).done;
    await w.flush();
    const r = await p;
    const p2 = (await w.put(chunked(a), a.length)).done;
    await w.flush();
    const r2 = await p2;
    await w.close();
    assert.equal(hooked.length, 1);
    assert.ok(hooked[0]!.startsWith(join(dir, 'tmp')));
    assert.equal(r.existed, false);
    assert.equal(r2.existed, true);
    assert.ok(readFileSync(join(dir, 'objects', objectPathFor(r.digest))).equals(a));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
