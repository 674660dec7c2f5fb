/**
 * An OCI distribution registry as a cfsdist Remote / PushTarget: the same pull and push
 * pipelines (src/client) as the cfsdist HTTP server, over the artifact mapping of
 * artifact.ts. The registry is untrusted: manifests, referrers and the object index only say
 * where bytes are; the pull pipeline verifies the signed statement, the image's fs-verity
 * digest and every object's before anything enters the store.
 *
 * Push: `has` learns which objects the repository already holds from the object indexes of
 * its cfsdist tags (and of `mountFrom` repositories, whose blobs are mounted, not uploaded),
 * confirming each blob with HEAD; `putObjects` packs small objects and uploads large ones
 * alone; `putImage` uploads the compressed image; `putStatement` writes the index, the image
 * manifest (by digest), the statement and kernel signature referrers, the `sha256-<hex>`
 * referrers tag where the registry has no referrers API, and only then moves the tag.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import type { ObjectRef } from '../sign/image-facts.js';
import { imageFacts } from '../sign/image-facts.js';
import { MAX_ENVELOPE_BYTES, parseEnvelope } from '../sign/dsse.js';
import { parseStatementPayload } from '../sign/statement.js';
import { decoder, haveZstd } from '../server/compress.js';
import { TransportError } from '../client/errors.js';
import type { DeltaKind, FetchedObject, OutgoingObject, PushTarget, WireStats } from '../client/remote.js';
import { isUnit, unpackInline } from '../client/unpack.js';
import type { PackedOrStream, PackedUnit } from '../client/unpack.js';
import { fsverityDigest, toHex } from '../verity/digest.js';
import {
  ANN_DELTA_BASE, ANN_DELTA_TARGET, MT_DELTA, MT_DELTA_ZPATCH, ANN_FSVERITY, ANN_NAME, ANN_TAG, ANN_VERSION, ARTIFACT_FSVERITY_SIG, ARTIFACT_IMAGE, ARTIFACT_STATEMENT, EMPTY_JSON,
  LARGE_OBJECT, MAX_FRAME, MT_CONFIG, MT_DSSE, MT_EMPTY, MT_EROFS, MT_INDEX, MT_MANIFEST, MT_OBJECT, MT_OBJECT_INDEX, MT_PACK, MT_PKCS7,
  buildPack, decodeIndex, encodeIndex, gzipAsync, indexBound, MAX_INDEX,
  MT_IMAGE_CONFIG,
} from './artifact.js';
import type { IndexBlob, ObjectLocation, PackInput } from './artifact.js';
import { MANIFEST_TYPES, RegistryClient } from './client.js';
import type { Descriptor, FetchedManifest, RegistryClientOptions } from './client.js';
import { RegistryError } from './errors.js';
import type { RegistryRef } from './ref.js';

/** Options of a RegistryRemote. */
export interface RegistryRemoteOptions extends RegistryClientOptions {
  /** Push: replace a tag naming another ordinary image with a standalone cfsdist image. */
  force?: boolean;
  /** Other repositories of the same registry whose objects may be mounted instead of uploaded. */
  mountFrom?: string[];
  /** Most cfsdist tags whose indexes `has` reads (default 32). */
  maxKnownTags?: number;
}

/** What a cfsdist image manifest says. */
interface ImageManifest {
  digest: string;
  size: number;
  fsverity: string;
  image: Descriptor;
  index: Descriptor;
  /** Metadata delta layers to this image. */
  deltas: Descriptor[];
  /** Image config layers (the container image's config). */
  configs: Descriptor[];
}

/** Bytes of a large object held in memory whole (larger ones stream into a chunked upload). */
const WHOLE_OBJECT = 64 << 20;
/** Merge frames into one Range request when the gap between them is at most this. */
const RANGE_GAP = 64 << 10;
/** Largest Range request. */
const RANGE_MAX = 16 << 20;
/** Single-object blobs up to this size are fetched whole as one unit (larger ones stream). */
const WHOLE_UNIT = 16 << 20;

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** Decode a blob body (`encoding`) into exactly `exact` bytes. */
async function* decoded(src: AsyncIterable<Buffer>, encoding: string, exact: number, what: string): AsyncGenerator<Buffer> {
  const dec = encoding === 'identity' ? undefined : decoder(encoding, what);
  let out: AsyncIterable<Buffer> = src;
  if (dec) {
    const input = Readable.from(src);
    input.on('error', (e) => dec.destroy(e));
    input.pipe(dec);
    out = dec;
  }
  let n = 0;
  try {
    for await (const c of out) {
      n += c.length;
      if (n > exact) throw new TransportError('TOO_LONG', `${what}: more than the ${exact} bytes expected`);
      yield c;
    }
  } catch (err) {
    if (err instanceof TransportError || err instanceof RegistryError) throw err;
    throw new RegistryError('BAD_BLOB', `${what}: ${(err as Error).message}`, { cause: err });
  } finally {
    dec?.destroy();
  }
  if (n < exact) throw new TransportError('TRUNCATED', `${what}: ${n} bytes, expected ${exact}`);
}

