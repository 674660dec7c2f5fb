/**
 * Pull benchmark, against a real `cfsdist serve` child process on 127.0.0.1.
 *
 *  - Cold pull wall time of a real Debian image (the `final` tag of the project's OCI Debian
 *    fixture: debootstrap minbase bookworm plus two layers of changes, ~6,700 entries, imported
 *    with `importImage`) into an empty store, as a whole `cfsdist pull` process (start-up,
 *    statement, image, every object verified, commit with syncfs), median of 3, with zstd and
 *    with no compression (what `auto` uses to a loopback server). Reference, same run: copying the same merged tree
 *    locally with `tar -c | tar -x` (no network, no verification) — what writing it costs here.
 *  - Delta efficiency: with `base` present, pull `final`; bytes moved on the wire (both ways,
 *    HTTP headers included) divided by the bytes of the objects new in `final` plus its image
 *    and statement. Target ≤ 1.05. Same for the synthetic test family (v1 → v2, incompressible
 *    content, ~10% of files changed), where compression cannot help, to show protocol overhead.
 *
 * Runnable directly: `node dist/bench/pull.js`.
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import type { BenchRow } from './types.js';
export type { BenchRow };

const SELF = fileURLToPath(import.meta.url);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

function timed(cmd: string, args: string[], opts: { shell?: boolean } = {}): Promise<{ seconds: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = opts.shell ? spawn('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code !== 0) reject(new Error(`${opts.shell ? cmd : `${cmd} ${args.join(' ')}`} exited ${code}: ${err.trim().slice(-500)}`));
      else resolve({ seconds, stdout: out });
    });
  });
}

async function settle(): Promise<void> {
  execFileSync('sync');
  await new Promise((r) => setTimeout(r, 200));
}

interface PullJson {
  objects: { needed: number; present: number; resumed: number; fetched: number };
  bytes: { needed: number; fetched: number; image: number; statement: number };
  wire: { received: number; sent: number; requests: number };
  seconds: number;
}

/** Everything the benchmark needs from the project (imported lazily: `--help`-cheap). */
async function deps() {
  const fx = await import('../test/pull-fixtures.js');
  const { Store } = await import('../src/store/store.js');
  return { fx, Store };
}

async function pullProcess(cli: string, url: string, store: string, pub: string, extra: string[] = []): Promise<{ seconds: number; json: PullJson }> {
  const r = await timed(process.execPath, [cli, 'pull', url, '--store', store, '--trust', pub, '--json', ...extra]);
  return { seconds: r.seconds, json: JSON.parse(r.stdout) as PullJson };
}

/** Delta ratio of a pull summary: wire bytes / (new object bytes + image + statement). */
function deltaRatio(j: PullJson): { moved: number; useful: number; ratio: number } {
  const moved = j.wire.received + j.wire.sent;
  const useful = j.bytes.fetched + j.bytes.image + j.bytes.statement;
  return { moved, useful, ratio: moved / useful };
}

