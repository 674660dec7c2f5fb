/**
 * fs-verity digests: equal to the `fsverity digest` tool for sizes around every block and
 * Merkle-level boundary (0, 1, 4095…4097, 524287…524289, 64 MiB ± 1, random), on every path
 * (whole buffer, streaming with random chunking, file, parallel file); the empty-input case
 * as the kernel defines it and as C mkcomposefs --digest-store handles empty files; the hex
 * helpers and object paths.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  EMPTY_DIGEST_HEX,
  FsVerityHasher,
  descriptorDigest,
  hashBlock,
  fromHex,
  fsverityDigest,
  fsverityDigestFile,
  objectPathFor,
  toHex,
} from '../src/verity/digest.js';
import { fsverityDigestFileParallel, digestFileSegments } from '../src/verity/parallel.js';
import { CfsError } from '../src/errors.js';
import { REFERENCE_BIN, toolMissing } from './helpers.js';

const HAVE_FSVERITY = spawnSync('fsverity', ['--version']).status === 0;
const NO_TOOL = HAVE_FSVERITY ? false : 'the fsverity tool (Debian package fsverity) is not installed';

/** `fsverity digest --compact` of several files at once → hex per file. */
function toolDigests(files: string[]): string[] {
  const out = execFileSync('fsverity', ['digest', '--compact', ...files], { maxBuffer: 1 << 24 }).toString().trim().split('\n');
  assert.equal(out.length, files.length);
  return out;
}

function streamed(data: Buffer, pick: () => number): Buffer {
  const h = new FsVerityHasher();
  for (let off = 0; off < data.length; ) {
    const n = Math.min(pick(), data.length - off);
    h.update(data.subarray(off, off + n));
    off += n;
  }
  assert.equal(h.size, data.length);
  return h.digest();
}

test('"hello world\\n" has the upstream digest', () => {
  assert.equal(toHex(fsverityDigest(Buffer.from('hello world\n'))), '37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92');
});

