/**
 * How a cfsdist image lives in an OCI registry (registries address everything by sha256; the
 * object index is how a client goes from the image's fs-verity digests to blobs):
 *
 *   image manifest  (application/vnd.oci.image.manifest.v1+json, artifactType
 *                    application/vnd.cfsdist.image.v1), tagged with the image's tag
 *     config   application/vnd.cfsdist.image.config.v1+json  {fsverity, imageSize, objects, objectBytes}
 *     layers   [0] the merged composefs EROFS image, compressed (…erofs.v1+zstd or +gzip);
 *                  annotation dev.cfsdist.fsverity = its fs-verity digest (hex)
 *              [1] the object index (application/vnd.cfsdist.object-index.v1+gzip)
 *              [2…] every blob the index points at: packs and single objects (so that a
 *                  registry's garbage collection keeps them while the manifest exists)
 *              then the OCI image config of the container image (application/vnd.oci.image.
 *                  config.v1+json, bytes as published: the blob an ordinary image of the same
 *                  content names too), when the signed statement names one
 *              then metadata deltas to this image (application/vnd.cfsdist.delta.v1 — tree
 *                  deltas — and application/vnd.cfsdist.delta.zpatch.v1+zstd — binary ones,
 *                  `zstd --patch-from` — annotated dev.cfsdist.delta.base / .target with the
 *                  two images' fs-verity digests): a client holding the base rebuilds this
 *                  image from a few KB (src/delta)
 *   referrers (subject = the image manifest; the referrers API where the registry has it, else
 *              an image index under the tag `sha256-<hex of the image manifest digest>`):
 *     application/vnd.cfsdist.statement.v1: one layer, the DSSE envelope of the signed
 *              statement; annotations dev.cfsdist.name / .tag / .version (hints only: the
 *              client verifies the envelope itself)
 *     application/vnd.cfsdist.fsverity-signature.v1: one layer, the kernel PKCS#7 signature
 *
 * Packing rule. Objects of at least LARGE_OBJECT bytes (1 MiB) are blobs of their own,
 * gzip-compressed (`…object.v1+gzip`) unless that saves less than 3 %, then stored as they are
 * (`…object.v1`). Smaller objects go into pack blobs (`application/vnd.cfsdist.pack.v1+gzip`):
 * a pack is a run of independent gzip members ("frames"), each holding the concatenated
 * contents of consecutive objects up to FRAME_BYTES (128 KiB) of uncompressed data (an object
 * larger than that gets a frame of its own); one pack is made per upload batch (at most
 * 8 MiB of content). A reader fetches a frame with one HTTP Range request (adjacent frames it
 * needs are merged into one request) and decompresses it alone, so thousands of small files
 * cost a few requests while an update reads only the frames holding what it lacks.
 *
 * Whatever the packing, an object is named and verified by the fs-verity digest of its
 * uncompressed content: the client checks every object against the signed image.
 *
 * Object index (gzip of): the magic line `cfsdist-object-index-v1\n`, a u32 LE length and a
 * JSON header `{"count": N, "blobs": [{"digest","size","kind":"pack"|"object","encoding":
 * "gzip"|"identity"}]}`, then N entries sorted by fs-verity digest, column by column: digests
 * (N×32 bytes), sizes (N×u48 LE), blob numbers (N×u32), frame offsets in the blob (N×u48),
 * frame lengths (N×u32, compressed), offsets of the object in the uncompressed frame (N×u32).
 */
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { toHex } from '../verity/digest.js';
import { RegistryError } from './errors.js';

