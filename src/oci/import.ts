/**
 * Server-side import: an image source → per-layer metadata trees (contents into the store's
 * objects) → merged tree → one composefs image in the store, tagged NAME:TAG.
 *
 * Pipeline per layer, across threads:
 *   blob bytes ─▶ [inflate worker: gunzip, SHA-256 of the blob and of the tar stream]
 *     ─ring─▶ [this thread: tar parser → layer tree → merge]
 *     ─ring─▶ [object writer worker: fs-verity digest, temp file, rename into objects/]
 * (zstd goes through the `zstd` tool, plain tar straight in; their digests are checked on this
 * thread). Memory is the rings plus the metadata trees, whatever the layer size.
 *
 * All-or-nothing for names: the image and its tag are written only after every layer was read
 * and verified and every object is on disk (one filesystem sync). A failed import leaves at
 * most unreferenced objects, which `gc` collects; it never registers an image or a tag. The
 * whole import holds a store lease, so a concurrent gc cannot take objects in between.
 */
import { open } from 'node:fs/promises';
import type { ImageMeta, Store } from '../store/store.js';
import { checkName, checkTag } from '../store/names.js';
import { writeImage } from '../erofs/writer.js';
import { readDirectory } from '../tree/from-directory.js';
import { Merger } from '../merge/merge.js';
import { isReg, firstPaths, type Inode } from '../tree/tree.js';
import { toHex } from '../verity/digest.js';
import { decompress, peekCompression } from './decompress.js';
import { inflateOffThread } from './inflate.js';
import { readTar } from './tar.js';
import { INLINE_MAX, readLayer, type BlobResult, type BlobSink, type LayerStats } from './layer.js';
import { ObjectWriter } from './object-writer.js';
import { syncFilesystem } from '../store/atomic.js';
import { configPlatform, hostArchitecture, hostPlatform, verified, type DirectorySource, type ImageSource, type LayeredSource } from './source.js';
import { SourceError } from './errors.js';

/** Progress of an import (reported often; throttle in the UI). */
export interface ImportProgress {
  /** 1-based index of the layer being read (0 before the first). */
  layer: number;
  layers: number;
  /** Blob bytes read so far, all layers. */
  bytes: number;
  /** Sum of the layer blob sizes, when the source knows them. */
  totalBytes?: number;
  /** Tar members processed so far, all layers. */
  entries: number;
  /** What is happening: 'layer' while reading layers, then 'merge', 'write', 'sync', 'done'. */
  phase: 'layer' | 'merge' | 'write' | 'sync' | 'done';
}

/** Options for `importImage`. */
export interface ImportOptions {
  name: string;
  tag: string;
  onProgress?: (p: ImportProgress) => void;
  /** Record the tag as an unsigned local build of this registry image (pull's fallback). */
  unsignedFrom?: string;
  /** Sync the filesystem before the image and tag are written (default true). */
  sync?: boolean;
  /** Regular files of at most this many bytes are stored in the image (default INLINE_MAX of
   *  oci/layer.ts; the dumpfile format allows up to 5000). */
  inlineMax?: number;
}

/** What an import did. */
export interface ImportResult {
  name: string;
  tag: string;
  /** fs-verity digest of the composefs image. */
  image: Buffer;
  /** `sha256:<hex>` of the image config kept with the tag (STORE/configs). */
  config?: string;
  /** `sha256:<hex>` of the source manifest, where the source has one. */
  manifest?: string;
  /** `sha256:<hex>` of the multi-platform index the manifest was picked from. */
  index?: string;
  /** `os/arch[/variant]` of the image. */
  platform?: string;
  imageSize: number;
  layers: number;
  /** Tar members read (all layers). */
  entries: number;
  /** Regular files in the merged image (hardlinks counted once). */
  files: number;
  /** Of those, files whose content is stored in the image (inline). */
  inlined: number;
  /** Distinct objects the image references. */
  objects: number;
  /** Objects written during this import (not in the store before). */
  objectsNew: number;
  /** File contents that were already present — in the store, or earlier in this import —
   *  and so not written again (deduplicated). */
  objectsExisting: number;
  /** Content bytes written into the store. */
  bytesStored: number;
  /** Content bytes of all imported files (before deduplication). */
  bytesContent: number;
  seconds: number;
}

