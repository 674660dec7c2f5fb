/**
 * `cfsdist demo`: the whole mission end to end on real data, through the real CLI.
 *
 * release:    the server imports v1 of a Debian image family (OCI layout) as demo:latest,
 *             signs it and serves its store on 127.0.0.1; a fresh client pulls it
 * update:     the server imports v2 on the same tag and signs it (which makes a metadata delta);
 *             the client pulls again: only the objects v1 lacks, and the image as a delta
 * then:       verify, fsck, mount (kernel when possible, else userspace), show a file and `ls`,
 *             and `cfsdist run` the image: its entrypoint as its non-root user, via runc
 * Prints a summary table whose numbers are checked against what the client store holds.
 * Mounts and the server are cleaned up on exit, Ctrl-C included.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { CfsError } from '../errors.js';
import { defaultCacheDir, ensureDebianFamily, type Log } from './family.js';

const CLI = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'cfsdist');

/** Demo options. */
export interface DemoOptions {
  cacheDir?: string;
  /** Keep the work directory (stores, keys) afterwards. */
  keep?: boolean;
  /** Force the userspace mount. */
  fuse?: boolean;
  log?: Log;
}

/** One pull's figures. */
export interface PullFigures {
  tag: string;
  objectsNeeded: number;
  objectsPresent: number;
  objectsFetched: number;
  /** Content bytes of the fetched objects. */
  bytesFetched: number;
  /** Metadata bytes moved: the full image, or the delta it was rebuilt from. */
  imageBytes: number;
  /** The image was rebuilt from a metadata delta. */
  viaDelta: boolean;
  /** Bytes received on the wire (objects, image, statement, protocol). */
  wireBytes: number;
  requests: number;
  seconds: number;
}

/** What the demo measured. */
export interface DemoSummary {
  /** Tar entries imported, per version. */
  files: Record<string, number>;
  /** Regular files stored inline in the image, per version. */
  inlined: Record<string, number>;
  objects: Record<string, number>;
  uniqueObjects: number;
  dedupRatio: number;
  pulls: PullFigures[];
  clientObjects: number;
  timings: Record<string, number>;
  mountKind: string;
  release: string;
  listing: string;
  /** What `cfsdist run demo:latest` printed (root only). */
  program: string;
  notes: string[];
}

/** The demo failed at a step. */
export class DemoError extends CfsError {}

/** Run our CLI; resolves to stdout, rejects with stderr's tail. */
export function cli(args: string[], opts: { allowFail?: boolean } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', rej);
    child.on('close', (code) => {
      const r = { code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      if (r.code !== 0 && !opts.allowFail) rej(new DemoError('DEMO_STEP', `cfsdist ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`));
      else res(r);
    });
  });
}

async function timedStep<T>(timings: Record<string, number>, name: string, log: Log, fn: () => Promise<T>): Promise<T> {
  log(`▶ ${name}`);
  const t0 = performance.now();
  const r = await fn();
  timings[name] = (performance.now() - t0) / 1000;
  return r;
}

function countObjects(objectsDir: string): number {
  if (!existsSync(objectsDir)) return 0;
  let n = 0;
  for (const d of readdirSync(objectsDir)) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const f of readdirSync(join(objectsDir, d))) if (/^[0-9a-f]{62}$/.test(f)) n++;
  }
  return n;
}

