/**
 * Format-core benchmark: `cfsdist mkcomposefs --from-file` on a generated 100,000-entry dumpfile
 * (fixed seed) against C mkcomposefs on the same file, same run; and CLI start-up time.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './types.js';
import { best, timed } from './measure.js';
import { generateDumpfile } from './gen-dumpfile.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(REPO, 'bin', 'cfsdist');
const REF = resolve(process.env.CFSDIST_REFERENCE_BIN ?? resolve(REPO, '..', 'shared', 'reference-bin'), 'mkcomposefs');

/** Run the benchmark and return its rows. */
export async function run(): Promise<BenchRow[]> {
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-bench-mk-'));
  try {
    const dump = join(work, '100k.dump');
    writeFileSync(dump, generateDumpfile(100_000, 1));
    const ours = await best(3, () => timed(process.execPath, [CLI, 'mkcomposefs', '--from-file', dump, join(work, 'ours.cfs')]));
    const rows: BenchRow[] = [];
    let ref;
    if (existsSync(REF)) {
      ref = await best(3, () => timed(REF, ['--from-file', dump, join(work, 'ref.cfs')]));
      const same = readFileSync(join(work, 'ours.cfs')).equals(readFileSync(join(work, 'ref.cfs')));
      if (!same) throw new Error('images differ from the reference: byte-exactness broken');
    }
    rows.push({
      name: 'mkcomposefs --from-file, 100,000 entries: time',
      value: ours.seconds,
      unit: 's',
      reference: ref?.seconds,
      ratio: ref ? ours.seconds / ref.seconds : undefined,
      target: '≤ 2.0 s',
      note: 'reference: C mkcomposefs 1.0.8; images byte-identical',
    });
    rows.push({
      name: 'mkcomposefs --from-file, 100,000 entries: peak RSS',
      value: ours.peakRssMb,
      unit: 'MB',
      reference: ref?.peakRssMb,
      ratio: ref ? ours.peakRssMb / ref.peakRssMb : undefined,
      target: '≤ 200 MB',
    });
    const help = await best(5, () => timed(process.execPath, [CLI, '--help']));
    rows.push({ name: 'cfsdist --help start-up', value: help.seconds * 1000, unit: 'ms', target: '< 300 ms' });
    return rows;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  run().then((rows) => console.table(rows), (e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
