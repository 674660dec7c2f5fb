/**
 * Pull: bring NAME:TAG from a remote into the local store, trusting nothing but a signature.
 *
 *  1. Fetch the signed statement and verify it: a trusted key's signature, the NAME:TAG asked
 *     for, not expired, version not older than the last accepted one for the tag (sign/).
 *  2. Fetch the image (exactly the stated size) into a temporary file while hashing it; it
 *     must have the stated fs-verity digest before anything else happens.
 *  3. Read the objects the image needs (with sizes) from the image itself; their count and
 *     total must match the statement.
 *  4. Plan: objects already in the store, objects verified by an earlier interrupted pull
 *     (ingest.ts), objects to fetch.
 *  5. Fetch the missing objects concurrently — large ones one per request, small ones in
 *     packs. A remote that hands out compressed units (fetchPacked, unpack.ts) has each unit
 *     decompressed, hashed, checked and written on worker threads; otherwise small objects
 *     are checked in memory, and large ones streamed to a temporary file while their digest
 *     is computed and renamed into the ingest area only if digest and size match.
 *  6. Commit, only when every object is verified: objects into STORE/objects, the image, then
 *     the tag, then the statement and the rollback floor. A failure anywhere before leaves
 *     the store's objects, images and tags as they were.
 * The whole pull holds a store lease, so gc cannot collect what it adds before the tag exists.
 */
import { statSync } from 'node:fs';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { createHash } from 'node:crypto';
import { MAX_CONFIG_BYTES } from '../store/store.js';
import type { ImageMeta, Store } from '../store/store.js';
import { StoreError } from '../store/errors.js';
import { writeTemp } from '../store/atomic.js';
import { fromHex, fsverityDigest, toHex } from '../verity/digest.js';
import { factsOfTree } from '../sign/image-facts.js';
import type { ImageFacts, ObjectRef } from '../sign/image-facts.js';
import type { PublicKeyEntry } from '../sign/keys.js';
import { SignError } from '../sign/errors.js';
import { SignRecords, commitStatement } from '../sign/records.js';
import { checkVersion, verifyStatement } from '../sign/statement.js';
import type { ImageStatement } from '../sign/statement.js';
import { Ingest } from './ingest.js';
import { PullError } from './errors.js';
import type { DeltaKind, FetchedObject, Remote, WireStats } from './remote.js';
import { UnpackPool, isUnit, unitBytes, unitCount } from './unpack.js';
import type { PackedUnit } from './unpack.js';
import { trace } from '../trace.js';

/** Progress of a pull. */
export interface PullProgress {
  phase: 'statement' | 'image' | 'plan' | 'objects' | 'commit' | 'done';
  objectsDone: number;
  objectsTotal: number;
  bytesDone: number;
  bytesTotal: number;
}

/** Options of a pull. */
export interface PullOptions {
  store: Store;
  remote: Remote;
  name: string;
  tag: string;
  /** Trusted public keys. */
  trusted: PublicKeyEntry[];
  /** Compute and return the plan; change nothing. */
  dryRun?: boolean;
  /** One-line notices (e.g. a delta that could not be used and the full image fetched instead). */
  onNotice?: (line: string) => void;
  /** Ask the remote for a metadata delta from a local image of the same name (default true). */
  deltas?: boolean;
  /** Requests in flight (default 4). */
  concurrency?: number;
  /** Seconds since the epoch (default now). */
  now?: number;
  onProgress?: (p: PullProgress) => void;
  /** Objects at least this large travel alone (default 1 MiB). */
  largeObject?: number;
  /** Most content bytes per request batch (default 8 MiB, the size of the packs a push makes,
   * so that a cold pull from a registry reads each pack with one request). */
  packBytes?: number;
  /** Most objects per pack (default 2048). */
  packObjects?: number;
  signal?: AbortSignal;
}

/** A count and its bytes. */
export interface Amount {
  count: number;
  bytes: number;
}

