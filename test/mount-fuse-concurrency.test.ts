/**
 * The FUSE session serves requests concurrently: a reader blocked on a stalled lazy fetch stalls
 * nobody else (`ls -lR`, reads of other files go on), a reader killed while it waits is let go
 * (FUSE_INTERRUPT answered EINTR) and the mount keeps working, and a fetch that never ends meets
 * its deadline: the reader gets EIO, the fetch is aborted. The first tests need no root.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { debianImageUnavailable } from './fixtures/oci/debian-image.js';
import { debianStore, removeUnlessMounted, storeWithoutObjects } from './mount-fixtures.js';
import { fuseUnavailable, mountAt, resolveImageRef } from '../src/mount/index.js';
import { DirectoryFetcher, FETCH_DEADLINE_MS, FetchTimeoutError, fetchWithDeadline } from '../src/mount/fetcher.js';
import type { ObjectFetcher } from '../src/mount/fetcher.js';
import { fetchDeadline, mountFuse } from '../src/mount/fuse/index.js';
import { Op } from '../src/mount/fuse/protocol.js';
import { writeImage } from '../src/erofs/writer.js';
import { S_IFDIR, S_IFREG, newInode } from '../src/tree/tree.js';
import type { Inode } from '../src/tree/tree.js';
import type { FuseMount, FuseStats } from '../src/mount/fuse/index.js';
import { fsverityDigest, fsverityDigestFile, objectPathFor, toHex } from '../src/verity/digest.js';

test('fetchWithDeadline rejects at the deadline even when the fetcher ignores its signal, and aborts the signal', async () => {
  let seen: AbortSignal | undefined;
  const deaf: ObjectFetcher = {
    fetch: (_d, _s, signal) => {
      seen = signal;
      return new Promise(() => undefined);
    },
  };
  const t0 = Date.now();
  await assert.rejects(fetchWithDeadline(deaf, Buffer.alloc(32, 1), 10, 150), (e: Error) => e instanceof FetchTimeoutError && /deadline of 150 ms/.test(e.message));
  assert.ok(Date.now() - t0 < 2000);
  assert.equal(seen?.aborted, true, 'the fetch was told to stop');
  // A fetch that finishes in time is not affected; a failing one keeps its error.
  await fetchWithDeadline({ fetch: async () => undefined }, Buffer.alloc(32), 1, 1000);
  await assert.rejects(fetchWithDeadline({ fetch: async () => Promise.reject(new Error('no route')) }, Buffer.alloc(32), 1, 1000), /no route/);
});

test('the FUSE fetch deadline: option, else CFSDIST_FUSE_FETCH_DEADLINE_MS, else 60 s; nonsense is refused', () => {
  const saved = process.env.CFSDIST_FUSE_FETCH_DEADLINE_MS;
  try {
    delete process.env.CFSDIST_FUSE_FETCH_DEADLINE_MS;
    assert.equal(fetchDeadline(), FETCH_DEADLINE_MS);
    assert.equal(FETCH_DEADLINE_MS, 60_000);
    process.env.CFSDIST_FUSE_FETCH_DEADLINE_MS = '2500';
    assert.equal(fetchDeadline(), 2500);
    assert.equal(fetchDeadline(700), 700, 'the option wins');
    process.env.CFSDIST_FUSE_FETCH_DEADLINE_MS = 'soon';
    assert.throws(() => fetchDeadline(), /CFSDIST_FUSE_FETCH_DEADLINE_MS=soon/);
    assert.throws(() => fetchDeadline(0), /must be a positive number/);
  } finally {
    if (saved === undefined) delete process.env.CFSDIST_FUSE_FETCH_DEADLINE_MS;
    else process.env.CFSDIST_FUSE_FETCH_DEADLINE_MS = saved;
  }
});

function skipReason(): string | false {
  const f = fuseUnavailable();
  if (f) return f;
  const d = debianImageUnavailable();
  if (d) return d;
  for (const c of ['ls', 'cat', 'dd']) if (spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0) return `${c} is not installed`;
  return false;
}
const skip = skipReason();
if (skip) process.stdout.write(`# skipping the FUSE concurrency tests: ${skip}\n`);

let work: string;
let storeDir: string;
let rootfs: string;

before(async () => {
  if (skip) return;
  ({ work, storeDir, rootfs } = await debianStore('cfsdist-fuse-conc-'));
});

after(() => removeUnlessMounted(work));

/** Copies objects from the full test store, except those in `stall`: their fetch never ends
 * (until its signal aborts it). */
