/**
 * `npm run bench`: installs the reference tools (as root), runs every benchmark module on the
 * same machine in one run, and writes bench/results/latest.md plus SVG plots.
 * A module that fails is reported as such; the others still run.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpus, totalmem } from 'node:os';
import type { BenchRow } from './types.js';
import { barChart } from './svg.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const RESULTS = join(REPO, 'bench', 'results');
/** Benchmark modules, in report order. Each exports `run(): Promise<BenchRow[]>`. */
const MODULES = ['mkcomposefs', 'info', 'verity', 'store', 'import', 'pull', 'mount', 'registry', 'delta', 'run-start'];
/** Debian packages of the reference tools. */
const TOOLS = ['fsverity', 'erofs-utils', 'skopeo', 'umoci', 'zstd', 'attr', 'docker-registry', 'debootstrap', 'time', 'runc', 'podman', 'uidmap'];

function setup(): void {
  if (process.getuid?.() !== 0) {
    console.error('bench: not root; reference tools must already be installed');
    return;
  }
  const missing = TOOLS.filter((p) => spawnSync('dpkg', ['-s', p], { stdio: 'ignore' }).status !== 0);
  if (!missing.length) return;
  console.error(`bench: installing ${missing.join(' ')}`);
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
  const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  if (r.status !== 0) throw new Error('apt-get install of the reference tools failed');
}

function fmt(v: number | undefined, digits = 3): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  if (Math.abs(v) >= 1000) return v.toFixed(0);
  return Number(v.toPrecision(digits)).toString();
}

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  setup();
  mkdirSync(RESULTS, { recursive: true });
  const sections: { module: string; rows: BenchRow[]; error?: string; seconds: number }[] = [];
  for (const m of MODULES) {
    if (only.length && !only.includes(m)) continue;
    const t0 = Date.now();
    let mod: { run?: () => Promise<BenchRow[]> };
    try {
      mod = (await import(`./${m}.js`)) as { run?: () => Promise<BenchRow[]> };
    } catch {
      continue; // no such benchmark (yet)
    }
    if (!mod.run) continue;
    console.error(`bench: ${m}…`);
    try {
      const rows = await mod.run();
      sections.push({ module: m, rows, seconds: (Date.now() - t0) / 1000 });
    } catch (e) {
      sections.push({ module: m, rows: [], error: (e as Error).message, seconds: (Date.now() - t0) / 1000 });
    }
  }
  // Each module's rows are kept in results/<module>.json, so `npm run bench -- NAME` re-runs one
  // module and the report still shows the latest figures of every module.
  const { readFileSync, existsSync } = await import('node:fs');
  for (const sec of sections) writeFileSync(join(RESULTS, `${sec.module}.json`), JSON.stringify(sec, null, 1) + '\n');
  sections.length = 0;
  for (const m of MODULES) {
    const f = join(RESULTS, `${m}.json`);
    if (existsSync(f)) sections.push(JSON.parse(readFileSync(f, 'utf8')) as (typeof sections)[number]);
  }
  const lines: string[] = [];
  lines.push('# cfsdist benchmark results', '');
  lines.push(`Produced by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}.`);
  lines.push('Each reference figure was measured in the same run on the same data. Ratio = ours / reference unless the note says otherwise.', '');
  lines.push('| benchmark | figure | reference | ratio | target | note |', '|---|---|---|---|---|---|');
  for (const s of sections) {
    if (s.error) lines.push(`| ${s.module} | **failed** | | | | ${s.error.replace(/\|/g, '\\|').slice(0, 300)} |`);
    for (const r of s.rows) {
      lines.push(`| ${r.name} | ${fmt(r.value)} ${r.unit} | ${r.reference === undefined ? '—' : `${fmt(r.reference)} ${r.unit}`} | ${fmt(r.ratio)} | ${r.target ?? ''} | ${r.note ?? ''} |`);
    }
  }
  lines.push('');
  const ratios = sections.flatMap((s) => s.rows.filter((r) => r.ratio !== undefined && Number.isFinite(r.ratio)).map((r) => ({ label: r.name.slice(0, 60), value: r.ratio! })));
  if (ratios.length) {
    writeFileSync(join(RESULTS, 'ratios.svg'), barChart('cfsdist / reference (lower is better unless noted)', ratios, { marker: 1 }));
    lines.push('![ratios](ratios.svg)', '');
  }
  writeFileSync(join(RESULTS, 'latest.md'), lines.join('\n'));
  console.log(lines.join('\n'));
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
