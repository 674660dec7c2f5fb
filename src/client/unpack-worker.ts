/**
 * Worker thread of UnpackPool (unpack.ts): for each frame of a unit, decompress it whole
 * (synchronous zlib, output bounded by `maxOut`), then for each object in it compute the
 * fs-verity digest, compare it with the one asked for, and write the file in place under the
 * objects directory with synchronous calls. Stops at the first failure and says which frame
 * and object. One reply per unit.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { closeSync, mkdirSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { fsverityDigest, toHex } from '../verity/digest.js';

/** One unit to unpack (see PackedUnit; digests as hex). */
export interface UnpackRequest {
  id: number;
  data: Uint8Array;
  encoding: 'gzip' | 'identity';
  frames: { off: number; len: number; maxOut: number; objects: { hex: string; size: number; at: number }[] }[];
}

/** The answer: all written, or the first failure (`frame`/`object` index it, -1 for none). */
export type UnpackReply =
  | { id: number; ok: true }
  | { id: number; ok: false; code: 'FRAME' | 'RANGE' | 'DIGEST' | 'WRITE'; frame: number; object: number; message: string; have: number };

const dir = (workerData as { dir: string }).dir;
const madeDirs = new Set<string>();

function writeObject(hex: string, bytes: Uint8Array): void {
  const sub = join(dir, hex.slice(0, 2));
  if (!madeDirs.has(sub)) {
    mkdirSync(sub, { recursive: true });
    madeDirs.add(sub);
  }
  const path = join(sub, hex.slice(2));
  const fd = openSync(path, 'w', 0o644);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
  } catch (err) {
    closeSync(fd);
    try { unlinkSync(path); } catch { /* gone */ }
    throw err;
  }
  closeSync(fd);
}

function unpack(req: UnpackRequest): UnpackReply {
  const data = Buffer.from(req.data.buffer, req.data.byteOffset, req.data.byteLength);
  for (let fi = 0; fi < req.frames.length; fi++) {
    const f = req.frames[fi]!;
    const raw = data.subarray(f.off, f.off + f.len);
    let plain: Buffer;
    if (req.encoding === 'identity') plain = raw;
    else {
      // One output chunk for a typical frame: the needed end is a good size hint.
      let need = 0;
      for (const o of f.objects) need = Math.max(need, o.at + o.size);
      try {
        plain = gunzipSync(raw, { maxOutputLength: Math.max(1, f.maxOut), chunkSize: Math.min(Math.max(need, 64 << 10), 8 << 20) });
      } catch (err) {
        return { id: req.id, ok: false, code: 'FRAME', frame: fi, object: -1, message: (err as Error).message, have: 0 };
      }
    }
    for (let oi = 0; oi < f.objects.length; oi++) {
      const o = f.objects[oi]!;
      if (o.at + o.size > plain.length) return { id: req.id, ok: false, code: 'RANGE', frame: fi, object: oi, message: '', have: plain.length };
      const bytes = plain.subarray(o.at, o.at + o.size);
      const got = toHex(fsverityDigest(bytes));
      if (got !== o.hex) return { id: req.id, ok: false, code: 'DIGEST', frame: fi, object: oi, message: got, have: plain.length };
      try {
        writeObject(o.hex, bytes);
      } catch (err) {
        return { id: req.id, ok: false, code: 'WRITE', frame: fi, object: oi, message: (err as Error).message, have: plain.length };
      }
    }
  }
  return { id: req.id, ok: true };
}

parentPort?.on('message', (req: UnpackRequest) => {
  parentPort!.postMessage(unpack(req));
});