/** What a pull needs, has, and would fetch. */
export interface PullPlan {
  needed: Amount;
  /** Already in STORE/objects. */
  present: Amount;
  /** Verified by an earlier interrupted pull (ingest area). */
  resumed: Amount;
  /** To fetch. */
  fetch: Amount;
  /** Image bytes to fetch (0 if the image is already local). */
  imageBytes: number;
  /** Local tagged images sharing objects with this one. */
  shared: { name: string; tag: string; image: string; objects: number; bytes: number }[];
  /** The objects to fetch (hex, size). */
  objects: { digest: string; size: number }[];
}

/** What a pull did. */
export interface PullSummary {
  remote: string;
  name: string;
  tag: string;
  image: string;
  version: number;
  keyid: string;
  dryRun: boolean;
  /** The metadata delta used instead of the full image (or, with --dry-run, the one that would be). */
  delta?: { base: string; kind: DeltaKind; bytes: number; imageBytes: number };
  objects: { needed: number; present: number; resumed: number; fetched: number };
  bytes: { needed: number; present: number; resumed: number; fetched: number; image: number; statement: number; config: number };
  wire: WireStats;
  /** Image the tag pointed at before (hex), if any. */
  previous: string | null;
  seconds: number;
  plan?: PullPlan;
}

/** Objects up to this size are received whole and verified before they are written. */
const SMALL_OBJECT = 256 * 1024;
/** Small-object writes in flight at once (file creation is the main cost of a cold pull; the
 * writes overlap with each other and with receiving and inflating). */
const SMALL_WRITES = 16;

/** A fetch of at least EARLY_FLUSH_MIN bytes starts writing back to disk once this share of
 * it is written (Ingest.startFlush), so the commit's sync waits for less. */
const EARLY_FLUSH = 0.6;
const EARLY_FLUSH_MIN = 32 << 20;
/** A fetch of at least this many objects or bytes is unpacked on worker threads. */
const POOL_MIN_OBJECTS = 256;
const POOL_MIN_BYTES = 4 << 20;

/** Sum of sizes. */
function amount(objs: ObjectRef[]): Amount {
  let bytes = 0;
  for (const o of objs) bytes += o.size;
  return { count: objs.length, bytes };
}