function encodingOf(mediaType: string): 'zstd' | 'gzip' | 'identity' {
  if (mediaType.endsWith('+zstd')) return 'zstd';
  if (mediaType.endsWith('+gzip')) return 'gzip';
  return 'identity';
}

async function readAll(src: AsyncIterable<Buffer> | Iterable<Buffer>, size: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of src) {
    n += c.length;
    if (n > size) break;
    parts.push(c);
  }
  if (n !== size) throw new TransportError('LOCAL_CHANGED', `${what} changed while being sent (${n} bytes, expected ${size})`);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** composefs OCI sealing spec (artifact mode) annotation names for facts we state too. */
const ANN_COMPOSEFS_CONFIG = 'composefs.config.fsverity-sha256-12';
const ANN_COMPOSEFS_MANIFEST = 'composefs.manifest.fsverity-sha256-12';

/** Most cfsdist images attached to one ordinary image that a pull considers. */
const MAX_ATTACHED = 16;

/** Whether a fetched manifest is a cfsdist image manifest. */
function isCfsdistManifest(m: FetchedManifest): boolean {
  const j = m.json as { artifactType?: string; config?: Descriptor };
  return j.artifactType === ARTIFACT_IMAGE || j.config?.mediaType === MT_CONFIG;
}

/** A repository of an OCI registry as a cfsdist remote (see the file comment). */
export class RegistryRemote implements PushTarget {
  readonly location: string;
  /** docker://HOST/REPO, for messages. */
  readonly where: string;
  readonly client: RegistryClient;
  readonly repo: string;
  /** Destination tag of pushes (default: the pushed image's own tag). */
  readonly tag?: string;
  private opts: RegistryRemoteOptions;
  // Pull state.
  private images = new Map<string, ImageManifest>();
  private current?: ImageManifest;
  private currentRefs: Descriptor[] = [];
  private index?: { for: string; map: Promise<Map<string, ObjectLocation>> };
  /** Objects of the signed image being pulled (prepareFetch): bounds its object index. */
  private expectObjects?: number;
  private referrersApi: boolean | undefined;
  // Push state.
  private placed = new Map<string, ObjectLocation>();
  private blobRepo = new Map<string, string>();
  private blobHere = new Map<string, Promise<boolean>>();
  private knownLoaded = false;
  private pushed?: { fsverity: string; desc: Descriptor; bytes: Buffer };
  private pendingSig?: { fsverity: string; der: Buffer };
  private pendingDeltas: Descriptor[] = [];
  private pendingConfig?: Descriptor;

  constructor(ref: RegistryRef, opts: RegistryRemoteOptions = {}) {
    this.client = new RegistryClient(ref.origin, opts);
    this.repo = ref.repo;
    this.tag = ref.tag;
    this.opts = opts;
    this.location = `docker://${ref.host}`;
    this.where = `docker://${ref.host}/${ref.repo}`;
  }

  // ---------------------------------------------------------------- pull

  private imageManifest(m: FetchedManifest, what: string): ImageManifest {
    const j = m.json as { artifactType?: string; config?: Descriptor; layers?: Descriptor[] };
    if (j.artifactType !== ARTIFACT_IMAGE && j.config?.mediaType !== MT_CONFIG) {
      throw new RegistryError('NOT_CFSDIST', `${what} is not a cfsdist image (artifactType ${JSON.stringify(j.artifactType ?? j.config?.mediaType ?? m.mediaType)}); an ordinary container image is imported with cfsdist import docker://…`);
    }
    const layers = Array.isArray(j.layers) ? j.layers : [];
    const image = layers.find((l) => typeof l?.mediaType === 'string' && l.mediaType.startsWith(MT_EROFS) && typeof l.annotations?.[ANN_FSVERITY] === 'string');
    const index = layers.find((l) => l?.mediaType === MT_OBJECT_INDEX);
    if (!image || !index) throw new RegistryError('BAD_MANIFEST', `${what}: cfsdist manifest ${m.digest} lacks the image or the object index layer`);
    const deltas = layers.filter((l) => (l?.mediaType === MT_DELTA || l?.mediaType === MT_DELTA_ZPATCH) && typeof l.annotations?.[ANN_DELTA_BASE] === 'string' && l.annotations?.[ANN_DELTA_TARGET] === image.annotations![ANN_FSVERITY]);
    const configs = layers.filter((l) => l?.mediaType === MT_IMAGE_CONFIG && typeof l.digest === 'string');
    const info = { digest: m.digest, size: m.bytes.length, fsverity: image.annotations![ANN_FSVERITY]!, image, index, deltas, configs };
    this.images.set(info.fsverity, info);
    return info;
  }

