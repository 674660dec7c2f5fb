/**
 * A content-addressed object directory in the composefs layout: the object whose fs-verity
 * digest is `xxyyyy…` (64 hex) lives at `DIR/xx/yyyy…` (62 hex). `mkcomposefs --digest-store`,
 * composefs-rs and overlayfs (`lowerdir=IMAGE::DIR`) use this layout, so a directory written by
 * ObjectDir can be handed to them unchanged.
 *
 * Adds never leave a wrong or half-written object: bytes go to a temporary file (in `tmpDir`,
 * same filesystem; by default DIR itself, as a hidden `.….tmp` file), the digest is computed while they are written, the file is
 * fsynced and renamed into place only if the digest is the expected one. An object already
 * present is not written again (its mtime is refreshed instead, which gc's grace period uses).
 * Where the filesystem supports it, fs-verity is enabled on each object before it appears.
 *
 * Empty content is stored like any other under the kernel's empty-file digest (see
 * verity/digest.ts); composefs images never reference an object for an empty file.
 */
import { mkdir, open, readFile, readdir, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { Transform } from 'node:stream';
import type { Readable } from 'node:stream';
import { join } from 'node:path';
import { FsVerityHasher, fsverityDigest, fsverityDigestFile, objectPathFor, toHex } from '../verity/digest.js';
import { DigestMismatchError, StoreError } from './errors.js';
import { fileChunks, fsyncDir, isTempName, touch, writeTemp } from './atomic.js';
import type { ByteSource } from './atomic.js';
import { VerityEnabler } from './verity-enable.js';
import { sharedAddPool } from './add-pool.js';
import type { Release } from './lock.js';

/** Result of adding an object. */
export interface AddResult {
  /** fs-verity digest of the content. */
  digest: Buffer;
  /** Content size in bytes. */
  size: number;
  /** True if the object was already present (nothing was written). */
  existed: boolean;
}

/** Options of an ObjectDir. */
export interface ObjectDirOptions {
  /** Directory for temporary files, on the same filesystem (default: DIR itself). */
  tmpDir?: string;
  /** Takes the store's shared lock around each add (Store passes its lock). */
  hold?: () => Promise<Release>;
  /** Try to enable fs-verity on each object (default true; probed once). */
  enableVerity?: boolean;
  /** fsync objects before they are renamed into place (default true). */
  fsync?: boolean;
  /** Share another directory's fs-verity probe (same filesystem and tmpDir). */
  verity?: VerityEnabler;
}

/** Files this size or smaller are read whole by addFile, so a present object costs no write. */
const SMALL_FILE = 1 << 20;
/** addFiles batches: files per worker request, and below how many files it does not bother. */
const ADD_BATCH = 16;
const ADD_FILES_MIN = 32;
const HEX2 = /^[0-9a-f]{2}$/;
const HEX62 = /^[0-9a-f]{62}$/;

/** One entry found by ObjectDir.scan(). */
export interface ObjectEntry {
  /** 64-hex digest the path names. */
  hex: string;
  /** Absolute path. */
  path: string;
}

/** A directory in the composefs objects layout (DIR/xx/<62 hex>), usable on its own. */
export class ObjectDir {
  /** The objects directory. */
  readonly dir: string;
  /** Where temporary files are written. */
  readonly tmpDir: string;
  /** fs-verity support of this directory (probed on first add). */
  readonly verity: VerityEnabler;
  private hold: () => Promise<Release>;
  private fsync: boolean;
  private madeDirs = new Set<string>();
  private dirtyDirs = new Set<string>();

  constructor(dir: string, opts: ObjectDirOptions = {}) {
    this.dir = dir;
    this.tmpDir = opts.tmpDir ?? dir;
    this.hold = opts.hold ?? (async () => () => undefined);
    this.fsync = opts.fsync ?? true;
    this.verity = opts.verity ?? new VerityEnabler(this.tmpDir, { disabled: opts.enableVerity === false, label: dir });
  }

  /** Absolute path of an object. */
  path(digest: Buffer): string {
    return join(this.dir, objectPathFor(digest));
  }

  /** True if the object is present. */
  async has(digest: Buffer): Promise<boolean> {
    try {
      return (await stat(this.path(digest))).isFile();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Stream content into the store (see the file comment). With `expected`, a present object
   * is reported without reading `src` (a Node stream is destroyed), and content with another
   * digest is rejected with DigestMismatchError before it becomes visible; with `size`, content
   * of another length is rejected too. */
  async addStream(src: ByteSource, opts: { expected?: Buffer; size?: number } = {}): Promise<AddResult> {
    const release = await this.hold();
    try {
      if (opts.expected && (await touch(this.path(opts.expected)))) {
        const d = src as { destroy?: () => void };
        if (typeof d.destroy === 'function') d.destroy();
        return { digest: Buffer.from(opts.expected), size: (await stat(this.path(opts.expected))).size, existed: true };
      }
      return await this.commitTemp(await writeTemp(this.tmpDir, src, { sync: this.fsync, what: 'object' }), opts);
    } finally {
      release();
    }
  }

  /** Add a file's content (read once; small files are hashed before anything is written). */
  async addFile(path: string, opts: { expected?: Buffer } = {}): Promise<AddResult> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw new StoreError('READ_FAILED', `${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new StoreError('READ_FAILED', `${path}: not a regular file`);
      if (st.size <= SMALL_FILE) {
        // One read of size+1 bytes: a short count is the whole (possibly shrunk) file; a full
        // count means it grew meanwhile, and the streaming path below takes over.
        const buf = Buffer.allocUnsafe(st.size + 1);
        let got = 0;
        for (;;) {
          const { bytesRead } = await fh.read(buf, got, buf.length - got, got);
          if (bytesRead === 0) break;
          got += bytesRead;
          if (got === buf.length) break;
        }
        if (got <= st.size) return await this.addBuffer(buf.subarray(0, got), opts);
      }
      return await this.addStream(fileChunks(fh, 1 << 20, 0), opts);
    } finally {
      await fh.close();
    }
  }

  /** Add many files (in order of `paths`): worker threads read, hash, write, fsync and rename
   * with synchronous calls, several files per thread hop — much cheaper per small file than
   * addFile. All files are attempted; then the first failure, if any, is thrown. */
  async addFiles(paths: string[]): Promise<AddResult[]> {
    if (paths.length < ADD_FILES_MIN) {
      const out: AddResult[] = [];
      let first: unknown;
      for (const p of paths) {
        try {
          out.push(await this.addFile(p));
        } catch (err) {
          first ??= err;
        }
      }
      if (first !== undefined) throw first;
      return out;
    }
    const release = await this.hold();
    try {
      const verity = await this.verity.probe();
      const pool = sharedAddPool();
      const results: AddResult[] = new Array(paths.length);
      let firstError: string | undefined;
      let next = 0;
      const runner = async (): Promise<void> => {
        while (next < paths.length) {
          const start = next;
          next = Math.min(paths.length, next + ADD_BATCH);
          const r = await pool.run({ paths: paths.slice(start, next), dir: this.dir, tmpDir: this.tmpDir, fsync: this.fsync, verity });
          r.results.forEach((x, k) => {
            if ('error' in x) {
              firstError ??= x.error;
              return;
            }
            if (x.sub) this.dirtyDirs.add(x.sub);
            results[start + k] = { digest: Buffer.from(x.hex, 'hex'), size: x.size, existed: x.existed };
          });
        }
      };
      await Promise.all(Array.from({ length: pool.size * 2 }, runner));
      if (firstError !== undefined) throw new StoreError('READ_FAILED', firstError);
      return results;
    } finally {
      release();
    }
  }

  /** Add bytes held in memory; a present object is not written again. */
  async addBuffer(data: Uint8Array, opts: { expected?: Buffer } = {}): Promise<AddResult> {
    const digest = fsverityDigest(data);
    if (opts.expected && !digest.equals(opts.expected)) {
      throw new DigestMismatchError('object', toHex(opts.expected), toHex(digest));
    }
    const release = await this.hold();
    try {
      if (await touch(this.path(digest))) return { digest, size: data.length, existed: true };
      return await this.commitTemp(await writeTemp(this.tmpDir, data, { sync: this.fsync, what: 'object' }), opts);
    } finally {
      release();
    }
  }

  /** Check a finished temporary file and rename it into place (caller holds the lock). */
  private async commitTemp(tmp: { path: string; digest: Buffer; size: number }, opts: { expected?: Buffer; size?: number }): Promise<AddResult> {
    try {
      if (opts.expected && !tmp.digest.equals(opts.expected)) {
        throw new DigestMismatchError('object', toHex(opts.expected), toHex(tmp.digest));
      }
      if (opts.size !== undefined && opts.size !== tmp.size) {
        throw new StoreError('SIZE_MISMATCH', `object ${toHex(tmp.digest)}: expected ${opts.size} bytes, got ${tmp.size}`);
      }
      const final = this.path(tmp.digest);
      if (await touch(final)) {
        await unlink(tmp.path);
        return { digest: tmp.digest, size: tmp.size, existed: true };
      }
      await this.verity.enable(tmp.path);
      const sub = join(this.dir, toHex(tmp.digest).slice(0, 2));
      if (!this.madeDirs.has(sub)) {
        await mkdir(sub, { recursive: true });
        this.madeDirs.add(sub);
      }
      try {
        await rename(tmp.path, final);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await mkdir(sub, { recursive: true }); // the directory went away since we made it
        await rename(tmp.path, final);
      }
      this.dirtyDirs.add(sub);
      return { digest: tmp.digest, size: tmp.size, existed: false };
    } catch (err) {
      await unlink(tmp.path).catch(() => undefined);
      throw err;
    }
  }

  /** fsync the directories objects were renamed into since the last call (durability point:
   * Store calls it before an image or tag that needs the objects is written). */
  async sync(): Promise<void> {
    const dirs = [...this.dirtyDirs];
    this.dirtyDirs.clear();
    await Promise.all(dirs.map((d) => fsyncDir(d)));
    if (dirs.length > 0) await fsyncDir(this.dir);
  }

  /** A readable stream of an object. With `verify`, the content is hashed as it streams and the
   * stream ends with DigestMismatchError if it is not the named object: treat the data as
   * untrusted until the stream has ended without error. */
  async open(digest: Buffer, opts: { verify?: boolean } = {}): Promise<Readable> {
    let fh: FileHandle;
    try {
      fh = await open(this.path(digest), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new StoreError('OBJECT_MISSING', `object ${toHex(digest)} is not in ${this.dir}`);
      throw err;
    }
    const rs = fh.createReadStream({ highWaterMark: 1 << 20 });
    if (!opts.verify) return rs;
    const h = new FsVerityHasher();
    const where = this.path(digest);
    const t = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        h.update(chunk);
        cb(null, chunk);
      },
      flush(cb) {
        const got = h.digest();
        cb(got.equals(digest) ? null : new DigestMismatchError(where, toHex(digest), toHex(got)));
      },
    });
    rs.on('error', (e) => t.destroy(e));
    return rs.pipe(t);
  }

  /** The whole content of an object; with `verify`, throws DigestMismatchError if corrupt. */
  async read(digest: Buffer, opts: { verify?: boolean } = {}): Promise<Buffer> {
    let data: Buffer;
    try {
      data = await readFile(this.path(digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new StoreError('OBJECT_MISSING', `object ${toHex(digest)} is not in ${this.dir}`);
      throw err;
    }
    if (opts.verify) {
      const got = fsverityDigest(data);
      if (!got.equals(digest)) throw new DigestMismatchError(this.path(digest), toHex(digest), toHex(got));
    }
    return data;
  }

  /** True if the object's content has its name's digest (throws OBJECT_MISSING if absent). */
  async verify(digest: Buffer): Promise<boolean> {
    try {
      return (await fsverityDigestFile(this.path(digest))).equals(digest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new StoreError('OBJECT_MISSING', `object ${toHex(digest)} is not in ${this.dir}`);
      throw err;
    }
  }

  /** Walk the directory: objects in the layout, and anything else found in it ("strays"),
   * except temporary files and a separate temporary directory. */
  async scan(): Promise<{ objects: ObjectEntry[]; strays: string[] }> {
    const objects: ObjectEntry[] = [];
    const strays: string[] = [];
    let top: string[];
    try {
      top = (await readdir(this.dir)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { objects, strays };
      throw err;
    }
    for (const d of top) {
      const p = join(this.dir, d);
      if (p === this.tmpDir || isTempName(d)) continue;
      if (!HEX2.test(d)) {
        strays.push(p);
        continue;
      }
      let names: string[];
      try {
        names = (await readdir(p)).sort();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') {
          strays.push(p);
          continue;
        }
        throw err;
      }
      for (const n of names) {
        if (HEX62.test(n)) objects.push({ hex: d + n, path: join(p, n) });
        else strays.push(join(p, n));
      }
    }
    return { objects, strays };
  }

  /** Our temporary files (complete paths) in tmpDir and, when that is elsewhere, in the
   * objects directory itself (left there by a standalone ObjectDir on the same directory,
   * e.g. `mkcomposefs --digest-store STORE/objects`). */
  async tempFiles(): Promise<string[]> {
    const out: string[] = [];
    for (const d of this.tmpDir === this.dir ? [this.dir] : [this.tmpDir, this.dir]) {
      try {
        out.push(...(await readdir(d)).filter(isTempName).map((n) => join(d, n)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    return out;
  }
}
