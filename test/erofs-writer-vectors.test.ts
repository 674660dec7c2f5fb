/**
 * Byte-exactness: every row of the vectors' EXPECTED.tsv builds an image with the listed
 * sha256 and size; every SHOULD-FAIL input is rejected with a message naming the line, and
 * leaves no output file behind.
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
import { writeImage } from '../src/erofs/writer.js';
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
