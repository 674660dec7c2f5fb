/**
 * Ingest areas: where a pull keeps what it has fetched and verified until the whole image is
 * complete (containerd's idea: a partial download is never visible in the store).
 *
 *   STORE/ingest/<pid>-<start>-<n>-<IMAGE HEX>/objects/xx/…   verified objects (composefs layout)
 *   STORE/ingest/<pid>-<start>-<n>-<IMAGE HEX>/image          the verified image
 *
 * The directory is owned by one live process (its name starts with the owner's identity,
 * store/procid.ts). A pull of the same image whose owner died adopts the directory by renaming
 * it to its own name (atomic: of two racing adopters one wins, the other starts afresh), then
 * re-hashes what it adopted — small objects are written in place and nothing is fsynced, so
 * after a kill or a power cut a file may be short or damaged; such a file is deleted and
 * fetched again. Nothing in the area is trusted without its digest having been checked. On success the objects are
 * renamed into STORE/objects after one `sync --file-system` (syncfs) makes them durable, and
 * the directory is removed. A failed pull (bad data, timeout) keeps its verified objects for
 * the next attempt; areas of dead owners untouched for a week are deleted by later pulls.
 */
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ObjectDir } from '../store/objects.js';
import type { Store } from '../store/store.js';
import { fsyncDir, syncFilesystem } from '../store/atomic.js';
import { DigestMismatchError } from '../store/errors.js';
import { isAlive, selfId } from '../store/procid.js';
import { fsverityDigest, toHex } from '../verity/digest.js';
import { digestFilesSettled } from '../verity/parallel.js';
import type { ObjectRef } from '../sign/image-facts.js';

/** Ingest areas of dead owners older than this are deleted. */
export const STALE_INGEST_MS = 7 * 24 * 3600 * 1000;

const active = new Set<string>();
let counter = 0;

/** STORE/ingest. */
export function ingestRoot(store: Store): string {
  return join(store.dir, 'ingest');
}

/** fsync every file (fallback when `sync -f` is unavailable). */
async function fsyncFiles(paths: string[]): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < paths.length) {
        const fh = await open(paths[next++]!, 'r');
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
    }),
  );
}

/** syncfs(2) of the filesystem holding `path` (store/atomic.ts); false if it failed (then each
 * file is fsynced instead). */
function synced(path: string): Promise<boolean> {
  return syncFilesystem(path).then(() => true, () => false);
}

/** One pull's ingest area (see the file comment). */
export class Ingest {
  /** The directory. */
  readonly dir: string;
  /** Verified objects waiting for the commit. */
  readonly objects: ObjectDir;
  /** True if the directory was adopted from a pull that died. */
  readonly adopted: boolean;
  private readonly store: Store;
  private readonly madeDirs = new Set<string>();

  private constructor(store: Store, dir: string, adopted: boolean) {
    this.store = store;
    this.dir = dir;
    this.adopted = adopted;
    // The store's fs-verity probe: same filesystem, so one probe per process.
    this.objects = new ObjectDir(join(dir, 'objects'), { tmpDir: store.tmpDir, fsync: false, verity: store.objects.verity });
  }

  /** Open an ingest area for `image`: one left by a pull of this process that ended, else one
   * adopted from a pull that died, else a new one. Call release() when done. */
  static async open(store: Store, image: Buffer): Promise<Ingest> {
    const root = ingestRoot(store);
    await mkdir(root, { recursive: true });
    const hex = toHex(image);
    const me = selfId();
    const names = (await readdir(root)).sort();
    // Ours first: a pull of this process that failed earlier (its writes need no re-check).
    for (const n of names) {
      const p = join(root, n);
      if (n.startsWith(`${me}-`) && n.endsWith(`-${hex}`) && !active.has(p)) {
        active.add(p);
        return new Ingest(store, p, false);
      }
    }
    const own = join(root, `${me}-${++counter}-${hex}`);
    const now = Date.now();
    for (const n of names) {
      if (isAlive(n)) continue;
      const p = join(root, n);
      if (n.endsWith(`-${hex}`)) {
        try {
          await rename(p, own);
          active.add(own);
          return new Ingest(store, own, true);
        } catch {
          continue; // someone else adopted it first
        }
      }
      const st = await stat(p).catch(() => undefined);
      if (st && now - st.mtimeMs > STALE_INGEST_MS) await rm(p, { recursive: true, force: true });
    }
    await mkdir(own, { recursive: true });
    active.add(own);
    return new Ingest(store, own, false);
  }

  /** End this process's use of the area (it stays on disk unless remove() was called). */
  release(): void {
    active.delete(this.dir);
  }

  /** True if objects written here get fs-verity enabled (then they go through ObjectDir's
   * temporary file, enable, rename; else they are written in place). */
  async usesVerity(): Promise<boolean> {
    return this.objects.verity.supported !== false && (await this.objects.verity.probe());
  }