  /** Referrers of a manifest: the referrers API, else the `sha256-<hex>` tag. */
  private async listReferrers(digest: string): Promise<Descriptor[]> {
    if (this.referrersApi !== false) {
      const r = await this.client.referrers(this.repo, digest);
      if (r !== undefined) {
        this.referrersApi = true;
        return r;
      }
      this.referrersApi = false;
    }
    const idx = await this.client.getManifest(this.repo, `sha256-${digest.slice(7)}`, [MT_INDEX]);
    const list = (idx?.json as { manifests?: Descriptor[] } | undefined)?.manifests;
    return Array.isArray(list) ? list : [];
  }

  /** The single layer of a referrer artifact, at most `max` bytes. */
  private async referrerLayer(d: Descriptor, mediaType: string, max: number): Promise<Buffer | undefined> {
    const m = await this.client.getManifest(this.repo, d.digest, [MT_MANIFEST]);
    const layer = (m?.json as { layers?: Descriptor[] } | undefined)?.layers?.find((l) => l?.mediaType === mediaType);
    if (!layer || typeof layer.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(layer.digest)) return undefined;
    return this.client.readBlob(this.repo, layer.digest, max);
  }

  /** cfsdist images attached to the ordinary image a tag names, when getStatements found any. */
  private candidates: { info: ImageManifest; refs: Descriptor[] }[] = [];

  /**
   * The tag names a cfsdist image: its statement, as getStatement. The tag names an ordinary
   * image (index: this machine's platform): the cfsdist images attached to its manifest as
   * referrers (`subject`), newest version first (at most MAX_ATTACHED), each with its newest
   * statement.
   */
  async getStatements(name: string, tag: string): Promise<{ envelope: Buffer; manifest?: string; found: string }[]> {
    let m = await this.client.getManifest(this.repo, tag, MANIFEST_TYPES);
    if (!m) return [];
    if (isCfsdistManifest(m)) {
      const e = await this.getStatement(name, tag);
      return e ? [{ envelope: e, found: `${this.where}:${tag} (cfsdist image ${m.digest})` }] : [];
    }
    const { hostPlatform, parsePlatform } = await import('../oci/source.js');
    const { pickPlatform } = await import('../oci/oci-layout.js');
    for (let depth = 0; depth < 4 && m && Array.isArray((m.json as { manifests?: unknown }).manifests); depth++) {
      const d = pickPlatform((m.json as { manifests: Descriptor[] }).manifests, parsePlatform(hostPlatform()), `${this.where}:${tag} (${m.digest})`);
      m = await this.client.getManifest(this.repo, d.digest, MANIFEST_TYPES);
    }
    if (!m) return [];
    const ordinary = m.digest;
    const version = (d: Descriptor): number => Number(d.annotations?.[ANN_VERSION] ?? 0) || 0;
    const attached = (await this.listReferrers(ordinary))
      .filter((d) => d?.artifactType === ARTIFACT_IMAGE && typeof d.digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(d.digest))
      .sort((a, b) => version(b) - version(a))
      .slice(0, MAX_ATTACHED);
    this.candidates = [];
    const out: { envelope: Buffer; manifest?: string; found: string }[] = [];
    for (const d of attached) {
      const cm = await this.client.getManifest(this.repo, d.digest, [MT_MANIFEST]);
      if (!cm) continue;
      let info: ImageManifest;
      try {
        info = this.imageManifest(cm, `${this.where}@${d.digest}`);
      } catch (e) {
        if (e instanceof RegistryError) continue;
        throw e;
      }
      const refs = await this.listReferrers(cm.digest);
      const st = refs.filter((r) => r?.artifactType === ARTIFACT_STATEMENT && typeof r.digest === 'string').sort((a, b) => version(b) - version(a))[0];
      const envelope = st && (await this.referrerLayer(st, MT_DSSE, MAX_ENVELOPE_BYTES));
      if (!envelope) continue;
      this.candidates.push({ info, refs });
      out.push({ envelope, manifest: ordinary, found: `cfsdist image ${cm.digest} attached to ${this.where}@${ordinary}` });
    }
    return out;
  }

  selectStatement(i: number): void {
    const c = this.candidates[i];
    if (!c) return; // the tag named a cfsdist image: getStatement set it already
    this.current = c.info;
    this.currentRefs = c.refs;
  }