/** OCI image manifest. */
export const MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
/** OCI image index. */
export const MT_INDEX = 'application/vnd.oci.image.index.v1+json';
/** artifactType of a cfsdist image. */
export const ARTIFACT_IMAGE = 'application/vnd.cfsdist.image.v1';
/** Config of a cfsdist image manifest. */
export const MT_CONFIG = 'application/vnd.cfsdist.image.config.v1+json';
/** The composefs image (suffix +zstd or +gzip). */
export const MT_EROFS = 'application/vnd.cfsdist.composefs.erofs.v1';
/** The object index. */
export const MT_OBJECT_INDEX = 'application/vnd.cfsdist.object-index.v1+gzip';
/** A pack of small objects (gzip frames). */
export const MT_PACK = 'application/vnd.cfsdist.pack.v1+gzip';
/** One large object (suffix +gzip when compressed). */
export const MT_OBJECT = 'application/vnd.cfsdist.object.v1';
/** artifactType of a signed statement referrer. */
export const ARTIFACT_STATEMENT = 'application/vnd.cfsdist.statement.v1';
/** DSSE envelope layer. */
export const MT_DSSE = 'application/vnd.dsse.envelope.v1+json';
/** artifactType of a kernel fs-verity signature referrer. */
export const ARTIFACT_FSVERITY_SIG = 'application/vnd.cfsdist.fsverity-signature.v1';
/** PKCS#7 layer. */
export const MT_PKCS7 = 'application/pkcs7-signature';
/** The OCI empty descriptor's media type and content. */
export const MT_EMPTY = 'application/vnd.oci.empty.v1+json';
/** `{}`. */
export const EMPTY_JSON = Buffer.from('{}');
/** The container image's config, carried as a layer of the cfsdist manifest. */
export const MT_IMAGE_CONFIG = 'application/vnd.oci.image.config.v1+json';
/** Annotation holding the composefs image's fs-verity digest. */
export const ANN_FSVERITY = 'dev.cfsdist.fsverity';
/** Media type of a metadata delta layer (src/delta: Brotli inside). */
export const MT_DELTA = 'application/vnd.cfsdist.delta.v1';
/** Media type of a binary delta layer (src/delta/zpatch.ts: `zstd --patch-from`), same annotations. */
export const MT_DELTA_ZPATCH = 'application/vnd.cfsdist.delta.zpatch.v1+zstd';
/** Annotations of a delta layer: the fs-verity digests (hex) of its base and target images. */
export const ANN_DELTA_BASE = 'dev.cfsdist.delta.base';
export const ANN_DELTA_TARGET = 'dev.cfsdist.delta.target';
/** Annotations of a statement referrer. */
export const ANN_NAME = 'dev.cfsdist.name';
/** Tag annotation. */
export const ANN_TAG = 'dev.cfsdist.tag';
/** Version annotation. */
export const ANN_VERSION = 'dev.cfsdist.version';

/** Objects at least this large are blobs of their own. */
export const LARGE_OBJECT = 1 << 20;
/** Uncompressed bytes per pack frame. */
export const FRAME_BYTES = 128 << 10;
/** Largest frame a reader accepts (compressed or not): bounds memory against a hostile index. */
export const MAX_FRAME = 4 << 20;
/** Largest object index read. */
export const MAX_INDEX = 256 << 20;

/** Most bytes (compressed or not) an object index of `objects` objects can take: 56 per entry,
 * a blob list entry of at most 256 bytes per object, 64 KiB of header. */
export function indexBound(objects: number): number {
  return Math.min(MAX_INDEX, 64 * 1024 + objects * (56 + 256));
}

const MAGIC = Buffer.from('cfsdist-object-index-v1\n');
const gzipP = promisify(gzip);
const gunzipP = promisify(gunzip);

/** A blob the index points into. */
export interface IndexBlob {
  digest: string;
  size: number;
  kind: 'pack' | 'object';
  encoding: 'gzip' | 'identity';
}

/** Where one object lives. */
export interface ObjectLocation {
  digest: Buffer;
  size: number;
  blob: IndexBlob;
  frameOffset: number;
  frameLength: number;
  offsetInFrame: number;
}

/** Encode an object index (see the file comment); compressed. */
export async function encodeIndex(locs: ObjectLocation[]): Promise<Buffer> {
  const sorted = [...locs].sort((a, b) => Buffer.compare(a.digest, b.digest));
  const blobs: IndexBlob[] = [];
  const blobNo = new Map<string, number>();
  for (const l of sorted) {
    if (!blobNo.has(l.blob.digest)) {
      blobNo.set(l.blob.digest, blobs.length);
      blobs.push({ digest: l.blob.digest, size: l.blob.size, kind: l.blob.kind, encoding: l.blob.encoding });
    }
  }
  const n = sorted.length;
  const header = Buffer.from(JSON.stringify({ count: n, blobs }));
  const body = Buffer.alloc(n * (32 + 6 + 4 + 6 + 4 + 4));
  let o = 0;
  for (const l of sorted) o += l.digest.copy(body, o);
  for (const l of sorted) o = body.writeUIntLE(l.size, o, 6);
  for (const l of sorted) o = body.writeUInt32LE(blobNo.get(l.blob.digest)!, o);
  for (const l of sorted) o = body.writeUIntLE(l.frameOffset, o, 6);
  for (const l of sorted) o = body.writeUInt32LE(l.frameLength, o);
  for (const l of sorted) o = body.writeUInt32LE(l.offsetInFrame, o);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return gzipP(Buffer.concat([MAGIC, len, header, body]), { level: 9 });
}

/** Decode an object index (compressed bytes, at most MAX_INDEX uncompressed). Untrusted:
 * structure is checked here, contents by the client's digest checks. */
