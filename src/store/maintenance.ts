/**
 * Store maintenance: fsck (recompute and cross-check everything) and gc (delete what no tag
 * reaches). The locking rule gc follows is described at the top of store.ts.
 */
import { mkdir, readFile, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fromHex as fromHexDigest, isHexDigest, toHex } from '../verity/digest.js';
import { digestFilesSettled } from '../verity/parallel.js';
import type { VerityPool } from '../verity/parallel.js';
import { StoreError } from './errors.js';
import { isAlive } from './procid.js';
import type { Release } from './lock.js';
import type { Store, TagEntry } from './store.js';
import { SIDECAR_SUFFIX, parseSidecar } from './sidecar.js';

/** Options of fsck. */
export interface FsckOptions {
  /** Quarantine corrupt objects/images, delete stale temporary files and orphan sidecars. */
  repair?: boolean;
  /** Progress callback (objects are hashed in batches). */
  onProgress?: (p: { phase: 'objects' | 'images'; done: number; total: number }) => void;
  /** Worker pool for hashing (default: the shared one). */
  pool?: VerityPool;
}

/** What fsck found. `ok` is false when any real problem was found (even if repaired). */
export interface FsckReport {
  ok: boolean;
  repair: boolean;
  /** Objects checked and their total size. */
  objects: number;
  objectBytes: number;
  /** Objects whose content does not have their name's digest (actual null: unreadable). */
  corruptObjects: { hex: string; path: string; actual: string | null; quarantined?: string }[];
  /** Files in objects/ (or images/) that are not in the layout (warning). */
  strays: string[];
  images: number;
  corruptImages: { hex: string; actual: string | null; quarantined?: string }[];
  /** Images without an object list (sidecar). */
  imagesWithoutObjectList: string[];
  /** Images whose objects are not (all) present. */
  imagesMissingObjects: { image: string; missing: string[] }[];
  /** Sidecars without their image: leftovers of an interrupted image add (warning). */
  orphanSidecars: { path: string; removed: boolean }[];
  /** Tags naming an image that is not present. */
  danglingTags: { name: string; tag: string; image: string }[];
  /** Tag files that cannot be read as a tag. */
  badTags: { path: string; message: string }[];
  /** Temporary files: stale ones are leftovers of interrupted writes (warning; --repair
   * deletes them); others belong to writes still running. */
  tempFiles: { path: string; stale: boolean; removed: boolean }[];
  /** Whether objects get fs-verity here, and why not. */
  verity: { supported: boolean; message: string };
  /** Where fs-verity is supported: objects and images the kernel measured (FS_IOC_MEASURE_VERITY),
   * those without fs-verity (a `verity=require` mount gives EIO on them; --repair enables it
   * on those whose content is right), and those whose kernel digest is not their name. */
  kernel: {
    measured: number;
    withoutVerity: { hex: string; path: string; kind: 'object' | 'image'; enabled?: boolean }[];
    mismatched: { hex: string; path: string; kind: 'object' | 'image'; measured: string }[];
  };
  /** Image configs checked. */
  configs: number;
  /** Configs whose bytes do not have their name's SHA-256 (--repair quarantines them). */
  corruptConfigs: { digest: string; quarantined?: string }[];
  /** Tags naming a config that is not present (or was quarantined). */
  tagsMissingConfig: { name: string; tag: string; config: string }[];
  /** Containers whose process is gone but whose mounts and directories are still there
   * (left by a killed `run`); --repair removes them. */
  staleContainers: { id: string; removed: boolean }[];
}

const BATCH = 4096;

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