/** Import `source` into `store` as NAME:TAG (see the file comment). */
export async function importImage(source: ImageSource, store: Store, opts: ImportOptions): Promise<ImportResult> {
  checkName(opts.name);
  checkTag(opts.tag);
  const started = process.hrtime.bigint();
  const lease = await store.lease();
  const verity = await store.objects.verity.probe();
  const writer = new ObjectWriter({
    dir: store.objects.dir,
    tmpDir: store.tmpDir,
    enableVerity: verity ? (p) => store.objects.verity.enable(p) : undefined,
  });
  let tree: Inode;
  let totals: LayerStats;
  let layerCount: number;
  try {
    ({ tree, stats: totals, layers: layerCount } = await readSourceTree(source, writer, opts));
    await writer.close();
    opts.onProgress?.({ layer: layerCount, layers: layerCount, bytes: 0, entries: totals.entries, phase: 'write' });
    const image = writeImage(tree);
    const objects = new Map<string, Buffer>();
    let files = 0;
    let inlined = 0;
    for (const inode of firstPaths(tree).keys()) {
      if (!isReg(inode)) continue;
      files++;
      if (inode.content) inlined++;
      else if (inode.digest) objects.set(toHex(inode.digest), inode.digest);
    }
    if (opts.sync !== false) {
      opts.onProgress?.({ layer: layerCount, layers: layerCount, bytes: 0, entries: totals.entries, phase: 'sync' });
      await syncFilesystem(store.objects.dir);
    }
    const digest = await store.addImage(image, [...objects.values()]);
    const meta = await keepConfig(source, store);
    if (opts.unsignedFrom) meta.unsignedFrom = opts.unsignedFrom;
    await store.setTag(opts.name, opts.tag, digest, meta);
    opts.onProgress?.({ layer: layerCount, layers: layerCount, bytes: 0, entries: totals.entries, phase: 'done' });
    return {
      name: opts.name,
      tag: opts.tag,
      image: digest,
      ...meta,
      imageSize: image.length,
      layers: layerCount,
      entries: totals.entries,
      files,
      inlined,
      objects: objects.size,
      objectsNew: totals.objectsNew,
      objectsExisting: totals.objects - totals.objectsNew,
      bytesStored: totals.bytesNew,
      bytesContent: totals.bytes,
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
    };
  } finally {
    await writer.close().catch(() => undefined);
    await source.close().catch(() => undefined);
    lease.release();
  }
}

/** The config of a plain directory: no command, no environment — `run` needs an explicit
 * command. Always the same bytes, so it is stored once. */
export function emptyConfigBytes(): Buffer {
  return Buffer.from(JSON.stringify({ architecture: hostArchitecture(), os: 'linux', config: {} }));
}

/** Keep the source's config (bytes as published) in the store; what the tag records. */
async function keepConfig(source: ImageSource, store: Store): Promise<ImageMeta> {
  const bytes = source.kind === 'layers' ? source.configBytes ?? emptyConfigBytes() : emptyConfigBytes();
  const meta: ImageMeta = { config: await store.addConfig(bytes) };
  if (source.kind === 'layers') {
    if (source.manifestDigest) meta.manifest = source.manifestDigest;
    if (source.indexDigest) meta.index = source.indexDigest;
    const platform = configPlatform(source.config);
    if (platform) meta.platform = platform;
  } else {
    meta.platform = hostPlatform();
  }
  return meta;
}

/** Empty counters. */
export function emptyStats(): LayerStats {
  return { entries: 0, files: 0, inlined: 0, objects: 0, objectsNew: 0, bytes: 0, bytesNew: 0, whiteouts: 0, opaques: 0, hardlinks: 0 };
}

/** Read a source into its merged tree, contents into `sink` (importImage without the
 *  image, store and tag steps; also what the oracle tests compare). */
export async function readSourceTree(source: ImageSource, sink: BlobSink, opts: Pick<ImportOptions, 'onProgress' | 'inlineMax'> = {}): Promise<{ tree: Inode; stats: LayerStats; layers: number }> {
  const stats = emptyStats();
  if (source.kind === 'layers') {
    const tree = await readLayers(source, sink, stats, opts);
    await sink.flush();
    return { tree, stats, layers: source.layers.length };
  }
  const tree = await readDirectorySource(source, sink, stats, opts);
  await sink.flush();
  return { tree, stats, layers: 1 };
}

