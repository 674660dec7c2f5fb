/**
 * fs-verity digests (spec §9): SHA-256 Merkle tree over 4096-byte blocks, no salt, measured
 * through the 256-byte fs-verity descriptor — the value `fsverity digest` prints and the name
 * of every object in the store.
 *
 * Empty input: `fsverityDigest(empty)` returns what the kernel (and `fsverity digest`) report
 * for an empty file: the descriptor with data_size 0 and an all-zero root hash, i.e.
 * 3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95. Upstream composefs would
 * hash one zero block instead, but it never computes a digest for an empty file (empty regular
 * files are written with size 0 and no digest), so callers should not store empty objects.
 */
import { createHash, hash as oneShotHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { CfsError } from '../errors.js';

/** fs-verity Merkle tree block size (log2 = 12). */
export const BLOCK_SIZE = 4096;
/** Size of one SHA-256 hash. */
export const HASH_SIZE = 32;
/** Hashes per Merkle tree block. */
export const HASHES_PER_BLOCK = BLOCK_SIZE / HASH_SIZE;
/** The digest of empty input (kernel semantics: all-zero root hash). */
export const EMPTY_DIGEST_HEX = '3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95';

/** A malformed digest or a digest mismatch. */
export class DigestError extends CfsError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}


/** SHA-256 of one 4096-byte block (one-shot, cheaper per call than createHash). */
export function hashBlock(block: Uint8Array): Buffer {
  return oneShotHash('sha256', block, 'buffer') as unknown as Buffer;
}

/** SHA-256 of every 4096-byte block of `data` (length must be a multiple of 4096, except that a
 * short final block is zero-padded), written as consecutive 32-byte hashes into `out`. Returns
 * the number of hashes written. */
export function hashLeaves(data: Uint8Array, out: Uint8Array, outOffset = 0): number {
  let o = outOffset;
  let n = 0;
  const full = data.length - (data.length % BLOCK_SIZE);
  for (let off = 0; off < full; off += BLOCK_SIZE) {
    out.set(hashBlock(data.subarray(off, off + BLOCK_SIZE)), o);
    o += HASH_SIZE;
    n++;
  }
  if (full < data.length) {
    const last = Buffer.alloc(BLOCK_SIZE);
    last.set(data.subarray(full));
    out.set(hashBlock(last), o);
    n++;
  }
  return n;
}

interface Level {
  buf: Buffer; // pending hashes of this level, not yet hashed into the level above
  len: number; // bytes used in buf
  count: number; // total hashes ever produced at this level
}

/** fs-verity root hash and descriptor digest for a Merkle tree fed level-0 hashes in order. */
class TreeBuilder {
  private levels: Level[] = [];

  /** Append one level-`level` hash. */
  push(level: number, h: Uint8Array): void {
    let lv = this.levels[level];
    if (!lv) {
      lv = { buf: Buffer.alloc(BLOCK_SIZE), len: 0, count: 0 };
      this.levels[level] = lv;
    }
    lv.buf.set(h, lv.len);
    lv.len += HASH_SIZE;
    lv.count++;
    if (lv.len === BLOCK_SIZE) {
      lv.len = 0;
      this.push(level + 1, hashBlock(lv.buf));
    }
  }

  /** Append many consecutive level-0 hashes (32 bytes each). */
  pushLeaves(hashes: Uint8Array): void {
    for (let o = 0; o < hashes.length; o += HASH_SIZE) this.push(0, hashes.subarray(o, o + HASH_SIZE));
  }

  /** Number of level-0 hashes so far. */
  get leafCount(): number {
    return this.levels[0]?.count ?? 0;
  }

  /** The root hash (32 zero bytes when there are no leaves). Consumes the builder. */
  root(): Buffer {
    if (this.levels.length === 0) return Buffer.alloc(HASH_SIZE);
    for (let i = 0; ; i++) {
      const lv = this.levels[i];
      if (lv.count === 1) return Buffer.from(lv.buf.subarray(0, HASH_SIZE));
      if (lv.len > 0) {
        lv.buf.fill(0, lv.len);
        lv.len = 0;
        this.push(i + 1, hashBlock(lv.buf));
      }
    }
  }
}

/** The fs-verity digest of a root hash and data size: SHA-256 of the 256-byte descriptor. */
export function descriptorDigest(root: Uint8Array, size: number | bigint): Buffer {
  const d = Buffer.alloc(256);
  d[0] = 1; // version
  d[1] = 1; // hash algorithm: SHA-256
  d[2] = 12; // log2(block size)
  d[3] = 0; // salt size
  d.writeBigUInt64LE(BigInt(size), 8);
  d.set(root.subarray(0, HASH_SIZE), 16);
  return createHash('sha256').update(d).digest();
}

