/**
 * Reader benchmark: `cfsdist info dump` and `info ls` of the 100,000-entry image of the format
 * benchmark (generated dumpfile, fixed seed) against C `composefs-info` on the same image in
 * the same run; plus the lazy API's lookup+stat latency (what a userspace mount pays per call).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { best, timed } from './measure.js';
import { generateDumpfile } from './gen-dumpfile.js';
import { ErofsImage } from '../src/erofs/reader.js';
import { walk } from '../src/tree/tree.js';

import type { BenchRow } from './types.js';
export type { BenchRow };

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(REPO, 'bin', 'cfsdist');
const REF_BIN = (process.env.CFSDIST_REFERENCE_BIN ? resolve(process.env.CFSDIST_REFERENCE_BIN) : resolve(REPO, '..', 'shared', 'reference-bin'));
const INFO = join(REF_BIN, 'composefs-info');
const MK = join(REF_BIN, 'mkcomposefs');

/** Run the benchmark and return its rows. */
export async function run(): Promise<BenchRow[]> {
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-bench-info-'));
  try {
    const dump = join(work, '100k.dump');
    const image = join(work, '100k.cfs');
    writeFileSync(dump, generateDumpfile(100_000, 1));
    const haveRef = existsSync(INFO) && existsSync(MK);
    const build = haveRef ? spawnSync(MK, ['--from-file', dump, image]) : spawnSync(process.execPath, [CLI, 'mkcomposefs', '--from-file', dump, image]);
    if (build.status !== 0) throw new Error(`building the benchmark image failed: ${build.stderr}`);
    const rows: BenchRow[] = [];

    for (const cmd of ['dump', 'ls'] as const) {
      const ours = await best(3, () => timed(process.execPath, [CLI, 'info', cmd, image]));
      const ref = haveRef ? await best(3, () => timed(INFO, [cmd, image])) : undefined;
      const same = ref ? ours.stdout === ref.stdout : undefined;
      const row: BenchRow = {
        name: `info ${cmd}, 100,000 entries: time`,
        value: ours.seconds,
        unit: 's',
        reference: ref?.seconds,
        ratio: ref ? ours.seconds / ref.seconds : undefined,
        note: `reference: C composefs-info ${cmd}; output ${same === undefined ? 'not compared' : same ? 'identical' : 'DIFFERS'}`,
      };
      if (cmd === 'dump') row.target = '≤ 1.5 s';
      rows.push(row);
      rows.push({
        name: `info ${cmd}, 100,000 entries: peak RSS`,
        value: ours.peakRssMb,
        unit: 'MB',
        reference: ref?.peakRssMb,
        ratio: ref ? ours.peakRssMb / ref.peakRssMb : undefined,
      });
    }

    // Lazy API: lookup + stat of random paths through a file descriptor (userspace mount path).
    const paths = [...walk(ErofsImage.open(image).toTree())].map(([p]) => p);
    const img = ErofsImage.open(image, { lazy: true });
    try {
      const n = 20_000;
      let x = 12345;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < n; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        const nid = img.lookup(paths[x % paths.length]!);
        if (nid === undefined) throw new Error('lookup failed');
        img.stat(nid);
      }
      const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
      rows.push({ name: 'lazy lookup + stat of a random path (fd, 16 MiB cache)', value: us, unit: 'µs', note: `${n} paths, depth ≤ ~20` });
    } finally {
      img.close();
    }
    return rows;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  run().then(
    (rows) => console.table(rows),
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