class StallingFetcher implements ObjectFetcher {
  /** Hex digests whose fetch started and is stalled. */
  readonly stalled: string[] = [];
  /** Hex digests whose stalled fetch was aborted. */
  readonly aborted: string[] = [];

  constructor(
    private readonly inner: DirectoryFetcher,
    private readonly stall: Set<string>,
  ) {}

  fetch(digest: Buffer, size: number, signal?: AbortSignal): Promise<void> {
    const hex = toHex(digest);
    if (!this.stall.has(hex)) return this.inner.fetch(digest, size, signal);
    this.stalled.push(hex);
    return new Promise<void>((_resolve, reject) => {
      signal?.addEventListener('abort', () => {
        this.aborted.push(hex);
        reject(new Error(`stalled fetch of ${hex} aborted`));
      });
    });
  }
}

interface LazyMount {
  mp: string;
  fm: FuseMount;
  fetcher: StallingFetcher;
  log: string[];
  local: string;
}

async function digestOf(rel: string): Promise<string> {
  return toHex(await fsverityDigestFile(join(rootfs, rel)));
}

/** Mount debian:final with FUSE from a store that has the image but no objects (except the
 * objects of `localFiles`), fetching from the full store, stalling the objects of `stallFiles`. */
async function lazyMount(name: string, o: { stallFiles: string[]; localFiles?: string[]; fetchDeadlineMs?: number }): Promise<LazyMount> {
  const local = storeWithoutObjects(storeDir, join(work, `${name}-store`));
  for (const f of o.localFiles ?? []) {
    const hex = await digestOf(f);
    mkdirSync(join(local, 'objects', hex.slice(0, 2)), { recursive: true });
    copyFileSync(join(storeDir, 'objects', hex.slice(0, 2), hex.slice(2)), join(local, 'objects', hex.slice(0, 2), hex.slice(2)));
  }
  const store = await Store.open(local);
  const stall = new Set(await Promise.all(o.stallFiles.map(digestOf)));
  const fetcher = new StallingFetcher(new DirectoryFetcher(join(storeDir, 'objects'), store.objects), stall);
  const img = await resolveImageRef(store, 'debian:final');
  const mp = join(work, name);
  mkdirSync(mp, { recursive: true });
  const log: string[] = [];
  const fm = await mountFuse({ image: img.path, imageDigest: img.digest, objects: store.objects.dir, mountpoint: mp, fetcher, fetchDeadlineMs: o.fetchDeadlineMs, log: (l) => log.push(l) });
  assert.equal(mountAt(mp)?.fstype, 'fuse.cfsdist');
  return { mp, fm, fetcher, log, local };
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

/** A child process run asynchronously (this process serves the fetches meanwhile). */
function start(cmd: string, args: string[]): { child: ReturnType<typeof spawn>; result: Promise<Run> } {
  const t0 = Date.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const result = new Promise<Run>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err, ms: Date.now() - t0 }));
  });
  return { child, result };
}

