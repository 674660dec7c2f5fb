/**
 * The userspace mount: an image served over FUSE by this process — the session on a thread of
 * its own (worker.ts) — every object verified before its bytes are returned (verified.ts),
 * missing objects optionally fetched on first access through a fetcher this thread owns, each
 * fetch bounded by a deadline (`fetchDeadlineMs`, or CFSDIST_FUSE_FETCH_DEADLINE_MS; default
 * 60 s) past which the reader gets EIO and the fetch is aborted.
 */
import { closeSync, openSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { readFile, stat } from 'node:fs/promises';
import { ErofsImage } from '../../erofs/reader.js';
import { isAlive, selfId } from '../../store/procid.js';
import { fsverityDigest, fsverityDigestFile, toHex } from '../../verity/digest.js';
import { MountError } from '../errors.js';
import { legacyMount, runUmount } from '../compat.js';
import type { CompatForce } from '../compat.js';
import { mountAt } from '../mountinfo.js';
import { MOUNT_SOURCE, readState, removeState, writeState } from '../state.js';
import type { MountState } from '../state.js';
import { MountApi, MOUNT_ATTR_RDONLY } from '../syscalls.js';
import { FETCH_DEADLINE_MS } from '../fetcher.js';
import type { ObjectFetcher } from '../fetcher.js';
import { unmount } from '../umount.js';
import type { FetchReply, WorkerInput, WorkerMessage } from './worker.js';

export { FuseSession, FuseErrno } from './server.js';
export type { FuseFs, FuseEntry, FuseDirItem } from './server.js';
export { ImageFs } from './fs.js';
export { VerifiedObjects, VerifiedFile, IntegrityError, MissingObjectError } from './verified.js';

/** Images up to this size are loaded (and verified) in memory; larger ones are read lazily. */
const IN_MEMORY_MAX = 512 << 20;

/** What to serve where. */
export interface FuseMountOptions {
  /** The composefs image file. */
  image: string;
  /** Its fs-verity digest: the image is refused if it does not match. */
  imageDigest?: Buffer;
  /** Objects directory. */
  objects: string;
  /** Canonical mount point (an existing directory). */
  mountpoint: string;
  /** Fetches missing objects (lazy pull). */
  fetcher?: ObjectFetcher;
  /** Overall deadline of one lazy fetch in milliseconds, past which the reader gets EIO
   * (default: $CFSDIST_FUSE_FETCH_DEADLINE_MS, else 60 s). */
  fetchDeadlineMs?: number;
  /** What the user named (recorded). */
  ref?: string;
  /** Where problems are reported. */
  log?: (line: string) => void;
  /** Take fallbacks even where the newer way works (tests): `mount8`. */
  force?: CompatForce;
  /** Log file path recorded for `umount`/users. */
  logFile?: string;
}

/** Counters of a FUSE mount, reported when it ends. */
export interface FuseStats {
  /** Objects hashed whole (first opens). */
  verified: number;
  /** Bytes hashed whole. */
  hashedBytes: number;
  /** Objects fetched (lazy pull). */
  fetched: number;
  /** Integrity failures (EIO returned). */
  corrupt: number;
  /** Requests the kernel interrupted while they waited (answered EINTR). */
  interrupted: number;
  /** Requests by FUSE opcode. */
  requests: Record<string, number>;
}

/** A live FUSE mount served by this process (on a thread of its own). */
export interface FuseMount {
  mountpoint: string;
  /** `fsmount` or `mount(8)`. */
  api: string;
  /** Resolves with the counters when the mount is gone and the session ended. */
  done: Promise<FuseStats>;
  /** Unmount (lazily if busy) and wait for the session to end. */
  unmount(): Promise<void>;
}

/** The image bytes, checked against `digest` when given: in shared memory up to 512 MiB (the
 * session thread reads them without a copy), else the path (read lazily by the session). */
async function loadImage(path: string, digest?: Buffer): Promise<SharedArrayBuffer | string> {
  const size = (await stat(path)).size;
  const corrupt = (): MountError => new MountError('IMAGE_CORRUPT', `image ${path} does not have its digest ${toHex(digest!)}: it was changed`);
  if (size > IN_MEMORY_MAX) {
    if (digest && !(await fsverityDigestFile(path)).equals(digest)) throw corrupt();
    return path;
  }
  const buf = await readFile(path);
  if (digest && !fsverityDigest(buf).equals(digest)) throw corrupt();
  const shared = new SharedArrayBuffer(buf.length);
  buf.copy(Buffer.from(shared));
  // Parse it once here, so a malformed image fails the mount rather than the first request.
  ErofsImage.fromBuffer(Buffer.from(shared), path);
  return shared;
}

/** The fetch deadline: the option, else $CFSDIST_FUSE_FETCH_DEADLINE_MS, else 60 s. */
export function fetchDeadline(ms?: number): number {
  if (ms !== undefined) {
    if (!(ms > 0)) throw new MountError('BAD_OPTION', `fetch deadline ${ms} ms: must be a positive number`);
    return ms;
  }
  const env = process.env.CFSDIST_FUSE_FETCH_DEADLINE_MS;
  if (env === undefined || env === '') return FETCH_DEADLINE_MS;
  const v = Number(env);
  if (!(v > 0)) throw new MountError('BAD_OPTION', `CFSDIST_FUSE_FETCH_DEADLINE_MS=${env}: must be a positive number of milliseconds`);
  return v;
}

/** Mount an image with FUSE, served by this process until it is unmounted. */
export async function mountFuse(o: FuseMountOptions): Promise<FuseMount> {
  const st = await stat(o.mountpoint).catch(() => undefined);
  if (!st?.isDirectory()) throw new MountError('BAD_MOUNTPOINT', `mount point ${o.mountpoint} is not a directory`);
  const old = await readState(o.mountpoint);
  if (old) {
    if (mountAt(o.mountpoint) || (old.phase === 'mounting' && isAlive(old.owner))) {
      throw new MountError('ALREADY_MOUNTED', `${o.mountpoint} already has a cfsdist mount (${old.ref}); run cfsdist umount ${o.mountpoint} first`);
    }
    await unmount(o.mountpoint); // stale record
  }
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const fetchDeadlineMs = fetchDeadline(o.fetchDeadlineMs);
  const image = await loadImage(o.image, o.imageDigest);
  let fd: number;
  try {
    fd = openSync('/dev/fuse', 'r+');
  } catch (e) {
    throw new MountError('NO_FUSE', `cannot open /dev/fuse: ${(e as Error).message}`);
  }
  const state: MountState = {
    version: 1,
    kind: 'fuse',
    phase: 'mounting',
    mountpoint: o.mountpoint,
    ref: o.ref ?? o.image,
    image: o.image,
    imageDigest: o.imageDigest ? toHex(o.imageDigest) : undefined,
    objects: o.objects,
    owner: selfId(),
    loops: [],
    log: o.logFile,
    time: '',
  };
  const input: WorkerInput = { fd, image, imageName: o.image, objects: o.objects, fetch: o.fetcher !== undefined, fetchDeadlineMs };
  const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: input });
  let initDone!: () => void;
  const init = new Promise<void>((r) => (initDone = r));
  /** Fetches under way for the session thread, by its id (it aborts them at their deadline). */
  const fetches = new Map<number, AbortController>();
  const done = new Promise<FuseStats>((resolve, reject) => {
    let stats: FuseStats | undefined;
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'init') initDone();
      else if (m.type === 'log') log(m.line);
      else if (m.type === 'fetch') {
        const reply = (r: FetchReply): void => {
          if (fetches.delete(m.id)) worker.postMessage(r);
        };
        const ctl = new AbortController();
        fetches.set(m.id, ctl);
        o.fetcher!.fetch(Buffer.from(m.hex, 'hex'), m.size, ctl.signal).then(
          () => reply({ id: m.id }),
          (e: Error) => reply({ id: m.id, error: e.message }),
        );
      } else if (m.type === 'abort') {
        const ctl = fetches.get(m.id);
        fetches.delete(m.id);
        ctl?.abort(new MountError('FETCH_TIMEOUT', `the FUSE session gave up on fetch ${m.id}`));
      } else if (m.type === 'done') {
        if (m.error) log(`cfsdist fuse: the session ended with an error: ${m.error}`);
        stats = { ...(m.stats as Omit<FuseStats, 'requests'>), requests: m.requests };
      }
    });
    worker.on('error', reject);
    worker.on('exit', () => {
      for (const ctl of fetches.values()) ctl.abort(new MountError('FETCH_ABORTED', `the FUSE session of ${o.mountpoint} ended`));
      fetches.clear();
      try {
        closeSync(fd);
      } catch {
        /* already closed */
      }
      if (stats) resolve(stats);
      else reject(new MountError('FUSE_FAILED', `the FUSE session of ${o.mountpoint} ended unexpectedly`));
    });
  });
  done.catch(() => undefined);
  let api = 'fsmount';
  try {
    await writeState(state);
    const opts = { fd: '3', rootmode: '40000', user_id: String(process.getuid?.() ?? 0), group_id: String(process.getgid?.() ?? 0) };
    const mapi = o.force?.mount8 ? undefined : await MountApi.start([fd]);
    if (mapi) {
      try {
        const ctx = await mapi.fsopen('fuse');
        await mapi.setString(ctx, 'source', MOUNT_SOURCE);
        await mapi.setString(ctx, 'subtype', MOUNT_SOURCE);
        for (const [k, v] of Object.entries(opts)) await mapi.setString(ctx, k, v);
        for (const f of ['default_permissions', 'allow_other', 'ro']) await mapi.setFlag(ctx, f);
        await mapi.create(ctx, 'fuse');
        const m = await mapi.fsmount(ctx, MOUNT_ATTR_RDONLY, 'fuse');
        await mapi.moveMount(m, o.mountpoint);
      } finally {
        await mapi.end();
      }
    } else {
      api = 'mount(8)';
      const list = ['ro', ...Object.entries(opts).map(([k, v]) => `${k}=${v}`), 'default_permissions', 'allow_other'];
      await legacyMount(`fuse.${MOUNT_SOURCE}`, MOUNT_SOURCE, o.mountpoint, list, [fd]);
    }
    await withTimeout(Promise.race([init, done.then(() => undefined)]), 10_000, `the kernel did not start the FUSE session for ${o.mountpoint}`);
    state.phase = 'mounted';
    state.how = { api };
    await writeState(state);
  } catch (e) {
    if (mountAt(o.mountpoint)?.fstype === `fuse.${MOUNT_SOURCE}`) await runUmount(o.mountpoint, true);
    // Not mounted (or just detached): the session thread is polling, not blocked; stop it.
    await worker.terminate();
    await removeState(o.mountpoint).catch(() => undefined);
    throw e;
  }
  return {
    mountpoint: o.mountpoint,
    api,
    done,
    async unmount(): Promise<void> {
      if (mountAt(o.mountpoint)) {
        const err = await runUmount(o.mountpoint);
        if (err && mountAt(o.mountpoint)) await runUmount(o.mountpoint, true);
      }
      // A lazily detached mount keeps the session until its last user goes; do not wait then.
      if (!mountAt(o.mountpoint)) await withTimeout(done, 2000, '').catch(() => undefined);
      await removeState(o.mountpoint);
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new MountError('TIMEOUT', what || 'timed out')), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
