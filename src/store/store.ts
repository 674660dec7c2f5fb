/**
 * The cfsdist store: one directory where every image meets and shares data.
 *
 * Layout (all names are lowercase hex fs-verity digests unless said otherwise):
 *
 *   STORE/objects/xx/<62 hex>        content objects, composefs layout (ObjectDir); usable as
 *                                    `mkcomposefs --digest-store` dir and overlay data layer
 *   STORE/images/<64 hex>            composefs (EROFS) images, named by their fs-verity digest
 *   STORE/images/<64 hex>.objects    sidecar: the object digests the image references, one hex
 *                                    per line, sorted, unique; written (atomically) BEFORE the
 *                                    image, so an image present always has its list
 *   STORE/tags/<NAME>/:<TAG>         a tag: first line the image's hex digest, then optional
 *                                    `KEY VALUE` lines about the container image it came from:
 *                                    `config sha256:<hex>` (its OCI image config, in configs/),
 *                                    `manifest sha256:<hex>` (the source manifest's digest),
 *                                    `platform os/arch[/variant]`. NAME may contain `/` (nested
 *                                    directories); the `:` prefix keeps tag files apart from
 *                                    NAME components (names never contain `:`)
 *   STORE/configs/<64 hex>           OCI image configs, byte for byte as published, named by
 *                                    the SHA-256 of those bytes (what the manifest names)
 *   STORE/containers/<ID>/           containers made by `run`/`bundle` (src/run): their record,
 *                                    writable upper/work dirs and mount points; the images
 *                                    they use are gc roots while they exist
 *   STORE/tmp/                       temporary files of writes in progress, named
 *                                    `.<pid>-<starttime>-<n>-<rand>.tmp` (stale when that
 *                                    process is gone: fsck reports them, gc deletes them)
 *   STORE/quarantine/                corrupt objects/images moved aside by `fsck --repair`
 *   STORE/lock/leases/, lock/gc/     the shared/exclusive store lock (lock.ts)
 *
 * Writes: every file (object, image, sidecar, tag) is written to tmp/, fsynced, renamed into
 * place. The images directory is fsynced after each image; the object directories this Store
 * instance renamed objects into are fsynced before it writes a tag (so a pull that adds and
 * tags through one Store has everything on disk before the tag is).
 *
 * gc versus concurrent adds — a lock, plus a grace period:
 *  - Every write (object, image, tag) holds the store lock shared for its duration; gc holds it
 *    exclusive from before it reads the tags until its last delete. So gc never runs between
 *    an add deciding "already present" and returning, nor between a tag's target check and
 *    its write. The lock survives SIGKILL of either side (stale holders are recognised by
 *    pid + start time, not by age).
 *  - A multi-step operation (a pull: objects, then image, then tag) must hold the lock across
 *    all its steps: `store.withLease(fn)` / `store.lease()`. Then nothing it added can be
 *    collected before its tag exists.
 *  - Safety net for callers that do not: gc keeps objects and images whose mtime is younger
 *    than the grace period (default 15 minutes; `gc --grace SECONDS`), and an add that finds
 *    its object/image already present refreshes that mtime. A young untagged image also keeps
 *    its objects.
 */
import { mkdir, open, readFile, readdir, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fromHex, isHexDigest, toHex } from '../verity/digest.js';
import { ObjectDir } from './objects.js';

export { ObjectDir } from './objects.js';
export type { AddResult, ObjectDirOptions } from './objects.js';
import { StoreError } from './errors.js';
import { StoreLock, makeLockDirs } from './lock.js';
import type { Release } from './lock.js';
import { fileChunks, fsyncDir, touch, writeTemp } from './atomic.js';
import type { TempFile } from './atomic.js';
import { FSVERITY_SIGNATURES_DIR, checkName, checkTag, parseRef } from './names.js';
import { SIDECAR_SUFFIX, parseSidecar, sidecarText } from './sidecar.js';
import type { FsckOptions, FsckReport, GcOptions, GcReport } from './maintenance.js';

/** A shared hold on the store lock, spanning a multi-step operation. */
export interface Lease {
  /** End the hold (idempotent). */
  release(): void;
}

