/**
 * Verified reads of store objects, in userspace, the way the kernel's fs-verity does it: an
 * object is hashed whole once, its Merkle tree's level-0 hashes (one 32-byte hash per 4 KiB
 * block) are checked to produce the digest the image names, and then every block a read returns
 * is hashed again and compared with its level-0 hash. So a changed object fails with an
 * integrity error whether it changed before the first open or between two reads; wrong bytes are
 * never returned. Level-0 hashes (1/128 of the data) are cached per digest, bounded.
 *
 * A missing object is fetched through an `ObjectFetcher` when one is given (lazy pull), then
 * verified the same way. A fetch has an overall deadline (`fetchDeadlineMs`): past it the open
 * fails (the mount answers EIO) and the fetch is aborted; it never hangs a reader.
 *
 * File I/O is synchronous on purpose: a read of an object already in the page cache costs a few
 * microseconds, a round trip through libuv's thread pool costs tens (cold reads of a whole
 * rootfs ran 2.6 times faster so). Hashing a large object yields to the event loop between
 * chunks, so one big first open does not stall every other request.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { BLOCK_SIZE, FsVerityHasher, HASH_SIZE, hashBlock, hashLeaves, toHex } from '../../verity/digest.js';
import { MountError } from '../errors.js';
import { FETCH_DEADLINE_MS, fetchWithDeadline } from '../fetcher.js';
import type { ObjectFetcher } from '../fetcher.js';

/** An object whose content does not match its digest (or size). */
export class IntegrityError extends MountError {
  constructor(message: string) {
    super('OBJECT_CORRUPT', message);
  }
}

/** An object that is not in the store and could not be fetched. */
export class MissingObjectError extends MountError {
  constructor(message: string, cause?: unknown) {
    super('OBJECT_MISSING', message, { cause });
  }
}

const CHUNK = 4 << 20;

