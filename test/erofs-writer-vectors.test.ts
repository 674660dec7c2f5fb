/**
 * Byte-exactness: every row of the vectors' EXPECTED.tsv builds an image with the listed
 * sha256 and size; every SHOULD-FAIL input is rejected with a message naming the line, and
 * leaves no output file behind. The streamed writer gives the same bytes as the in-memory one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { parseDumpfile } from '../src/dumpfile/parser.js';
import { type WriteOptions, writeImage, writeImageTo } from '../src/erofs/writer.js';
import { writeFileAtomic } from '../src/mkcomposefs.js';
import { CfsError } from '../src/errors.js';
import { type Inode, S_IFDIR, S_IFREG, newInode } from '../src/tree/tree.js';
import { generateDumpfile } from '../bench/gen-dumpfile.js';
import { CLI, VECTORS, parseTsv, vectorsMissing } from './helpers.js';

const STRICT_EXEMPT = new Set(['no-newline.dump', 'longlink.dump', 'honggfuzz-longlink-unterminated.dump']);

function versionOpts(options: string): { minVersion?: number; maxVersion?: number } {
  const o: { minVersion?: number; maxVersion?: number } = {};
  if (options === '-') return o;
  for (const part of options.split(' ')) {
    const m = /^--(min|max)-version=(\d+)$/.exec(part);
    assert.ok(m, `unknown option ${part}`);
    if (m[1] === 'min') o.minVersion = Number(m[2]);
    else o.maxVersion = Number(m[2]);
  }
  return o;
}

function goldenName(file: string, options: string): string {
  if (options === '-') return `${file}.cfs`;
  const abbrev = options
    .split(' ')
    .map((p) => p.replace(/^--(min|max)-version=/, '$1'))
    .join('_');
  return `${file}.${abbrev}.cfs`;
}

/** First differing offset, to make a hash mismatch debuggable. */
function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

for (const set of ['upstream', 'extra']) {
  const dir = join(VECTORS, set);
  const skip = vectorsMissing();
  const rows = skip ? [] : parseTsv(readFileSync(join(dir, 'EXPECTED.tsv'), 'utf8'));
  test(`${set}: every EXPECTED.tsv row is reproduced byte for byte`, { skip }, async (t) => {
    assert.ok(rows.length > 0);
    for (const row of rows) {
      await t.test(`${row.file} ${row.options}`, () => {
        let data = readFileSync(join(dir, row.file!));
        if (row.file!.endsWith('.gz')) data = gunzipSync(data);
        const base = row.file!.replace(/\.gz$/, '');
        const root = parseDumpfile(data, { strict: !STRICT_EXEMPT.has(base), source: row.file });
        const img = writeImage(root, versionOpts(row.options!));
        const sha = createHash('sha256').update(img).digest('hex');
        if (sha !== row.sha256) {
          const golden = join(dir, 'golden', goldenName(row.file!, row.options!));
          const extra = existsSync(golden) ? `; first differing byte at ${firstDiff(img, readFileSync(golden))}` : '';
          assert.fail(`sha256 ${sha} != ${row.sha256} (size ${img.length} vs ${row.size})${extra}`);
        }
        assert.equal(img.length, Number(row.size));
      });
    }
  });
}

test('every SHOULD-FAIL input is rejected with a line number and leaves no output', { skip: vectorsMissing() }, () => {
  const dir = join(VECTORS, 'upstream');
  const rows = parseTsv(readFileSync(join(dir, 'SHOULD-FAIL.tsv'), 'utf8'));
  assert.ok(rows.length >= 14);
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-fail-'));
  try {
    for (const row of rows) {
      const out = join(work, 'out.cfs');
      const r = spawnSync(process.execPath, [CLI, 'mkcomposefs', '--from-file', join(dir, row.file!), out], { encoding: 'utf8' });
      assert.equal(r.status, 1, `${row.file}: exit ${r.status}, stderr ${r.stderr}`);
      assert.match(r.stderr, /^cfsdist: .*:\d+: /, `${row.file}: message names the line: ${r.stderr}`);
      assert.equal(existsSync(out), false, `${row.file}: output left behind`);
      assert.deepEqual(readdirSync(work), [], `${row.file}: temp files left behind`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

/** The image as `writeImageTo` streams it, chunks joined (copied: chunk buffers are reused). */
function streamed(root: Inode, opts: WriteOptions, window?: number): Buffer {
  const chunks: Buffer[] = [];
  const info = writeImageTo(root, opts, (c) => chunks.push(Buffer.from(c)), window);
  const img = Buffer.concat(chunks);
  assert.equal(img.length, info.size);
  assert.equal(img.readUInt32LE(1024 + 16), info.inodes);
  return img;
}

test('the streamed image is byte for byte the in-memory image, with any window size', { skip: vectorsMissing() }, () => {
  const trees: [string, Inode, WriteOptions][] = [];
  for (const set of ['upstream', 'extra']) {
    const dir = join(VECTORS, set);
    for (const row of parseTsv(readFileSync(join(dir, 'EXPECTED.tsv'), 'utf8'))) {
      let data = readFileSync(join(dir, row.file!));
      if (row.file!.endsWith('.gz')) data = gunzipSync(data);
      trees.push([`${set}/${row.file} ${row.options}`, parseDumpfile(data, { source: row.file }), versionOpts(row.options!)]);
    }
  }
  // Several windows of inodes, and a directory whose dirent blocks span more than a window.
  trees.push(['generated', parseDumpfile(generateDumpfile(20_000, 4)), {}]);
  const big = newInode(S_IFDIR | 0o755);
  for (let i = 0; i < 6000; i++) big.entries!.set(`${'n'.repeat(200)}${i}`, newInode(S_IFREG | 0o644, { size: 3, content: Buffer.from('abc') }));
  const root = newInode(S_IFDIR | 0o755);
  root.entries!.set('big', big);
  trees.push(['large directory', root, {}]);
  for (const [name, tree, opts] of trees) {
    const want = writeImage(tree, opts);
    assert.ok(streamed(tree, opts).equals(want), `${name}: streamed image differs`);
    // Tiny windows: spans that outgrow the window, gaps past its end, odd chunk sizes.
    for (const window of [1, 100, 4095, 4097]) {
      if (name === 'generated' && window < 4095) continue; // slow and adds nothing
      assert.ok(streamed(tree, opts, window).equals(want), `${name}: streamed image (window ${window}) differs`);
    }
  }
});

test('writeFileAtomic: a producer error passes unchanged and leaves no file behind', async () => {
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-atomic-'));
  try {
    const boom = new CfsError('EROFS_TEST', 'boom');
    await assert.rejects(writeFileAtomic(join(work, 'out'), (write) => {
      write(Buffer.from('partial'));
      throw boom;
    }), (e) => e === boom);
    assert.deepEqual(readdirSync(work), []);
    await writeFileAtomic(join(work, 'out'), (write) => {
      write(Buffer.from('one '));
      write(Buffer.from('two'));
    });
    assert.equal(readFileSync(join(work, 'out'), 'utf8'), 'one two');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
