/**
 * The reader on every vectors row: `info dump` / `info ls` reproduce upstream `composefs-info`
 * (the stored *.info-dump.txt / *.info-ls.txt, and the reference binary run live), the fast
 * dump writer agrees with the dumpfile module's, and the round trip dumpfile → image → dumpfile →
 * image gives identical bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ErofsImage } from '../src/erofs/reader.js';
import { formatLs } from '../src/erofs/reader-listing.js';
import { writeImage } from '../src/erofs/writer.js';
import { formatDumpfile } from '../src/dumpfile/writer.js';
import { parseDumpfile } from '../src/dumpfile/parser.js';
import { REFERENCE_BIN, VECTORS, parseTsv, vectorsMissing } from './helpers.js';

const CACHE = '/var/tmp/cfsdist-test-cache/erofs-reader-golden-v1';
const INFO = join(REFERENCE_BIN, 'composefs-info');
const MK = join(REFERENCE_BIN, 'mkcomposefs');

/** Rows whose round trip legitimately changes the image (upstream does the same): an input
 * `trusted.overlay.whiteout` xattr reads back as a whiteout (spec §7.6). */
const CHANGES_ON_ROUND_TRIP = new Set(['whiteouts-overlay.dump']);

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
  return `${file}.${options.split(' ').map((p) => p.replace(/^--(min|max)-version=/, '$1')).join('_')}.cfs`;
}

function referenceSkip(): string | false {
  if (!existsSync(INFO) || !existsSync(MK)) return `reference binaries not found in ${REFERENCE_BIN}`;
  const r = spawnSync(INFO, ['ls', join(VECTORS, 'extra', 'golden', 'minimal-root.dump.cfs')]);
  return r.status === 0 ? false : `reference composefs-info cannot run here: ${r.stderr?.toString() || r.error}`;
}

/**
 * Compare our output with upstream's, allowing only upstream's known redirect off-by-one
 * (vectors/README.md): it prints one or two stray bytes after a payload.
 */
function assertSameButRedirectBug(ours: Buffer, ref: Buffer, kind: 'dump' | 'ls', what: string): void {
  if (ours.equals(ref)) return;
  const a = ours.toString('latin1').split('\n');
  const b = ref.toString('latin1').split('\n');
  assert.equal(a.length, b.length, `${what}: ${a.length - 1} lines, upstream has ${b.length - 1}`);
  const stray = /^(\\x[0-9a-f]{2}|[!-~]){1,2}$/;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x === y) continue;
    if (kind === 'dump') {
      const fx = x.split(' ');
      const fy = y.split(' ');
      assert.equal(fx.length, fy.length, `${what} line ${i + 1}: ${x} vs ${y}`);
      for (let j = 0; j < fx.length; j++) {
        if (j === 8 && fx[j] !== fy[j]) assert.ok(fy[j]!.startsWith(fx[j]!) && stray.test(fy[j]!.slice(fx[j]!.length)), `${what} line ${i + 1} payload: ${x} vs ${y}`);
        else assert.equal(fx[j], fy[j], `${what} line ${i + 1} field ${j + 1}: ${x} vs ${y}`);
      }
    } else {
      assert.ok(x.includes('\t@ ') && y.startsWith(x) && stray.test(y.slice(x.length)), `${what} line ${i + 1}: ${x} vs ${y}`);
    }
  }
}

interface Row {
  set: string;
  file: string;
  options: string;
  sha256: string;
}

function rows(): Row[] {
  const out: Row[] = [];
  for (const set of ['upstream', 'extra']) {
    for (const r of parseTsv(readFileSync(join(VECTORS, set, 'EXPECTED.tsv'), 'utf8'))) {
      out.push({ set, file: r.file!, options: r.options!, sha256: r.sha256! });
    }
  }
  return out;
}

/** The row's image: the golden file, or (large rows) built by our writer and checked against the sha256. */
function imageOf(row: Row): { bytes: Buffer; path: string } {
  const golden = join(VECTORS, row.set, 'golden', goldenName(row.file, row.options));
  if (existsSync(golden)) return { bytes: readFileSync(golden), path: golden };
  mkdirSync(CACHE, { recursive: true });
  const cached = join(CACHE, `${row.sha256}.cfs`);
  if (existsSync(cached)) {
    const b = readFileSync(cached);
    if (createHash('sha256').update(b).digest('hex') === row.sha256) return { bytes: b, path: cached };
  }
  let data = readFileSync(join(VECTORS, row.set, row.file));
  if (row.file.endsWith('.gz')) data = gunzipSync(data);
  const bytes = writeImage(parseDumpfile(data, { source: row.file }), versionOpts(row.options));
  assert.equal(createHash('sha256').update(bytes).digest('hex'), row.sha256, `${row.file}: writer output differs from EXPECTED.tsv`);
  writeFileSync(cached, bytes);
  return { bytes, path: cached };
}

