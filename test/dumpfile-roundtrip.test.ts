/**
 * Dumpfile properties: canonical form is a fixed point (parse ∘ format ∘ parse = parse), escaping
 * round-trips every byte, and rebuilding an image from the canonical dump of a vector gives the
 * same image as the original dumpfile.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseDumpfile } from '../src/dumpfile/parser.js';
import { formatDumpfile } from '../src/dumpfile/writer.js';
import { escapeField, unescapeField } from '../src/dumpfile/escape.js';
import { writeImage } from '../src/erofs/writer.js';
import { VECTORS, parseTsv, vectorsMissing } from './helpers.js';
import { Rng } from './random-tree.js';

test('escaping round-trips every byte value, with and without = escaping', () => {
  const rng = new Rng(7);
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  const cases = [all, Buffer.from('-'), Buffer.from('a=b\\c d'), Buffer.alloc(0)];
  for (let i = 0; i < 500; i++) cases.push(Buffer.from(Array.from({ length: rng.int(0, 40) }, () => rng.int(0, 255))));
  for (const c of cases) {
    for (const eq of [false, true]) {
      const s = escapeField(c, eq);
      assert.ok(!/[ \n\0]/.test(s), 'escaped text has no separator bytes');
      if (eq) assert.ok(!s.includes('='), 'no raw = when escaping =');
      assert.deepEqual(unescapeField(s), c);
    }
  }
});

const vectorRows = (): { dir: string; file: string }[] => {
  if (vectorsMissing()) return [];
  const seen = new Set<string>();
  const out: { dir: string; file: string }[] = [];
  for (const set of ['upstream', 'extra']) {
    for (const r of parseTsv(readFileSync(join(VECTORS, set, 'EXPECTED.tsv'), 'utf8'))) {
      if (seen.has(set + r.file)) continue;
      seen.add(set + r.file);
      out.push({ dir: join(VECTORS, set), file: r.file! });
    }
  }
  return out;
};

test('vectors: canonical dump is a fixed point and rebuilds the identical image', { skip: vectorsMissing() }, () => {
  const rows = vectorRows();
  assert.ok(rows.length >= 20);
  for (const { dir, file } of rows) {
    let data = readFileSync(join(dir, file));
    if (file.endsWith('.gz')) data = gunzipSync(data);
    const tree = parseDumpfile(data, { source: file });
    const canon = formatDumpfile(tree);
    const again = formatDumpfile(parseDumpfile(canon, { strict: true, source: `canonical ${file}` }));
    assert.ok(canon.equals(again), `${file}: canonical dump is not a fixed point`);
    const img = writeImage(tree);
    const img2 = writeImage(parseDumpfile(canon, { source: `canonical ${file}` }));
    assert.ok(img.equals(img2), `${file}: image from the canonical dump differs`);
  }
});
