/**
 * Store benchmark on 100,000 small files (100 B – 16 KiB, fixed seed, cached under /var/tmp):
 *  - adding them to an empty store (ObjectDir.addFiles: worker threads hash each file, write a
 *    temporary file, fsync it, rename it into place): objects/s, with C
 *    `mkcomposefs --digest-store` over the same directory in the same run as the reference;
 *  - adding them again (every object present: nothing written): objects/s;
 *  - digesting them all (digestFiles over worker threads): files/s, reference
 *    `fsverity digest` over the same files (batches of 1,000 per process, 2 at a time).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, createCipheriv } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg } from 'node:os';
import { Store } from '../src/store/store.js';
import { digestFiles } from '../src/verity/parallel.js';

import type { BenchRow } from './types.js';
export type { BenchRow };

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const MKCOMPOSEFS = resolve(process.env.CFSDIST_REFERENCE_BIN ?? resolve(REPO, '..', 'shared', 'reference-bin'), 'mkcomposefs');
const N = 100_000;
const SRC = `/var/tmp/cfsdist-test-cache/bench-store-100k-v1`;

/** The 100,000 files, 100 per directory (created once, then reused). */
function ensureFiles(): string[] {
  const paths: string[] = [];
  for (let i = 0; i < N; i++) paths.push(join(SRC, `d${Math.floor(i / 100)}`, `f${i}`));
  if (existsSync(join(SRC, 'complete'))) return paths;
  const tmp = `${SRC}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  const stream = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16));
  for (let i = 0; i < N; i++) {
    if (i % 100 === 0) mkdirSync(join(tmp, `d${i / 100}`), { recursive: true });
    const size = 100 + (createHash('sha256').update(`size${i}`).digest().readUInt32LE(0) % (16 * 1024 - 100));
    writeFileSync(join(tmp, `d${Math.floor(i / 100)}`, `f${i}`), stream.update(Buffer.alloc(size)));
  }
  writeFileSync(join(tmp, 'complete'), '');
  rmSync(SRC, { recursive: true, force: true });
  renameSync(tmp, SRC);
  return paths;
}

function runCmd(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`${cmd} exited ${code}: ${err.slice(-300)}`));
      else resolvePromise(Number(process.hrtime.bigint() - t0) / 1e9);
    });
  });
}

async function addAll(store: Store, paths: string[]): Promise<{ seconds: number; created: number }> {
  const t0 = process.hrtime.bigint();
  const r = await store.objects.addFiles(paths);
  await store.objects.sync();
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, created: r.filter((x) => !x.existed).length };
}

/** Run the benchmark and return its rows. */
export async function run(): Promise<BenchRow[]> {
  const load = loadavg()[0].toFixed(1); // figures need idle cores: say how busy the machine was
  const paths = ensureFiles();
  const work = mkdtempSync('/var/tmp/cfsdist-bench-store-');
  try {
    // Digests first (other benchmarks on this machine may drop the page cache): warm the cache,
    // then tool and ours alternately, best of 2 each.
    await digestFiles(paths);
    let toolSeconds = Infinity;
    let digestSeconds = Infinity;
    for (let round = 0; round < 2; round++) {
      const t1 = process.hrtime.bigint();
      let b = 0;
      await Promise.all(
        Array.from({ length: 2 }, async () => {
          while (b < paths.length) {
            const batch = paths.slice(b, b + 1000);
            b += 1000;
            await runCmd('fsverity', ['digest', ...batch]);
          }
        }),
      );
      toolSeconds = Math.min(toolSeconds, Number(process.hrtime.bigint() - t1) / 1e9);
      const t0 = process.hrtime.bigint();
      await digestFiles(paths);
      digestSeconds = Math.min(digestSeconds, Number(process.hrtime.bigint() - t0) / 1e9);
    }

    // Adds: ours, again (all present), then C mkcomposefs --digest-store on the same tree.
    const store = await Store.open(join(work, 'store'), { create: true });
    const first = await addAll(store, paths);
    const again = await addAll(store, paths);
    let refSeconds: number | undefined;
    if (existsSync(MKCOMPOSEFS)) {
      await digestFiles(paths); // re-warm the source files for the reference too
      const objs = join(work, 'ref-objects');
      mkdirSync(objs);
      refSeconds = await runCmd(MKCOMPOSEFS, [`--digest-store=${objs}`, SRC, join(work, 'ref.cfs')]);
      const refCount = readdirSync(objs).reduce((n, d) => n + readdirSync(join(objs, d)).length, 0);
      const ours = (await store.objects.scan()).objects.length;
      if (refCount !== ours) throw new Error(`object counts differ: ours ${ours}, mkcomposefs ${refCount}`);
    }

    return [
      {
        name: 'store: add 100,000 small files to an empty store',
        value: N / first.seconds,
        unit: 'objects/s',
        reference: refSeconds ? N / refSeconds : undefined,
        ratio: refSeconds ? refSeconds / first.seconds : undefined,
        note: `${first.seconds.toFixed(2)} s, ${first.created} objects written, ObjectDir.addFiles, each fsynced then renamed; reference: C mkcomposefs --digest-store over the same tree (writes its image too); load average at start ${load}`,
      },
      {
        name: 'store: add the same 100,000 files again (all present)',
        value: N / again.seconds,
        unit: 'objects/s',
        note: `${again.seconds.toFixed(2)} s, ${again.created} written`,
      },
      {
        name: 'digest 100,000 small files (digestFiles, worker threads)',
        value: N / digestSeconds,
        unit: 'files/s',
        reference: N / toolSeconds,
        ratio: toolSeconds / digestSeconds,
        note: 'page-cached; reference: fsverity digest, 1,000 files per process, 2 processes at a time; best of 2, alternating',
      },
    ];
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  run().then(
    (rows) => {
      for (const r of rows) {
        console.log(`${r.name}: ${r.value.toFixed(0)} ${r.unit}${r.reference ? `; reference ${r.reference.toFixed(0)} ${r.unit}; ratio ${r.ratio?.toFixed(2)}×` : ''}${r.note ? ` — ${r.note}` : ''}`);
      }
    },
    (err: Error) => {
      console.error(`bench/store: ${err.message}`);
      process.exitCode = 1;
    },
  );
}