/** What a tag records about the container image beside the composefs image. */
export interface ImageMeta {
  /** `sha256:<hex>` of the OCI image config (in STORE/configs). */
  config?: string;
  /** `sha256:<hex>` of the source image manifest. */
  manifest?: string;
  /** `os/arch[/variant]`. */
  platform?: string;
  /** `sha256:<hex>` of the multi-platform index `manifest` was picked from. */
  index?: string;
  /** Where an image built locally from an ordinary registry image came from
   * (docker://HOST/REPO@sha256:…): no cfsdist signature covers it (`pull` without a trusted
   * attached image; `inspect`, `mount` and `run` say so). */
  unsignedFrom?: string;
  /** Version of the signed statement that points the tag at this image
   * (STORE/signatures/NAME/:TAG.history/VERSION.dsse): the tag file is the one commit point of
   * the pair (sign/records.ts commitStatement). */
  statement?: number;
}

/** One tag. */
export interface TagEntry {
  name: string;
  tag: string;
  image: Buffer;
  meta: ImageMeta;
}

/** A tag's contents. */
export interface TagRecord {
  image: Buffer;
  meta: ImageMeta;
}

const SHA256_DIGEST = /^sha256:[0-9a-f]{64}$/;
const PLATFORM = /^[a-z0-9_]+\/[a-z0-9_]+(?:\/[a-z0-9_.]+)?$/;
/** Largest image config the store accepts (the sources' limit for JSON documents). */
export const MAX_CONFIG_BYTES = 16 << 20;

/** Throw StoreError BAD_META unless `meta` has only well-formed fields. */
export function checkImageMeta(meta: ImageMeta, where: string): void {
  if (meta.config !== undefined && !SHA256_DIGEST.test(meta.config)) throw new StoreError('BAD_META', `${where}: config digest ${JSON.stringify(meta.config)} is not sha256:<64 hex>`);
  if (meta.manifest !== undefined && !SHA256_DIGEST.test(meta.manifest)) throw new StoreError('BAD_META', `${where}: manifest digest ${JSON.stringify(meta.manifest)} is not sha256:<64 hex>`);
  if (meta.platform !== undefined && !PLATFORM.test(meta.platform)) throw new StoreError('BAD_META', `${where}: platform ${JSON.stringify(meta.platform)} is not os/arch[/variant]`);
  if (meta.index !== undefined && !SHA256_DIGEST.test(meta.index)) throw new StoreError('BAD_META', `${where}: index digest ${JSON.stringify(meta.index)} is not sha256:<64 hex>`);
  if (meta.statement !== undefined && (!Number.isSafeInteger(meta.statement) || meta.statement < 1)) throw new StoreError('BAD_META', `${where}: statement version ${JSON.stringify(meta.statement)} is not a positive integer`);
  if (meta.unsignedFrom !== undefined && !/^docker:\/\/[\x21-\x7e]{1,500}$/.test(meta.unsignedFrom)) throw new StoreError('BAD_META', `${where}: unsigned-from ${JSON.stringify(meta.unsignedFrom.slice(0, 80))} is not a docker:// reference`);
}

/** The text of a tag file. */
function tagText(image: Buffer, meta: ImageMeta): string {
  let t = toHex(image) + '\n';
  if (meta.config) t += `config ${meta.config}\n`;
  if (meta.manifest) t += `manifest ${meta.manifest}\n`;
  if (meta.platform) t += `platform ${meta.platform}\n`;
  if (meta.index) t += `index ${meta.index}\n`;
  if (meta.unsignedFrom) t += `unsigned-from ${meta.unsignedFrom}\n`;
  if (meta.statement !== undefined) t += `statement ${meta.statement}\n`;
  return t;
}

/** Parse a tag file (first line the image, then KEY VALUE lines; unknown keys are ignored so
 * that a newer cfsdist's tags stay readable). */
