/**
 * Metadata deltas: rebuilt images are byte-identical; sizes against the zstd-compressed full
 * image on a real Debian family (≤ 10 %) and on a 140,000-entry synthetic family with 1 %
 * changed, 0.2 % added and 0.2 % removed (≤ 5 %) — bench/delta.ts measures the binary
 * alternative (zstd --patch-from) beside it; tampered, wrong-base and non-matching deltas are
 * refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync, brotliDecompressSync } from 'node:zlib';
import { applyDelta, computeDelta, DeltaError, deltaInfo } from '../src/delta/delta.js';
import { parseDumpfile } from '../src/dumpfile/parser.js';
import { writeImage } from '../src/erofs/writer.js';
import { fsverityDigest } from '../src/verity/digest.js';
import { generateDumpfile } from '../bench/gen-dumpfile.js';
import { evolve } from '../bench/evolve.js';
import { CLI, notRoot } from './helpers.js';
import { randomTree } from './random-tree.js';

const haveZstd = spawnSync('sh', ['-c', 'command -v zstd']).status === 0;

/** zstd -19 size of the full target image, measured by the zstd tool (the bound deltas must beat). */
function zstdFull(target: Buffer): number {
  return execFileSync('zstd', ['-q', '-c', '-19', '-T2'], { input: target, maxBuffer: 1 << 30 }).length;
}

test('random trees: deltas rebuild the target byte for byte', () => {
  let made = 0;
  for (let seed = 1; seed <= 12; seed++) {
    const a = writeImage(randomTree(seed, { entries: 200 }));
    const tree = randomTree(seed, { entries: 200 });
    evolve(tree, seed, { changed: 0.1, added: 0.05, removed: 0.05 });
    const b = writeImage(tree);
    const d = computeDelta(a, b);
    if (!d) continue; // a tree that no dumpfile reproduces: clients fetch the full image
    made++;
    assert.ok(applyDelta(a, d, fsverityDigest(b)).equals(b), `seed ${seed}`);
    assert.ok(deltaInfo(d).target.equals(fsverityDigest(b)));
  }
  assert.ok(made >= 8, `deltas made for ${made} of 12 random families`);
});

test('140,000-entry family (1 % changed, 0.2 % added, 0.2 % removed): delta ≤ 5 % of the zstd image', { skip: haveZstd ? false : 'zstd not installed' }, (t) => {
  const baseTree = parseDumpfile(generateDumpfile(140_000, 11), { source: 'generated' });
  const base = writeImage(baseTree);
  const tree = parseDumpfile(generateDumpfile(140_000, 11), { source: 'generated' });
  evolve(tree, 99, { changed: 0.01, added: 0.002, removed: 0.002 });
  const target = writeImage(tree);
  const d = computeDelta(base, target);
  assert.ok(d, 'a delta can be made');
  const t0 = process.cpuUsage();
  const rebuilt = applyDelta(base, d!, fsverityDigest(target));
  const cpu = process.cpuUsage(t0);
  assert.ok(rebuilt.equals(target), 'rebuilt image is byte-identical');
  const full = zstdFull(target);
  t.diagnostic(`image ${target.length} B, zstd -19 ${full} B; tree delta ${d!.length} B (${((100 * d!.length) / full).toFixed(2)} %); client CPU to apply ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms (bench/delta.ts compares zstd --patch-from)`);
  assert.ok(d!.length <= 0.05 * full, `delta ${d!.length} B > 5 % of ${full} B`);
});

test('Debian family v1 → v2: delta ≤ 10 % of the zstd image, rebuilt byte-identical', { skip: notRoot() || (haveZstd ? false : 'zstd not installed'), timeout: 600_000 }, async (t) => {
  const { ensureDebianFamily } = await import('../src/demo/family.js');
  const family = await ensureDebianFamily();
  const store = mkdtempSync(join(tmpdir(), 'cfsdist-delta-store-'));
  try {
    const images: Buffer[] = [];
    for (const tag of ['v1', 'v2']) {
      const r = spawnSync(process.execPath, [CLI, '--store', store, '--json', '--quiet', 'import', `oci:${family.layout}:${tag}`, `demo:${tag}`], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      images.push(readFileSync(join(store, 'images', (JSON.parse(r.stdout) as { image: string }).image)));
    }
    const [v1, v2] = images as [Buffer, Buffer];
    const d = computeDelta(v1, v2);
    assert.ok(d);
    assert.ok(applyDelta(v1, d!, fsverityDigest(v2)).equals(v2));
    const full = zstdFull(v2);
    t.diagnostic(`image ${v2.length} B, zstd -19 ${full} B; tree delta ${d!.length} B (${((100 * d!.length) / full).toFixed(2)} %)`);
    assert.ok(d!.length <= 0.1 * full);
  } finally {
    rmSync(store, { recursive: true, force: true });
  }
});

test('tampered, wrong-base and non-matching deltas are refused with typed errors', () => {
  const a = writeImage(randomTree(5, { entries: 150 }));
  const tree = randomTree(5, { entries: 150 });
  evolve(tree, 5, { changed: 0.2, added: 0.1, removed: 0 });
  const b = writeImage(tree);
  const d = computeDelta(a, b)!;
  assert.ok(d);
  const code = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      assert.ok(e instanceof DeltaError, `typed error, got ${e}`);
      return e.code;
    }
    return 'no error';
  };
  // bit flip in the compressed stream
  const flipped = Buffer.from(d);
  flipped[Math.floor(flipped.length / 2)] ^= 0x10;
  assert.notEqual(code(() => applyDelta(a, flipped)), 'no error');
  // truncated
  assert.equal(code(() => applyDelta(a, d.subarray(0, d.length - 3))), 'DELTA_CORRUPT');
  // against the wrong base
  const other = writeImage(randomTree(6, { entries: 150 }));
  assert.equal(code(() => applyDelta(other, d)), 'DELTA_WRONG_BASE');
  // for another target than the signed one
  assert.equal(code(() => applyDelta(a, d, fsverityDigest(other))), 'DELTA_WRONG_TARGET');
  // a well-formed delta whose result is not the image it names: edit an inserted line
  const raw = brotliDecompressSync(d);
  const at = raw.indexOf(Buffer.from(' 100644 '), 80);
  assert.ok(at > 0);
  raw.write(' 100600 ', at, 'latin1');
  assert.equal(code(() => applyDelta(a, brotliCompressSync(raw))), 'DELTA_MISMATCH');
});