/** `p`, or a rejection naming `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  const timeout = new Promise<never>((_r, reject) => (t = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** Whether a process sleeps waiting for the answer to a FUSE request. */
function waitsOnFuse(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/wchan`, 'utf8') === 'request_wait_answer';
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Entries under a directory, recursively (what `ls -lR` must list). */
function countEntries(dir: string): number {
  let n = 0;
  for (const name of readdirSync(dir, { encoding: 'buffer' }) as Buffer[]) {
    n++;
    const p = Buffer.concat([Buffer.from(dir + '/'), name]);
    if (lstatSync(p).isDirectory()) n += countEntries(p.toString('latin1'));
  }
  return n;
}

/** Entry lines of an `ls -lR` listing (not the directory headers, totals or blank lines). */
function listedEntries(out: string): number {
  return out.split('\n').filter((l) => l && !l.startsWith('total ') && !l.endsWith(':')).length;
}

async function finish(m: LazyMount): Promise<FuseStats> {
  await m.fm.unmount();
  const stats = await within(m.fm.done, 5000, 'the FUSE session');
  assert.equal(mountAt(m.mp), undefined);
  return stats;
}

const STALLED = 'usr/bin/dpkg';

test('one reader blocked on a stalled lazy fetch: ls -lR of the same mount completes, other files read; killed readers are let go', { skip }, async () => {
  const m = await lazyMount('stall', { stallFiles: [STALLED], localFiles: ['usr/bin/ls'] });
  let stats: FuseStats | undefined;
  const cat = start('cat', [join(m.mp, STALLED)]);
  let dd: ReturnType<typeof start> | undefined;
  let failed = true;
  try {
    await until(() => m.fetcher.stalled.length > 0, 5000, 'the stalled fetch to start');
    assert.ok(waitsOnFuse(cat.child.pid!) || cat.child.exitCode === null, 'cat waits');

    // The whole tree lists, quickly, while cat waits.
    const ls = await within(start('ls', ['-lR', m.mp]).result, 5000, 'ls -lR while a fetch is stalled');
    assert.equal(ls.code, 0, ls.stderr);
    assert.ok(ls.ms < 5000, `ls -lR took ${ls.ms} ms`);
    process.stdout.write(`# ls -lR of the mount while a fetch stalls: ${ls.ms} ms\n`);
    const want = await start('ls', ['-lR', rootfs]).result;
    assert.equal(listedEntries(ls.stdout.toString('latin1')), listedEntries(want.stdout.toString('latin1')), 'ls -lR listed every entry (as many as of the unpacked rootfs)');
    assert.ok(countEntries(rootfs) > 6000);
    assert.equal(cat.child.exitCode, null, 'cat is still blocked on the stalled fetch');

    // Other files read meanwhile: one whose object is local, one fetched, one inline.
    for (const f of ['usr/bin/ls', 'usr/bin/dpkg-query', 'opt/app/small.txt']) {
      const r = await within(start('cat', [join(m.mp, f)]).result, 5000, `cat ${f} while a fetch is stalled`);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(readFileSync(join(rootfs, f))), `${f} reads correctly`);
    }
    assert.equal(cat.child.exitCode, null, 'cat is still blocked');

    // SIGKILL lets the blocked cat go at once, the fetch still being stalled.
    cat.child.kill('SIGKILL');
    const killed = await within(cat.result, 3000, 'the killed cat');
    assert.equal(killed.signal, 'SIGKILL');

    // A reader whose read is a synchronous request (O_DIRECT): killing it makes the kernel send
    // FUSE_INTERRUPT, answered EINTR, so it exits although its request was being served.
    // The kernel sends the interrupt only for a request the daemon has read already; one
    // killed before that is withdrawn by the kernel alone. So dd waits a moment longer each
    // try, until one kill lands on a request being served.
    const interrupts = () => m.log.filter((l) => /was interrupted while it waited; answered EINTR/.test(l)).length;
    let interrupted = false;
    for (let attempt = 1; attempt <= 5 && !interrupted; attempt++) {
      const before = interrupts();
      dd = start('dd', [`if=${join(m.mp, STALLED)}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct']);
      const ddPid = dd.child.pid!;
      await until(() => waitsOnFuse(ddPid) || dd!.child.exitCode !== null, 5000, 'dd to wait on its FUSE request');
      assert.equal(dd.child.exitCode, null, `dd is blocked: ${m.log.join('\n')}`);
      await new Promise((r) => setTimeout(r, 100 * attempt));
      dd.child.kill('SIGKILL');
      const ddEnd = await within(dd.result, 3000, 'the killed dd (its request must be interrupted)');
      assert.equal(ddEnd.signal, 'SIGKILL');
      interrupted = await until(() => interrupts() > before, 1000, 'the interrupt to be logged').then(
        () => true,
        () => false,
      );
    }
    assert.ok(interrupted, `a killed reader's pending request was interrupted and answered EINTR: ${m.log.join('\n')}`);

    // The mount still works.
    const again = await within(start('ls', ['-l', join(m.mp, 'usr/bin')]).result, 5000, 'ls after the kills');
    assert.equal(again.code, 0, again.stderr);
    const r = await within(start('cat', [join(m.mp, 'etc/login.defs')]).result, 5000, 'a read after the kills');
    assert.ok(r.stdout.equals(readFileSync(join(rootfs, 'etc/login.defs'))));
    failed = false;
  } finally {
    for (const c of [cat, dd]) if (c && c.child.exitCode === null) c.child.kill('SIGKILL');
    // A failure above is the one to report, not a session that then did not end.
    stats = await finish(m).catch((e: unknown) => {
      if (failed) return undefined;
      throw e;
    });
  }
  assert.ok(stats);
  assert.ok(stats.interrupted >= 1, `the session counted the interrupt: ${JSON.stringify(stats)}`);
  assert.equal(m.fetcher.aborted.length, m.fetcher.stalled.length, 'every stalled fetch was aborted when the session ended');
});