function parseTagText(text: string, path: string): TagRecord {
  const lines = text.split('\n').filter((l) => l !== '');
  const hex = (lines[0] ?? '').trim();
  if (!isHexDigest(hex)) throw new StoreError('TAG_CORRUPT', `${path}: not an image digest: ${JSON.stringify(hex.slice(0, 80))}`);
  const meta: ImageMeta = {};
  for (const line of lines.slice(1)) {
    const sp = line.indexOf(' ');
    const key = sp < 0 ? line : line.slice(0, sp);
    const value = sp < 0 ? '' : line.slice(sp + 1).trim();
    if (key === 'config' || key === 'manifest' || key === 'platform' || key === 'index') meta[key] = value;
    else if (key === 'unsigned-from') meta.unsignedFrom = value;
    else if (key === 'statement') meta.statement = /^[0-9]{1,15}$/.test(value) ? Number(value) : NaN;
  }
  try {
    checkImageMeta(meta, path);
  } catch (err) {
    throw new StoreError('TAG_CORRUPT', (err as Error).message);
  }
  return { image: fromHex(hex), meta };
}

const TAG_PREFIX = ':';

/** A cfsdist store directory (layout in the file comment). */
export class Store {
  /** The store directory. */
  readonly dir: string;
  /** Objects at STORE/objects. */
  readonly objects: ObjectDir;
  /** The shared/exclusive lock (gc vs writers). */
  readonly lock: StoreLock;
  /** STORE/images. */
  readonly imagesDir: string;
  /** STORE/tags. */
  readonly tagsDir: string;
  /** STORE/tmp. */
  readonly tmpDir: string;
  /** STORE/quarantine. */
  readonly quarantineDir: string;
  /** STORE/configs. */
  readonly configsDir: string;
  /** STORE/containers. */
  readonly containersDir: string;

  private constructor(dir: string, opts: { enableVerity?: boolean; fsync?: boolean }) {
    // Absolute: mount points, mount options and records name paths the kernel reports as absolute.
    dir = resolve(dir);
    this.dir = dir;
    this.imagesDir = join(dir, 'images');
    this.tagsDir = join(dir, 'tags');
    this.tmpDir = join(dir, 'tmp');
    this.quarantineDir = join(dir, 'quarantine');
    this.configsDir = join(dir, 'configs');
    this.containersDir = join(dir, 'containers');
    this.lock = new StoreLock(join(dir, 'lock'));
    this.objects = new ObjectDir(join(dir, 'objects'), {
      tmpDir: this.tmpDir,
      hold: () => this.lock.shared(),
      enableVerity: opts.enableVerity,
      fsync: opts.fsync,
    });
  }

  /** Open a store; with `create`, make the directory layout if missing. Throws
   * StoreError STORE_MISSING if there is no store at `dir` and `create` is not set. */
  static async open(dir: string, opts: { create?: boolean; enableVerity?: boolean; fsync?: boolean } = {}): Promise<Store> {
    const s = new Store(dir, opts);
    if (!existsSync(s.objects.dir)) {
      if (!opts.create) throw new StoreError('STORE_MISSING', `no cfsdist store at ${dir} (no ${s.objects.dir})`);
      await mkdir(s.objects.dir, { recursive: true });
    }
    for (const d of [s.imagesDir, s.tagsDir, s.tmpDir, s.quarantineDir, s.configsDir]) await mkdir(d, { recursive: true });
    makeLockDirs(s.lock.dir);
    return s;
  }

  /** Hold the store lock shared until released: wrap a whole pull/import in one lease so gc
   * cannot collect what it added before its tag is written. Do not run gc while holding one
   * (gc would wait for it, then fail with STORE_BUSY). */
  async lease(): Promise<Lease> {
    const release: Release = await this.lock.shared();
    return { release };
  }

  /** Run `fn` under a lease. */
  async withLease<T>(fn: () => Promise<T>): Promise<T> {
    const l = await this.lease();
    try {
      return await fn();
    } finally {
      l.release();
    }
  }

  /** Path of an image's kernel fs-verity builtin signature (present when signed or pulled). */
  imageSignaturePath(digest: Buffer): string {
    return join(this.dir, FSVERITY_SIGNATURES_DIR, toHex(digest) + '.p7s');
  }