async function readLayers(source: LayeredSource, writer: BlobSink, totals: LayerStats, opts: Pick<ImportOptions, 'onProgress' | 'inlineMax'>): Promise<Inode> {
  const merger = new Merger();
  const layers = source.layers;
  const sizes = layers.map((l) => l.size);
  const totalBytes = sizes.every((s) => s !== undefined) ? sizes.reduce((a, b) => a! + b!, 0) : undefined;
  let bytes = 0;
  for (let i = 0; i < layers.length; i++) {
    const l = layers[i]!;
    const what = `${source.name}: layer ${i + 1}/${layers.length}${l.digest ? ` (${l.digest})` : ''}`;
    const report = (): void => opts.onProgress?.({ layer: i + 1, layers: layers.length, bytes, totalBytes, entries: totals.entries, phase: 'layer' });
    report();
    const counted = (async function* () {
      for await (const c of l.openRaw ? l.openRaw() : l.open()) {
        bytes += c.length;
        report();
        yield c as Buffer;
      }
    })();
    const { format, stream } = await peekCompression(counted, { mediaType: l.mediaType, name: what });
    let tarStream: AsyncIterable<Buffer>;
    if (format === 'gzip') {
      // The common case: inflate and both digests on a worker, parsing here (inflate.ts).
      tarStream = inflateOffThread(stream, { digest: l.openRaw ? l.digest : undefined, size: l.openRaw ? l.size : undefined, diffId: l.diffId, what });
    } else {
      const blob = l.openRaw ? verified(stream, { digest: l.digest, size: l.size, what }) : stream;
      tarStream = verified(decompress(blob, { name: what }), { digest: l.diffId, what: `${what} uncompressed (diff_id ${l.diffId})` });
    }
    const result = await readLayer(readTar(tarStream, { name: what }), writer, {
      lower: merger.tree,
      name: what,
      inlineMax: opts.inlineMax,
      onEntry: () => {
        totals.entries++;
      },
    });
    merger.apply(result);
    for (const k of Object.keys(totals) as (keyof LayerStats)[]) if (k !== 'entries') totals[k] += result.stats[k];
  }
  opts.onProgress?.({ layer: layers.length, layers: layers.length, bytes, totalBytes, entries: totals.entries, phase: 'merge' });
  return merger.finish();
}

/** A plain directory: the tree as mkcomposefs reads it; file contents copied into the store
 *  through the same writer (its digests must equal the ones computed while reading). */
async function readDirectorySource(source: DirectorySource, writer: BlobSink, totals: LayerStats, opts: Pick<ImportOptions, 'onProgress' | 'inlineMax'>): Promise<Inode> {
  const tree = await readDirectory(source.path, { inlineMax: opts.inlineMax ?? INLINE_MAX });
  const root = Buffer.from(source.path);
  let bytes = 0;
  const pending: Promise<void>[] = [];
  for (const [inode, path] of firstPaths(tree)) {
    totals.entries++;
    if (!isReg(inode)) continue;
    totals.files++;
    if (!inode.digest || inode.content) continue;
    const fh = await open(Buffer.concat([root, path]), 'r');
    let done: Promise<BlobResult>;
    try {
      ({ done } = await writer.put(fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false }) as AsyncIterable<Buffer>, inode.size));
    } finally {
      await fh.close();
    }
    totals.objects++;
    totals.bytes += inode.size;
    const want = inode.digest;
    const p = done.then((r) => {
      if (!r.digest.equals(want)) throw new SourceError('SOURCE_CHANGED', `${source.name}: ${path.toString()} changed while it was imported`);
      if (!r.existed) {
        totals.objectsNew++;
        totals.bytesNew += r.size;
      }
    });
    p.catch(() => undefined); // handled below (allSettled); no unhandled rejection meanwhile
    pending.push(p);
    bytes += inode.size;
    opts.onProgress?.({ layer: 1, layers: 1, bytes, entries: totals.entries, phase: 'layer' });
  }
  await writer.flush();
  const settled = await Promise.allSettled(pending);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  return tree;
}