  async getStatement(name: string, tag: string): Promise<Buffer | undefined> {
    const m = await this.client.getManifest(this.repo, tag, MANIFEST_TYPES);
    if (!m) return undefined;
    this.current = this.imageManifest(m, `${this.where}:${tag}`);
    this.currentRefs = await this.listReferrers(m.digest);
    const version = (d: Descriptor): number => Number(d.annotations?.[ANN_VERSION] ?? 0) || 0;
    const matches = (d: Descriptor): boolean => d.annotations?.[ANN_NAME] === name && d.annotations?.[ANN_TAG] === tag;
    const stmts = this.currentRefs
      .filter((d) => d?.artifactType === ARTIFACT_STATEMENT && typeof d.digest === 'string')
      .sort((a, b) => Number(matches(b)) - Number(matches(a)) || version(b) - version(a));
    if (stmts.length === 0) return undefined;
    return this.referrerLayer(stmts[0]!, MT_DSSE, MAX_ENVELOPE_BYTES);
  }

  async *getImage(digest: Buffer, size: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const hex = toHex(digest);
    const info = this.images.get(hex);
    if (!info) throw new RegistryError('NOT_FOUND', `image ${hex}: no cfsdist manifest of ${this.where} seen so far names it`);
    const r = await this.client.getBlob(this.repo, info.image.digest, { signal });
    const what = `image ${hex} (blob ${info.image.digest}) from ${this.where}`;
    yield* decoded(r.body({ exact: info.image.size, what }), encodingOf(info.image.mediaType), size, what);
  }

  async getDelta(base: Buffer, target: Buffer, maxBytes: number, kind: DeltaKind = 'tree'): Promise<Buffer | undefined> {
    const info = this.images.get(toHex(target));
    const mt = kind === 'zpatch' ? MT_DELTA_ZPATCH : MT_DELTA;
    const d = info?.deltas.find((l) => l.mediaType === mt && l.annotations?.[ANN_DELTA_BASE] === toHex(base));
    if (!d) return undefined;
    if (d.size > maxBytes) throw new RegistryError('BAD_MANIFEST', `delta blob ${d.digest} of ${this.where} is ${d.size} bytes, more than ${maxBytes}`);
    const r = await this.client.getBlob(this.repo, d.digest);
    return r.buffer({ exact: d.size, what: `delta ${d.digest} from ${this.where}` });
  }

  async putDelta(base: Buffer, target: Buffer, delta: Buffer, kind: DeltaKind = 'tree'): Promise<void> {
    const up = await this.client.ensureBlob(this.repo, delta);
    this.pendingDeltas.push({ mediaType: kind === 'zpatch' ? MT_DELTA_ZPATCH : MT_DELTA, digest: up.digest, size: up.size, annotations: { [ANN_DELTA_BASE]: toHex(base), [ANN_DELTA_TARGET]: toHex(target) } });
  }

  async getConfig(digest: string, size: number): Promise<Buffer | undefined> {
    if (!this.current?.configs.some((l) => l.digest === digest)) return undefined;
    const r = await this.client.getBlob(this.repo, digest);
    // At most the signed size (+1, so a longer blob shows as longer); the pull checks the digest.
    return r.buffer({ max: size + 1, what: `config ${digest} from ${this.where}` });
  }

  async putConfig(digest: string, bytes: Buffer): Promise<void> {
    const up = await this.client.ensureBlob(this.repo, bytes);
    if (up.digest !== digest) throw new RegistryError('DIGEST_MISMATCH', `config to push has digest ${up.digest}, not ${digest}`);
    // The composefs OCI sealing spec's name for the same fact: the fs-verity digest (sha256,
    // 4 KiB blocks) of the config JSON as stored in the registry.
    this.pendingConfig = { mediaType: MT_IMAGE_CONFIG, digest: up.digest, size: up.size, annotations: { [ANN_COMPOSEFS_CONFIG]: toHex(fsverityDigest(bytes)) } };
  }

  async getFsveritySignature(digest: Buffer): Promise<Buffer | undefined> {
    if (!this.current || this.current.fsverity !== toHex(digest)) return undefined;
    const d = this.currentRefs.find((x) => x?.artifactType === ARTIFACT_FSVERITY_SIG);
    return d ? this.referrerLayer(d, MT_PKCS7, 64 * 1024) : undefined;
  }

  private async loadIndex(): Promise<Map<string, ObjectLocation>> {
    const cur = this.current;
    if (!cur) throw new RegistryError('NOT_FOUND', `${this.where}: objects asked for before any image manifest was read`);
    if (this.index?.for !== cur.digest) {
      const what = `object index ${cur.index.digest} of ${this.where}`;
      // No larger than an index of the signed image's objects can be (once the pull said how many).
      const max = this.expectObjects !== undefined ? indexBound(this.expectObjects) : MAX_INDEX;
      if (cur.index.size > max) throw new RegistryError('BAD_INDEX', `${what}: ${cur.index.size} bytes for ${this.expectObjects} objects (at most ${max})`);
      const map = this.client.readBlob(this.repo, cur.index.digest, cur.index.size).then((data) => decodeIndex(data, what, this.expectObjects));
      map.catch(() => undefined);
      this.index = { for: cur.digest, map };
    }
    return this.index.map;
  }

