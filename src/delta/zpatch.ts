/**
 * Binary image deltas ("zpatch"): the target image compressed by the `zstd` tool with the base
 * image as its dictionary (`zstd --patch-from=BASE`). Beside the tree delta (delta.ts), which is
 * smaller (9 KB against 42 KB for the Debian family's v1 → v2) but rebuilds the image through
 * the dumpfile and the EROFS writer, a zpatch applies in one pass of the zstd decoder — about
 * 10 ms against 250–300 ms for a tree rebuild in a freshly started process — so a client that
 * has the `zstd` tool updates with it, and falls back to the tree delta, then to the full image.
 * Like every delta it needs no trust of its own: the result must have the fs-verity digest the
 * signed statement names.
 */
import { spawn, spawnSync } from 'node:child_process';
import { fsverityDigest, toHex } from '../verity/digest.js';
import { haveZstd } from '../server/compress.js';
import { DeltaError } from './errors.js';

/** Images up to this size get a zpatch (zstd keeps the base in memory on both ends). */
export const ZPATCH_MAX_IMAGE = 256 << 20;
/** Up to this size the patch is made at level 19 (1.6 s for a 6.4 MiB image); larger ones at 9
 * (about 15× faster, patches ~1.6× larger). */
const ZPATCH_HIGH_LEVEL_MAX = 8 << 20;

/** True if this machine can make and apply zpatches. */
export function zpatchAvailable(): boolean {
  return haveZstd();
}

/** The zpatch from the image file `basePath` to `target`, or undefined when the tool is missing
 * or the images are too large. */
export function makeZpatch(basePath: string, baseSize: number, target: Buffer): Buffer | undefined {
  if (!zpatchAvailable() || target.length > ZPATCH_MAX_IMAGE || baseSize > ZPATCH_MAX_IMAGE) return undefined;
  const level = target.length <= ZPATCH_HIGH_LEVEL_MAX ? '-19' : '-9';
  const r = spawnSync('zstd', ['-q', '-c', level, `--patch-from=${basePath}`, `--stream-size=${target.length}`], { input: target, maxBuffer: target.length + (1 << 20), stdio: ['pipe', 'pipe', 'ignore'] });
  if (r.status !== 0 || !Buffer.isBuffer(r.stdout) || r.stdout.length === 0) return undefined;
  return r.stdout;
}

/**
 * Rebuild the image `expected` from the trusted local image at `basePath` and a zpatch of at
 * most a few MB. Output beyond `size` bytes, a patch zstd refuses, or a result with another
 * fs-verity digest is a DeltaError (the caller then uses another delta or the full image).
 */
export function applyZpatch(basePath: string, patch: Buffer, size: number, expected: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = spawn('zstd', ['-d', '-q', '-c', `--patch-from=${basePath}`, '--memory=2048MB'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let n = 0;
    let err = '';
    let failed: DeltaError | undefined;
    c.stdout.on('data', (b: Buffer) => {
      n += b.length;
      if (n > size) {
        failed ??= new DeltaError('DELTA_MISMATCH', `zpatch gives more than the ${size} bytes of image ${toHex(expected)}`);
        c.kill();
        return;
      }
      out.push(b);
    });
    c.stderr.on('data', (b: Buffer) => {
      if (err.length < 2000) err += b.toString('utf8');
    });
    c.stdin.on('error', () => undefined); // zstd may exit before reading everything (refused)
    c.on('error', (e) => reject(new DeltaError('DELTA_TOOL', `zstd: ${e.message}`)));
    c.on('close', (code) => {
      if (failed) return reject(failed);
      if (code !== 0) return reject(new DeltaError('DELTA_CORRUPT', `zpatch does not apply: ${err.trim().split('\n').pop() || `zstd exit ${code}`}`));
      const image = Buffer.concat(out, n);
      const got = fsverityDigest(image);
      if (!got.equals(expected)) return reject(new DeltaError('DELTA_MISMATCH', `zpatch rebuilt image ${toHex(got)}, expected ${toHex(expected)}`));
      resolve(image);
    });
    c.stdin.end(patch);
  });
}