/** Debian rows (need root and the cached OCI fixture). */
async function debianRows(work: string): Promise<BenchRow[]> {
  const { fx, Store } = await deps();
  const { debianImage, debianImageUnavailable } = await import('../test/fixtures/oci/debian-image.js');
  const why = debianImageUnavailable();
  if (why) return [{ name: 'pull: cold pull of a real Debian image', value: NaN, unit: 's', note: `skipped: ${why}` }];
  const img = await debianImage();
  const { openSource } = await import('../src/oci/source.js');
  const { importImage } = await import('../src/oci/import.js');
  const serverDir = join(work, 'server');
  const store = await Store.open(serverDir, { create: true });
  for (const tag of ['base', 'final']) await importImage(await openSource(`oci:${img.layout}:${tag}`), store, { name: 'debian', tag });
  const k = await fx.makeKey(join(work, 'keys'));
  await fx.signTag(serverDir, 'debian', 'base', k.key);
  await fx.signTag(serverDir, 'debian', 'final', k.key);
  const srv = await fx.startServe(serverDir);
  const rows: BenchRow[] = [];
  try {
    const url = `${srv.url}/debian:final`;
    // Reference: copy the merged tree (umoci's unpack of `final`) locally with tar.
    const tarTimes: number[] = [];
    const pullTimes: Record<string, number[]> = { zstd: [], none: [] };
    let cold: PullJson | undefined;
    let coldNone: PullJson | undefined;
    for (let i = 0; i < 3; i++) {
      const dest = join(work, 'tar-copy');
      rmSync(dest, { recursive: true, force: true });
      mkdirSync(dest);
      await settle();
      tarTimes.push((await timed(`tar -C '${img.rootfs}' -cf - . | tar -C '${dest}' -xf - && sync -f '${dest}'`, [], { shell: true })).seconds);
      rmSync(dest, { recursive: true, force: true });
      for (const mode of ['zstd', 'none'] as const) {
        const client = join(work, `cold-${mode}`);
        rmSync(client, { recursive: true, force: true });
        await settle();
        const p = await pullProcess(fx.PULL_CLI, url, client, k.pub, ['--compress', mode]);
        pullTimes[mode]!.push(p.seconds);
        if (mode === 'zstd') cold = p.json;
        else coldNone = p.json;
        rmSync(client, { recursive: true, force: true });
      }
    }
    const tarS = median(tarTimes);
    const mib = (n: number): string => `${(n / (1 << 20)).toFixed(1)} MiB`;
    rows.push({
      name: 'pull: cold pull of Debian bookworm minbase+2 layers (zstd, as a process)',
      value: median(pullTimes.zstd!),
      unit: 's',
      reference: tarS,
      ratio: median(pullTimes.zstd!) / tarS,
      target: 'report',
      note: `${cold!.objects.needed} objects, ${mib(cold!.bytes.needed)} content + ${mib(cold!.bytes.image)} image; ${mib(cold!.wire.received)} on the wire in ${cold!.wire.requests} requests; reference: local tar | tar copy of the same tree + sync`,
    });
    rows.push({
      name: 'pull: cold pull of the same image, no compression (the default to loopback)',
      value: median(pullTimes.none!),
      unit: 's',
      reference: tarS,
      ratio: median(pullTimes.none!) / tarS,
      target: 'report',
      note: `${mib(coldNone!.wire.received)} on the wire`,
    });
    // Delta: base present, then final.
    for (const mode of ['zstd', 'none']) {
      const client = join(work, `delta-${mode}`);
      rmSync(client, { recursive: true, force: true });
      await pullProcess(fx.PULL_CLI, `${srv.url}/debian:base`, client, k.pub, ['--compress', mode]);
      const d = (await pullProcess(fx.PULL_CLI, url, client, k.pub, ['--compress', mode])).json;
      const r = deltaRatio(d);
      rows.push({
        name: `pull: Debian base → final re-pull, bytes moved / bytes new (${mode === 'zstd' ? 'zstd' : 'no compression'})`,
        value: r.ratio,
        unit: 'ratio',
        target: '≤ 1.05',
        note: `${d.objects.fetched} of ${d.objects.needed} objects fetched; ${r.moved} bytes moved for ${d.bytes.fetched} object + ${d.bytes.image} image + ${d.bytes.statement} statement bytes`,
      });
      rmSync(client, { recursive: true, force: true });
    }
  } finally {
    await srv.stop();
  }
  return rows;
}

/** The synthetic family (incompressible content): protocol overhead of a delta pull. */
async function familyRows(work: string): Promise<BenchRow[]> {
  const { fx } = await deps();
  const fam = await fx.makeImageFamily(join(work, 'family'), { files: 2000, large: [8 << 20, 2 << 20] });
  const k = await fx.makeKey(join(work, 'fkeys'));
  await fx.signTag(fam.storeDir, fam.name, 'v1', k.key);
  await fx.signTag(fam.storeDir, fam.name, 'v2', k.key);
  const srv = await fx.startServe(fam.storeDir);
  const rows: BenchRow[] = [];
  try {
    for (const mode of ['zstd', 'none']) {
      const client = join(work, `fam-${mode}`);
      await pullProcess(fx.PULL_CLI, `${srv.url}/${fam.name}:v1`, client, k.pub, ['--compress', mode]);
      const d = (await pullProcess(fx.PULL_CLI, `${srv.url}/${fam.name}:v2`, client, k.pub, ['--compress', mode])).json;
      const r = deltaRatio(d);
      rows.push({
        name: `pull: synthetic v1 → v2 re-pull (2,000 files, ~10% changed, random content), bytes moved / bytes new (${mode === 'zstd' ? 'zstd' : 'no compression'})`,
        value: r.ratio,
        unit: 'ratio',
        target: '≤ 1.05',
        note: `${d.objects.fetched} of ${d.objects.needed} objects fetched in ${d.wire.requests} requests; ${r.moved} bytes moved for ${r.useful} useful`,
      });
    }
  } finally {
    await srv.stop();
    fx.cleanup(fam.root);
  }
  return rows;
}

/** Run the pull benchmark. */
export async function run(): Promise<BenchRow[]> {
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-bench-pull-'));
  try {
    const rows: BenchRow[] = [];
    rows.push(...(await familyRows(work)));
    rows.push(...(await debianRows(work)));
    return rows;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] === SELF) {
  const rows = await run();
  for (const r of rows) {
    const ratio = r.ratio !== undefined ? `  ratio ${r.ratio.toFixed(2)}` : '';
    const ref = r.reference !== undefined ? `  reference ${r.reference.toFixed(3)} ${r.unit}` : '';
    console.log(`${r.name}: ${Number.isFinite(r.value) ? r.value.toFixed(3) : '—'} ${r.unit}${ref}${ratio}${r.target ? `  target ${r.target}` : ''}${r.note ? `  (${r.note})` : ''}`);
  }
}
