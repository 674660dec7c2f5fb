/**
 * Import benchmark.
 *
 *  - Wall time of importing a real Debian base layer (debootstrap minbase bookworm, ~50 MB
 *    tar.gz, ~6,700 entries; the `base` image of the oracle test fixture) into an empty store,
 *    against `tar -xzf LAYER -C DIR` of the same blob in the same run. Runs alternate (tar,
 *    import, tar, import, …) after one warm-up each, each into a new directory; the filesystem
 *    is synced before each timed run and nothing is deleted until the end (on ext4 without a
 *    journal, as here, creating files right after deleting thousands makes the kernel scan
 *    past recently deleted inodes — that would measure the previous run's deletes, not this
 *    run's writes). The figure is the median. Both are
 *    measured as whole processes (Node start-up included). Reported without the final
 *    filesystem sync (tar does not sync either) and, separately, with it against
 *    `tar -xzf … && sync -f DIR`.
 *  - Peak RSS of the import process for that layer, and for two generated layers with the
 *    same 24,000 files but ~0.5 GiB apart in content (2 × 1 MiB vs 2 × 256 MiB big files), to
 *    show memory does not grow with content size (it grows with the entry count: the
 *    metadata tree is held for the merge).
 *
 * Runnable directly: `node dist/bench/import.js`.
 */
import { spawn, execFileSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createCipheriv, createHash } from 'node:crypto';
import { createGzip } from 'node:zlib';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { once } from 'node:events';

import type { BenchRow } from './types.js';
import { median } from './measure.js';
export type { BenchRow };

const CACHE = '/var/tmp/cfsdist-test-cache';
const GEN = join(CACHE, 'bench-import-gen-v1');
const ROUNDS = 5;
const SELF = fileURLToPath(import.meta.url);

interface ChildResult {
  seconds: number;
  maxRssMiB: number;
  entries: number;
  objectsNew: number;
}