/** Run the demo; returns the summary (also printed by the CLI). */
export async function runDemo(opts: DemoOptions = {}): Promise<DemoSummary> {
  const log = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const timings: Record<string, number> = {};
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-demo-'));
  const serverStore = join(work, 'server-store');
  const clientStore = join(work, 'client-store');
  const key = join(work, 'demo.key');
  const mnt = join(work, 'mnt');
  mkdirSync(mnt);
  let server: ChildProcess | undefined;
  let mounted = false;
  const cleanup = async () => {
    if (mounted) await cli(['--store', clientStore, 'umount', mnt], { allowFail: true });
    mounted = false;
    if (server && server.exitCode === null) server.kill('SIGTERM');
    if (!opts.keep) rmSync(work, { recursive: true, force: true });
  };
  const onSignal = (sig: NodeJS.Signals) => {
    log(`\n${sig}: cleaning up…`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const family = await timedStep(timings, 'build image family (cached after first run)', log, () => ensureDebianFamily(opts.cacheDir ?? defaultCacheDir(), log));

    // ── a release, then an update of the same tag ─────────────────────────────
    // The server publishes v1 as demo:latest; the client pulls it; the server publishes v2 on
    // the same tag (signing makes a metadata delta from v1); the client pulls the update.
    const imports: Record<string, { files: number; inlined: number; objects: number }> = {};
    const publish = async (version: string) => {
      const r = await timedStep(timings, `server: import ${version} as demo:latest`, log, () =>
        cli(['--store', serverStore, '--json', '--quiet', 'import', `oci:${family.layout}:${version}`, 'demo:latest']),
      );
      const j = JSON.parse(r.stdout) as { entries: number; inlined: number; objects: number };
      imports[version] = { files: j.entries, inlined: j.inlined, objects: j.objects };
      await timedStep(timings, `server: sign demo:latest (${version})`, log, () => cli(['--store', serverStore, 'sign', 'demo:latest', '--key', key]));
    };
    await cli(['key', 'generate', '--out', key]);
    const pulls: PullFigures[] = [];
    const pullLatest = async (version: string, url: string) => {
      const t0 = performance.now();
      const r = await timedStep(timings, `client: pull demo:latest (${version})`, log, () =>
        cli(['--store', clientStore, '--json', '--quiet', 'pull', `${url}/demo:latest`, '--trust', `${key}.pub`]),
      );
      const j = JSON.parse(r.stdout) as {
        delta?: { bytes: number };
        objects: { needed: number; present: number; fetched: number };
        bytes: { fetched: number; image: number; statement: number };
        wire: { received: number; requests: number };
      };
      pulls.push({
        tag: version,
        objectsNeeded: j.objects.needed,
        objectsPresent: j.objects.present,
        objectsFetched: j.objects.fetched,
        bytesFetched: j.bytes.fetched,
        imageBytes: j.bytes.image,
        viaDelta: Boolean(j.delta),
        wireBytes: j.wire.received,
        requests: j.wire.requests,
        seconds: (performance.now() - t0) / 1000,
      });
    };
    await publish(family.tags[0]!);
    const url = await timedStep(timings, 'server: serve on 127.0.0.1', log, () => startServer(serverStore, (c) => (server = c)));
    await pullLatest(family.tags[0]!, url);
    await publish(family.tags[1]!);
    await pullLatest(family.tags[1]!, url);
    await timedStep(timings, 'client: verify + fsck', log, async () => {
      await cli(['--store', clientStore, 'verify', 'demo:latest', '--trust', `${key}.pub`]);
      await cli(['--store', clientStore, 'fsck']);
    });
    const clientObjects = countObjects(join(clientStore, 'objects'));
    const fetched = pulls.reduce((s, p) => s + p.objectsFetched, 0);
    if (fetched !== clientObjects) {
      throw new DemoError('DEMO_MISMATCH', `pulls report ${fetched} objects fetched but the client store holds ${clientObjects}`);
    }

    const mountArgs = ['--store', clientStore, 'mount', 'demo:latest', mnt, '--json'];
    if (opts.fuse) mountArgs.push('--fuse');
    const notes: string[] = [];
    const m = await timedStep(timings, 'client: mount demo:latest', log, async () => {
      // A verified mount first; the kernel path refuses where it has no fs-verity.
      const first = await cli(mountArgs, { allowFail: true });
      if (first.code === 0) return first;
      if (!/verity/i.test(first.stderr)) throw new DemoError('DEMO_STEP', `mount failed: ${first.stderr.trim()}`);
      notes.push('this kernel has no fs-verity: mounted with --no-verity (contents were verified when pulled, not on each read); use --fuse for per-read verification');
      return cli([...mountArgs, '--no-verity']);
    });
    mounted = true;
    const mountKind = (JSON.parse(m.stdout) as { mode: string }).mode;
    const { readFile } = await import('node:fs/promises');
    const release = await readFile(join(mnt, 'etc', 'cfsdist-release'), 'utf8');
    const listing = readdirSync(join(mnt)).sort().join(' ');
    await cli(['--store', clientStore, 'umount', mnt]);
    mounted = false;

    // Start the container as its config says (entrypoint, env, non-root user, workdir).
    let program = '';
    if (process.getuid?.() === 0) {
      program = await timedStep(timings, 'client: run demo:latest (runc)', log, async () => {
        const runArgs = ['--store', clientStore, 'run', '--rm', ...(opts.fuse ? ['--fuse'] : notes.length ? ['--no-verity'] : []), 'demo:latest'];
        const r = await cli(runArgs, { allowFail: true });
        if (r.code !== 0) return `cfsdist run demo:latest failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`;
        return `cfsdist run demo:latest printed:\n${r.stdout.trimEnd().split('\n').map((l) => `    ${l}`).join('\n')}`;
      });
    } else {
      program = 'cfsdist run demo:latest: skipped (needs root for the mounts and runc)';
    }

    const unique = clientObjects;
    const totalRefs = Object.values(imports).reduce((s, i) => s + i.objects, 0);
    return {
      files: Object.fromEntries(Object.entries(imports).map(([k, v]) => [k, v.files])),
      inlined: Object.fromEntries(Object.entries(imports).map(([k, v]) => [k, v.inlined])),
      objects: Object.fromEntries(Object.entries(imports).map(([k, v]) => [k, v.objects])),
      uniqueObjects: unique,
      dedupRatio: unique ? totalRefs / unique : 0,
      pulls,
      clientObjects,
      timings,
      mountKind,
      release,
      listing,
      program,
      notes,
    };
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await cleanup();
  }
}

/** Start `cfsdist serve` on a free loopback port; resolves to its base URL. */
function startServer(store: string, keep: (c: ChildProcess) => void): Promise<string> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [CLI, '--store', store, 'serve', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    keep(child);
    const timer = setTimeout(() => rej(new DemoError('DEMO_SERVER', 'server did not start within 20 s')), 20_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = /(http:\/\/127\.0\.0\.1:\d+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        res(m[1]!);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      rej(new DemoError('DEMO_SERVER', `server exited with ${code} before listening`));
    });
  });
}

