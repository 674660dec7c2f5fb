/**
 * A pull-based byte reader over an async iterable of chunks: exact reads for headers,
 * zero-copy slices for bodies. Memory held is one source chunk plus what the caller keeps.
 *
 * Chunk lifetime: a source may reuse a chunk's memory as soon as the next chunk is asked for
 * (the inflate worker's shared ring does). So a slice returned here is valid only until the
 * reader pulls another chunk — callers copy what they keep — and a read that spans chunks
 * copies each part before pulling the next.
 */

const EMPTY = Buffer.alloc(0);

/** Reads an async iterable of byte chunks as a sequential byte stream. */
export class ByteReader {
  private readonly it: AsyncIterator<Uint8Array>;
  private cur: Buffer = EMPTY;
  private pos = 0;
  private ended = false;
  /** Bytes consumed so far (the offset of the next byte). */
  offset = 0;

  constructor(src: AsyncIterable<Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }

  /** Pull the next non-empty chunk; false at end of input. */
  private async more(): Promise<boolean> {
    while (!this.ended) {
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      const v = r.value;
      if (v.length === 0) continue;
      this.cur = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.length);
      this.pos = 0;
      return true;
    }
    this.cur = EMPTY;
    this.pos = 0;
    return false;
  }

  /** Up to `n` bytes; fewer only at end of input. Copies only when a read spans chunks. */
  async read(n: number): Promise<Buffer> {
    const avail = this.cur.length - this.pos;
    if (avail >= n) {
      const b = this.cur.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return b;
    }
    // Spans chunks: copy each part before the next chunk is pulled (see the file comment).
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      let a = this.cur.length - this.pos;
      if (a === 0) {
        if (!(await this.more())) break;
        a = this.cur.length;
      }
      const take = Math.min(a, n - got);
      this.cur.copy(out, got, this.pos, this.pos + take);
      this.pos += take;
      got += take;
    }
    this.offset += got;
    return got === n ? out : out.subarray(0, got);
  }

  /** A slice of at most `max` bytes from the current chunk (a new chunk if it is used up);
   *  empty only at end of input. No copy. */
  async readSome(max: number): Promise<Buffer> {
    if (this.cur.length - this.pos === 0 && !(await this.more())) return EMPTY;
    const take = Math.min(this.cur.length - this.pos, max);
    const b = this.cur.subarray(this.pos, this.pos + take);
    this.pos += take;
    this.offset += take;
    return b;
  }

  /** Skip up to `n` bytes; returns how many were skipped (fewer only at end of input). */
  async skip(n: number): Promise<number> {
    let left = n;
    while (left > 0) {
      let a = this.cur.length - this.pos;
      if (a === 0) {
        if (!(await this.more())) break;
        a = this.cur.length;
      }
      const take = Math.min(a, left);
      this.pos += take;
      left -= take;
    }
    this.offset += n - left;
    return n - left;
  }

  /** Consume everything left; returns the number of bytes. */
  async drain(): Promise<number> {
    let n = this.cur.length - this.pos;
    this.pos = this.cur.length;
    while (await this.more()) {
      n += this.cur.length;
      this.pos = this.cur.length;
    }
    this.offset += n;
    return n;
  }

  /** Stop the underlying iterator early (lets a source release files or processes). */
  async close(): Promise<void> {
    if (!this.ended) {
      this.ended = true;
      await this.it.return?.();
    }
  }
}