/** Group objects into requests: large ones alone, small ones in packs. */
export function batchObjects(objs: ObjectRef[], large: number, packBytes: number, packObjects: number): ObjectRef[][] {
  const out: ObjectRef[][] = [];
  let cur: ObjectRef[] = [];
  let curBytes = 0;
  for (const o of objs) {
    if (o.size >= large) {
      out.push([o]);
      continue;
    }
    if (cur.length > 0 && (cur.length >= packObjects || curBytes + o.size > packBytes)) {
      out.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(o);
    curBytes += o.size;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

function statsDiff(a: WireStats, b: WireStats): WireStats {
  return { received: a.received - b.received, sent: a.sent - b.sent, requests: a.requests - b.requests };
}

/** Which objects the store has (synchronous stats: about 8 µs each, far cheaper than a
 * thread-pool round trip; a pull does nothing else meanwhile). */
function presentIn(store: Store, objs: ObjectRef[]): boolean[] {
  return objs.map((o) => statSync(store.objects.path(o.digest), { throwIfNoEntry: false })?.isFile() ?? false);
}

/** Local tagged images sharing objects with `needed`. */
async function sharedWithLocal(store: Store, needed: ObjectRef[]): Promise<PullPlan['shared']> {
  const size = new Map(needed.map((o) => [toHex(o.digest), o.size]));
  const out: PullPlan['shared'] = [];
  for (const t of await store.listTags()) {
    let list: Buffer[];
    try {
      list = await store.imageObjects(t.image);
    } catch {
      continue;
    }
    let objects = 0;
    let bytes = 0;
    for (const d of list) {
      const s = size.get(toHex(d));
      if (s !== undefined) {
        objects++;
        bytes += s;
      }
    }
    if (objects > 0) out.push({ name: t.name, tag: t.tag, image: toHex(t.image), objects, bytes });
  }
  return out.sort((a, b) => b.bytes - a.bytes);
}

/** writeTemp wraps a failing source's error; give back the transport's own error. */
function unwrap(err: unknown): unknown {
  const e = err as { code?: string; cause?: unknown };
  if (e?.code === 'WRITE_FAILED' && e.cause instanceof Error && 'code' in e.cause) return e.cause;
  return err;
}

/** Read all of an async byte stream (bounded by its producer). */
async function collect(src: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of src) parts.push(c);
  return Buffer.concat(parts);
}

/**
 * A metadata delta to `image` from a local image of the same name (the tag's current image
 * first), rebuilt and checked against the signed digest: the binary zpatch where the `zstd` tool
 * is installed (one decoder pass), else the tree delta (which also gives the tree). Any failure
 * — no delta, a corrupt or mismatching one, one for another base — is a one-line notice and the
 * next kind, then undefined: the caller then fetches the full image, so a delta can never fail
 * a pull.
 */
async function tryDelta(opts: PullOptions, image: Buffer, imageSize: number, where: string): Promise<{ image: Buffer; facts?: ImageFacts; base: Buffer; kind: DeltaKind; bytes: number } | undefined> {
  const { store, remote, name, tag } = opts;
  if (!remote.getDelta) return undefined;
  const bases: Buffer[] = [];
  const current = await store.getTag(name, tag);
  if (current) bases.push(current);
  for (const t of await store.listTags()) if (t.name === name && !bases.some((b) => b.equals(t.image))) bases.push(t.image);
  const { zpatchAvailable } = await import('../delta/zpatch.js');
  const kinds: DeltaKind[] = zpatchAvailable() ? ['zpatch', 'tree'] : ['tree'];
  for (const base of bases.slice(0, 3)) {
    if (base.equals(image) || !(await store.hasImage(base))) continue;
    for (const kind of kinds) {
      let delta: Buffer | undefined;
      try {
        delta = await remote.getDelta(base, image, imageSize + (1 << 20), kind);
      } catch (err) {
        opts.onNotice?.(`${where}: ${kind === 'zpatch' ? 'binary delta' : 'delta'} unavailable (${(err as Error).message}); ${kind === 'zpatch' ? 'trying the tree delta' : 'fetching the full image'}`);
        if (kind === 'tree') return undefined;
        continue;
      }
      if (!delta) continue;
      try {
        if (kind === 'zpatch') {
          const { applyZpatch } = await import('../delta/zpatch.js');
          return { image: await applyZpatch(store.imagePath(base), delta, imageSize, image), base, kind, bytes: delta.length };
        }
        // Off the event loop, and no larger than the signed image size.
        const { applyDeltaOffThread } = await import('../delta/apply-thread.js');
        return { ...(await applyDeltaOffThread(store.imagePath(base), delta, image, imageSize)), base, kind, bytes: delta.length };
      } catch (err) {
        opts.onNotice?.(`${where}: ${kind === 'zpatch' ? 'binary delta' : 'delta'} from ${toHex(base).slice(0, 12)}… unusable (${(err as Error).message}); ${kind === 'zpatch' ? 'trying the tree delta' : 'fetching the full image'}`);
        if (kind === 'tree') return undefined;
      }
    }
  }
  return undefined;
}

/** The config a statement names, from the store or the remote, checked against the statement
 * (size, SHA-256): PullError CONFIG_MISSING / CONFIG_MISMATCH otherwise. */
async function pullConfig(opts: PullOptions, want: { digest: string; size: number }, where: string): Promise<{ bytes: Buffer; fetched: number }> {
  if (want.size > MAX_CONFIG_BYTES) throw new PullError('CONFIG_MISMATCH', `${where}: the statement names a config of ${want.size} bytes (at most ${MAX_CONFIG_BYTES})`);
  try {
    return { bytes: await opts.store.readConfig(want.digest), fetched: 0 };
  } catch (err) {
    if (!(err instanceof StoreError) || (err.code !== 'CONFIG_MISSING' && err.code !== 'CONFIG_CORRUPT')) throw err;
  }
  const bytes = await opts.remote.getConfig(want.digest, want.size);
  if (!bytes) throw new PullError('CONFIG_MISSING', `${where}: the remote has no image config ${want.digest}, which the signed statement names`);
  const got = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
  if (bytes.length !== want.size || got !== want.digest) {
    throw new PullError('CONFIG_MISMATCH', `${where}: image config from ${opts.remote.location} is ${bytes.length} bytes with digest ${got}, but the signed statement names ${want.digest} (${want.size} bytes): changed or substituted config refused, nothing stored`);
  }
  return { bytes, fetched: bytes.length };
}

/** Pull NAME:TAG (see the file comment). Throws SignError / PullError / TransportError /
 * ProtocolError with a message naming the remote and the object at fault. */
export async function pull(opts: PullOptions): Promise<PullSummary> {
  const t0 = performance.now();
  const { store, remote, name, tag } = opts;
  const where = `${remote.location}/${name}:${tag}`;
  const dryRun = Boolean(opts.dryRun);
  const wire0 = remote.stats();
  const progress: PullProgress = { phase: 'statement', objectsDone: 0, objectsTotal: 0, bytesDone: 0, bytesTotal: 0 };
  const report = (): void => opts.onProgress?.({ ...progress });
  report();
  trace('pull: start');
  // The store's fs-verity probe (a process) runs while the statement is fetched; fetch and
  // commit ask for its cached answer.
  if (!dryRun) void store.objects.verity.probe();

  // 1. Statement.
  const records = new SignRecords(store.dir);
  let envelope: Buffer | undefined;
  let v: ReturnType<typeof verifyStatement> | undefined;
  if (remote.getStatements) {
    // Several candidates (cfsdist images attached to an ordinary image): the first, newest,
    // that a trusted key signed for this very manifest.
    const found = await remote.getStatements(name, tag);
    const refused: string[] = [];
    let first: SignError | undefined;
    for (let i = 0; i < found.length && !v; i++) {
      const c = found[i]!;
      try {
        const ok = verifyStatement(c.envelope, { trusted: opts.trusted, name, tag, now: opts.now }, `statement of ${c.found}`);
        if (c.manifest && ok.statement.manifest !== c.manifest) {
          throw new SignError('WRONG_MANIFEST', `statement of ${c.found} is signed for source manifest ${ok.statement.manifest ?? '(none)'}, not ${c.manifest}`);
        }
        remote.selectStatement?.(i);
        envelope = c.envelope;
        v = ok;
      } catch (e) {
        if (!(e instanceof SignError)) throw e;
        first ??= e;
        refused.push(e.message);
      }
    }
    // One candidate, a tag naming a cfsdist image: its own error, as from any remote.
    if (!v && found.length === 1 && !found[0]!.manifest) throw first!;
    if (!v && found.length > 0) {
      throw new SignError('UNTRUSTED', `${where}: ${found.length} signed cfsdist image(s) found for ${name}:${tag}, none acceptable: ${refused.join('; ')}`);
    }
  } else {
    envelope = await remote.getStatement(name, tag);
    if (envelope) v = verifyStatement(envelope, { trusted: opts.trusted, name, tag, now: opts.now }, `statement of ${where}`);
  }
  if (!envelope || !v) throw new SignError('UNSIGNED', `${where}: the server has no signed statement for ${name}:${tag} (unsigned images are refused)`);
  const s: ImageStatement = v.statement;
  checkVersion(s, await records.readAccepted(name, tag), `statement of ${where}`);
  const image = fromHex(s.image);
  // The config the statement names: the local copy, or the remote's checked against it —
  // before anything is fetched or committed.
  const config = s.config ? await pullConfig(opts, s.config, where) : undefined;
  trace('pull: statement verified');

  const lease = dryRun ? undefined : await store.lease();
  let ingest: Ingest | undefined;
  try {
    // 2. Image.
    progress.phase = 'image';
    report();
    let imageBytes: Buffer;
    let imageFetched = 0;
    let deltaUsed: PullSummary['delta'];
    /** The objects of the image a delta rebuilt (worked out from its tree: no second read). */
    let deltaFacts: ImageFacts | undefined;
    /** The verified image is in the ingest area (and moves into the store at the commit). */
    let areaImage = false;
    if (await store.hasImage(image)) {
      imageBytes = await readFile(store.imagePath(image));
      if (!fsverityDigest(imageBytes).equals(image)) throw new StoreError('IMAGE_CORRUPT', `local image ${s.image} is corrupt (run cfsdist fsck --repair)`);
    } else if (dryRun) {
      const d = opts.deltas === false ? undefined : await tryDelta(opts, image, s.imageSize, where);
      if (d) deltaUsed = { base: toHex(d.base), kind: d.kind, bytes: d.bytes, imageBytes: s.imageSize };
      imageBytes = d ? d.image : await collect(remote.getImage(image, s.imageSize, opts.signal));
      imageFetched = imageBytes.length;
      const got = fsverityDigest(imageBytes);
      if (!got.equals(image)) throw new PullError('IMAGE_MISMATCH', `image from ${remote.location}: fs-verity digest ${toHex(got)}, but the signed statement names ${s.image}`);
    } else {
      remote.prepareFetch?.({ objects: s.objectCount });
      ingest = await Ingest.open(store, image);
      imageBytes = await readFile(ingest.imagePath).catch(() => Buffer.alloc(0));
      // Verified: an earlier attempt's image in the ingest area, or one a delta rebuilt (which
      // applyDelta checked against the signed digest).
      let verified = imageBytes.length > 0 && fsverityDigest(imageBytes).equals(image);
      if (!verified && opts.deltas !== false) {
        const d = await tryDelta(opts, image, s.imageSize, where);
        if (d) {
          verified = true;
          deltaFacts = d.facts;
          // Already verified: written straight into the area without hashing it again (the
          // area is this process's; an adopter re-checks the image before trusting it).
          await writeFile(ingest.imagePath, d.image);
          imageBytes = d.image;
          imageFetched = d.bytes;
          deltaUsed = { base: toHex(d.base), kind: d.kind, bytes: d.bytes, imageBytes: s.imageSize };
        }
      }
      if (!verified) {
        const tmp = await writeTemp(store.tmpDir, remote.getImage(image, s.imageSize, opts.signal), { sync: false, what: `image ${s.image}` }).catch((err: unknown) => {
          throw unwrap(err);
        });
        if (!tmp.digest.equals(image)) {
          await unlink(tmp.path).catch(() => undefined);
          throw new PullError('IMAGE_MISMATCH', `image from ${remote.location}: fs-verity digest ${toHex(tmp.digest)}, but the signed statement names ${s.image} (corrupt or substituted image)`);
        }
        await rename(tmp.path, ingest.imagePath);
        imageBytes = await readFile(ingest.imagePath);
        imageFetched = imageBytes.length;
      }
      areaImage = true;
    }

    trace('pull: image');
    // 3. Objects the image needs.
    let facts: ImageFacts;
    try {
      const { readImage } = await import('../erofs/reader.js');
      facts = deltaFacts ?? factsOfTree(readImage(imageBytes, `image ${s.image}`), `image ${s.image}`);
    } catch (err) {
      throw new PullError('IMAGE_UNREADABLE', `image ${s.image} of ${where} is signed but cannot be used: ${(err as Error).message}`, { cause: err });
    }
    if (facts.count !== s.objectCount || facts.totalSize !== s.objectSize || imageBytes.length !== s.imageSize) {
      throw new PullError('IMAGE_MISMATCH', `image ${s.image}: needs ${facts.count} objects of ${facts.totalSize} bytes, the statement says ${s.objectCount} of ${s.objectSize}`);
    }

    trace('pull: image read');
    // 4. Plan.
    progress.phase = 'plan';
    report();
    if (!dryRun) ingest ??= await Ingest.open(store, image);
    const inStore = presentIn(store, facts.objects);
    const present = facts.objects.filter((_, i) => inStore[i]);
    const absent = facts.objects.filter((_, i) => !inStore[i]);
    const staged = ingest ? await ingest.present(absent) : new Set<string>();
    const resumed = absent.filter((o) => staged.has(toHex(o.digest)));
    const toFetch = absent.filter((o) => !staged.has(toHex(o.digest)));
    const previous = await store.getTag(name, tag);
    const summary: PullSummary = {
      remote: remote.location,
      name,
      tag,
      image: s.image,
      version: s.version,
      keyid: v.keyid,
      dryRun,
      ...(deltaUsed ? { delta: deltaUsed } : {}),
      objects: { needed: facts.count, present: present.length, resumed: resumed.length, fetched: 0 },
      bytes: { needed: facts.totalSize, present: amount(present).bytes, resumed: amount(resumed).bytes, fetched: 0, image: imageFetched, statement: envelope.length, config: config?.fetched ?? 0 },
      wire: wire0,
      previous: previous ? toHex(previous) : null,
      seconds: 0,
    };
    if (dryRun) {
      summary.plan = {
        needed: amount(facts.objects),
        present: amount(present),
        resumed: amount(resumed),
        fetch: amount(toFetch),
        imageBytes: (await store.hasImage(image)) ? 0 : s.imageSize,
        shared: await sharedWithLocal(store, facts.objects),
        objects: toFetch.map((o) => ({ digest: toHex(o.digest), size: o.size })),
      };
      summary.wire = statsDiff(remote.stats(), wire0);
      summary.seconds = (performance.now() - t0) / 1000;
      return summary;
    }

    trace('pull: planned');
    // 5. Fetch (the kernel signature, optional, is asked for meanwhile).
    const sigP = remote.getFsveritySignature(image);
    sigP.catch(() => undefined);
    progress.phase = 'objects';
    progress.objectsTotal = toFetch.length;
    progress.bytesTotal = amount(toFetch).bytes;
    report();
    await fetchAll(opts, ingest!, toFetch, progress, report);
    summary.objects.fetched = toFetch.length;
    summary.bytes.fetched = progress.bytesTotal;

    trace('pull: fetched');
    // 6. Commit.
    progress.phase = 'commit';
    report();
    await ingest!.commitObjects([...resumed, ...toFetch].map((o) => o.digest));
    // The kernel signature goes in before the image, so the image gets fs-verity with it.
    try {
      const sig = await sigP;
      if (sig) await records.writeFsveritySig(image, sig);
    } catch {
      /* optional: the kernel signature is a convenience, the pull is complete without it */
    }
    // The verified image in the area moves into the store (the commit's filesystem sync made
    // it durable); a store that meanwhile got it keeps its own.
    if (areaImage) await store.addVerifiedImageFile(ingest!.imagePath, image, facts.objects.map((o) => o.digest));
    else await store.addImage(imageBytes, facts.objects.map((o) => o.digest));
    const meta: ImageMeta = {};
    if (config) meta.config = await store.addConfig(config.bytes);
    if (s.manifest) meta.manifest = s.manifest;
    if (s.platform) meta.platform = s.platform;
    await commitStatement(store, records, name, tag, image, meta, s.version, envelope);
    await records.writeAccepted(name, tag, { version: s.version, image: s.image, keyid: v.keyid, remote: remote.location, at: new Date().toISOString() });
    await ingest!.remove();
    trace('pull: committed');
    progress.phase = 'done';
    report();
    summary.wire = statsDiff(remote.stats(), wire0);
    summary.seconds = (performance.now() - t0) / 1000;
    return summary;
  } finally {
    ingest?.release();
    lease?.release();
  }
}

/** Fetch `objs` into the ingest area, `concurrency` requests at a time; the first failure
 * aborts the others and is thrown. */
async function fetchAll(opts: PullOptions, ingest: Ingest, objs: ObjectRef[], progress: PullProgress, report: () => void): Promise<void> {
  const batches = batchObjects(objs, opts.largeObject ?? 1 << 20, opts.packBytes ?? 8 << 20, opts.packObjects ?? 2048);
  const ac = new AbortController();
  const onOuterAbort = (): void => ac.abort();
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
  let next = 0;
  let first: unknown;
  let lastReport = 0;
  const fail = (err: unknown): void => {
    if (first === undefined) first = err;
    ac.abort();
  };
  const corrupt = (err: unknown, hex: string): unknown => {
    const code = (err as { code?: string }).code;
    if (code === 'DIGEST_MISMATCH' || code === 'SIZE_MISMATCH') {
      return new PullError('OBJECT_CORRUPT', `object ${hex} from ${opts.remote.location} does not match the signed image: ${(err as Error).message}`, { cause: err });
    }
    return unwrap(err);
  };
  const done = (): void => {
    progress.objectsDone++;
    const now = Date.now();
    if (now - lastReport >= 50) {
      lastReport = now;
      report();
    }
  };
  // Small objects are verified as they arrive; their writes run in the background, at most
  // SMALL_WRITES at once.
  const writes = new Set<Promise<void>>();
  const writeSmall = async (digest: Buffer, data: Buffer, hex: string): Promise<void> => {
    while (writes.size >= SMALL_WRITES) await Promise.race(writes);
    const w: Promise<void> = ingest.writeSmall(digest, data).then(done, (err: unknown) => fail(corrupt(err, hex)));
    writes.add(w);
    void w.finally(() => writes.delete(w));
  };
  /** One object arriving as a stream of bytes (remotes without units, large objects). */
  const receive = async (o: FetchedObject): Promise<void> => {
    const hex = toHex(o.digest);
    async function* counted(): AsyncGenerator<Buffer> {
      for await (const c of o.body) {
        progress.bytesDone += c.length;
        yield c;
      }
    }
    try {
      if (o.size <= SMALL_OBJECT) {
        // Small: whole in memory (the remote bounds it to o.size), verified, then written.
        const parts: Buffer[] = [];
        for await (const c of counted()) parts.push(c);
        const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        ingest.verifySmall(o.digest, data, `object ${hex} from ${opts.remote.location}`);
        await writeSmall(o.digest, data, hex);
        return;
      }
      await ingest.objects.addStream(counted(), { expected: o.digest, size: o.size });
    } catch (err) {
      throw corrupt(err, hex);
    }
    done();
  };
  // Units (unpack.ts) go to worker threads, at most two per thread at once; the lanes go on
  // fetching meanwhile. Starting a thread costs ~20 ms of CPU, so a small fetch (an update)
  // stays on this thread, and a mid-sized one gets one worker.
  const total = amount(objs).bytes;
  const usePool = opts.remote.fetchPacked !== undefined && (objs.length >= POOL_MIN_OBJECTS || total >= POOL_MIN_BYTES) && !(await ingest.usesVerity());
  const pool = usePool ? new UnpackPool(ingest.objects.dir, total >= 4 * POOL_MIN_BYTES ? undefined : 1) : undefined;
  const units = new Set<Promise<void>>();
  const unpack = async (u: PackedUnit): Promise<void> => {
    while (units.size >= 2 * pool!.size) await Promise.race(units);
    const count = unitCount(u);
    const bytes = unitBytes(u);
    const w: Promise<void> = pool!.run(u).then(() => {
      progress.bytesDone += bytes;
      if (progress.bytesDone >= EARLY_FLUSH * progress.bytesTotal && progress.bytesTotal >= EARLY_FLUSH_MIN) ingest.startFlush();
      progress.objectsDone += count - 1;
      done();
    }, fail);
    units.add(w);
    void w.finally(() => units.delete(w));
  };
  const worker = async (): Promise<void> => {
    while (next < batches.length && !ac.signal.aborted) {
      const batch = batches[next++]!;
      if (pool) {
        for await (const u of opts.remote.fetchPacked!(batch, ac.signal)) {
          if (isUnit(u)) await unpack(u);
          else await receive(u);
        }
      } else {
        for await (const o of opts.remote.fetchObjects(batch, ac.signal)) await receive(o);
      }
    }
  };
  const n = Math.max(1, Math.min(opts.concurrency ?? 4, batches.length));
  try {
    await Promise.all(Array.from({ length: n }, () => worker().catch(fail)));
    await Promise.all(writes);
    await Promise.all(units);
  } finally {
    await pool?.close();
  }
  opts.signal?.removeEventListener('abort', onOuterAbort);
  if (first !== undefined) throw first;
  report();
}
