/**
 * fs-verity digest benchmark: a 1 GiB random file in /var/tmp (page-cached), digested by
 * `fsverity digest` and by ours in the same run, interleaved, best of 5 each:
 *  - library, parallel over worker threads (fsverityDigestFileParallel) — the target row;
 *  - `cfsdist digest FILE` as a process (adds Node start-up and worker spawn);
 *  - library, single thread (fsverityDigestFile), for comparison.
 * Ratios are throughputs: reference time / our time (> 1 means faster than the tool).
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, renameSync, statSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { fsverityDigestFile, toHex } from '../src/verity/digest.js';
import { fsverityDigestFileParallel, sharedPool } from '../src/verity/parallel.js';

import type { BenchRow } from './types.js';
export type { BenchRow };

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(REPO, 'bin', 'cfsdist');
const FILE = '/var/tmp/cfsdist-bench-verity-1g.v1';
const SIZE = 1 << 30;

function ensureFile(): void {
  if (existsSync(FILE) && statSync(FILE).size === SIZE) return;
  const fd = openSync(FILE + '.tmp', 'w');
  for (let off = 0; off < SIZE; off += 64 << 20) writeSync(fd, randomBytes(64 << 20));
  closeSync(fd);
  renameSync(FILE + '.tmp', FILE); // last: an interrupted run never leaves a short file behind
}

function spawnWait(cmd: string, args: string[]): Promise<{ seconds: number; stdout: string }> {
  return new Promise((resolvePromise, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${Buffer.concat(err).toString().slice(-300)}`));
      else resolvePromise({ seconds, stdout: Buffer.concat(out).toString() });
    });
  });
}

async function timeIt<T>(fn: () => Promise<T>): Promise<{ seconds: number; value: T }> {
  const t0 = process.hrtime.bigint();
  const value = await fn();
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, value };
}

/** Run the benchmark and return its rows. */
export async function run(): Promise<BenchRow[]> {
  const load = loadavg()[0].toFixed(1); // figures need idle cores: say how busy the machine was
  ensureFile();
  const gib = SIZE / 2 ** 30;
  // Warm the page cache and the worker pool; check that everyone agrees.
  const want = toHex(await fsverityDigestFileParallel(FILE));
  const tool0 = (await spawnWait('fsverity', ['digest', '--compact', FILE])).stdout.trim();
  if (tool0 !== want) throw new Error(`digest differs from fsverity digest: ${want} vs ${tool0}`);

  let tool = Infinity;
  let par = Infinity;
  let cli = Infinity;
  let single = Infinity;
  for (let i = 0; i < 5; i++) {
    tool = Math.min(tool, (await spawnWait('fsverity', ['digest', FILE])).seconds);
    const p = await timeIt(() => fsverityDigestFileParallel(FILE));
    if (toHex(p.value) !== want) throw new Error('parallel digest differs');
    par = Math.min(par, p.seconds);
    const c = await spawnWait(process.execPath, [CLI, 'digest', FILE]);
    if (!c.stdout.startsWith(want)) throw new Error('cfsdist digest differs');
    cli = Math.min(cli, c.seconds);
    if (i < 2) {
      const s = await timeIt(() => fsverityDigestFile(FILE));
      if (toHex(s.value) !== want) throw new Error('single-thread digest differs');
      single = Math.min(single, s.seconds);
    }
  }
  const workers = sharedPool().size;
  return [
    {
      name: `fs-verity digest of 1 GiB, parallel (${workers} workers), throughput`,
      value: gib / par,
      unit: 'GiB/s',
      reference: gib / tool,
      ratio: tool / par,
      target: '≥ 1.5× fsverity digest',
      note: `library call, page-cached file; fsverity digest ${tool.toFixed(3)} s, ours ${par.toFixed(3)} s (best of 5, interleaved); load average at start ${load}`,
    },
    {
      name: 'fs-verity digest of 1 GiB, `cfsdist digest` process, throughput',
      value: gib / cli,
      unit: 'GiB/s',
      reference: gib / tool,
      ratio: tool / cli,
      note: `whole command incl. Node start-up and worker spawn: ${cli.toFixed(3)} s`,
    },
    {
      name: 'fs-verity digest of 1 GiB, single thread, throughput',
      value: gib / single,
      unit: 'GiB/s',
      reference: gib / tool,
      ratio: tool / single,
      note: `Node crypto, one 4 KiB block per call: ${single.toFixed(3)} s`,
    },
  ];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  run().then(
    (rows) => {
      for (const r of rows) {
        console.log(`${r.name}: ${r.value.toFixed(3)} ${r.unit}; reference ${r.reference?.toFixed(3)} ${r.unit}; ratio ${r.ratio?.toFixed(2)}×${r.target ? ` (target ${r.target})` : ''}${r.note ? ` — ${r.note}` : ''}`);
      }
    },
    (err: Error) => {
      console.error(`bench/verity: ${err.message}`);
      process.exitCode = 1;
    },
  );
}
