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
import { DumpfileError, DumpfileParser, type ParseOptions, parseDumpfile } from '../src/dumpfile/parser.js';
import { formatDumpfile } from '../src/dumpfile/writer.js';
import { escapeField, unescapeField } from '../src/dumpfile/escape.js';
import { writeImage } from '../src/erofs/writer.js';
import { VECTORS, parseTsv, vectorsMissing } from './helpers.js';
import { Rng } from './random-tree.js';
import { generateDumpfile } from '../bench/gen-dumpfile.js';

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

/** Parse `data` fed to an incremental parser in random-size chunks (1 byte up to 200 KB). */
function parseInChunks(data: Buffer, rng: Rng, opts: ParseOptions): ReturnType<typeof parseDumpfile> {
  const p = new DumpfileParser(opts);
  for (let at = 0; at < data.length; ) {
    const n = rng.chance(0.3) ? rng.int(1, 16) : rng.int(1, 200_000);
    p.push(data.subarray(at, at + n));
    at += n;
  }
  return p.end();
}

test('incremental parsing in any chunking gives the tree of a whole-buffer parse', () => {
  const rng = new Rng(11);
  // Long enough to cross several 64 KB decode pieces; a line longer than a piece (an ignored
  // directory payload); a last line without newline.
  const inputs = [generateDumpfile(3000, 5), Buffer.from(`/ 0 40755 2 0 0 0 0.0 ${'p'.repeat(70_000)} - - user.a=b\n/a 0 100644 1 0 0 0 0.0 - - -`)];
  for (const data of inputs) {
    const want = formatDumpfile(parseDumpfile(data));
    for (let round = 0; round < 5; round++) {
      assert.ok(formatDumpfile(parseInChunks(data, rng, {})).equals(want), `round ${round}: trees differ`);
    }
  }
});

test('incremental parsing reports the same line numbers as a whole-buffer parse', () => {
  const rng = new Rng(12);
  const good = generateDumpfile(2000, 6);
  const cases: [Buffer, ParseOptions][] = [
    [Buffer.concat([good, Buffer.from('/nope/x 0 100644 1 0 0 0 0.0 - - -\n')]), {}],
    [Buffer.concat([good, Buffer.from('/last 0 100644 1 0 0 0 0.0 - - -')]), { strict: true }],
  ];
  for (const [data, opts] of cases) {
    const message = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        assert.ok(e instanceof DumpfileError);
        return e.message;
      }
      return assert.fail('no error');
    };
    const want = message(() => parseDumpfile(data, opts));
    assert.equal(message(() => parseInChunks(data, rng, opts)), want);
  }
});

test('parents are found the same whether their path was seen as written or needs a walk', () => {
  const dump = [
    '/ 0 40755 2 0 0 0 0.0 - - -',
    '//a 0 40755 2 0 0 0 0.0 - - -', // registered as "//a"
    '/a/b 0 40755 2 0 0 0 0.0 - - -', // parent "/a": a walk
    '//a//b/c 0 100644 1 0 0 0 0.0 - - -', // parent "//a//b": a walk
    '/a/b/d 0 100644 1 0 0 0 0.0 - - -', // parent "/a/b" as registered
    'e 0 100644 1 0 0 0 0.0 - - -', // no slash: in the root
    '',
  ].join('\n');
  const canon = formatDumpfile(parseDumpfile(Buffer.from(dump))).toString();
  assert.deepEqual(canon.split('\n').map((l) => l.split(' ')[0]), ['/', '/a', '/a/b', '/a/b/c', '/a/b/d', '/e', '']);
  const err = (text: string): string => {
    try {
      parseDumpfile(Buffer.from(text));
    } catch (e) {
      return (e as Error).message;
    }
    return 'no error';
  };
  const head = '/ 0 40755 2 0 0 0 0.0 - - -\n/f 0 100644 1 0 0 0 0.0 - - -\n';
  assert.equal(err(head + '/f/x 0 100644 1 0 0 0 0.0 - - -\n'), '<dumpfile>:3: Parent must be a directory for /f/x (field PATH)');
  assert.equal(err(head + '/g/x 0 100644 1 0 0 0 0.0 - - -\n'), '<dumpfile>:3: Parent directory missing for /g/x (field PATH)');
});