  prepareFetch(expect?: { objects: number }): void {
    if (expect) this.expectObjects = expect.objects;
    if (this.current) void this.loadIndex().catch(() => undefined);
  }

  async *fetchObjects(objects: ObjectRef[], signal?: AbortSignal): AsyncGenerator<FetchedObject> {
    for await (const u of this.fetchPacked(objects, signal)) {
      if (isUnit(u)) yield* unpackInline(u);
      else yield u;
    }
  }

  /** The objects as units (client/unpack.ts): a single-object blob of at most WHOLE_UNIT bytes
   * is one unit, a larger one a stream; pack frames come with one Range request per run of
   * neighbouring frames. */
  async *fetchPacked(objects: ObjectRef[], signal?: AbortSignal): AsyncGenerator<PackedOrStream> {
    if (objects.length === 0) return;
    const index = await this.loadIndex();
    const groups = new Map<string, { blob: IndexBlob; locs: ObjectLocation[] }>();
    for (const o of objects) {
      const hex = toHex(o.digest);
      const l = index.get(hex);
      if (!l) throw new RegistryError('OBJECT_UNPLACED', `object ${hex}: the object index of ${this.where} does not say where it is`);
      if (l.size !== o.size) throw new RegistryError('BAD_INDEX', `object ${hex}: the object index of ${this.where} gives ${l.size} bytes, the image ${o.size}`);
      let g = groups.get(l.blob.digest);
      if (!g) groups.set(l.blob.digest, (g = { blob: l.blob, locs: [] }));
      g.locs.push(l);
    }
    for (const { blob, locs } of groups.values()) {
      if (blob.kind === 'object') {
        for (const l of locs) {
          const hex = toHex(l.digest);
          const what = `object ${hex} (blob ${blob.digest}) from ${this.where}`;
          const r = await this.client.getBlob(this.repo, blob.digest, { signal });
          if (blob.size <= WHOLE_UNIT) {
            const data = await r.buffer({ exact: blob.size, what });
            yield { data, encoding: blob.encoding, frames: [{ off: 0, len: data.length, maxOut: l.size, what, objects: [{ digest: l.digest, size: l.size, at: 0 }] }] };
          } else yield { digest: l.digest, size: l.size, body: decoded(r.body({ exact: blob.size, what }), blob.encoding, l.size, what) };
        }
        continue;
      }
      yield* this.packUnits(blob, locs, signal);
    }
  }

  /** Units of one pack: frames fetched with Range requests (neighbours merged). */
  private async *packUnits(blob: IndexBlob, locs: ObjectLocation[], signal?: AbortSignal): AsyncGenerator<PackedUnit> {
    const frames = new Map<number, { off: number; len: number; locs: ObjectLocation[] }>();
    for (const l of locs) {
      if (l.frameLength > MAX_FRAME) throw new RegistryError('BAD_INDEX', `pack ${blob.digest} of ${this.where}: frame of ${l.frameLength} bytes`);
      let f = frames.get(l.frameOffset);
      if (!f) frames.set(l.frameOffset, (f = { off: l.frameOffset, len: l.frameLength, locs: [] }));
      f.locs.push(l);
    }
    const sorted = [...frames.values()].sort((a, b) => a.off - b.off);
    const ranges: { start: number; end: number; frames: typeof sorted }[] = [];
    for (const f of sorted) {
      const last = ranges[ranges.length - 1];
      if (last && f.off >= last.end && f.off - last.end <= RANGE_GAP && f.off + f.len - last.start <= RANGE_MAX) {
        last.end = Math.max(last.end, f.off + f.len);
        last.frames.push(f);
      } else ranges.push({ start: f.off, end: f.off + f.len, frames: [f] });
    }
    for (const rg of ranges) {
      const what = `pack ${blob.digest} bytes ${rg.start}-${rg.end - 1} from ${this.where}`;
      const r = await this.client.getBlob(this.repo, blob.digest, { range: [rg.start, rg.end - 1], signal });
      let base = rg.start;
      let data: Buffer;
      if (r.status === 206) data = await r.buffer(rg.end - rg.start);
      else {
        // The registry ignored Range: take the part we need from the whole blob.
        if (blob.size > 4 * RANGE_MAX) {
          r.discard();
          throw new RegistryError('NO_RANGE', `${what}: the registry does not answer Range requests`);
        }
        data = await r.buffer(blob.size);
        base = 0;
      }
      if (data.length < rg.end - base) throw new TransportError('TRUNCATED', `${what}: ${data.length} bytes`);
      yield {
        data,
        encoding: blob.encoding,
        frames: rg.frames.map((f) => ({
          off: f.off - base,
          len: f.len,
          maxOut: MAX_FRAME,
          what: `${what} (frame at ${f.off})`,
          objects: f.locs.map((l) => ({ digest: l.digest, size: l.size, at: l.offsetInFrame })),
        })),
      };
    }
  }