async function quarantine(store: Store, path: string, name: string): Promise<string | undefined> {
  await mkdir(store.quarantineDir, { recursive: true });
  const dest = join(store.quarantineDir, `${name}.${Date.now()}`);
  try {
    await rename(path, dest);
    return dest;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Hash `paths` in batches: hex digest per path, null if unreadable, 'gone' if deleted meanwhile. */
async function hashAll(paths: string[], phase: 'objects' | 'images', opts: FsckOptions): Promise<(string | null)[]> {
  const out: (string | null)[] = [];
  for (let i = 0; i < paths.length; i += BATCH) {
    const r = await digestFilesSettled(paths.slice(i, i + BATCH), { pool: opts.pool });
    for (const x of r) {
      if ('digest' in x) out.push(toHex(x.digest));
      else out.push((await exists(x.path)) ? null : 'gone');
    }
    opts.onProgress?.({ phase, done: Math.min(i + BATCH, paths.length), total: paths.length });
  }
  return out;
}

/** Walk tags/ and classify every file. */
export async function scanTags(store: Store): Promise<{ tags: TagEntry[]; bad: { path: string; message: string }[] }> {
  const tags: TagEntry[] = [];
  const bad: { path: string; message: string }[] = [];
  const walk = async (rel: string): Promise<void> => {
    const dir = join(store.tagsDir, rel);
    const ents = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const e of ents) {
      const path = join(dir, e.name);
      if (e.isDirectory()) {
        await walk(rel ? `${rel}/${e.name}` : e.name);
        continue;
      }
      if (!e.name.startsWith(':') || !rel) {
        bad.push({ path, message: 'not a tag file (expected tags/NAME/:TAG)' });
        continue;
      }
      try {
        const r = await store.getTagRecord(rel, e.name.slice(1));
        if (r) tags.push({ name: rel, tag: e.name.slice(1), image: r.image, meta: r.meta });
      } catch (err) {
        bad.push({ path, message: (err as Error).message });
      }
    }
  };
  await walk('');
  return { tags, bad };
}

/** Scan images/: images, sidecars, strays. */
async function scanImages(store: Store): Promise<{ images: string[]; sidecars: Set<string>; strays: string[] }> {
  const names = await readdir(store.imagesDir).catch(() => [] as string[]);
  const images: string[] = [];
  const sidecars = new Set<string>();
  const strays: string[] = [];
  for (const n of names.sort()) {
    if (isHexDigest(n)) images.push(n);
    else if (n.endsWith(SIDECAR_SUFFIX) && isHexDigest(n.slice(0, -SIDECAR_SUFFIX.length))) sidecars.add(n.slice(0, -SIDECAR_SUFFIX.length));
    else strays.push(join(store.imagesDir, n));
  }
  return { images, sidecars, strays };
}

/** fsck (see FsckReport). */
export async function runFsck(store: Store, opts: FsckOptions = {}): Promise<FsckReport> {
  const repair = Boolean(opts.repair);
  const report: FsckReport = {
    ok: true,
    repair,
    objects: 0,
    objectBytes: 0,
    corruptObjects: [],
    strays: [],
    images: 0,
    corruptImages: [],
    imagesWithoutObjectList: [],
    imagesMissingObjects: [],
    orphanSidecars: [],
    danglingTags: [],
    badTags: [],
    tempFiles: [],
    verity: { supported: false, message: '' },
    kernel: { measured: 0, withoutVerity: [], mismatched: [] },
    configs: 0,
    corruptConfigs: [],
    tagsMissingConfig: [],
    staleContainers: [],
  };

  // Objects: recompute every digest (in parallel over the worker pool).
  const scan = await store.objects.scan();
  report.strays.push(...scan.strays);
  const digests = await hashAll(
    scan.objects.map((o) => o.path),
    'objects',
    opts,
  );
  const present = new Set<string>();
  for (let i = 0; i < scan.objects.length; i++) {
    const o = scan.objects[i];
    const got = digests[i];
    if (got === 'gone') continue;
    report.objects++;
    if (got === o.hex) {
      present.add(o.hex);
      report.objectBytes += (await stat(o.path).catch(() => ({ size: 0 }))).size;
      continue;
    }
    const entry: FsckReport['corruptObjects'][number] = { hex: o.hex, path: o.path, actual: got };
    if (repair) entry.quarantined = await quarantine(store, o.path, o.hex);
    else present.add(o.hex); // present, though wrong: reported above, not as missing
    report.corruptObjects.push(entry);
  }

  // Images: digest, object list, objects present.
  const imgs = await scanImages(store);
  report.strays.push(...imgs.strays);
  const imgDigests = await hashAll(
    imgs.images.map((h) => join(store.imagesDir, h)),
    'images',
    opts,
  );
  const imagesPresent = new Set<string>();
  for (let i = 0; i < imgs.images.length; i++) {
    const hex = imgs.images[i];
    const got = imgDigests[i];
    if (got === 'gone') continue;
    report.images++;
    imagesPresent.add(hex);
    if (got !== hex) {
      const entry: FsckReport['corruptImages'][number] = { hex, actual: got };
      if (repair) {
        entry.quarantined = await quarantine(store, join(store.imagesDir, hex), hex);
        imagesPresent.delete(hex);
      }
      report.corruptImages.push(entry);
      continue;
    }
    if (!imgs.sidecars.has(hex) && !(await exists(join(store.imagesDir, hex + SIDECAR_SUFFIX)))) {
      report.imagesWithoutObjectList.push(hex);
      continue;
    }
    let objects: Buffer[];
    try {
      const side = join(store.imagesDir, hex + SIDECAR_SUFFIX);
      objects = parseSidecar(await readFile(side, 'latin1'), side);
    } catch {
      report.imagesWithoutObjectList.push(hex);
      continue;
    }
    const missing: string[] = [];
    for (const d of objects) {
      const h = toHex(d);
      // An object added after the scan is checked directly.
      if (!present.has(h) && !(await exists(store.objects.path(d)))) missing.push(h);
    }
    if (missing.length > 0) report.imagesMissingObjects.push({ image: hex, missing });
  }
  const imageSet = new Set(imgs.images);
  for (const hex of imgs.sidecars) {
    if (imageSet.has(hex)) continue;
    const path = join(store.imagesDir, hex + SIDECAR_SUFFIX);
    // An image being added right now writes its sidecar first: only a sidecar still alone
    // after a re-check counts, and only --repair removes it.
    if (await exists(join(store.imagesDir, hex))) continue;
    let removed = false;
    if (repair) removed = await unlink(path).then(() => true, () => false);
    report.orphanSidecars.push({ path, removed });
  }

  // Configs: recompute each SHA-256.
  const configsPresent = new Set<string>();
  for (const digest of await store.listConfigs()) {
    report.configs++;
    try {
      await store.readConfig(digest);
      configsPresent.add(digest);
    } catch (err) {
      if (!(err instanceof StoreError) || err.code !== 'CONFIG_CORRUPT') throw err;
      const entry: FsckReport['corruptConfigs'][number] = { digest };
      if (repair) entry.quarantined = await quarantine(store, store.configPath(digest), 'config-' + digest.slice(7));
      else configsPresent.add(digest);
      report.corruptConfigs.push(entry);
    }
  }

  // Tags.
  const tags = await scanTags(store);
  report.badTags = tags.bad;
  for (const t of tags.tags) {
    const hex = toHex(t.image);
    if (!imagesPresent.has(hex) && !(await store.hasImage(t.image))) report.danglingTags.push({ name: t.name, tag: t.tag, image: hex });
    const cfg = t.meta.config;
    if (cfg && !configsPresent.has(cfg) && !(await exists(store.configPath(cfg)))) report.tagsMissingConfig.push({ name: t.name, tag: t.tag, config: cfg });
  }

  // Containers left by a killed `run`.
  const { staleContainers, removeContainer } = await import('../run/cleanup.js');
  for (const id of await staleContainers(store)) {
    let removed = false;
    if (repair) removed = await removeContainer(store, id).then(() => true, () => false);
    report.staleContainers.push({ id, removed });
  }

  // Temporary files.
  for (const path of await store.objects.tempFiles()) {
    const name = path.slice(path.lastIndexOf('/') + 1);
    const stale = !isAlive(name);
    let removed = false;
    if (stale && repair) removed = await unlink(path).then(() => true, () => false);
    report.tempFiles.push({ path, stale, removed });
  }

  await store.objects.verity.probe();
  report.verity = { supported: Boolean(store.objects.verity.supported), message: store.objects.verity.message };

  // The kernel's view: what the kernel would check on a verity=require mount.
  if (report.verity.supported) {
    const { measureFiles } = await import('./verity-enable.js');
    const corrupt = new Set(report.corruptObjects.map((o) => o.hex));
    const badImages = new Set(report.corruptImages.map((o) => o.hex));
    const files = [
      ...scan.objects.filter((o) => !corrupt.has(o.hex) && present.has(o.hex)).map((o) => ({ hex: o.hex, path: o.path, kind: 'object' as const })),
      ...[...imagesPresent].filter((h) => !badImages.has(h)).map((h) => ({ hex: h, path: join(store.imagesDir, h), kind: 'image' as const })),
    ];
    const measured = await measureFiles(files.map((f) => f.path));
    for (let i = 0; i < files.length; i++) {
      const f = files[i];
      const got = measured[i];
      if (got === null) {
        if (!(await exists(f.path))) continue; // deleted meanwhile (gc)
        const entry: FsckReport['kernel']['withoutVerity'][number] = { ...f };
        // The content was hashed above and is right: enabling fs-verity now is safe.
        if (repair) entry.enabled = f.kind === 'image' ? (await store.enableImageVerity(f.path, fromHexDigest(f.hex))).enabled : await store.objects.verity.enable(f.path);
        report.kernel.withoutVerity.push(entry);
      } else {
        report.kernel.measured++;
        if (got !== f.hex) report.kernel.mismatched.push({ ...f, measured: got });
      }
    }
  }

  report.ok =
    report.corruptObjects.length === 0 &&
    report.corruptImages.length === 0 &&
    report.imagesWithoutObjectList.length === 0 &&
    report.imagesMissingObjects.length === 0 &&
    report.danglingTags.length === 0 &&
    report.badTags.length === 0 &&
    report.corruptConfigs.length === 0 &&
    report.tagsMissingConfig.length === 0 &&
    report.kernel.withoutVerity.length === 0 &&
    report.kernel.mismatched.length === 0;
  return report;
}

/** Options of gc. */
export interface GcOptions {
  /** Report what would be deleted, delete nothing (takes no lock). */
  dryRun?: boolean;
  /** Keep untagged objects and images younger than this (default 900 s). */
  graceSeconds?: number;
  /** How long to wait for running writers before failing with STORE_BUSY (default 60 s). */
  timeoutMs?: number;
}

/** What gc deleted (or, with dryRun, would delete). */
export interface GcReport {
  dryRun: boolean;
  graceSeconds: number;
  removedImages: string[];
  removedObjects: string[];
  removedSidecars: string[];
  removedTempFiles: string[];
  /** Image configs no tag or container names. */
  removedConfigs: string[];
  /** Containers left by a killed `run` (their mounts and directories), removed first. */
  removedContainers: string[];
  /** Images kept because a running container uses them. */
  containerImages: number;
  /** Bytes freed by images, sidecars, objects and temporary files. */
  freedBytes: number;
  keptImages: number;
  keptObjects: number;
  /** Untagged images/objects kept because they are younger than the grace period. */
  youngImages: number;
  youngObjects: number;
}

/** The default grace period of gc, in seconds. */
export const DEFAULT_GRACE_SECONDS = 900;

async function sizeAndAge(path: string): Promise<{ size: number; mtimeMs: number } | undefined> {
  try {
    const st = await stat(path);
    return { size: st.size, mtimeMs: st.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function remove(path: string): Promise<boolean> {
  try {
    await unlink(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** gc (see GcReport and the locking rule in store.ts). */
export async function runGc(store: Store, opts: GcOptions = {}): Promise<GcReport> {
  const dryRun = Boolean(opts.dryRun);
  const graceSeconds = opts.graceSeconds ?? DEFAULT_GRACE_SECONDS;
  const report: GcReport = {
    dryRun,
    graceSeconds,
    removedImages: [],
    removedObjects: [],
    removedSidecars: [],
    removedTempFiles: [],
    removedConfigs: [],
    removedContainers: [],
    containerImages: 0,
    freedBytes: 0,
    keptImages: 0,
    keptObjects: 0,
    youngImages: 0,
    youngObjects: 0,
  };
  let release: Release | undefined;
  if (!dryRun) release = await store.lock.exclusive({ timeoutMs: opts.timeoutMs });
  try {
    const now = Date.now();
    const young = (mtimeMs: number): boolean => now - mtimeMs < graceSeconds * 1000;

    // Roots: every tag. An unreadable tag could name anything: refuse to guess.
    const tags = await scanTags(store);
    if (tags.bad.length > 0) {
      throw new StoreError('TAG_CORRUPT', `gc: cannot read tag ${tags.bad[0].path}: ${tags.bad[0].message} (run fsck; nothing was deleted)`);
    }
    const tagged = new Set(tags.tags.map((t) => toHex(t.image)));
    const configs = new Set(tags.tags.map((t) => t.meta.config).filter((c): c is string => c !== undefined));

    // Containers: a killed `run` leaves mounts and directories; remove those, and keep what
    // running containers use as roots.
    const { staleContainers, removeContainer, liveContainers } = await import('../run/cleanup.js');
    for (const id of await staleContainers(store)) {
      if (!dryRun) await removeContainer(store, id);
      report.removedContainers.push(id);
    }
    for (const c of await liveContainers(store)) {
      if (!tagged.has(c.image)) report.containerImages++;
      tagged.add(c.image);
      if (c.config) configs.add(c.config);
    }

    // Images: keep tagged and young ones, with their objects.
    const imgs = await scanImages(store);
    const live = new Set<string>();
    const doomed: { hex: string; size: number }[] = [];
    for (const hex of imgs.images) {
      const path = join(store.imagesDir, hex);
      const st = await sizeAndAge(path);
      if (!st) continue;
      const keep = tagged.has(hex) || young(st.mtimeMs);
      if (!keep) {
        doomed.push({ hex, size: st.size });
        continue;
      }
      report.keptImages++;
      if (!tagged.has(hex)) report.youngImages++;
      let list: Buffer[];
      try {
        const side = join(store.imagesDir, hex + SIDECAR_SUFFIX);
        list = parseSidecar(await readFile(side, 'latin1'), side);
      } catch (err) {
        throw new StoreError('SIDECAR_MISSING', `gc: kept image ${hex} has no readable object list (${(err as Error).message}); nothing was deleted`);
      }
      for (const d of list) live.add(toHex(d));
    }

    // Delete images before objects: an interrupted gc never leaves an image without its objects.
    for (const { hex, size } of doomed) {
      const img = join(store.imagesDir, hex);
      const side = img + SIDECAR_SUFFIX;
      const sideSize = (await sizeAndAge(side))?.size ?? 0;
      if (!dryRun) {
        await remove(img);
        await remove(side);
      }
      report.removedImages.push(hex);
      report.freedBytes += size + sideSize;
    }
    const imageSet = new Set(imgs.images);
    for (const hex of imgs.sidecars) {
      if (imageSet.has(hex)) continue;
      const side = join(store.imagesDir, hex + SIDECAR_SUFFIX);
      const st = await sizeAndAge(side);
      if (!st) continue;
      if (dryRun && (await sizeAndAge(join(store.imagesDir, hex)))) continue; // an add in progress
      if (!dryRun) await remove(side);
      report.removedSidecars.push(side);
      report.freedBytes += st.size;
    }

    // Objects.
    const scan = await store.objects.scan();
    for (const o of scan.objects) {
      if (live.has(o.hex)) {
        report.keptObjects++;
        continue;
      }
      const st = await sizeAndAge(o.path);
      if (!st) continue;
      if (young(st.mtimeMs)) {
        report.keptObjects++;
        report.youngObjects++;
        continue;
      }
      if (!dryRun) await remove(o.path);
      report.removedObjects.push(o.hex);
      report.freedBytes += st.size;
    }

    // Configs no tag or container names.
    for (const digest of await store.listConfigs()) {
      if (configs.has(digest)) continue;
      const path = store.configPath(digest);
      const st = await sizeAndAge(path);
      if (!st || young(st.mtimeMs)) continue;
      if (!dryRun) await remove(path);
      report.removedConfigs.push(digest);
      report.freedBytes += st.size;
    }

    // Temporary files of processes that are gone.
    for (const path of await store.objects.tempFiles()) {
      const name = path.slice(path.lastIndexOf('/') + 1);
      if (isAlive(name)) continue;
      const st = await sizeAndAge(path);
      if (!st) continue;
      if (!dryRun) await remove(path);
      report.removedTempFiles.push(path);
      report.freedBytes += st.size;
    }
    return report;
  } finally {
    release?.();
  }
}
