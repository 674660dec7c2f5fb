/**
 * The cfsdist distribution protocol (HTTP/1.1, served by server.ts, spoken by
 * client/http-remote.ts). HEX is a 64-hex fs-verity digest; NAME may contain `/`; the last
 * path segment of a statement URL is the TAG.
 *
 * Read API (no authentication):
 *   GET  /v1/tags                         JSON {"tags":[{"name","tag","image","signed"}]}
 *   GET  /v1/statements/NAME/TAG          the signed statement (DSSE JSON); 404 = unsigned
 *   GET|HEAD /v1/images/HEX               the composefs image
 *   GET  /v1/images/HEX/fsverity-signature  kernel PKCS#7 signature of the image (404 if none)
 *   GET|HEAD /v1/objects/HEX              one object
 *   GET|HEAD /v1/configs/SHA256HEX        an image config (bytes as published; 64 hex of its
 *                                         SHA-256), named by the statements whose image it is
 *   POST /v1/objects/query                body: N raw 32-byte digests; reply: a bitmap of
 *                                         ceil(N/8) bytes, bit i (byte i>>3, bit i&7, LSB
 *                                         first) set = the server has digest i
 *   POST /v1/objects/pack                 body: N raw 32-byte digests; reply: a pack (below)
 * Images and objects are content-addressed: ETag "HEX", `Cache-Control: public,
 * max-age=31536000, immutable`, single-range `Range: bytes=` requests (206/416), and a
 * Content-Encoding (zstd, gzip) when the client accepts one and sends no Range.
 *
 * Write API (push; `Authorization: Bearer TOKEN`, 401 without, 403 wrong):
 *   PUT  /v1/objects/HEX                  body: the object (digest verified before it is stored)
 *   PUT  /v1/objects/pack                 body: a pack of objects; reply JSON {"added","existed"}
 *   PUT  /v1/images/HEX                   body: the image; refused (409, JSON {"missing":[HEX…]})
 *                                         unless every object it needs is present
 *   PUT  /v1/images/HEX/fsverity-signature
 *   PUT  /v1/configs/SHA256HEX            body: an image config (digest verified, ≤ 16 MiB)
 *   PUT  /v1/statements/NAME/TAG          body: a statement; the image (and the config it names)
 *                                         must be present and match it, the version must grow;
 *                                         moves the server's tag
 * Bodies of PUT may carry a Content-Encoding (zstd, gzip).
 *
 * A pack (`application/vnd.cfsdist.pack.v1`) is a sequence of frames
 *   digest (32 bytes) | size (u64 big-endian) | size bytes of content
 * with size 2^64-1 and no content meaning "absent", ended by a trailer frame of 32 zero bytes
 * and size 0 (so a truncated pack is always detected). Errors are JSON {"error": message}.
 */
import { CfsError } from '../errors.js';

/** Protocol path prefix. */
export const API = '/v1';
/** Media type of a pack. */
export const PACK_MEDIA_TYPE = 'application/vnd.cfsdist.pack.v1';
/** Media type of a statement. */
export const STATEMENT_MEDIA_TYPE = 'application/vnd.dsse.envelope.v1+json';
/** Cache-Control of content-addressed resources. */
export const IMMUTABLE = 'public, max-age=31536000, immutable';
/** Frame header size. */
export const FRAME_HEADER = 40;
/** Size field of an "absent" frame. */
export const ABSENT = 0xffffffffffffffffn;
/** Most digests in one query. */
export const MAX_QUERY_DIGESTS = 1 << 18;
/** Most digests in one pack request. */
export const MAX_PACK_DIGESTS = 1 << 14;

/** A protocol violation by the other side. */
export class ProtocolError extends CfsError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/** A frame header. */
export function frameHeader(digest: Buffer, size: number | bigint): Buffer {
  const h = Buffer.alloc(FRAME_HEADER);
  digest.copy(h, 0);
  h.writeBigUInt64BE(BigInt(size), 32);
  return h;
}

/** The trailer frame. */
export function trailer(): Buffer {
  return Buffer.alloc(FRAME_HEADER);
}

/** Concatenate digests for a query/pack request body. */
export function digestList(digests: Buffer[]): Buffer {
  return Buffer.concat(digests);
}

/** Split a request body into 32-byte digests. */
export function parseDigestList(body: Buffer, max: number): Buffer[] {
  if (body.length % 32 !== 0) throw new ProtocolError('BAD_REQUEST', `digest list of ${body.length} bytes is not a multiple of 32`);
  const n = body.length / 32;
  if (n > max) throw new ProtocolError('TOO_LARGE', `${n} digests in one request; at most ${max}`);
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) out.push(body.subarray(i * 32, i * 32 + 32));
  return out;
}

/** Bitmap of a query reply. */
export function encodeBitmap(bits: boolean[]): Buffer {
  const b = Buffer.alloc(Math.ceil(bits.length / 8));
  bits.forEach((v, i) => {
    if (v) b[i >> 3]! |= 1 << (i & 7);
  });
  return b;
}

/** Decode a query reply for `n` digests. */
export function decodeBitmap(b: Buffer, n: number): boolean[] {
  if (b.length !== Math.ceil(n / 8)) throw new ProtocolError('BAD_REPLY', `query reply of ${b.length} bytes for ${n} digests (expected ${Math.ceil(n / 8)})`);
  const out: boolean[] = [];
  for (let i = 0; i < n; i++) out.push(((b[i >> 3]! >> (i & 7)) & 1) === 1);
  return out;
}