  // ---------------------------------------------------------------- push

  /** Read the object indexes of this repository's cfsdist tags (and of `mountFrom`). */
  private async loadKnown(): Promise<void> {
    if (this.knownLoaded) return;
    this.knownLoaded = true;
    const repos = [this.repo, ...(this.opts.mountFrom ?? [])];
    for (const repo of repos) {
      const tags = (await this.client.listTags(repo)).filter((t) => !/^sha256-[0-9a-f]{64}$/.test(t)).slice(0, this.opts.maxKnownTags ?? 32);
      for (const t of tags) {
        const m = await this.client.getManifest(repo, t, MANIFEST_TYPES);
        const j = m?.json as { artifactType?: string; layers?: Descriptor[] } | undefined;
        if (j?.artifactType !== ARTIFACT_IMAGE) continue;
        const idx = j.layers?.find((l) => l?.mediaType === MT_OBJECT_INDEX);
        if (!idx) continue;
        let map: Map<string, ObjectLocation>;
        try {
          map = await decodeIndex(await this.client.readBlob(repo, idx.digest, Math.min(idx.size, 256 << 20)), `object index of ${repo}:${t}`);
        } catch {
          continue; // a damaged index only means those objects are uploaded again
        }
        for (const [hex, l] of map) {
          if (this.placed.has(hex)) continue;
          this.placed.set(hex, l);
          if (!this.blobRepo.has(l.blob.digest)) this.blobRepo.set(l.blob.digest, repo);
        }
      }
    }
  }

  /** Whether this repository has a blob (HEAD), mounting it from another repository when it
   * is known there. */
  private blobPresent(blob: IndexBlob): Promise<boolean> {
    let p = this.blobHere.get(blob.digest);
    if (!p) {
      p = (async () => {
        if ((await this.client.headBlob(this.repo, blob.digest, true)) === blob.size) return true;
        const from = this.blobRepo.get(blob.digest);
        if (from && from !== this.repo) return this.client.mountBlob(this.repo, blob.digest, from);
        return false;
      })();
      this.blobHere.set(blob.digest, p);
    }
    return p;
  }

  async has(digests: Buffer[]): Promise<boolean[]> {
    await this.loadKnown();
    const locs = digests.map((d) => this.placed.get(toHex(d)));
    const blobs = new Map<string, IndexBlob>();
    for (const l of locs) if (l) blobs.set(l.blob.digest, l.blob);
    const present = new Map<string, boolean>();
    const list = [...blobs.values()];
    for (let i = 0; i < list.length; i += 8) {
      await Promise.all(list.slice(i, i + 8).map(async (b) => present.set(b.digest, await this.blobPresent(b))));
    }
    return locs.map((l) => (l ? present.get(l.blob.digest) === true : false));
  }

  async putObjects(objects: OutgoingObject[], _signal?: AbortSignal): Promise<{ added: number; existed: number }> {
    const small: PackInput[] = [];
    for (const o of objects) {
      const hex = toHex(o.digest);
      if (o.size < LARGE_OBJECT) {
        small.push({ digest: o.digest, data: await readAll(await o.open(), o.size, `object ${hex}`) });
        continue;
      }
      let blob: IndexBlob;
      if (o.size <= WHOLE_OBJECT) {
        const data = await readAll(await o.open(), o.size, `object ${hex}`);
        const gz = await gzipAsync(data);
        const useGz = gz.length < data.length * 0.97;
        const up = await this.client.ensureBlob(this.repo, useGz ? gz : data);
        blob = { digest: up.digest, size: up.size, kind: 'object', encoding: useGz ? 'gzip' : 'identity' };
      } else {
        const gz = createGzip({ level: 6 });
        const src = Readable.from(await o.open());
        src.on('error', (e) => gz.destroy(e));
        src.pipe(gz);
        const up = await this.client.uploadChunked(this.repo, gz as AsyncIterable<Buffer>);
        blob = { digest: up.digest, size: up.size, kind: 'object', encoding: 'gzip' };
      }
      this.placed.set(hex, { digest: o.digest, size: o.size, blob, frameOffset: 0, frameLength: blob.size, offsetInFrame: 0 });
      this.blobHere.set(blob.digest, Promise.resolve(true));
    }
    if (small.length > 0) {
      const pack = await buildPack(small);
      const up = await this.client.uploadBlob(this.repo, pack.bytes);
      const blob: IndexBlob = { digest: up.digest, size: up.size, kind: 'pack', encoding: 'gzip' };
      for (const e of pack.entries) this.placed.set(toHex(e.digest), { ...e, blob });
      this.blobHere.set(blob.digest, Promise.resolve(true));
    }
    return { added: objects.length, existed: 0 };
  }