const skip = vectorsMissing();

test('info dump / info ls equal the stored composefs-info outputs', { skip }, () => {
  let compared = 0;
  for (const set of ['upstream', 'extra']) {
    const infoDir = join(VECTORS, set, 'info');
    for (const golden of ['bigfile-xattr.dump.cfs', 'longlink.dump.cfs', 'special.dump.cfs', 'special.dump.min0_max0.cfs', 'escapes.dump.cfs', 'external.dump.cfs', 'hardlinks.dump.cfs', 'whiteouts-overlay.dump.cfs']) {
      const dumpRef = join(infoDir, `${golden}.info-dump.txt`);
      if (!existsSync(dumpRef)) continue;
      const tree = ErofsImage.open(join(VECTORS, set, 'golden', golden)).toTree();
      assertSameButRedirectBug(formatDumpfile(tree), readFileSync(dumpRef), 'dump', `${set}/${golden} dump`);
      assertSameButRedirectBug(formatLs(tree), readFileSync(join(infoDir, `${golden}.info-ls.txt`)), 'ls', `${set}/${golden} ls`);
      compared++;
    }
  }
  assert.equal(compared, 8);
});

test('the redirect payload is read without upstream off-by-one', { skip }, () => {
  const img = ErofsImage.open(join(VECTORS, 'extra', 'golden', 'external.dump.cfs'));
  const st = img.stat(img.lookup('/nodigest')!);
  assert.equal(st.payload?.toString('latin1'), 'some/object');
  assert.equal(img.stat(img.lookup('/abs-payload')!).payload?.toString('latin1'), '/abs/path/obj');
});

test('every vectors row: dump equals live composefs-info, and dumpfile → image → dumpfile → image is stable', { skip, timeout: 120_000 }, async (t) => {
  const ref = referenceSkip();
  if (ref) t.diagnostic(`live comparison skipped: ${ref}`);
  for (const row of rows()) {
    await t.test(`${row.set}/${row.file} ${row.options}`, () => {
      const opts = versionOpts(row.options);
      const { bytes: img1, path } = imageOf(row);
      const tree1 = ErofsImage.fromBuffer(img1, path).toTree();
      const dump1 = formatDumpfile(tree1);
      if (!ref) {
        assertSameButRedirectBug(dump1, spawnSync(INFO, ['dump', path], { maxBuffer: 1 << 28 }).stdout, 'dump', `${row.file} live dump`);
        assertSameButRedirectBug(formatLs(tree1), spawnSync(INFO, ['ls', path], { maxBuffer: 1 << 28 }).stdout, 'ls', `${row.file} live ls`);
      }
      const img2 = writeImage(parseDumpfile(dump1, { source: 'dump1' }), opts);
      const dump2 = formatDumpfile(ErofsImage.fromBuffer(img2, 'img2').toTree());
      assert.ok(dump2.equals(dump1), `${row.file}: image → dump → image → dump changed the dump`);
      const img3 = writeImage(parseDumpfile(dump2, { source: 'dump2' }), opts);
      assert.ok(img3.equals(img2), `${row.file}: dumpfile → image → dumpfile → image changed the bytes`);
      if (!CHANGES_ON_ROUND_TRIP.has(row.file.replace(/\.gz$/, ''))) {
        assert.ok(img2.equals(img1), `${row.file}: the image rebuilt from its dump differs from the original`);
        assert.ok(writeImage(tree1, opts).equals(img1), `${row.file}: the image rebuilt from the read tree differs from the original`);
      } else if (!ref) {
        // Upstream's own round trip changes this image the same way.
        mkdirSync(CACHE, { recursive: true });
        const d = join(CACHE, `${row.sha256}.dump1`);
        const out = join(CACHE, `${row.sha256}.c-img2`);
        writeFileSync(d, dump1);
        const args = row.options === '-' ? [] : row.options.split(' ');
        const r = spawnSync(MK, [...args, '--from-file', d, out]);
        assert.equal(r.status, 0, r.stderr.toString());
        assert.ok(readFileSync(out).equals(img2), `${row.file}: our round trip differs from upstream's`);
      }
    });
  }
});
