/**
 * Metadata deltas, both designs on the same data in one run: the tree-level delta (ours) and a
 * binary delta (`zstd -19 --patch-from`), against the zstd -19 full image; plus client CPU to
 * rebuild. Families: the real Debian v1 → v2 (needs root) and a 140,000-entry synthetic tree
 * with 1 % of files changed, 0.2 % added, 0.2 % removed.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './types.js';
import { applyDelta, computeDelta } from '../src/delta/delta.js';
import { parseDumpfile } from '../src/dumpfile/parser.js';
import { writeImage } from '../src/erofs/writer.js';
import { generateDumpfile } from './gen-dumpfile.js';
import { evolve } from './evolve.js';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'cfsdist');

function measure(family: string, base: Buffer, target: Buffer): BenchRow[] {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-bench-delta-'));
  try {
    writeFileSync(join(dir, 'base'), base);
    writeFileSync(join(dir, 'target'), target);
    const full = execFileSync('zstd', ['-q', '-c', '-19', '-T2', join(dir, 'target')], { maxBuffer: 1 << 30 }).length;
    let t0 = process.hrtime.bigint();
    execFileSync('zstd', ['-q', '-19', '--long=27', `--patch-from=${join(dir, 'base')}`, join(dir, 'target'), '-o', join(dir, 'patch')]);
    const patchMake = Number(process.hrtime.bigint() - t0) / 1e9;
    const patch = readFileSync(join(dir, 'patch')).length;
    t0 = process.hrtime.bigint();
    execFileSync('zstd', ['-q', '-d', '--long=27', `--patch-from=${join(dir, 'base')}`, join(dir, 'patch'), '-o', join(dir, 'rebuilt')]);
    const patchApply = Number(process.hrtime.bigint() - t0) / 1e9;
    let c0 = process.cpuUsage();
    const delta = computeDelta(base, target);
    const make = (process.cpuUsage(c0).user + process.cpuUsage(c0).system) / 1e6;
    if (!delta) throw new Error(`${family}: no delta could be made`);
    c0 = process.cpuUsage();
    const ok = applyDelta(base, delta).equals(target);
    const cu = process.cpuUsage(c0);
    if (!ok) throw new Error(`${family}: delta did not rebuild the target`);
    return [
      { name: `${family}: tree delta / zstd full image`, value: delta.length, unit: 'B', reference: full, ratio: delta.length / full, target: family.startsWith('Debian') ? '≤ 10 %' : '≤ 5 %', note: `client CPU to rebuild ${((cu.user + cu.system) / 1e6).toFixed(2)} s; server CPU to make (incl. a verifying rebuild) ${make.toFixed(2)} s` },
      { name: `${family}: binary delta (zstd --patch-from) / zstd full image`, value: patch, unit: 'B', reference: full, ratio: patch / full, note: `make ${patchMake.toFixed(2)} s, apply ${patchApply.toFixed(2)} s (wall)` },
    ];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Run the benchmark and return its rows. */
export async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const base = writeImage(parseDumpfile(generateDumpfile(140_000, 11), { source: 'generated' }));
  const tree = parseDumpfile(generateDumpfile(140_000, 11), { source: 'generated' });
  evolve(tree, 99, { changed: 0.01, added: 0.002, removed: 0.002 });
  rows.push(...measure('140k synthetic, 1 %/0.2 %/0.2 %', base, writeImage(tree)));
  if (process.getuid?.() === 0) {
    const { ensureDebianFamily } = await import('../src/demo/family.js');
    const family = await ensureDebianFamily();
    const store = mkdtempSync(join(tmpdir(), 'cfsdist-bench-delta-store-'));
    try {
      const imgs: Buffer[] = [];
      for (const tag of family.tags) {
        const r = spawnSync(process.execPath, [CLI, '--store', store, '--json', '--quiet', 'import', `oci:${family.layout}:${tag}`, `demo:${tag}`], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(r.stderr);
        imgs.push(readFileSync(join(store, 'images', (JSON.parse(r.stdout) as { image: string }).image)));
      }
      rows.push(...measure('Debian family v1 → v2', imgs[0]!, imgs[1]!));
    } finally {
      rmSync(store, { recursive: true, force: true });
    }
  }
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  run().then((rows) => console.table(rows), (e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
