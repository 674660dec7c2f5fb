/**
 * Binary image deltas (src/delta/zpatch.ts): a zpatch rebuilds the target image byte for byte
 * from the base; a damaged patch, one whose result has another digest, or one that would give
 * more bytes than the signed size is a DeltaError, never an image.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyZpatch, makeZpatch, zpatchAvailable } from '../src/delta/zpatch.js';
import { writeImage } from '../src/erofs/writer.js';
import { fsverityDigest } from '../src/verity/digest.js';
import { randomTree } from './random-tree.js';

const skip = zpatchAvailable() ? false : 'the zstd tool is not installed (CI installs it)';

test('a zpatch rebuilds the target exactly; bad patches and wrong sizes or digests are refused', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-zpatch-'));
  try {
    const base = writeImage(randomTree(11, { entries: 400 }));
    const target = writeImage(randomTree(12, { entries: 420 }));
    const basePath = join(dir, 'base');
    writeFileSync(basePath, base);
    const patch = makeZpatch(basePath, base.length, target);
    assert.ok(patch && patch.length > 0);
    const want = fsverityDigest(target);
    assert.ok((await applyZpatch(basePath, patch, target.length, want)).equals(target));

    const damaged = Buffer.from(patch);
    damaged[damaged.length >> 1] ^= 0x5a;
    await assert.rejects(applyZpatch(basePath, damaged, target.length, want), (e: Error & { code?: string }) => e.code === 'DELTA_CORRUPT' || e.code === 'DELTA_MISMATCH');
    await assert.rejects(applyZpatch(basePath, patch, target.length, fsverityDigest(base)), (e: Error & { code?: string }) => e.code === 'DELTA_MISMATCH');
    await assert.rejects(applyZpatch(basePath, patch, target.length - 1, want), (e: Error & { code?: string }) => e.code === 'DELTA_MISMATCH' && /more than/.test(e.message));
    await assert.rejects(applyZpatch(basePath, Buffer.from('not zstd at all'), target.length, want), (e: Error & { code?: string }) => e.code === 'DELTA_CORRUPT');
    // applied to another base, the result cannot have the signed digest
    const otherPath = join(dir, 'other');
    writeFileSync(otherPath, writeImage(randomTree(13, { entries: 400 })));
    await assert.rejects(applyZpatch(otherPath, patch, target.length, want), (e: Error & { code?: string }) => e.code === 'DELTA_CORRUPT' || e.code === 'DELTA_MISMATCH');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