  /** Check a small object held in memory: content whose digest is not `digest` is refused
   * (DigestMismatchError). */
  verifySmall(digest: Buffer, data: Buffer, where: string): void {
    const got = fsverityDigest(data);
    if (!got.equals(digest)) throw new DigestMismatchError(where, toHex(digest), toHex(got));
  }

  /**
   * Write a small object that verifySmall accepted, straight under its name in the area: no
   * temporary file, since a file cut short by a crash is caught when an adopting pull
   * re-hashes what it adopts. Not fsynced (the commit syncs the filesystem once). Callers keep
   * several writes in flight: creating a file is the costly part, and the thread pool overlaps
   * them. Where fs-verity works, goes through ObjectDir instead (temporary file, enable,
   * rename).
   */
  async writeSmall(digest: Buffer, data: Buffer): Promise<void> {
    if (await this.usesVerity()) {
      await this.objects.addBuffer(data, { expected: digest });
      return;
    }
    const final = this.objects.path(digest);
    const sub = dirname(final);
    if (!this.madeDirs.has(sub)) {
      mkdirSync(sub, { recursive: true });
      this.madeDirs.add(sub);
    }
    try {
      await writeFile(final, data, { mode: 0o644 });
    } catch (err) {
      await unlink(final).catch(() => undefined);
      throw err;
    }
  }

  private flushing?: Promise<boolean>;

  /** Start writing what is in the area back to disk now (a `sync -f` in the background), so
   * that the commit's own filesystem sync finds less to do: the disk works while the pull
   * still receives and decompresses. Once per area. */
  startFlush(): void {
    if (this.flushing) return;
    this.flushing = synced(this.dir);
  }

  /** Path of the verified image. */
  get imagePath(): string {
    return join(this.dir, 'image');
  }

  /**
   * The needed objects already here and intact (re-hashed if adopted); damaged or unneeded
   * files are deleted.
   */
  async present(needed: ObjectRef[]): Promise<Set<string>> {
    const want = new Map(needed.map((o) => [toHex(o.digest), o.size]));
    const { objects } = await this.objects.scan();
    const candidates = objects.filter((o) => want.has(o.hex));
    for (const o of objects) if (!want.has(o.hex)) await unlink(o.path).catch(() => undefined);
    const ok = new Set<string>();
    if (!this.adopted) {
      for (const o of candidates) ok.add(o.hex);
      return ok;
    }
    const results = await digestFilesSettled(candidates.map((o) => o.path));
    for (let i = 0; i < candidates.length; i++) {
      const r = results[i]!;
      const o = candidates[i]!;
      if ('digest' in r && toHex(r.digest) === o.hex && r.size === want.get(o.hex)) ok.add(o.hex);
      else await unlink(o.path).catch(() => undefined);
    }
    return ok;
  }

  /**
   * Move the objects into the store (durably), under the caller's lease: their data is made
   * durable first, then they are renamed into place, then the renames are made durable. A
   * prefix directory (`xx/`) the store does not have yet moves whole — on a cold pull that is
   * 256 renames instead of one per object; it holds only this pull's verified objects.
   */
  async commitObjects(digests: Buffer[]): Promise<void> {
    if (digests.length === 0) return;
    const paths = digests.map((d) => this.objects.path(d));
    await this.flushing;
    const flushed = await synced(this.dir);
    if (!flushed) await fsyncFiles(paths);
    const bySub = new Map<string, number[]>();
    for (let i = 0; i < digests.length; i++) {
      const sub = dirname(paths[i]!);
      let list = bySub.get(sub);
      if (!list) bySub.set(sub, (list = []));
      list.push(i);
    }
    // Synchronous renames: cheap here, and nothing else is going on at this point.
    const dirs = new Set<string>();
    for (const [sub, list] of bySub) {
      const dstSub = dirname(this.store.objects.path(digests[list[0]!]!));
      dirs.add(dstSub);
      if (!existsSync(dstSub)) {
        try {
          renameSync(sub, dstSub);
          continue;
        } catch (err) {
          // Made meanwhile by another writer (ENOTEMPTY/EEXIST): move the objects one by one.
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
        }
      }
      mkdirSync(dstSub, { recursive: true });
      for (const i of list) {
        try {
          renameSync(paths[i]!, this.store.objects.path(digests[i]!));
        } catch (err) {
          // Committed by an earlier, interrupted commit of this area: the object must be there.
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !(await this.store.objects.has(digests[i]!))) throw err;
        }
      }
    }
    // The renames: one more filesystem sync when many directories changed (cheap: little else
    // is dirty now), else each directory on its own.
    if (flushed && dirs.size > 16 && (await synced(this.store.objects.dir))) return;
    for (const d of dirs) await fsyncDir(d);
    await fsyncDir(this.store.objects.dir);
  }

  /** Delete the area. */
  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