function timed(cmd: string, args: string[]): Promise<{ seconds: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.trim().slice(-500)}`));
      else resolve({ seconds, stdout: out });
    });
  });
}

function settle(): Promise<void> {
  execFileSync('sync');
  return new Promise((r) => setTimeout(r, 300));
}

/** Wait until inodes deleted before this module started no longer slow file creation: ext4
 * without a journal skips inodes freed in the last 30 s (35 s while their inode-table block is
 * dirty) when it allocates, so creating files right after a mass deletion (an earlier
 * benchmark's cleanup) costs several times more — for tar's 6,700 files far more than for
 * our ~1,900 objects. Measured in steady state instead. */
async function quiet(): Promise<void> {
  execFileSync('sync');
  await new Promise((r) => setTimeout(r, 36_000));
}


/** Child mode: import SPEC into STORE, print {seconds, maxRssMiB, …} as JSON. */
async function child(spec: string, storeDir: string, sync: boolean): Promise<void> {
  const { Store } = await import('../src/store/store.js');
  const { openSource } = await import('../src/oci/source.js');
  const { importImage } = await import('../src/oci/import.js');
  const store = await Store.open(storeDir, { create: true });
  const r = await importImage(await openSource(spec), store, { name: 'bench/import', tag: 'x', sync });
  const res: ChildResult = { seconds: r.seconds, maxRssMiB: process.resourceUsage().maxRSS / 1024, entries: r.entries, objectsNew: r.objectsNew };
  process.stdout.write(JSON.stringify(res) + '\n');
}

async function importProcess(spec: string, storeDir: string, sync: boolean): Promise<{ seconds: number; res: ChildResult }> {
  const args = [SELF, '--child', spec, storeDir];
  if (!sync) args.push('--no-sync');
  const t = await timed(process.execPath, args);
  return { seconds: t.seconds, res: JSON.parse(t.stdout.trim().split('\n').pop()!) as ChildResult };
}

/** A generated layer: 24,000 files of 1–40 KiB in 240 directories plus two files of
 *  `bigFile` bytes (pseudo-random content, gzip -1). With 256 MiB: ~1 GiB of content; with
 *  1 MiB: the same entries and ~0.5 GiB less content. */
async function genLayout(tag: string, bigFile: number): Promise<string> {
  const root = join(GEN, tag);
  const layout = join(root, 'layout');
  if (existsSync(join(root, 'ready'))) return `oci:${layout}:${tag}`;
  const tmp = root + '.tmp';
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(join(tmp, 'layout', 'blobs', 'sha256'), { recursive: true });
  const { header } = await import('../test/fixtures/oci/tar-writer.js');
  const blobTmp = join(tmp, 'layer.tar.gz');
  const gz = createGzip({ level: 1 });
  const out = createWriteStream(blobTmp);
  gz.pipe(out);
  const diff = createHash('sha256');
  const write = async (b: Buffer): Promise<void> => {
    diff.update(b);
    if (!gz.write(b)) await once(gz, 'drain');
  };
  const rnd = createCipheriv('aes-128-ctr', Buffer.alloc(16, 3), Buffer.alloc(16));
  const file = async (name: string, size: number): Promise<void> => {
    await write(header({ name: Buffer.from(name), mode: 0o644, uid: 0, gid: 0, size, mtime: 1700000000, flag: '0', base256: size >= 8 ** 11 }));
    for (let off = 0; off < size; off += 1 << 20) await write(rnd.update(Buffer.alloc(Math.min(1 << 20, size - off))));
    const pad = (512 - (size % 512)) % 512;
    if (pad) await write(Buffer.alloc(pad));
  };
  await write(header({ name: Buffer.from('./'), mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1700000000, flag: '5' }));
  for (let d = 0; d < 240; d++) {
    await write(header({ name: Buffer.from(`d${d}/`), mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1700000000, flag: '5' }));
    for (let f = 0; f < 100; f++) await file(`d${d}/f${f}`, 1024 + ((d * 100 + f) * 7919) % (40 * 1024));
  }
  await file('big1', bigFile);
  await file('big2', bigFile);
  await write(Buffer.alloc(1024));
  gz.end();
  await once(out, 'close');
  const blob = readFileSync(blobTmp);
  const blobDigest = createHash('sha256').update(blob).digest('hex');
  renameSync(blobTmp, join(tmp, 'layout', 'blobs', 'sha256', blobDigest));
  const put = (b: Buffer): { digest: string; size: number } => {
    const h = createHash('sha256').update(b).digest('hex');
    writeFileSync(join(tmp, 'layout', 'blobs', 'sha256', h), b);
    return { digest: `sha256:${h}`, size: b.length };
  };
  const cfg = put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${diff.digest('hex')}`] } })));
  const man = put(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${blobDigest}`, size: blob.length }],
  })));
  writeFileSync(join(tmp, 'layout', 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(tmp, 'layout', 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...man, annotations: { 'org.opencontainers.image.ref.name': tag } }] }));
  writeFileSync(join(tmp, 'ready'), '');
  rmSync(root, { recursive: true, force: true });
  mkdirSync(GEN, { recursive: true });
  renameSync(tmp, root);
  return `oci:${layout}:${tag}`;
}

/** Run the benchmark; rows as documented in the file comment. */
export async function run(): Promise<BenchRow[]> {
  const { debianImage, debianImageUnavailable } = await import('../test/fixtures/oci/debian-image.js');
  const why = debianImageUnavailable();
  if (why) return [{ name: 'import Debian base layer', value: NaN, unit: 's', note: `skipped: ${why}` }];
  const img = await debianImage();
  const spec = `oci:${img.layout}:base`;
  const index = JSON.parse(readFileSync(join(img.layout, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const baseDesc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'base')!;
  const manifest = JSON.parse(readFileSync(join(img.layout, 'blobs', 'sha256', baseDesc.digest.slice(7)), 'utf8')) as { layers: { digest: string }[] };
  const blob = join(img.layout, 'blobs', 'sha256', manifest.layers[0]!.digest.slice(7));
  const blobMiB = statSync(blob).size / 2 ** 20;

  const work = mkdtempSync(join('/var/tmp', 'cfsdist-bench-import-'));
  const rows: BenchRow[] = [];
  try {
    let k = 0;
    const tarRun = async (sync: boolean): Promise<number> => {
      const dir = join(work, `tar-${k++}`);
      mkdirSync(dir);
      await settle();
      return (await timed('sh', ['-c', `tar -xzf "$0" -C "$1"${sync ? ' && sync -f "$1"' : ''}`, blob, dir])).seconds;
    };
    let entries = 0;
    let rss50 = 0;
    const importRun = async (sync: boolean): Promise<number> => {
      const dir = join(work, `store-${k++}`);
      await settle();
      const r = await importProcess(spec, dir, sync);
      entries = r.res.entries;
      rss50 = Math.max(rss50, r.res.maxRssMiB);
      return r.seconds;
    };
    await quiet();
    for (const sync of [false, true]) {
      await tarRun(sync);
      await importRun(sync); // warm-up
      const tars: number[] = [];
      const ours: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        tars.push(await tarRun(sync));
        ours.push(await importRun(sync));
      }
      const t = median(tars);
      const o = median(ours);
      rows.push({
        name: `import Debian base layer (${blobMiB.toFixed(0)} MB tar.gz, ${entries} entries)${sync ? ', with filesystem sync' : ''}`,
        value: o,
        unit: 's',
        reference: t,
        ratio: o / t,
        target: sync ? undefined : '≤ 1.0× tar -xzf',
        note: `median of ${ROUNDS}, alternating; reference: tar -xzf${sync ? ' && sync -f' : ''}; runs ours ${ours.map((x) => x.toFixed(2)).join('/')} tar ${tars.map((x) => x.toFixed(2)).join('/')}`,
      });
    }
    rows.push({ name: 'import peak RSS, Debian base layer', value: rss50, unit: 'MiB', target: '< 300 MiB' });
    // Same entries, content differing by ~0.5 GiB: memory follows the entry count (the
    // metadata tree), not the content size.
    for (const [tag, size, label] of [['meta', 1 << 20, '2 × 1 MiB'], ['big', 256 << 20, '2 × 256 MiB']] as const) {
      const spec2 = await genLayout(tag, size);
      await settle();
      const r = await importProcess(spec2, join(work, `store-${tag}`), false);
      rows.push({
        name: `import peak RSS, generated layer: 24,000 small files + ${label} (${r.res.entries} entries)`,
        value: r.res.maxRssMiB,
        unit: 'MiB',
        target: '< 300 MiB, independent of content size',
        note: `import took ${r.seconds.toFixed(1)} s`,
      });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return rows;
}

if (process.argv[1] === SELF) {
  if (process.argv[2] === '--child') {
    await child(process.argv[3]!, process.argv[4]!, process.argv[5] !== '--no-sync');
  } else {
    const rows = await run();
    for (const r of rows) {
      const ratio = r.ratio !== undefined ? `  ratio ${r.ratio.toFixed(2)}` : '';
      const ref = r.reference !== undefined ? `  reference ${r.reference.toFixed(3)} ${r.unit}` : '';
      console.log(`${r.name}: ${Number.isFinite(r.value) ? r.value.toFixed(3) : '—'} ${r.unit}${ref}${ratio}${r.target ? `  target ${r.target}` : ''}${r.note ? `  (${r.note})` : ''}`);
    }
  }
}