  /**
   * Turn fs-verity on for an image file: with the store's builtin signature of the image when
   * there is one (the kernel checks it against its `.fs-verity` keyring and refuses the ioctl
   * otherwise), else — or when the signed enable was refused — without. `refused` is the
   * kernel's reason for refusing the signature.
   */
  async enableImageVerity(path: string, digest: Buffer): Promise<{ enabled: boolean; signed: boolean; refused?: string }> {
    const sig = this.imageSignaturePath(digest);
    if (existsSync(sig)) {
      const r = await this.objects.verity.enableSigned(path, sig);
      if (r.ok) return { enabled: true, signed: true };
      return { enabled: await this.objects.verity.enable(path), signed: false, refused: r.message };
    }
    return { enabled: await this.objects.verity.enable(path), signed: false };
  }

  /**
   * Ask the kernel now whether it accepts the store's builtin signature of an image: fs-verity
   * is enabled with it on a scratch copy (the image's own file may have fs-verity already).
   * Returns undefined when accepted, else the reason (the kernel's, or that there is none).
   */
  async kernelSignatureVerdict(digest: Buffer): Promise<string | undefined> {
    const sig = this.imageSignaturePath(digest);
    if (!existsSync(sig)) return 'the store has no fs-verity signature of this image';
    const { copyFile } = await import('node:fs/promises');
    const { tempPath } = await import('./atomic.js');
    const scratch = tempPath(this.tmpDir);
    await copyFile(this.imagePath(digest), scratch);
    try {
      const r = await this.objects.verity.enableSigned(scratch, sig);
      return r.ok ? undefined : `the kernel refused its fs-verity signature: ${r.message.replace(/^fsverity enable: /, '')}`;
    } finally {
      await unlink(scratch).catch(() => undefined);
    }
  }

  /** Path of an image file. */
  imagePath(digest: Buffer): string {
    return join(this.imagesDir, toHex(digest));
  }

  /** Path of an image's object-list sidecar. */
  sidecarPath(digest: Buffer): string {
    return this.imagePath(digest) + SIDECAR_SUFFIX;
  }