test('sizes around block and level boundaries equal `fsverity digest` on every path', { skip: NO_TOOL }, async () => {
  const dir = mkdtempSync('/var/tmp/cfsdist-verity-');
  try {
    const M64 = 64 << 20; // 4096 * 128 * 128: level 1 holds exactly one full block
    const big = randomBytes(M64 + 1);
    const sizes = [0, 1, 4095, 4096, 4097, 8191, 8192, 524287, 524288, 524289, 524288 * 3 + 17, M64 - 1, M64, M64 + 1];
    for (let i = 0; i < 8; i++) sizes.push(randomInt(1, 3 << 20));
    const files = sizes.map((n, i) => {
      const f = join(dir, `f${i}-${n}`);
      writeFileSync(f, big.subarray(0, n));
      return f;
    });
    const want = toolDigests(files);
    for (let i = 0; i < sizes.length; i++) {
      const n = sizes[i];
      const data = big.subarray(0, n);
      const label = `size ${n}`;
      assert.equal(toHex(fsverityDigest(data)), want[i], `${label}: buffer`);
      assert.equal(toHex(await fsverityDigestFile(files[i])), want[i], `${label}: file`);
      assert.equal(toHex(await fsverityDigestFileParallel(files[i])), want[i], `${label}: parallel`);
      if (n <= 3 << 20) {
        assert.equal(toHex(streamed(data, () => randomInt(1, 9000))), want[i], `${label}: random chunks`);
        assert.equal(toHex(await digestFileSegments(files[i], n, { segment: 8192 })), want[i], `${label}: 8 KiB segments`);
      } else {
        assert.equal(toHex(streamed(data, () => randomInt(1, 3 << 20))), want[i], `${label}: random big chunks`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tiny chunks: byte by byte equals whole buffer', () => {
  const data = randomBytes(9000);
  assert.deepEqual(streamed(data, () => 1), fsverityDigest(data));
  assert.deepEqual(streamed(data, () => 4096), fsverityDigest(data));
});

test('empty input: kernel digest (all-zero root hash), as `fsverity digest` of an empty file', (t) => {
  assert.equal(toHex(fsverityDigest(Buffer.alloc(0))), EMPTY_DIGEST_HEX);
  assert.equal(toHex(new FsVerityHasher().digest()), EMPTY_DIGEST_HEX);
  if (!HAVE_FSVERITY) return toolMissing(t, 'fsverity (Debian package fsverity) not installed: no comparison with `fsverity digest`');
  const dir = mkdtempSync('/var/tmp/cfsdist-verity-');
  try {
    writeFileSync(join(dir, 'empty'), '');
    assert.deepEqual(toolDigests([join(dir, 'empty')]), [EMPTY_DIGEST_HEX]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const MKCOMPOSEFS = join(REFERENCE_BIN, 'mkcomposefs');
const CFSINFO = join(REFERENCE_BIN, 'composefs-info');
const NO_REF = existsSync(MKCOMPOSEFS) && existsSync(CFSINFO) ? false : `reference binaries not found in ${REFERENCE_BIN}`;

test('empty files in C mkcomposefs --digest-store: size 0, no digest, no object', { skip: NO_REF }, () => {
  const dir = mkdtempSync('/var/tmp/cfsdist-verity-');
  try {
    const src = join(dir, 'src');
    const objects = join(dir, 'objects');
    mkdirSync(src);
    mkdirSync(objects);
    writeFileSync(join(src, 'empty'), '');
    const big = randomBytes(5000);
    writeFileSync(join(src, 'big'), big);
    execFileSync(MKCOMPOSEFS, [`--digest-store=${objects}`, src, join(dir, 'img')]);
    const dump = execFileSync(CFSINFO, ['dump', join(dir, 'img')]).toString().split('\n');
    const emptyLine = dump.find((l) => l.startsWith('/empty '))!.split(' ');
    // PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST
    assert.equal(emptyLine[1], '0');
    assert.equal(emptyLine[8], '-', 'no payload (no redirect) for the empty file');
    assert.equal(emptyLine[10], '-', 'no digest for the empty file');
    const bigLine = dump.find((l) => l.startsWith('/big '))!.split(' ');
    const d = fsverityDigest(big);
    assert.equal(bigLine[10], toHex(d));
    assert.equal(bigLine[8], objectPathFor(d));
    // Only the non-empty file became an object.
    const stored = readdirSync(objects).flatMap((x) => readdirSync(join(objects, x)).map((y) => `${x}/${y}`));
    assert.deepEqual(stored, [objectPathFor(d)]);
    // Upstream's own measure-file hashes a zero block for an empty file (spec §9): it differs
    // from the kernel's value, which is the one fsverityDigest returns.
    writeFileSync(join(dir, 'e'), '');
    const theirs = execFileSync(CFSINFO, ['measure-file', join(dir, 'e')]).toString().trim();
    assert.notEqual(theirs, EMPTY_DIGEST_HEX);
    // Exactly: the same descriptor (data size 0) with root = SHA-256 of one zero block.
    assert.equal(theirs, toHex(descriptorDigest(hashBlock(Buffer.alloc(4096)), 0)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('toHex/fromHex/objectPathFor', () => {
  const d = fsverityDigest(Buffer.from('x'));
  const hex = toHex(d);
  assert.match(hex, /^[0-9a-f]{64}$/);
  assert.deepEqual(fromHex(hex), d);
  assert.equal(objectPathFor(d), `${hex.slice(0, 2)}/${hex.slice(2)}`);
  assert.equal(objectPathFor(d).length, 65);
  for (const bad of [hex.toUpperCase(), hex.slice(1), hex + '0', 'g'.repeat(64), '', ` ${hex.slice(1)}`]) {
    assert.throws(() => fromHex(bad), (e: unknown) => e instanceof CfsError && e.code === 'BAD_DIGEST', JSON.stringify(bad));
  }
  assert.throws(() => toHex(Buffer.alloc(31)), CfsError);
});

test('hasher refuses use after digest() and misuse of updateLeaves', () => {
  const h = new FsVerityHasher().update(Buffer.from('abc'));
  h.digest();
  assert.throws(() => h.update(Buffer.from('x')), CfsError);
  const g = new FsVerityHasher().update(Buffer.from('abc'));
  assert.throws(() => g.updateLeaves(Buffer.alloc(32), 4096), CfsError, 'partial block pending');
  assert.throws(() => new FsVerityHasher().updateLeaves(Buffer.alloc(32), 8192), CfsError, 'hash count does not cover the bytes');
});