export async function decodeIndex(data: Buffer, where: string, maxEntries?: number): Promise<Map<string, ObjectLocation>> {
  let raw: Buffer;
  try {
    raw = await gunzipP(data, { maxOutputLength: maxEntries !== undefined ? indexBound(maxEntries) : MAX_INDEX });
  } catch (err) {
    throw new RegistryError('BAD_INDEX', `${where}: object index does not decompress: ${(err as Error).message}`);
  }
  const bad = (why: string): never => {
    throw new RegistryError('BAD_INDEX', `${where}: malformed object index (${why})`);
  };
  if (raw.length < MAGIC.length + 4 || !raw.subarray(0, MAGIC.length).equals(MAGIC)) bad('bad magic');
  const hlen = raw.readUInt32LE(MAGIC.length);
  const hstart = MAGIC.length + 4;
  if (hstart + hlen > raw.length) bad('header past the end');
  let header: { count?: unknown; blobs?: unknown };
  try {
    header = JSON.parse(raw.subarray(hstart, hstart + hlen).toString('utf8')) as typeof header;
  } catch {
    return bad('header is not JSON');
  }
  const n = header.count;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) return bad('bad count');
  if (maxEntries !== undefined && n > maxEntries) return bad(`${n} entries, but the signed image has ${maxEntries} objects`);
  if (!Array.isArray(header.blobs)) return bad('no blob list');
  const blobs = header.blobs.map((b: IndexBlob, i: number) => {
    if (!b || typeof b.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(b.digest) || !Number.isSafeInteger(b.size) || b.size < 0) bad(`blob ${i}`);
    if (b.kind !== 'pack' && b.kind !== 'object') bad(`blob ${i} kind`);
    if (b.encoding !== 'gzip' && b.encoding !== 'identity') bad(`blob ${i} encoding`);
    return { digest: b.digest, size: b.size, kind: b.kind, encoding: b.encoding };
  });
  let o = hstart + hlen;
  if (raw.length - o !== n * 56) bad(`${raw.length - o} entry bytes for ${n} entries`);
  const out = new Map<string, ObjectLocation>();
  const digests: Buffer[] = [];
  for (let i = 0; i < n; i++, o += 32) digests.push(Buffer.from(raw.subarray(o, o + 32)));
  const col = (width: number): number[] => {
    const v: number[] = [];
    for (let i = 0; i < n; i++, o += width) v.push(raw.readUIntLE(o, width));
    return v;
  };
  const sizes = col(6);
  const blobNos = col(4);
  const frameOffsets = col(6);
  const frameLengths = col(4);
  const inFrame = col(4);
  for (let i = 0; i < n; i++) {
    const blob = blobs[blobNos[i]!];
    if (!blob) bad(`entry ${i} names blob ${blobNos[i]}`);
    if (frameOffsets[i]! + frameLengths[i]! > blob!.size) bad(`entry ${i} frame past the end of its blob`);
    out.set(toHex(digests[i]!), { digest: digests[i]!, size: sizes[i]!, blob: blob!, frameOffset: frameOffsets[i]!, frameLength: frameLengths[i]!, offsetInFrame: inFrame[i]! });
  }
  return out;
}

/** One small object headed for a pack. */
export interface PackInput {
  digest: Buffer;
  data: Buffer;
}

/** Build a pack (see the packing rule) from small objects: its bytes and, per object, the
 * frame that holds it (blob filled in by the caller once uploaded). */
export async function buildPack(objs: PackInput[]): Promise<{ bytes: Buffer; entries: Omit<ObjectLocation, 'blob'>[] }> {
  const frames: { objs: PackInput[]; size: number }[] = [];
  let cur: { objs: PackInput[]; size: number } = { objs: [], size: 0 };
  for (const o of objs) {
    if (cur.objs.length > 0 && cur.size + o.data.length > FRAME_BYTES) {
      frames.push(cur);
      cur = { objs: [], size: 0 };
    }
    cur.objs.push(o);
    cur.size += o.data.length;
  }
  if (cur.objs.length > 0) frames.push(cur);
  // Frames compress on the thread pool, in parallel.
  const compressed = await Promise.all(frames.map((f) => gzipP(f.objs.length === 1 ? f.objs[0]!.data : Buffer.concat(f.objs.map((o) => o.data)), { level: 6 })));
  const entries: Omit<ObjectLocation, 'blob'>[] = [];
  let off = 0;
  frames.forEach((f, i) => {
    let inFrame = 0;
    for (const o of f.objs) {
      entries.push({ digest: o.digest, size: o.data.length, frameOffset: off, frameLength: compressed[i]!.length, offsetInFrame: inFrame });
      inFrame += o.data.length;
    }
    off += compressed[i]!.length;
  });
  return { bytes: Buffer.concat(compressed), entries };
}

/** gzip a buffer (async, thread pool). */
export function gzipAsync(data: Buffer, level = 6): Promise<Buffer> {
  return gzipP(data, { level });
}