  async putImage(digest: Buffer, path: string): Promise<void> {
    const bytes = await readFile(path);
    let data: Buffer;
    let mediaType: string;
    const z = haveZstd() ? spawnSync('zstd', ['-19', '-c', '-q'], { input: bytes, maxBuffer: bytes.length * 2 + (1 << 20) }) : undefined;
    if (z && z.status === 0 && Buffer.isBuffer(z.stdout)) {
      data = z.stdout;
      mediaType = `${MT_EROFS}+zstd`;
    } else {
      data = await gzipAsync(bytes, 9);
      mediaType = `${MT_EROFS}+gzip`;
    }
    const up = await this.client.ensureBlob(this.repo, data);
    const fsverity = toHex(digest);
    this.pushed = { fsverity, bytes, desc: { mediaType, digest: up.digest, size: up.size, annotations: { [ANN_FSVERITY]: fsverity } } };
  }

  async putFsveritySignature(digest: Buffer, der: Buffer): Promise<void> {
    this.pendingSig = { fsverity: toHex(digest), der };
  }

  /** Upload a referrer artifact (one layer) of `subject`; returns its descriptor. */
  private async putReferrer(subject: Descriptor, artifactType: string, layerType: string, content: Buffer, annotations: Record<string, string>): Promise<{ desc: Descriptor; subjectIndexed: boolean }> {
    const empty = await this.client.ensureBlob(this.repo, EMPTY_JSON);
    const layer = await this.client.ensureBlob(this.repo, content);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MT_MANIFEST,
      artifactType,
      config: { mediaType: MT_EMPTY, digest: empty.digest, size: empty.size, data: EMPTY_JSON.toString('base64') },
      layers: [{ mediaType: layerType, digest: layer.digest, size: layer.size }],
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
      annotations,
    }));
    const digest = sha256(manifest);
    const r = await this.client.putManifest(this.repo, digest, manifest, MT_MANIFEST);
    return { desc: { mediaType: MT_MANIFEST, digest, size: manifest.length, artifactType, annotations }, subjectIndexed: r.subject };
  }

  async putStatement(name: string, tag: string, envelope: Buffer): Promise<void> {
    const destTag = this.tag ?? tag;
    if (name !== this.repo || tag !== destTag) {
      throw new RegistryError('NAME_MISMATCH', `the statement names ${name}:${tag}, but the destination is ${this.where}:${destTag}; a pull from there would refuse it (the signed name must match) — push to docker://HOST/${name}:${tag}, or sign the image as ${this.repo}:${destTag}`);
    }
    const s = parseStatementPayload(Buffer.from(parseEnvelope(envelope, 'statement').payload, 'base64'), `statement of ${name}:${tag}`);
    const img = this.pushed;
    if (!img || img.fsverity !== s.image) throw new RegistryError('IMAGE_MISSING', `statement of ${name}:${tag} names image ${s.image}, which was not uploaded to ${this.where} first`);
    const facts = await imageFacts(img.bytes, `image ${s.image}`);
    const locs: ObjectLocation[] = [];
    for (const o of facts.objects) {
      const l = this.placed.get(toHex(o.digest));
      if (!l) throw new RegistryError('OBJECT_UNPLACED', `object ${toHex(o.digest)} of image ${s.image} is neither in ${this.where} nor uploaded`);
      locs.push(l);
    }
    const index = await this.client.ensureBlob(this.repo, await encodeIndex(locs));
    const config = await this.client.ensureBlob(this.repo, Buffer.from(JSON.stringify({ fsverity: s.image, imageSize: img.bytes.length, objects: facts.count, objectBytes: facts.totalSize })));
    const blobs = new Map<string, IndexBlob>();
    for (const l of locs) blobs.set(l.blob.digest, l.blob);
    const layers: Descriptor[] = [img.desc, { mediaType: MT_OBJECT_INDEX, digest: index.digest, size: index.size }];
    for (const b of blobs.values()) layers.push({ mediaType: b.kind === 'pack' ? MT_PACK : b.encoding === 'gzip' ? `${MT_OBJECT}+gzip` : MT_OBJECT, digest: b.digest, size: b.size });
    if (s.config) {
      if (this.pendingConfig?.digest !== s.config.digest) throw new RegistryError('CONFIG_MISSING', `statement of ${name}:${tag} names config ${s.config.digest}, which was not uploaded to ${this.where} first`);
      layers.push(this.pendingConfig);
    }
    for (const d of this.pendingDeltas) if (d.annotations?.[ANN_DELTA_TARGET] === s.image) layers.push(d);
    // Attach: where the tag names the ordinary image this one was imported from, the cfsdist
    // manifest becomes its referrer and the tag stays on the ordinary image.
    const attachTo = await this.attachSubject(destTag, name, tag, s.manifest);
    const hints: Record<string, string> = { [ANN_NAME]: name, [ANN_TAG]: tag, [ANN_VERSION]: String(s.version) };
    // The sealing spec's name for the fs-verity digest of the ordinary manifest's bytes (the
    // merged EROFS digest is not carried under its name: our image is not its canonical one).
    if (attachTo?.bytes) hints[ANN_COMPOSEFS_MANIFEST] = toHex(fsverityDigest(attachTo.bytes));
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: MT_MANIFEST,
      artifactType: ARTIFACT_IMAGE,
      config: { mediaType: MT_CONFIG, digest: config.digest, size: config.size },
      layers,
      ...(attachTo ? { subject: { mediaType: attachTo.mediaType, digest: attachTo.digest, size: attachTo.size }, annotations: hints } : {}),
    }));
    const mdigest = sha256(manifest);
    const put = await this.client.putManifest(this.repo, mdigest, manifest, MT_MANIFEST);
    if (attachTo && !put.subject) await this.addToFallbackIndex(attachTo.digest, [{ mediaType: MT_MANIFEST, digest: mdigest, size: manifest.length, artifactType: ARTIFACT_IMAGE, annotations: hints }]);
    const subject: Descriptor = { mediaType: MT_MANIFEST, digest: mdigest, size: manifest.length };
    const refs: Descriptor[] = [];
    const st = await this.putReferrer(subject, ARTIFACT_STATEMENT, MT_DSSE, envelope, { [ANN_NAME]: name, [ANN_TAG]: tag, [ANN_VERSION]: String(s.version) });
    refs.push(st.desc);
    let indexed = st.subjectIndexed;
    if (this.pendingSig && this.pendingSig.fsverity === s.image) {
      const sg = await this.putReferrer(subject, ARTIFACT_FSVERITY_SIG, MT_PKCS7, this.pendingSig.der, {});
      refs.push(sg.desc);
      indexed &&= sg.subjectIndexed;
    }
    if (!indexed) await this.addToFallbackIndex(mdigest, refs);
    if (!attachTo) await this.client.putManifest(this.repo, destTag, manifest, MT_MANIFEST);
  }

  /** The referrers tag schema (registries without the referrers API): an image index of the
   * referrers of `subject` under the tag sha256-<hex>; `refs` are added (replacing any with the
   * same digest: pushing the same thing twice changes nothing). */
  private async addToFallbackIndex(subject: string, refs: Descriptor[]): Promise<void> {
    const fallbackTag = `sha256-${subject.slice(7)}`;
    const old = await this.client.getManifest(this.repo, fallbackTag, [MT_INDEX]);
    const before = (old?.json as { manifests?: Descriptor[] } | undefined)?.manifests ?? [];
    const list = before.filter((d) => !refs.some((r) => r.digest === d?.digest));
    const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT_INDEX, manifests: [...list, ...refs] }));
    if (old && old.bytes.equals(idx)) return;
    await this.client.putManifest(this.repo, fallbackTag, idx, MT_INDEX);
  }

  /**
   * What a push to `destTag` attaches to: the ordinary image manifest the tag names (in an
   * index: the platform manifest) when it is the one the image was imported from (`source`).
   * Undefined when the tag is absent or names a cfsdist image (the push tags its own manifest)
   * or, with `force`, when it names another ordinary image. Else refused: the tag moved since
   * the import, and a push must not replace somebody's image.
   */
  private async attachSubject(destTag: string, name: string, tag: string, source: string | undefined): Promise<(Descriptor & { bytes?: Buffer }) | undefined> {
    const cur = await this.client.getManifest(this.repo, destTag, MANIFEST_TYPES);
    if (!cur || isCfsdistManifest(cur)) return undefined;
    if (source && cur.digest === source) return { mediaType: cur.mediaType, digest: cur.digest, size: cur.bytes.length, bytes: cur.bytes };
    const list = (cur.json as { manifests?: Descriptor[] }).manifests;
    const d = source && Array.isArray(list) ? list.find((x) => x?.digest === source) : undefined;
    if (d) {
      const m = await this.client.getManifest(this.repo, d.digest, MANIFEST_TYPES);
      return { mediaType: d.mediaType, digest: d.digest, size: d.size, bytes: m?.digest === d.digest ? m.bytes : undefined };
    }
    if (this.opts.force) return undefined;
    throw new RegistryError(
      'TAG_MOVED',
      `${this.where}:${destTag} names the ordinary image ${cur.digest}, not the one ${name}:${tag} was imported from (${source ?? 'it was not imported from a registry'}): ` +
        `refusing to replace it. Convert the current image (cfsdist convert ${this.where}:${destTag}), or push with --force to replace the tag with a standalone cfsdist image`,
    );
  }

  stats(): WireStats {
    return this.client.stats();
  }

  close(): void {
    this.client.close();
  }
}