/** Pull-based reader over an async byte stream: exact reads and bounded sub-streams. */
export class ByteReader {
  private it: AsyncIterator<Uint8Array>;
  /** Unread chunks, as received (never concatenated wholesale: a read takes views). */
  private chunks: Buffer[] = [];
  private avail = 0;
  private ended = false;
  /** Bytes consumed so far. */
  consumed = 0;

  constructor(src: AsyncIterable<Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.it.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    if (r.value.byteLength > 0) {
      this.chunks.push(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength));
      this.avail += r.value.byteLength;
    }
    return true;
  }

  /** Take up to `max` bytes from the first chunk (there must be one). */
  private take(max: number): Buffer {
    const c = this.chunks[0]!;
    const k = Math.min(max, c.length);
    const out = c.subarray(0, k);
    if (k === c.length) this.chunks.shift();
    else this.chunks[0] = c.subarray(k);
    this.avail -= k;
    this.consumed += k;
    return out;
  }

  /** Exactly `n` bytes, or undefined at a clean end of stream (no byte left); a partial read
   * throws ProtocolError TRUNCATED. */
  async readExact(n: number, what: string): Promise<Buffer | undefined> {
    while (this.avail < n) {
      if (!(await this.fill())) {
        if (this.avail === 0) return undefined;
        throw new ProtocolError('TRUNCATED', `${what}: stream ended after ${this.avail} of ${n} bytes`);
      }
    }
    if (this.chunks[0]!.length >= n) return this.take(n);
    const out = Buffer.allocUnsafe(n);
    for (let off = 0; off < n; ) {
      const part = this.take(n - off);
      part.copy(out, off);
      off += part.length;
    }
    return out;
  }

  /** Between 1 and `max` bytes (ProtocolError TRUNCATED if the stream has ended). */
  async readSome(max: number, what: string): Promise<Buffer> {
    while (this.avail === 0) if (!(await this.fill())) throw new ProtocolError('TRUNCATED', `${what}: stream ended early`);
    return this.take(max);
  }

  /** True if no byte is left (reads ahead if needed). */
  async atEnd(): Promise<boolean> {
    while (this.avail === 0) if (!(await this.fill())) return true;
    return false;
  }

  /** Stop reading the source. */
  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/** One object of a pack being read; `body` must be consumed (or `skip()`ed) before the next. */
export interface PackEntry {
  digest: Buffer;
  size: number;
  body: AsyncIterable<Buffer> & { destroy(): void };
}

/**
 * Read a pack. With `expected` (hex → size), every frame must name a requested digest not seen
 * before, with exactly the requested size, and every requested digest must arrive; an absent
 * frame is an error. Without it, any digest is accepted (upload side) up to `maxSize` each.
 * Unconsumed bodies are skipped. Throws ProtocolError.
 */
export async function* readPack(src: AsyncIterable<Uint8Array>, where: string, opts: { expected?: Map<string, number>; maxSize?: number } = {}): AsyncGenerator<PackEntry> {
  const r = new ByteReader(src);
  const pending = opts.expected ? new Map(opts.expected) : undefined;
  try {
    for (;;) {
      const h = await r.readExact(FRAME_HEADER, `${where}: frame header`);
      if (!h) throw new ProtocolError('TRUNCATED', `${where}: pack ended without its trailer`);
      const digest = Buffer.from(h.subarray(0, 32));
      const size64 = h.readBigUInt64BE(32);
      const hex = digest.toString('hex');
      if (size64 === 0n && digest.every((b) => b === 0)) {
        if (!(await r.atEnd())) throw new ProtocolError('TRAILING_DATA', `${where}: bytes after the pack trailer`);
        if (pending && pending.size > 0) throw new ProtocolError('INCOMPLETE', `${where}: pack ended without ${pending.size} requested object(s), e.g. ${pending.keys().next().value}`);
        return;
      }
      if (size64 === ABSENT) throw new ProtocolError('OBJECT_ABSENT', `${where}: server does not have object ${hex}`);
      if (pending) {
        const want = pending.get(hex);
        if (want === undefined) throw new ProtocolError('UNEXPECTED_OBJECT', `${where}: pack sends object ${hex}, which was not requested (or twice)`);
        if (size64 !== BigInt(want)) throw new ProtocolError('SIZE_MISMATCH', `${where}: pack declares ${size64} bytes for object ${hex}; the image says ${want}`);
        pending.delete(hex);
      } else if (opts.maxSize !== undefined && size64 > BigInt(opts.maxSize)) {
        throw new ProtocolError('TOO_LARGE', `${where}: object ${hex} of ${size64} bytes exceeds ${opts.maxSize}`);
      }
      const size = Number(size64);
      let left = size;
      const what = `${where}: object ${hex} (${size} bytes)`;
      const next = async (): Promise<IteratorResult<Buffer>> => {
        if (left === 0) return { done: true, value: undefined };
        const c = await r.readSome(left, what);
        left -= c.length;
        return { done: false, value: c };
      };
      const iterator: AsyncIterator<Buffer> = { next, return: async () => ({ done: true, value: undefined }) };
      const body = { [Symbol.asyncIterator]: () => iterator, destroy: () => undefined };
      yield { digest, size, body };
      // Skip whatever the consumer left unread.
      while (left > 0) left -= (await r.readSome(left, what)).length;
    }
  } finally {
    await r.close();
  }
}