/** Read up to `want` bytes at `pos` into `buf`; fewer only at end of file. */
function readFully(fd: number, buf: Buffer, want: number, pos: number): number {
  let got = 0;
  while (got < want) {
    const n = readSync(fd, buf, got, want - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/** Counters, for logs, tests and benchmarks. */
export interface VerifiedStats {
  /** Objects hashed whole (first opens). */
  verified: number;
  /** Bytes hashed whole. */
  hashedBytes: number;
  /** Objects fetched through the fetcher. */
  fetched: number;
  /** Integrity failures seen. */
  corrupt: number;
}

/** Options of `VerifiedObjects`. */
export interface VerifiedObjectsOptions {
  /** Fetches objects that are missing (lazy pull). */
  fetcher?: ObjectFetcher;
  /** Bytes of level-0 hashes to keep cached (default 64 MiB, i.e. 8 GiB of object data). */
  leafCacheBytes?: number;
  /** Overall deadline of one fetch, in milliseconds (default 60 s). */
  fetchDeadlineMs?: number;
}

/** The objects directory, read with verification. */
export class VerifiedObjects {
  /** Counters. */
  readonly stats: VerifiedStats = { verified: 0, hashedBytes: 0, fetched: 0, corrupt: 0 };
  private readonly leaves = new Map<string, Buffer>();
  private leafBytes = 0;
  private readonly leafCacheBytes: number;
  private readonly hashing = new Map<string, Promise<Buffer>>();
  private readonly fetching = new Map<string, Promise<void>>();

  constructor(
    readonly dir: string,
    private readonly opts: VerifiedObjectsOptions = {},
  ) {
    this.leafCacheBytes = opts.leafCacheBytes ?? 64 << 20;
  }

  /** Path of an object. */
  path(digest: Buffer): string {
    const hex = toHex(digest);
    return join(this.dir, hex.slice(0, 2), hex.slice(2));
  }

  /** Open an object of `size` bytes for verified reads (fetching it first if missing). */
  async open(digest: Buffer, size: number): Promise<VerifiedFile> {
    const hex = toHex(digest);
    const fd = await this.openFile(digest, hex, size);
    try {
      const st = fstatSync(fd);
      if (st.size !== size) {
        this.stats.corrupt++;
        throw new IntegrityError(`object ${hex} (${this.path(digest)}): ${st.size} bytes, the image says ${size}`);
      }
      let leaves = this.cached(hex);
      if (!leaves) {
        let p = this.hashing.get(hex);
        if (!p) {
          p = this.hashWhole(fd, digest, hex, size).finally(() => this.hashing.delete(hex));
          this.hashing.set(hex, p);
        }
        leaves = await p;
      }
      return new VerifiedFile(fd, hex, size, leaves, this.path(digest), () => this.stats.corrupt++);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private openNow(digest: Buffer): number | undefined {
    try {
      return openSync(this.path(digest), 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  private async openFile(digest: Buffer, hex: string, size: number): Promise<number> {
    const fd = this.openNow(digest);
    if (fd !== undefined) return fd;
    if (!this.opts.fetcher) throw new MissingObjectError(`object ${hex} is not in ${this.dir}`);
    let f = this.fetching.get(hex);
    if (!f) {
      const fetcher = this.opts.fetcher;
      f = fetchWithDeadline(fetcher, digest, size, this.opts.fetchDeadlineMs ?? FETCH_DEADLINE_MS).finally(() => this.fetching.delete(hex));
      this.fetching.set(hex, f);
      f.then(() => this.stats.fetched++, () => undefined);
    }
    try {
      await f;
    } catch (e) {
      throw new MissingObjectError(`object ${hex} is not in ${this.dir} and fetching it failed: ${(e as Error).message}`, e);
    }
    const again = this.openNow(digest);
    if (again === undefined) throw new MissingObjectError(`object ${hex} is still not in ${this.dir} after fetching it`);
    return again;
  }

  private cached(hex: string): Buffer | undefined {
    const l = this.leaves.get(hex);
    if (l) {
      this.leaves.delete(hex);
      this.leaves.set(hex, l);
    }
    return l;
  }

  /** Hash the whole object; its level-0 hashes if the digest matches. */
  private async hashWhole(fd: number, digest: Buffer, hex: string, size: number): Promise<Buffer> {
    const leaves = Buffer.allocUnsafe(Math.ceil(size / BLOCK_SIZE) * HASH_SIZE);
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(size, 1)));
    let pos = 0;
    while (pos < size) {
      if (pos > 0) await new Promise((r) => setImmediate(r)); // let other requests through
      const want = Math.min(buf.length, size - pos);
      const got = readFully(fd, buf, want, pos);
      if (got < want) {
        this.stats.corrupt++;
        throw new IntegrityError(`object ${hex} (${this.path(digest)}) ended at ${pos + got} bytes while being verified, expected ${size}`);
      }
      hashLeaves(buf.subarray(0, want), leaves, (pos / BLOCK_SIZE) * HASH_SIZE);
      pos += want;
    }
    const got = new FsVerityHasher().updateLeaves(leaves, size).digest();
    this.stats.verified++;
    this.stats.hashedBytes += size;
    if (!got.equals(digest)) {
      this.stats.corrupt++;
      throw new IntegrityError(`object ${hex} (${this.path(digest)}) has fs-verity digest ${toHex(got)}: its content was changed`);
    }
    this.leaves.set(hex, leaves);
    this.leafBytes += leaves.length;
    while (this.leafBytes > this.leafCacheBytes && this.leaves.size > 1) {
      const [k, v] = this.leaves.entries().next().value as [string, Buffer];
      this.leaves.delete(k);
      this.leafBytes -= v.length;
    }
    return leaves;
  }
}

/** An open, verified object: every block read is checked against its level-0 hash. */
export class VerifiedFile {
  private pad: Buffer | undefined;

  constructor(
    private readonly fd: number,
    /** Object digest (hex). */
    readonly hex: string,
    /** Verified size. */
    readonly size: number,
    private readonly leaves: Buffer,
    private readonly where: string,
    private readonly onCorrupt: () => void,
  ) {}

  /** Bytes [offset, offset+length) clipped to the size; IntegrityError if any block differs. */
  read(offset: number, length: number): Buffer {
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const b0 = Math.floor(offset / BLOCK_SIZE);
    const start = b0 * BLOCK_SIZE;
    const stop = Math.min(this.size, Math.ceil(end / BLOCK_SIZE) * BLOCK_SIZE);
    const buf = Buffer.allocUnsafe(stop - start);
    if (readFully(this.fd, buf, buf.length, start) < buf.length) {
      this.onCorrupt();
      throw new IntegrityError(`object ${this.hex} (${this.where}) is shorter than its verified ${this.size} bytes`);
    }
    for (let off = 0, i = b0; off < buf.length; off += BLOCK_SIZE, i++) {
      let blk: Buffer = buf.subarray(off, off + BLOCK_SIZE);
      if (blk.length < BLOCK_SIZE) {
        this.pad ??= Buffer.alloc(BLOCK_SIZE);
        this.pad.fill(0);
        blk.copy(this.pad);
        blk = this.pad;
      }
      const h = hashBlock(blk);
      if (this.leaves.compare(h, 0, HASH_SIZE, i * HASH_SIZE, (i + 1) * HASH_SIZE) !== 0) {
        this.onCorrupt();
        throw new IntegrityError(`object ${this.hex} (${this.where}): block ${i} does not match its digest: the content was changed`);
      }
    }
    return buf.subarray(offset - start, end - start);
  }

  /** Close the file. */
  close(): void {
    closeSync(this.fd);
  }
}
