/**
 * The parallel path gives the single-threaded result for every size and every way of cutting
 * the file into segments (segment edges on, before and after Merkle block boundaries); many
 * files come back in order with per-file errors; the `cfsdist digest` command prints
 * `HEX  FILE` lines equal to `fsverity digest`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fsverityDigest, fsverityDigestFile, toHex } from '../src/verity/digest.js';
import { VerityPool, digestFileSegments, digestFiles, digestFilesSettled, fsverityDigestFileParallel } from '../src/verity/parallel.js';
import { CfsError } from '../src/errors.js';
import { CLI } from './helpers.js';

const dir = mkdtempSync('/var/tmp/cfsdist-vpar-');
test.after(() => rmSync(dir, { recursive: true, force: true }));

test('segmented digests equal single-threaded for sizes × segment sizes', async () => {
  const pool = new VerityPool(3);
  try {
    const data = randomBytes((1 << 20) * 3 + 5);
    const sizes = [0, 1, 4095, 4096, 4097, 8191, 8192, 8193, 524287, 524288, 524289, 1 << 20, (1 << 20) + 1, data.length];
    const segments = [4096, 8192, 12288, 524288, 524288 + 4096, 1 << 20];
    for (const n of sizes) {
      const f = join(dir, `seg-${n}`);
      writeFileSync(f, data.subarray(0, n));
      const want = fsverityDigest(data.subarray(0, n));
      for (const segment of segments) {
        const got = await digestFileSegments(f, n, { pool, segment });
        assert.deepEqual(got, want, `size ${n}, segment ${segment}`);
      }
    }
    await assert.rejects(digestFileSegments(join(dir, 'seg-1'), 1, { pool, segment: 1000 }), CfsError);
  } finally {
    await pool.close();
  }
});

test('large file: parallel equals single-threaded', async () => {
  const f = join(dir, 'large');
  writeFileSync(f, randomBytes((20 << 20) + 12345));
  assert.deepEqual(await fsverityDigestFileParallel(f), await fsverityDigestFile(f));
});

test('a file that shrinks while hashing is an error, not a wrong digest', async () => {
  const f = join(dir, 'shrinks');
  writeFileSync(f, randomBytes(1 << 20));
  await assert.rejects(digestFileSegments(f, 2 << 20), (e: unknown) => e instanceof CfsError && /shrank/.test((e as Error).message));
});

test('many files: digests in input order, large ones included, errors per file', async () => {
  const many = join(dir, 'many');
  mkdirSync(many);
  const paths: string[] = [];
  const want: Buffer[] = [];
  for (let i = 0; i < 400; i++) {
    const data = randomBytes(i === 7 ? 9 << 20 : i === 300 ? 12 << 20 : randomInt(0, 20000));
    const p = join(many, `f${i}`);
    writeFileSync(p, data);
    paths.push(p);
    want.push(fsverityDigest(data));
  }
  const got = await digestFiles(paths);
  assert.equal(got.length, paths.length);
  got.forEach((d, i) => assert.deepEqual(d, want[i], paths[i]));

  const mixed = [paths[0], join(many, 'missing'), many, paths[7]];
  const r = await digestFilesSettled(mixed);
  assert.ok('digest' in r[0] && r[0].digest.equals(want[0]));
  assert.ok('error' in r[1] && r[1].error instanceof CfsError && r[1].error.message.includes('missing'));
  assert.ok('error' in r[2] && /not a regular file/.test(r[2].error.message));
  assert.ok('digest' in r[3] && r[3].digest.equals(want[7]) && r[3].size === 9 << 20);
  await assert.rejects(digestFiles(mixed), CfsError);
});

const HAVE_FSVERITY = spawnSync('fsverity', ['--version']).status === 0;

test('cfsdist digest prints HEX  FILE lines like fsverity digest; --json; exit 1 on a bad file', { skip: HAVE_FSVERITY ? false : 'fsverity tool not installed' }, () => {
  const files = [0, 100, 70000].map((n) => {
    const p = join(dir, `cli-${n}`);
    writeFileSync(p, randomBytes(n));
    return p;
  });
  const ours = execFileSync(process.execPath, [CLI, 'digest', ...files]).toString();
  const tool = execFileSync('fsverity', ['digest', ...files]).toString();
  const toolLines = tool.trim().split('\n').map((l) => l.replace(/^sha256:(\S+) (.*)$/, '$1  $2'));
  assert.deepEqual(ours.trim().split('\n'), toolLines);

  const json = JSON.parse(execFileSync(process.execPath, [CLI, 'digest', '--json', files[1]]).toString()) as { file: string; digest: string; size: number }[];
  assert.deepEqual(json, [{ file: files[1], digest: toolLines[1].split('  ')[0], size: 100 }]);

  const bad = spawnSync(process.execPath, [CLI, 'digest', files[0], join(dir, 'nope')]);
  assert.equal(bad.status, 1);
  assert.equal(bad.stdout.toString(), `${toHex(fsverityDigest(Buffer.alloc(0)))}  ${files[0]}\n`);
  assert.match(bad.stderr.toString(), /nope.*no such file/);
});