test('a lazy fetch that never ends meets its deadline: the reader gets EIO (Input/output error), never a hang, and the fetch is aborted', { skip }, async () => {
  const m = await lazyMount('deadline', { stallFiles: [STALLED], fetchDeadlineMs: 1500 });
  try {
    const cat = await within(start('cat', [join(m.mp, STALLED)]).result, 10_000, 'cat of a file whose fetch stalls past the deadline');
    assert.notEqual(cat.code, 0);
    assert.match(cat.stderr, /Input\/output error/);
    assert.ok(cat.ms >= 1400, `cat failed only at the deadline (${cat.ms} ms)`);
    assert.ok(m.fetcher.aborted.length >= 1, 'the fetch was aborted');
    assert.match(m.log.join('\n'), /deadline of 1500 ms/);
    // The mount goes on serving.
    const r = await within(start('cat', [join(m.mp, 'opt/app/small.txt')]).result, 5000, 'a read after the deadline');
    assert.equal(r.stdout.toString(), 'ten bytes\n');
  } finally {
    await finish(m);
  }
});

test('a read of a local file completes while a stalled lazy fetch of another file waits', { skip }, async () => {
  const m = await lazyMount('local-read', { stallFiles: [STALLED], localFiles: ['usr/bin/ls', 'opt/app/bin'] });
  const cat = start('cat', [join(m.mp, STALLED)]);
  try {
    await until(() => m.fetcher.stalled.length > 0, 5000, 'the stalled fetch to start');
    for (const f of ['usr/bin/ls', 'opt/app/bin']) {
      const r = await within(start('cat', [join(m.mp, f)]).result, 5000, `cat ${f}`);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout.equals(readFileSync(join(rootfs, f))), f);
    }
    assert.equal(cat.child.exitCode, null, 'the stalled reader still waits');
    assert.deepEqual(m.fetcher.stalled, [await digestOf(STALLED)], 'only the stalled object was asked for');
  } finally {
    cat.child.kill('SIGKILL');
    await cat.result;
    await finish(m);
  }
});

test('an image with no visible xattr: ls -lR of the whole mount sends at most one xattr request, xattr calls say "not supported"', { skip }, async () => {
  // 40 directories × 50 files, every file an object (so each carries composefs' overlay
  // xattrs, which are never shown).
  const dir = mkdtempSync(join(work, 'no-xattrs-'));
  const objects = join(dir, 'objects');
  const root: Inode = newInode(S_IFDIR | 0o755);
  let files = 0;
  for (let d = 0; d < 40; d++) {
    const sub = newInode(S_IFDIR | 0o755);
    root.entries!.set(`d${d}`, sub);
    for (let f = 0; f < 50; f++) {
      const data = Buffer.from(`file ${d}/${f} `.repeat(400));
      const digest = fsverityDigest(data);
      const p = join(objects, objectPathFor(digest));
      mkdirSync(join(p, '..'), { recursive: true });
      writeFileSync(p, data);
      sub.entries!.set(`f${f}`, newInode(S_IFREG | 0o644, { size: data.length, digest, payload: Buffer.from(objectPathFor(digest)) }));
      files++;
    }
  }
  const image = join(dir, 'image.cfs');
  writeFileSync(image, writeImage(root));
  const mp = join(dir, 'mnt');
  mkdirSync(mp);
  const fm = await mountFuse({ image, objects, mountpoint: mp, log: () => undefined });
  let stats: FuseStats | undefined;
  try {
    for (let i = 0; i < 2; i++) {
      const ls = await within(start('ls', ['-lR', mp]).result, 10_000, 'ls -lR');
      assert.equal(ls.code, 0, ls.stderr);
      assert.equal(listedEntries(ls.stdout.toString()), files + 40);
    }
    const g = await within(start('getfattr', ['-n', 'user.note', join(mp, 'd0/f0')]).result, 5000, 'getfattr');
    assert.notEqual(g.code, 0);
    assert.match(g.stderr, /Operation not supported/);
    assert.equal(readFileSync(join(mp, 'd3/f7'), 'utf8'), 'file 3/7 '.repeat(400), 'content reads');
  } finally {
    await fm.unmount();
    stats = await within(fm.done, 5000, 'the FUSE session');
  }
  const xattrRequests = (stats.requests[String(Op.GETXATTR)] ?? 0) + (stats.requests[String(Op.LISTXATTR)] ?? 0);
  assert.ok(xattrRequests <= 1, `${xattrRequests} xattr requests for ${files} files listed twice: ${JSON.stringify(stats.requests)}`);
  process.stdout.write(`# ls -lR twice of ${files} files: ${xattrRequests} xattr request(s)\n`);
});