  /** True if the image is present. */
  async hasImage(digest: Buffer): Promise<boolean> {
    try {
      return (await stat(this.imagePath(digest))).isFile();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Store a composefs image (bytes, or the path of a file) under its fs-verity digest,
   * together with the digests of the objects it references. Returns the image digest. */
  /**
   * Move an image file into the store without reading it: `path` (on the store's filesystem)
   * must hold the image whose fs-verity digest is `digest` — the caller has verified it, as a
   * pull does — and is consumed (renamed, or deleted if the store has the image already). The
   * file is fsynced first (nearly free when the caller synced the filesystem, as a pull's
   * commit does).
   */
  async addVerifiedImageFile(path: string, digest: Buffer, objects: Buffer[]): Promise<void> {
    const list = sidecarText(objects);
    const release = await this.lock.shared();
    try {
      await this.placeImage(path, digest, list, true);
    } finally {
      release();
    }
  }

  /** Move the image file `path` (fs-verity digest `digest`, same filesystem) into place with
   * its sidecar, or delete it when the store has the image already. `sync`: fsync the file
   * first (writeTemp's files are synced already). Caller holds the lock. */
  private async placeImage(path: string, digest: Buffer, list: string, sync: boolean): Promise<void> {
    const final = this.imagePath(digest);
    const side = this.sidecarPath(digest);
    if (await touch(final)) {
      await unlink(path);
      if (!(await touch(side))) await this.writeFileAtomic(side, list);
      return;
    }
    if (sync) {
      const fh = await open(path, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    await this.writeFileAtomic(side, list);
    await this.enableImageVerity(path, digest);
    await rename(path, final);
    await fsyncDir(this.imagesDir); // images are few: make each one durable at once
  }

  async addImage(image: Buffer | string, objects: Buffer[]): Promise<Buffer> {
    const list = sidecarText(objects);
    const release = await this.lock.shared();
    try {
      let tmp: TempFile;
      if (typeof image === 'string') {
        let fh: FileHandle;
        try {
          fh = await open(image, 'r');
        } catch (err) {
          throw new StoreError('READ_FAILED', `${image}: ${(err as Error).message}`, { cause: err });
        }
        try {
          tmp = await writeTemp(this.tmpDir, fileChunks(fh), { what: image });
        } finally {
          await fh.close();
        }
      } else {
        tmp = await writeTemp(this.tmpDir, image, { what: 'image' });
      }
      try {
        await this.placeImage(tmp.path, tmp.digest, list, false);
      } catch (err) {
        await unlink(tmp.path).catch(() => undefined);
        throw err;
      }
      return tmp.digest;
    } finally {
      release();
    }
  }

  /** The object digests an image references (from its sidecar). */
  async imageObjects(digest: Buffer): Promise<Buffer[]> {
    let text: string;
    try {
      text = await readFile(this.sidecarPath(digest), 'latin1');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        const present = await this.hasImage(digest);
        throw new StoreError(present ? 'SIDECAR_MISSING' : 'IMAGE_MISSING', present ? `image ${toHex(digest)} has no object list (${this.sidecarPath(digest)})` : `image ${toHex(digest)} is not in the store`);
      }
      throw err;
    }
    return parseSidecar(text, this.sidecarPath(digest));
  }

  /** Images in the store (digests), sorted. */
  async listImages(): Promise<Buffer[]> {
    const names = await readdir(this.imagesDir).catch(() => [] as string[]);
    return names.filter(isHexDigest).sort().map((h) => Buffer.from(h, 'hex'));
  }

  private tagPath(name: string, tag: string): string {
    checkName(name);
    checkTag(tag);
    return join(this.tagsDir, name, TAG_PREFIX + tag);
  }

  /** Point NAME:TAG at an image (atomic replace), recording `meta` with it. The image, and the
   * config `meta` names, must be in the store. */
  async setTag(name: string, tag: string, image: Buffer, meta: ImageMeta = {}): Promise<void> {
    const path = this.tagPath(name, tag);
    checkImageMeta(meta, `tag ${name}:${tag}`);
    const release = await this.lock.shared();
    try {
      if (!(await this.hasImage(image))) throw new StoreError('IMAGE_MISSING', `cannot tag ${name}:${tag}: image ${toHex(image)} is not in the store`);
      if (meta.config && !(await touch(this.configPath(meta.config)))) throw new StoreError('CONFIG_MISSING', `cannot tag ${name}:${tag}: config ${meta.config} is not in the store`);
      // Durability: objects and images the tag needs reach the disk before the tag does.
      await this.objects.sync();
      await mkdir(join(this.tagsDir, name), { recursive: true });
      await this.writeFileAtomic(path, tagText(image, meta));
      await fsyncDir(join(this.tagsDir, name));
    } finally {
      release();
    }
  }

  /** The image NAME:TAG points at, or undefined. */
  async getTag(name: string, tag: string): Promise<Buffer | undefined> {
    return (await this.getTagRecord(name, tag))?.image;
  }

  /** The image NAME:TAG points at and what the tag records about it, or undefined. */
  async getTagRecord(name: string, tag: string): Promise<TagRecord | undefined> {
    const path = this.tagPath(name, tag);
    let text: string;
    try {
      text = await readFile(path, 'latin1');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw err;
    }
    return parseTagText(text, path);
  }

  /** Path of a config (`sha256:<hex>`). */
  configPath(digest: string): string {
    if (!SHA256_DIGEST.test(digest)) throw new StoreError('BAD_META', `config digest ${JSON.stringify(digest)} is not sha256:<64 hex>`);
    return join(this.configsDir, digest.slice(7));
  }

  /** Store an image config byte for byte; returns its `sha256:<hex>`. An existing one is
   * touched (gc's grace period, as for objects). */
  async addConfig(bytes: Buffer): Promise<string> {
    if (bytes.length > MAX_CONFIG_BYTES) throw new StoreError('CONFIG_TOO_LARGE', `image config of ${bytes.length} bytes (at most ${MAX_CONFIG_BYTES})`);
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
    const path = this.configPath(digest);
    const release = await this.lock.shared();
    try {
      if (await touch(path)) return digest;
      await mkdir(this.configsDir, { recursive: true });
      await this.writeFileAtomic(path, bytes);
      await fsyncDir(this.configsDir);
      return digest;
    } finally {
      release();
    }
  }

  /** A config's bytes, checked against its digest (StoreError CONFIG_MISSING / CONFIG_CORRUPT). */
  async readConfig(digest: string): Promise<Buffer> {
    const path = this.configPath(digest);
    let bytes: Buffer;
    try {
      bytes = await readFile(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new StoreError('CONFIG_MISSING', `config ${digest} is not in the store (${path})`);
      throw err;
    }
    if (createHash('sha256').update(bytes).digest('hex') !== digest.slice(7)) throw new StoreError('CONFIG_CORRUPT', `${path}: content does not match ${digest} (run fsck --repair)`);
    return bytes;
  }

  /** The config digests present, sorted. */
  async listConfigs(): Promise<string[]> {
    const names = await readdir(this.configsDir).catch(() => [] as string[]);
    return names.filter(isHexDigest).sort().map((h) => 'sha256:' + h);
  }

  /** Remove NAME:TAG; true if it existed. */
  async deleteTag(name: string, tag: string): Promise<boolean> {
    const path = this.tagPath(name, tag);
    try {
      await unlink(path);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Every tag, sorted by name then tag. Unreadable tag files are skipped (fsck reports them). */
  async listTags(): Promise<TagEntry[]> {
    const out: TagEntry[] = [];
    const walk = async (rel: string): Promise<void> => {
      const dir = join(this.tagsDir, rel);
      const ents = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of ents) {
        if (e.isDirectory()) await walk(rel ? `${rel}/${e.name}` : e.name);
        else if (e.isFile() && e.name.startsWith(TAG_PREFIX) && rel) {
          const tag = e.name.slice(TAG_PREFIX.length);
          try {
            const r = await this.getTagRecord(rel, tag);
            if (r) out.push({ name: rel, tag, image: r.image, meta: r.meta });
          } catch {
            /* invalid name/tag or corrupt file: fsck's business */
          }
        }
      }
    };
    await walk('');
    out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.tag < b.tag ? -1 : a.tag > b.tag ? 1 : 0));
    return out;
  }

  /** "NAME[:TAG]" (tag defaults to latest) or a 64-hex image digest (optionally `sha256:`
   * prefixed) → image digest; StoreError TAG_MISSING / IMAGE_MISSING if unknown. */
  async resolveImage(ref: string): Promise<Buffer> {
    const bare = ref.startsWith('sha256:') ? ref.slice(7) : ref;
    if (isHexDigest(bare)) {
      const d = fromHex(bare);
      if (!(await this.hasImage(d))) throw new StoreError('IMAGE_MISSING', `image ${bare} is not in the store ${this.dir}`);
      return d;
    }
    const { name, tag } = parseRef(ref);
    const d = await this.getTag(name, tag);
    if (!d) throw new StoreError('TAG_MISSING', `no image tagged ${name}:${tag} in the store ${this.dir}`);
    return d;
  }

  /** Recompute every object's and image's digest; report corrupt objects, images whose objects
   * are missing, dangling tags and leftover temporary files (see FsckReport). */
  async fsck(opts: FsckOptions = {}): Promise<FsckReport> {
    const { runFsck } = await import('./maintenance.js');
    return runFsck(this, opts);
  }

  /** Delete images no tag reaches and objects no kept image references (see GcReport). */
  async gc(opts: GcOptions = {}): Promise<GcReport> {
    const { runGc } = await import('./maintenance.js');
    return runGc(this, opts);
  }

  /** Write a small file of the store atomically (tmp/, fsync, rename into place): tags,
   * configs, container records. A string is written as latin1. */
  async writeFileAtomic(path: string, text: string | Buffer): Promise<void> {
    const tmp = await writeTemp(this.tmpDir, typeof text === 'string' ? Buffer.from(text, 'latin1') : text, { what: path });
    try {
      await rename(tmp.path, path);
    } catch (err) {
      await unlink(tmp.path).catch(() => undefined);
      throw err;
    }
  }
}
