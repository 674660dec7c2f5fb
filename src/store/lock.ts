/**
 * The store lock: many writers (adds, image adds, tag writes, whole pulls) hold it shared, gc
 * holds it exclusive. Node has no flock(2), so it is built from files whose names carry the
 * owner's process identity (procid.ts):
 *
 *   lock/leases/<pid>-<start>-<n>   one per process (or explicit lease) holding it shared
 *   lock/gc/<pid>-<start>-<n>       one per gc holding (or waiting for) it exclusive
 *
 * Shared:    create own lease file, THEN list lock/gc. A live gc marker → delete the lease,
 *            wait until no live marker is left, start again.
 * Exclusive: create own gc marker, THEN list lock/leases. Wait (up to a timeout) until no live
 *            lease is left; leases of dead processes are deleted.
 * Each side writes its own file before it reads the other side's directory, so at least one of
 * two racing parties sees the other (the store-buffer / Dekker argument; create and readdir
 * on one local filesystem are ordered). Adders yield to gc, so they cannot deadlock.
 * A process killed with SIGKILL leaves its file behind; its name says who owned it, and a dead
 * owner's file is ignored (and deleted) by everyone, so a crash never blocks the store.
 * Two gc runs may hold it at once: they only delete unreachable files, which is idempotent.
 *
 * Within a process, shared holds are reference-counted onto one lease file, which lingers for
 * a moment after the last release so that a stream of adds does not create one file per add.
 * A gc may wait for writers that never pause (overlapping holds); it then fails with
 * STORE_BUSY after its timeout rather than starving them.
 *
 * Limits: every process using a store must see the others' pids (one pid namespace: the
 * same host or the same container), since a lock file whose pid is not running is taken
 * for a crash leftover. Stores on network filesystems shared by several machines are not
 * supported by this lock.
 */
import { mkdirSync, unlinkSync } from 'node:fs';
import { mkdir, open, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { isAlive, selfId } from './procid.js';
import { StoreError } from './errors.js';

const LINGER_MS = 50;
let counter = 0;
const heldFiles = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const f of heldFiles) {
      try {
        unlinkSync(f);
      } catch {
        /* already gone */
      }
    }
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function createMarker(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${selfId()}-${++counter}`);
  const fh = await open(file, 'wx', 0o644);
  await fh.close();
  heldFiles.add(file);
  installExitHook();
  return file;
}

function removeMarker(file: string): void {
  heldFiles.delete(file);
  try {
    unlinkSync(file);
  } catch {
    /* already gone */
  }
}

/** Live entries of a marker directory; entries of dead processes are deleted on the way. */
async function liveEntries(dir: string, except?: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const live: string[] = [];
  for (const n of names) {
    const p = join(dir, n);
    if (p === except) continue;
    if (isAlive(n)) live.push(n);
    else await unlink(p).catch(() => undefined);
  }
  return live;
}

/** A release function; calling it more than once has no effect. */
export type Release = () => void;

/** Shared/exclusive lock over a store (see the file comment for the protocol). */
export class StoreLock {
  /** The lock directory (STORE/lock). */
  readonly dir: string;
  private refs = 0;
  private leaseFile: string | undefined;
  private acquiring: Promise<void> | undefined;
  private linger: NodeJS.Timeout | undefined;

  constructor(dir: string) {
    this.dir = dir;
  }

  private get leasesDir(): string {
    return join(this.dir, 'leases');
  }

  private get gcDir(): string {
    return join(this.dir, 'gc');
  }

  /** Hold the lock shared until the returned function is called. */
  async shared(): Promise<Release> {
    const wasIdle = this.refs === 0;
    this.refs++;
    if (this.linger) {
      clearTimeout(this.linger);
      this.linger = undefined;
    }
    try {
      if (wasIdle && this.leaseFile && (await liveEntries(this.gcDir)).length > 0 && this.refs === 1) {
        // A gc waits for our lingering lease: give it way instead of extending the lease.
        removeMarker(this.leaseFile);
        this.leaseFile = undefined;
      }
      while (!this.leaseFile) {
        if (!this.acquiring) {
          this.acquiring = this.acquireLease().finally(() => {
            this.acquiring = undefined;
          });
        }
        await this.acquiring;
      }
    } catch (err) {
      this.unref();
      throw err;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.unref();
    };
  }

  /** Drop one shared hold; the lease file goes after LINGER_MS without holds. */
  private unref(): void {
    this.refs--;
    if (this.refs === 0 && !this.linger) {
      this.linger = setTimeout(() => {
        this.linger = undefined;
        if (this.refs === 0 && this.leaseFile) {
          removeMarker(this.leaseFile);
          this.leaseFile = undefined;
        }
      }, LINGER_MS);
      this.linger.unref();
    }
  }

  private async acquireLease(): Promise<void> {
    let wait = 5;
    for (;;) {
      const file = await createMarker(this.leasesDir);
      const gcs = await liveEntries(this.gcDir);
      if (gcs.length === 0) {
        this.leaseFile = file;
        return;
      }
      removeMarker(file);
      // A gc runs: wait until it is gone (or dead), then try again.
      while ((await liveEntries(this.gcDir)).length > 0) {
        await sleep(wait);
        wait = Math.min(wait * 2, 200);
      }
    }
  }

  /** Hold the lock exclusive (gc). Waits up to `timeoutMs` for shared holders to finish. */
  async exclusive(opts: { timeoutMs?: number } = {}): Promise<Release> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const marker = await createMarker(this.gcDir);
    const deadline = Date.now() + timeoutMs;
    let wait = 5;
    try {
      for (;;) {
        // Our own process's lease counts too: an add in flight here must finish first.
        const live = await liveEntries(this.leasesDir);
        if (live.length === 0) break;
        if (Date.now() >= deadline) {
          throw new StoreError('STORE_BUSY', `store is busy: ${live.length} writer(s) still hold ${this.leasesDir} (${live.slice(0, 3).join(', ')}) after ${timeoutMs} ms`);
        }
        await sleep(wait);
        wait = Math.min(wait * 2, 200);
      }
    } catch (err) {
      removeMarker(marker);
      throw err;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      removeMarker(marker);
    };
  }

  /** Identities holding the lock right now (live files only), for diagnostics. */
  async holders(): Promise<{ shared: string[]; exclusive: string[] }> {
    return { shared: await liveEntries(this.leasesDir), exclusive: await liveEntries(this.gcDir) };
  }
}

/** Create the lock directories (used when a store is created). */
export function makeLockDirs(dir: string): void {
  mkdirSync(join(dir, 'leases'), { recursive: true });
  mkdirSync(join(dir, 'gc'), { recursive: true });
}