/** Incremental fs-verity digest: feed chunks of any size with update(), then digest(). */
export class FsVerityHasher {
  private tree = new TreeBuilder();
  private pending = Buffer.alloc(BLOCK_SIZE);
  private pendingLen = 0;
  private total = 0;
  private done = false;

  /** Bytes fed so far. */
  get size(): number {
    return this.total;
  }

  /** Feed the next bytes of the data. */
  update(chunk: Uint8Array): this {
    if (this.done) throw new DigestError('VERITY_STATE', 'FsVerityHasher.update() called after digest()');
    this.total += chunk.length;
    let off = 0;
    if (this.pendingLen > 0) {
      const take = Math.min(BLOCK_SIZE - this.pendingLen, chunk.length);
      this.pending.set(chunk.subarray(0, take), this.pendingLen);
      this.pendingLen += take;
      off = take;
      if (this.pendingLen < BLOCK_SIZE) return this;
      this.tree.push(0, hashBlock(this.pending));
      this.pendingLen = 0;
    }
    while (chunk.length - off >= BLOCK_SIZE) {
      this.tree.push(0, hashBlock(chunk.subarray(off, off + BLOCK_SIZE)));
      off += BLOCK_SIZE;
    }
    if (off < chunk.length) {
      this.pending.set(chunk.subarray(off), 0);
      this.pendingLen = chunk.length - off;
    }
    return this;
  }

  /** Feed precomputed level-0 hashes covering `dataBytes` bytes of data; the data so far must
   * be a multiple of 4096 bytes (used by the parallel path). */
  updateLeaves(hashes: Uint8Array, dataBytes: number): this {
    if (this.done) throw new DigestError('VERITY_STATE', 'FsVerityHasher.updateLeaves() called after digest()');
    if (this.pendingLen !== 0) throw new DigestError('VERITY_STATE', 'FsVerityHasher.updateLeaves() after a partial block');
    if (hashes.length !== Math.ceil(dataBytes / BLOCK_SIZE) * HASH_SIZE) {
      throw new DigestError('VERITY_STATE', `updateLeaves: ${hashes.length} hash bytes do not cover ${dataBytes} data bytes`);
    }
    this.tree.pushLeaves(hashes);
    this.total += dataBytes;
    if (dataBytes % BLOCK_SIZE !== 0) this.done = true; // a short block can only be the last one
    return this;
  }

  /** The 32-byte fs-verity digest. Call once. */
  digest(): Buffer {
    if (this.pendingLen > 0) {
      this.pending.fill(0, this.pendingLen);
      this.tree.push(0, hashBlock(this.pending));
      this.pendingLen = 0;
    }
    this.done = true;
    return descriptorDigest(this.tree.root(), this.total);
  }
}

/** fs-verity digest of a whole buffer. */
export function fsverityDigest(data: Uint8Array): Buffer {
  return new FsVerityHasher().update(data).digest();
}

const READ_CHUNK = 1 << 20;

/** fs-verity digest of a file, read in 1 MiB chunks on this thread (bounded memory). */
export async function fsverityDigestFile(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const h = new FsVerityHasher();
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, READ_CHUNK, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
    return h.digest();
  } finally {
    await fh.close();
  }
}

const HEX64 = /^[0-9a-f]{64}$/;

/** 32 bytes → 64 lowercase hex characters. */
export function toHex(d: Buffer): string {
  if (d.length !== HASH_SIZE) throw new DigestError('BAD_DIGEST', `digest has ${d.length} bytes, expected 32`);
  return d.toString('hex');
}

/** 64 lowercase hex characters → 32 bytes; throws DigestError on anything else. */
export function fromHex(hex: string): Buffer {
  if (typeof hex !== 'string' || !HEX64.test(hex)) {
    throw new DigestError('BAD_DIGEST', `not a digest (64 lowercase hex characters): ${JSON.stringify(String(hex).slice(0, 80))}`);
  }
  return Buffer.from(hex, 'hex');
}

/** True if `s` is 64 lowercase hex characters. */
export function isHexDigest(s: string): boolean {
  return HEX64.test(s);
}

/** Relative object path in the composefs layout: 'xx/' + the remaining 62 hex characters. */
export function objectPathFor(digest: Buffer): string {
  const hex = toHex(digest);
  return `${hex.slice(0, 2)}/${hex.slice(2)}`;
}
