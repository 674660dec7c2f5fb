/**
 * Metadata deltas, both designs on the same data in one run: the tree-level delta (ours) and a
 * binary delta (`zstd -19 --patch-from`), against the zstd -19 full image; plus client CPU to
 * rebuild. Families: the real Debian v1 → v2 (needs root) and a 140,000-entry synthetic tree
 * with 1 % of files changed, 0.2 % added, 0.2 % removed.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
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

/** Bytes of new files below `dir` compared with the `before` listing. */
function newBytes(dir: string, before: Set<string>): number {
  let n = 0;
  for (const f of readdirSync(dir, { recursive: true }).map(String)) {
    const p = join(dir, f);
    if (!before.has(f) && statSync(p).isFile()) n += statSync(p).size;
  }
  return n;
}

/**
 * Update bytes on the real family: a client at v1 pulls v2 from `cfsdist serve`, by delta and
 * without; against what `skopeo copy` of the ordinary image moves when the destination already
 * holds v1 (the new blobs it writes).
 */
async function updateBytes(layout: string): Promise<BenchRow[]> {
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-bench-update-'));
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cfsdist ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  let server: ChildProcess | undefined;
  try {
    const s = join(work, 'server');
    const key = join(work, 'k');
    run(['--store', s, '--quiet', 'import', `oci:${layout}:v1`, 'demo:latest']);
    run(['key', 'generate', '--out', key]);
    run(['--store', s, 'sign', 'demo:latest', '--key', key]);
    server = spawn(process.execPath, [CLI, '--store', s, 'serve', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const url = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error('server did not start')), 20_000);
      createInterface({ input: server!.stdout! }).on('line', (l) => {
        const m = /(http:\/\/127\.0\.0\.1:\d+)/.exec(l);
        if (m) {
          clearTimeout(timer);
          res(m[1]!);
        }
      });
    });
    for (const c of ['a', 'b']) run(['--store', join(work, c), '--quiet', 'pull', `${url}/demo:latest`, '--trust', `${key}.pub`]);
    run(['--store', s, '--quiet', 'import', `oci:${layout}:v2`, 'demo:latest']);
    run(['--store', s, 'sign', 'demo:latest', '--key', key]);
    type Pull = { delta?: { bytes: number }; bytes: { fetched: number; image: number; statement: number }; wire: { received: number } };
    const withDelta = JSON.parse(run(['--store', join(work, 'a'), '--json', '--quiet', 'pull', `${url}/demo:latest`, '--trust', `${key}.pub`])) as Pull;
    const full = JSON.parse(run(['--store', join(work, 'b'), '--json', '--quiet', 'pull', `${url}/demo:latest`, '--trust', `${key}.pub`, '--no-delta'])) as Pull;
    if (!withDelta.delta) throw new Error('the update did not use a delta');
    // skopeo: destination already holding v1, then copy v2 and count what it wrote
    const dest = join(work, 'skopeo');
    execFileSync('skopeo', ['copy', '-q', `oci:${layout}:v1`, `oci:${dest}:v1`]);
    const before = new Set(readdirSync(dest, { recursive: true }).map(String));
    execFileSync('skopeo', ['copy', '-q', `oci:${layout}:v2`, `oci:${dest}:v2`]);
    const skopeo = newBytes(dest, before);
    const ours = withDelta.wire.received;
    return [
      { name: 'Debian v1 → v2 update, bytes received: delta pull / skopeo copy', value: ours, unit: 'B', reference: skopeo, ratio: ours / skopeo, note: `objects ${withDelta.bytes.fetched} B + delta ${withDelta.delta.bytes} B + statement and protocol; skopeo: new blobs written when the destination holds v1` },
      { name: 'Debian v1 → v2 update, bytes received: delta pull / full-image pull', value: ours, unit: 'B', reference: full.wire.received, ratio: ours / full.wire.received, note: `full-image pull moves the ${full.bytes.image} B image` },
    ];
  } finally {
    server?.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
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
      rows.push(...(await updateBytes(family.layout)));
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
