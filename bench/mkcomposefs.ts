/**
 * Format-core benchmark: `cfsdist mkcomposefs --from-file` on a generated 100,000-entry dumpfile
 * (fixed seed) against C mkcomposefs on the same file, same run, alternating; and the start-up of
 * `cfsdist --help` and `cfsdist images` as commands, against `node -e 0`.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BenchRow } from './types.js';
import { alternating, summarize, timed } from './measure.js';
import type { RunFigures } from './measure.js';
import { generateDumpfile } from './gen-dumpfile.js';
import { Store } from '../src/store/store.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(REPO, 'bin', 'cfsdist');
const REF = resolve(process.env.CFSDIST_REFERENCE_BIN ?? resolve(REPO, '..', 'shared', 'reference-bin'), 'mkcomposefs');

/** Run the benchmark and return its rows. */
export async function run(): Promise<BenchRow[]> {
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-bench-mk-'));
  try {
    const dump = join(work, '100k.dump');
    writeFileSync(dump, generateDumpfile(100_000, 1));
    const rows: BenchRow[] = [];
    const ROUNDS = Number(process.env.CFSDIST_BENCH_ROUNDS ?? 5);
    const mk = (): Promise<RunFigures> => timed(CLI, ['mkcomposefs', '--from-file', dump, join(work, 'ours.cfs')]);
    if (existsSync(REF)) {
      const r = alternating(ROUNDS, mk, () => timed(REF, ['--from-file', dump, join(work, 'ref.cfs')]));
      const { a, b } = await r;
      const same = readFileSync(join(work, 'ours.cfs')).equals(readFileSync(join(work, 'ref.cfs')));
      if (!same) throw new Error('images differ from the reference: byte-exactness broken');
      const ours = summarize(a);
      const ref = summarize(b);
      const note = `median of ${ROUNDS}, alternating; reference: C mkcomposefs 1.0.8; images byte-identical; runs ours ${ours.runs} reference ${ref.runs}`;
      rows.push({ name: 'mkcomposefs --from-file, 100,000 entries: time', value: ours.seconds, unit: 's', reference: ref.seconds, ratio: ours.seconds / ref.seconds, target: '≤ 1.0× C', note });
      rows.push({ name: 'mkcomposefs --from-file, 100,000 entries: peak RSS', value: ours.peakRssMb, unit: 'MB', reference: ref.peakRssMb, ratio: ours.peakRssMb / ref.peakRssMb, target: '≤ 1.3× C', note: `median of ${ROUNDS}; RSS ours ${a.map((x) => x.peakRssMb.toFixed(0)).join('/')} MB reference ${b.map((x) => x.peakRssMb.toFixed(0)).join('/')} MB` });
    } else {
      const ours = summarize([await mk()]);
      rows.push({ name: 'mkcomposefs --from-file, 100,000 entries: time', value: ours.seconds, unit: 's', target: '≤ 1.0× C', note: `no reference mkcomposefs in ${REF}` });
    }
    // Start-up of the command as users type it (bin/cfsdist), against Node starting an empty
    // script: the floor any Node program pays — measured as bin/cfsdist's Node starts (without
    // NODE_EXTRA_CA_CERTS, which bin/cfsdist keeps from it) and, in the note, as a plain
    // `node -e 0` in this environment.
    const store = join(work, 'store');
    await Store.open(store, { create: true });
    const bare: NodeJS.ProcessEnv = { ...process.env };
    delete bare.NODE_EXTRA_CA_CERTS;
    const plain = summarize((await alternating(2 * ROUNDS + 1, () => timed(process.execPath, ['-e', '0']), () => timed(process.execPath, ['-e', '0'], { env: bare }))).a);
    for (const [what, args] of [['--help', ['--help']], ['images', ['--store', store, 'images']]] as const) {
      const { a, b } = await alternating(2 * ROUNDS + 1, () => timed(CLI, [...args]), () => timed(process.execPath, ['-e', '0'], { env: bare }));
      const ours = summarize(a);
      const node = summarize(b);
      rows.push({
        name: `cfsdist ${what} start-up`,
        value: ours.seconds * 1000,
        unit: 'ms',
        reference: node.seconds * 1000,
        ratio: ours.seconds / node.seconds,
        target: '≤ 80 ms',
        note:
          `reference: node -e 0 without NODE_EXTRA_CA_CERTS (as bin/cfsdist starts Node)${process.env.NODE_EXTRA_CA_CERTS ? `; node -e 0 with this environment's NODE_EXTRA_CA_CERTS: ${(plain.seconds * 1000).toFixed(0)} ms` : ''}; ` +
          `times include spawning from the bench process; median of ${2 * ROUNDS + 1}, alternating; runs ours ${ours.runs} node ${node.runs}`,
      });
    }
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