function human(n: number): string {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

/** The summary as a text table. */
export function formatSummary(s: DemoSummary): string {
  const lines: string[] = [];
  lines.push('', `from the mounted demo:latest, now v2 (${s.mountKind} mount):`, `  /etc/cfsdist-release: ${s.release.trim().split('\n').join(' / ')}`, `  ls /: ${s.listing}`);
  if (s.program) lines.push(`  ${s.program}`);
  for (const n of s.notes) lines.push(`  note: ${n}`);
  lines.push('');
  lines.push('image  entries   objects   inline (files of at most 4 KiB, stored in the image)');
  for (const tag of Object.keys(s.files)) lines.push(`${tag.padEnd(7)} ${String(s.files[tag]).padStart(6)}  ${String(s.objects[tag]).padStart(8)}  ${String(s.inlined[tag]).padStart(7)}`);
  lines.push(`dedup: ${Object.values(s.objects).reduce((a, b) => a + b, 0)} object references, ${s.uniqueObjects} unique objects stored (ratio ${s.dedupRatio.toFixed(2)})`, '');
  lines.push('pull    objects: needed  present  fetched   content fetched   metadata          on the wire  requests  seconds');
  for (const p of s.pulls) {
    const meta = `${human(p.imageBytes)}${p.viaDelta ? ' delta' : ' image'}`;
    lines.push(
      `${p.tag.padEnd(7)}          ${String(p.objectsNeeded).padStart(6)}  ${String(p.objectsPresent).padStart(7)}  ${String(p.objectsFetched).padStart(7)}  ${human(p.bytesFetched).padStart(16)}  ${meta.padStart(16)}  ${human(p.wireBytes).padStart(12)}  ${String(p.requests).padStart(8)}  ${p.seconds.toFixed(2).padStart(7)}`,
    );
  }
  lines.push(`client store holds ${s.clientObjects} objects = ${s.pulls.map((p) => p.objectsFetched).join(' + ')} fetched`, '');
  lines.push('step timings:');
  for (const [k, v] of Object.entries(s.timings)) lines.push(`  ${k.padEnd(48)} ${v.toFixed(2)} s`);
  return lines.join('\n');
}
