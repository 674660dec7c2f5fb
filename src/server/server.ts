/**
 * cfsdist's own distribution server: node:http over a local store, the protocol in
 * protocol.ts. Everything streams (files are read in 256 KiB pieces with backpressure; packs
 * hold at most about 256 KiB of small objects at a time; uploads go to temporary files while
 * they are hashed), request bodies that are read whole are capped, so memory stays bounded
 * however many clients there are. Clients verify everything they get; the server verifies
 * everything it is sent.
 *
 * Concurrency with gc on the server: each write takes the store lock for its own duration; a
 * push is several requests, so objects wait for their image under gc's grace period (store.ts).
 * Durability of pushes: open the store with `fsync: false` (serve does); pushed objects are
 * made durable by one syncfs when the image that needs them arrives, before it is stored.
 */
import { STATUS_CODES, createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { availableParallelism } from 'node:os';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import { open, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { MAX_CONFIG_BYTES } from '../store/store.js';
import type { ImageMeta, Store } from '../store/store.js';
import { syncFilesystem, writeTemp } from '../store/atomic.js';
import { fromHex, isHexDigest, toHex } from '../verity/digest.js';
import type { PublicKeyEntry } from '../sign/keys.js';
import { SignRecords, commitStatement, tagStatement } from '../sign/records.js';
import { encoder, filterProcesses, negotiate } from './compress.js';
import type { CompressMode, Encoding } from './compress.js';
import {
  API,
  ABSENT,
  IMMUTABLE,
  MAX_PACK_DIGESTS,
  MAX_QUERY_DIGESTS,
  PACK_MEDIA_TYPE,
  STATEMENT_MEDIA_TYPE,
  encodeBitmap,
  frameHeader,
  parseDigestList,
  readPack,
  trailer,
} from './protocol.js';
import { HttpStatusError, bearerOf, parseRange, readBody, requestBody, sendError, sendJson, statusOf, tokenMatches } from './http-util.js';

/** Options of the server. */
export interface ServerOptions {
  store: Store;
  /** Bearer token of the write API; without one, writes are refused (403). */
  token?: string;
  /** Response compression (default auto). */
  compress?: CompressMode;
  /** With keys, pushed statements must be signed by one of them. */
  trusted?: PublicKeyEntry[];
  /** Idle socket timeout in ms (default 120 s). */
  idleTimeoutMs?: number;
  /** Request log (one line per request), e.g. for --debug. */
  log?: (line: string) => void;
  /** Largest image accepted by push (default 1 GiB). */
  maxImageSize?: number;
  /** Largest object accepted by push (default 16 GiB). */
  maxObjectSize?: number;
  /** Most content bytes one pack response may carry (default 256 MiB; a client asks for packs
   * of at most 8 MiB). */
  maxPackBytes?: number;
  /** Most compressor processes (zstd) at once; beyond them responses are gzip (in process) and
   * zstd-encoded uploads are answered 503 (default: the number of CPUs, at least 2). */
  maxFilterProcesses?: number;
  /** Serve the read-only web page at `/` and `/ui/…` (default on; src/server/ui). */
  ui?: boolean;
}

/** Options of the listening socket (startServer). */
export interface ListenOptions {
  host?: string;
  port?: number;
  /** A client must send its request headers within this (default 20 s). */
  headersTimeoutMs?: number;
  /** … and its whole request, body included, within this (default 10 min). */
  requestTimeoutMs?: number;
  /** Most connections open at once; more are refused (default 1024). */
  maxConnections?: number;
  /** Serve HTTPS with this certificate chain and key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
}

const READ_CHUNK = 256 * 1024;
/** Most bytes of a refused request's body read (and dropped) before the connection is cut. */
const DRAIN_LIMIT = 8 << 20;
/** Objects up to this size are read whole into a pack. */
const SMALL_OBJECT = 64 * 1024;
/** Below this, compressing a single object or image does not pay. */
const MIN_COMPRESS = 1024;

/** One object of a pack: loaded (small), to be streamed (large: no data) or absent (size -1). */
interface Loaded {
  d: Buffer;
  size: number;
  data?: Buffer;
}

/** The distinct digests of a list, first occurrences in order. */
function unique(digests: Buffer[]): Buffer[] {
  const seen = new Set<string>();
  return digests.filter((d) => {
    const k = d.toString('latin1');
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** Chunks of [start, end] of an open file; fresh buffers (they may be queued downstream). */
async function* fileRange(fh: FileHandle, start: number, end: number): AsyncGenerator<Buffer> {
  let pos = start;
  while (pos <= end) {
    const n = Math.min(READ_CHUNK, end - pos + 1);
    const buf = Buffer.allocUnsafe(n);
    const { bytesRead } = await fh.read(buf, 0, n, pos);
    if (bytesRead === 0) throw new Error(`file shrank while being served (at byte ${pos})`);
    pos += bytesRead;
    yield bytesRead === n ? buf : buf.subarray(0, bytesRead);
  }
}

/** Pipe chunks (optionally encoded) into the response. */
async function stream(res: ServerResponse, src: AsyncIterable<Buffer>, enc: Encoding): Promise<void> {
  const e = encoder(enc);
  if (e) await pipeline(Readable.from(src, { objectMode: false, highWaterMark: READ_CHUNK }), e, res);
  else await pipeline(Readable.from(src, { objectMode: false, highWaterMark: READ_CHUNK }), res);
}

/** The server's request handler (exported for tests that embed it). */
export function makeHandler(opts: ServerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const store = opts.store;
  const records = new SignRecords(store.dir);
  const compress = opts.compress ?? 'auto';
  const maxImage = opts.maxImageSize ?? 1 << 30;
  const maxObject = opts.maxObjectSize ?? 16 * (1 << 30);
  const maxPack = opts.maxPackBytes ?? 256 << 20;
  const maxFilters = opts.maxFilterProcesses ?? Math.max(2, availableParallelism());
  /** Statement pushes in progress per NAME:TAG (one at a time: check and commit together). */
  const statementQueue = new Map<string, Promise<unknown>>();
  /** The web page's handler, loaded on its first request. */
  let uiHandler: Promise<(req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void>> | undefined;

  /** The response encoding: zstd only while a compressor process may be started. */
  const responseEncoding = (req: IncomingMessage): Encoding => {
    const e = negotiate(req.headers['accept-encoding'], compress);
    return e === 'zstd' && filterProcesses() >= maxFilters ? negotiate(req.headers['accept-encoding'], 'gzip') : e;
  };
  /** Anyone may query and ask for packs: such bodies are small and must come unencoded (an
   * encoded body costs the server a decompressor for every request). */
  const plainBody = (req: IncomingMessage, what: string): void => {
    const enc = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
    if (enc !== '' && enc !== 'identity') throw new HttpStatusError(415, `${what}: Content-Encoding ${JSON.stringify(enc.slice(0, 40))} is not accepted here (send the body unencoded)`);
  };
  /** A pushed body, decoded; a zstd one only while a decompressor may be started. */
  const uploadBody = (req: IncomingMessage, what: string): AsyncIterable<Buffer> => {
    const enc = (req.headers['content-encoding'] ?? '').trim().toLowerCase();
    if (enc === 'zstd' && filterProcesses() >= maxFilters) throw new HttpStatusError(503, `${what}: the server is busy decompressing other uploads; retry, or send gzip`);
    return requestBody(req, what);
  };

  const authorize = (req: IncomingMessage): void => {
    const presented = bearerOf(req);
    if (!opts.token) throw new HttpStatusError(403, 'this server does not accept pushes (started without --token-file)');
    if (presented === undefined) throw new HttpStatusError(401, 'push needs a bearer token (Authorization: Bearer …)');
    if (!tokenMatches(presented, opts.token)) throw new HttpStatusError(403, 'wrong bearer token');
  };

  /** GET/HEAD of a file: content-addressed ones (named by `hex`) are immutable, with ETag. */
  const sendFile = async (req: IncomingMessage, res: ServerResponse, path: string, hex: string, type: string, mutable = false): Promise<void> => {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new HttpStatusError(404, `${hex} not found`);
      throw err;
    }
    try {
      const size = (await fh.stat()).size;
      const etag = `"${hex}"`;
      const common: Record<string, string> = { 'Content-Type': type, 'Cache-Control': mutable ? 'no-cache' : IMMUTABLE, 'Accept-Ranges': 'bytes', Vary: 'Accept-Encoding' };
      const etagOf = (suffix: string): Record<string, string> => (mutable ? {} : { ETag: `"${hex}${suffix}"` });
      const inm = mutable ? undefined : req.headers['if-none-match'];
      if (inm && inm.split(',').some((t) => t.trim().replace(/^W\//, '').replace(/(\.[a-z]+)?"$/, '"') === etag)) {
        res.writeHead(304, { ...common, ETag: etag });
        res.end();
        return;
      }
      const range = parseRange(req.headers.range, size);
      if (range === 'unsatisfiable') {
        res.writeHead(416, { ...common, 'Content-Range': `bytes */${size}` });
        res.end();
        return;
      }
      if (range) {
        res.writeHead(206, { ...common, ...etagOf(''), 'Content-Range': `bytes ${range.start}-${range.end}/${size}`, 'Content-Length': String(range.end - range.start + 1) });
        if (req.method === 'HEAD') return void res.end();
        await stream(res, fileRange(fh, range.start, range.end), 'identity');
        return;
      }
      const enc = req.method === 'HEAD' || size < MIN_COMPRESS ? 'identity' : responseEncoding(req);
      if (enc === 'identity') {
        res.writeHead(200, { ...common, ...etagOf(''), 'Content-Length': String(size) });
        if (req.method === 'HEAD') return void res.end();
        await stream(res, fileRange(fh, 0, size - 1), 'identity');
      } else {
        res.writeHead(200, { ...common, ...etagOf(`.${enc}`), 'Content-Encoding': enc, 'X-Cfsdist-Size': String(size) });
        await stream(res, fileRange(fh, 0, size - 1), enc);
      }
    } finally {
      await fh.close();
    }
  };

  /** A pack of the requested objects. */
  const sendPack = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    plainBody(req, 'pack request');
    const digests = unique(parseDigestList(await readBody(req, MAX_PACK_DIGESTS * 32, 'pack request'), MAX_PACK_DIGESTS));
    // What the response may cost is known before it starts: the sizes of the (distinct) objects.
    let bytes = 0;
    for (let i = 0; i < digests.length; i++) {
      bytes += statSync(store.objects.path(digests[i]!), { throwIfNoEntry: false })?.size ?? 0;
      if (i % 1024 === 1023) await new Promise((r) => setImmediate(r));
    }
    if (bytes > maxPack) throw new HttpStatusError(413, `pack request: ${digests.length} objects of ${bytes} bytes; a pack carries at most ${maxPack} bytes (ask for fewer)`);
    const enc = responseEncoding(req);
    const headers: Record<string, string> = { 'Content-Type': PACK_MEDIA_TYPE, 'Cache-Control': 'no-store' };
    if (enc !== 'identity') headers['Content-Encoding'] = enc;
    res.writeHead(200, headers);
    // Small objects are read whole with synchronous calls (from the page cache that costs about
    // 10 µs; a thread-pool round trip per call costs several times that) and sent in coalesced
    // chunks of about READ_CHUNK — the loop yields between chunks, so no client waits long.
    // Large objects are streamed asynchronously. Bytes held per response: about READ_CHUNK.
    const load = (d: Buffer): Loaded => {
      let fd: number;
      try {
        fd = openSync(store.objects.path(d), 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { d, size: -1 };
        throw err;
      }
      try {
        const size = fstatSync(fd).size;
        if (size > SMALL_OBJECT) return { d, size };
        const data = Buffer.allocUnsafe(size);
        let off = 0;
        while (off < size) {
          const n = readSync(fd, data, off, size - off, off);
          if (n === 0) break;
          off += n;
        }
        return { d, size: off, data: off === size ? data : data.subarray(0, off) };
      } finally {
        closeSync(fd);
      }
    };
    async function* frames(): AsyncGenerator<Buffer> {
      let batch: Buffer[] = [];
      let batchBytes = 0;
      for (const d of digests) {
        if (res.destroyed) return;
        const o = load(d);
        if (o.size < 0) {
          batch.push(frameHeader(o.d, ABSENT));
          batchBytes += 40;
        } else if (o.data) {
          batch.push(frameHeader(o.d, o.size), o.data);
          batchBytes += 40 + o.size;
        } else {
          if (batch.length) yield Buffer.concat(batch);
          batch = [];
          batchBytes = 0;
          let fh: FileHandle;
          try {
            fh = await open(store.objects.path(o.d), 'r');
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
            yield frameHeader(o.d, ABSENT); // removed meanwhile
            continue;
          }
          try {
            yield frameHeader(o.d, o.size);
            if (o.size > 0) yield* fileRange(fh, 0, o.size - 1);
          } finally {
            await fh.close();
          }
        }
        if (batchBytes >= READ_CHUNK) {
          yield Buffer.concat(batch);
          batch = [];
          batchBytes = 0;
        }
      }
      batch.push(trailer());
      yield Buffer.concat(batch);
    }
    await stream(res, frames(), enc);
  };

  const query = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    plainBody(req, 'query');
    const digests = parseDigestList(await readBody(req, MAX_QUERY_DIGESTS * 32, 'query'), MAX_QUERY_DIGESTS);
    // Synchronous stats (about 8 µs each from the dentry cache), yielding every 1024; each
    // distinct digest is looked up once, however often it is asked for.
    const bits: boolean[] = new Array(digests.length).fill(false);
    const seen = new Map<string, boolean>();
    let looked = 0;
    for (let i = 0; i < digests.length; i++) {
      const key = digests[i]!.toString('latin1');
      let present = seen.get(key);
      if (present === undefined) {
        present = statSync(store.objects.path(digests[i]!), { throwIfNoEntry: false })?.isFile() ?? false;
        seen.set(key, present);
        if (++looked % 1024 === 0) await new Promise((r) => setImmediate(r));
      }
      bits[i] = present;
    }
    const body = encodeBitmap(bits);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(body.length), 'X-Cfsdist-Present': String(bits.filter(Boolean).length) });
    res.end(body);
  };

  const putObject = async (req: IncomingMessage, res: ServerResponse, digest: Buffer): Promise<void> => {
    authorize(req);
    const what = `object ${toHex(digest)}`;
    // The size is declared up front (Content-Length, or X-Cfsdist-Size for an encoded body)
    // and the body must match it.
    const declared = Number(req.headers['content-encoding'] ? req.headers['x-cfsdist-size'] : req.headers['content-length']);
    if (!Number.isSafeInteger(declared) || declared < 0) throw new HttpStatusError(411, `${what}: declare the object's size (Content-Length, or X-Cfsdist-Size with a Content-Encoding)`);
    if (declared > maxObject) throw new HttpStatusError(413, `${what}: ${declared} bytes; this server takes objects of at most ${maxObject} bytes`);
    // A generator, not the request itself: addStream destroys a stream it does not need to read
    // (object already present), which would cut the connection before the answer.
    const body = uploadBody(req, what);
    const r = await store.objects.addStream((async function* () {
      yield* body;
    })(), { expected: digest, size: declared });
    if (!req.complete) req.resume();
    sendJson(res, r.existed ? 200 : 201, { digest: toHex(r.digest), size: r.size, existed: r.existed });
  };

  const putPack = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    authorize(req);
    let added = 0;
    let existed = 0;
    for await (const e of readPack(uploadBody(req, 'pack upload'), 'pack upload')) {
      if (e.size > maxObject) throw new HttpStatusError(413, `pack upload: object ${toHex(e.digest)} of ${e.size} bytes; this server takes objects of at most ${maxObject} bytes`);
      let r;
      if (e.size <= SMALL_OBJECT) {
        // Small: hashed in memory first, so a wrong one is refused before it is written.
        const parts: Buffer[] = [];
        for await (const c of e.body) parts.push(c);
        r = await store.objects.addBuffer(Buffer.concat(parts), { expected: e.digest });
      } else r = await store.objects.addStream(e.body, { expected: e.digest, size: e.size });
      if (r.existed) existed++;
      else added++;
    }
    sendJson(res, 200, { added, existed });
  };

  const putImage = async (req: IncomingMessage, res: ServerResponse, digest: Buffer): Promise<void> => {
    authorize(req);
    const hex = toHex(digest);
    const declared = req.headers['content-encoding'] ? undefined : Number(req.headers['content-length'] ?? NaN);
    if (declared !== undefined && declared > maxImage) throw new HttpStatusError(413, `image ${hex}: ${declared} bytes; this server takes images of at most ${maxImage} bytes`);
    const body = uploadBody(req, `image ${hex}`);
    let n = 0;
    async function* limited(): AsyncGenerator<Buffer> {
      for await (const c of body) {
        n += c.length;
        if (n > maxImage) throw new HttpStatusError(413, `image ${hex}: larger than ${maxImage} bytes`);
        yield c;
      }
    }
    const tmp = await writeTemp(store.tmpDir, limited(), { what: `image ${hex}` });
    try {
      if (!tmp.digest.equals(digest)) throw new HttpStatusError(400, `image ${hex}: uploaded content has digest ${toHex(tmp.digest)}`);
      const { readFile } = await import('node:fs/promises');
      const { imageFacts } = await import('../sign/image-facts.js');
      const facts = await imageFacts(await readFile(tmp.path), `image ${hex}`);
      const missing: string[] = [];
      for (const o of facts.objects) if (!statSync(store.objects.path(o.digest), { throwIfNoEntry: false })?.isFile()) missing.push(toHex(o.digest));
      if (missing.length > 0) throw new HttpStatusError(409, `image ${hex}: ${missing.length} object(s) it needs are not on the server (push them first)`, { missing: missing.slice(0, 1000) });
      const existed = await store.hasImage(digest);
      // The objects were written without fsync (one per object is slow): make them durable
      // once, before an image that needs them exists.
      if (!existed) await syncFilesystem(store.dir);
      await store.addImage(tmp.path, facts.objects.map((o) => o.digest));
      sendJson(res, existed ? 200 : 201, { image: hex, objects: facts.count, existed });
    } finally {
      await unlink(tmp.path).catch(() => undefined);
    }
  };

  const servedStatement = (name: string, tag: string): Promise<Buffer | undefined> => tagStatement(store, records, name, tag);

  const getStatement = async (res: ServerResponse, name: string, tag: string): Promise<void> => {
    const b = await servedStatement(name, tag);
    if (!b) throw new HttpStatusError(404, `no signed statement for ${name}:${tag}`);
    res.writeHead(200, { 'Content-Type': STATEMENT_MEDIA_TYPE, 'Content-Length': String(b.length), 'Cache-Control': 'no-cache' });
    res.end(b);
  };

  const putStatement = async (req: IncomingMessage, res: ServerResponse, name: string, tag: string): Promise<void> => {
    authorize(req);
    const bytes = await readBody(req, 1 << 20, `statement ${name}:${tag}`);
    // One push per tag at a time, and gc kept out (the store lock, shared) from the version
    // check to the commit: two racing pushes cannot both pass the check.
    const key = `${name}:${tag}`;
    const prev = statementQueue.get(key) ?? Promise.resolve();
    const mine = prev.catch(() => undefined).then(() => store.withLease(() => acceptStatement(res, name, tag, bytes)));
    statementQueue.set(key, mine);
    try {
      await mine;
    } finally {
      if (statementQueue.get(key) === mine) statementQueue.delete(key);
    }
  };

  const acceptStatement = async (res: ServerResponse, name: string, tag: string, bytes: Buffer): Promise<void> => {
    const s = await import('../sign/index.js');
    const where = `pushed statement for ${name}:${tag}`;
    const st = opts.trusted?.length
      ? s.verifyStatement(bytes, { trusted: opts.trusted, name, tag }, where).statement
      : s.parseStatementPayload(Buffer.from(s.parseEnvelope(bytes, where).payload, 'base64'), where);
    if (st.name !== name || st.tag !== tag) throw new HttpStatusError(400, `${where}: it names ${st.name}:${st.tag}`);
    const image = fromHex(st.image);
    if (!(await store.hasImage(image))) throw new HttpStatusError(409, `${where}: image ${st.image} is not on the server (push it first)`);
    const objs = await store.imageObjects(image);
    const size = (await stat(store.imagePath(image))).size;
    if (objs.length !== st.objectCount || size !== st.imageSize) throw new HttpStatusError(400, `${where}: statement says ${st.objectCount} objects and ${st.imageSize} image bytes, the image has ${objs.length} and ${size}`);
    const cur = await servedStatement(name, tag);
    if (cur) {
      if (cur.equals(bytes)) return sendJson(res, 200, { name, tag, version: st.version, existed: true });
      let curVersion = 0;
      try {
        curVersion = s.parseStatementPayload(Buffer.from(s.parseEnvelope(cur, 'current').payload, 'base64'), 'current').version;
      } catch {
        curVersion = 0; // an unreadable current statement does not block a fresh one
      }
      if (st.version <= curVersion) throw new HttpStatusError(409, `${where}: version ${st.version} is not newer than the server's version ${curVersion}`);
    }
    const meta: ImageMeta = {};
    if (st.config) {
      let cfg: Buffer;
      try {
        cfg = await store.readConfig(st.config.digest);
      } catch {
        throw new HttpStatusError(409, `${where}: config ${st.config.digest} is not on the server (push it first)`);
      }
      if (cfg.length !== st.config.size) throw new HttpStatusError(400, `${where}: statement says the config is ${st.config.size} bytes, it has ${cfg.length}`);
      meta.config = st.config.digest;
    }
    if (st.manifest) meta.manifest = st.manifest;
    if (st.platform) meta.platform = st.platform;
    await commitStatement(store, records, name, tag, image, meta, st.version, bytes);
    sendJson(res, 201, { name, tag, version: st.version, image: st.image });
  };

  const putFsveritySig = async (req: IncomingMessage, res: ServerResponse, digest: Buffer): Promise<void> => {
    authorize(req);
    const der = await readBody(req, 64 * 1024, 'fs-verity signature');
    if (!(await store.hasImage(digest))) throw new HttpStatusError(409, `image ${toHex(digest)} is not on the server`);
    await records.writeFsveritySig(digest, der);
    sendJson(res, 201, { image: toHex(digest) });
  };

  const putConfig = async (req: IncomingMessage, res: ServerResponse, hex: string): Promise<void> => {
    authorize(req);
    const bytes = await readBody(req, MAX_CONFIG_BYTES, `config sha256:${hex}`);
    const got = createHash('sha256').update(bytes).digest('hex');
    if (got !== hex) throw new HttpStatusError(400, `config sha256:${hex}: the body's digest is sha256:${got}`);
    await store.addConfig(bytes);
    sendJson(res, 201, { config: `sha256:${hex}` });
  };

  const listTags = async (res: ServerResponse): Promise<void> => {
    const tags = await store.listTags();
    const out = [];
    for (const t of tags) out.push({ name: t.name, tag: t.tag, image: toHex(t.image), signed: t.meta.statement !== undefined || Boolean(await records.readStatement(t.name, t.tag).catch(() => undefined)) });
    sendJson(res, 200, { tags: out }, { 'Cache-Control': 'no-cache' });
  };

  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://x');
    let parts: string[];
    try {
      parts = url.pathname.split('/').filter((p) => p !== '').map((p) => decodeURIComponent(p));
    } catch {
      throw new HttpStatusError(400, 'malformed percent-encoding in the URL');
    }
    const m = req.method ?? 'GET';
    const isRead = m === 'GET' || m === 'HEAD';
    if (opts.ui !== false && (url.pathname === '/' || url.pathname.startsWith('/ui/'))) {
      uiHandler ??= import('./ui/routes.js').then((ui) => ui.makeUiHandler({ store, records }));
      return (await uiHandler)(req, res, url);
    }
    if (`/${parts[0]}` !== API) throw new HttpStatusError(404, `no such resource ${url.pathname}`);
    const [, kind, a, b] = parts;
    const digestOf = (h: string | undefined): Buffer => {
      if (!h || !isHexDigest(h)) throw new HttpStatusError(400, `not a digest: ${JSON.stringify(h)}`);
      return fromHex(h);
    };
    if (kind === 'tags' && parts.length === 2 && isRead) return listTags(res);
    if (kind === 'statements' && parts.length >= 4) {
      const name = parts.slice(2, -1).join('/');
      const tag = parts[parts.length - 1]!;
      if (isRead) return getStatement(res, name, tag);
      if (m === 'PUT') return putStatement(req, res, name, tag);
    }
    if (kind === 'objects') {
      if (a === 'query' && parts.length === 3 && m === 'POST') return query(req, res);
      if (a === 'pack' && parts.length === 3 && m === 'POST') return sendPack(req, res);
      if (a === 'pack' && parts.length === 3 && m === 'PUT') return putPack(req, res);
      if (parts.length === 3) {
        const d = digestOf(a);
        if (isRead) return sendFile(req, res, store.objects.path(d), a!, 'application/octet-stream');
        if (m === 'PUT') return putObject(req, res, d);
      }
    }
    if (kind === 'configs' && parts.length === 3) {
      if (!a || !isHexDigest(a)) throw new HttpStatusError(400, `not a sha256 digest: ${JSON.stringify(a)}`);
      if (isRead) return sendFile(req, res, store.configPath(`sha256:${a}`), a, 'application/vnd.oci.image.config.v1+json');
      if (m === 'PUT') return putConfig(req, res, a);
    }
    if (kind === 'images') {
      const d = digestOf(a);
      if (parts.length === 3) {
        if (isRead) return sendFile(req, res, store.imagePath(d), a!, 'application/vnd.cfsdist.composefs.erofs');
        if (m === 'PUT') return putImage(req, res, d);
      }
      if (parts.length === 4 && b === 'fsverity-signature') {
        if (isRead) return sendFile(req, res, records.fsveritySigPath(d), a!, 'application/pkcs7-signature', true);
        if (m === 'PUT') return putFsveritySig(req, res, d);
      }
    }
    if (kind === 'deltas' && (parts.length === 4 || (parts.length === 5 && parts[4] === 'zpatch')) && isRead) {
      // metadata delta from image a to image b (src/delta), content-addressed by the pair; /zpatch: the binary one
      const { deltaPath } = await import('../delta/store.js');
      const zp = parts.length === 5;
      return sendFile(req, res, deltaPath(store, digestOf(a), digestOf(b), zp ? 'zpatch' : 'tree'), `${a}-${b}`, zp ? 'application/vnd.cfsdist.delta.zpatch.v1+zstd' : 'application/vnd.cfsdist.delta.v1', true);
    }
    throw new HttpStatusError(m === 'GET' || m === 'HEAD' || m === 'PUT' || m === 'POST' ? 404 : 405, `no such resource ${m} ${url.pathname}`);
  };

  return (req, res) => {
    const t0 = Date.now();
    route(req, res).then(
      () => opts.log?.(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - t0}ms`),
      (err: unknown) => {
        const status = statusOf(err);
        const msg = (err as Error).message ?? String(err);
        opts.log?.(`${req.method} ${req.url} ${status} ${msg}`);
        if (status === 500 && !opts.log) process.stderr.write(`cfsdist serve: ${req.method} ${req.url}: ${msg}\n`);
        const extra = err instanceof HttpStatusError ? err.extra : undefined;
        const headers: Record<string, string> = status === 401 ? { 'WWW-Authenticate': 'Bearer realm="cfsdist"' } : status === 503 ? { 'Retry-After': '1' } : {};
        // What went wrong inside (file names, system errors) stays in the server's log.
        sendError(res, status, status === 500 ? 'internal server error (see the server log)' : msg, extra, headers);
        // A request whose body was not read: drain it (closing now would reset the connection
        // under the client before it reads the answer), but only so much of it.
        if (!req.complete) {
          let drained = 0;
          req.on('data', (c: Buffer) => {
            drained += c.length;
            if (drained > DRAIN_LIMIT) req.socket.destroy();
          });
          req.resume();
        }
      },
    );
  };
}

const answeredSockets = new WeakSet<Duplex>();

/**
 * A request the HTTP parser refused (a 100 KB URL, a malformed line) or a client too slow: answer
 * with a status and close. Unlike Node's default (write, then destroy), a parse error closes
 * gracefully and reads — and drops — what the client is still sending, up to DRAIN_LIMIT bytes
 * or one second: destroying a socket with unread input resets the connection, and the client
 * would see ECONNRESET instead of the 431. The parser reports every further chunk again; the
 * first report is the one answered.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (answeredSockets.has(socket)) return;
  answeredSockets.add(socket);
  // A response already under way on this connection cannot be followed by another.
  const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) return void socket.destroy();
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const head = `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`;
  // A client too slow gains nothing by being read further.
  if (status === 408) return void socket.end(head, () => socket.destroy());
  socket.end(head);
  let drained = 0;
  socket.on('data', (c: Buffer) => {
    drained += c.length;
    if (drained > DRAIN_LIMIT) socket.destroy();
  });
  const timer = setTimeout(() => socket.destroy(), 1000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.resume();
}

/** A listening server. */
export interface RunningServer {
  server: Server;
  host: string;
  port: number;
  /** http(s)://HOST:PORT */
  url: string;
  close(): Promise<void>;
}

/** Create the server and listen on host:port (port 0 = any free port). Slow clients are
 * bounded: request headers must arrive within `headersTimeoutMs`, the whole request within
 * `requestTimeoutMs`, a connection idle for `idleTimeoutMs` is closed, and at most
 * `maxConnections` are open at once. */
export async function startServer(opts: ServerOptions & ListenOptions): Promise<RunningServer> {
  const headersTimeout = opts.headersTimeoutMs ?? 20_000;
  const requestTimeout = Math.max(opts.requestTimeoutMs ?? 600_000, headersTimeout);
  const httpOpts = {
    headersTimeout,
    requestTimeout,
    keepAliveTimeout: 5_000,
    // How often Node checks those two deadlines (its default, 30 s, would let a slow client
    // outstay a short timeout by that much).
    connectionsCheckingInterval: Math.max(100, Math.min(5_000, Math.floor(headersTimeout / 4))),
  };
  const handler = makeHandler(opts);
  const server: Server = opts.tls ? createHttpsServer({ ...httpOpts, cert: opts.tls.cert, key: opts.tls.key }, handler) : createHttpServer(httpOpts, handler);
  server.on('clientError', answerClientError);
  server.timeout = opts.idleTimeoutMs ?? 120_000;
  server.maxConnections = opts.maxConnections ?? 1024;
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port ?? 0;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    server,
    host,
    port,
    url: `${opts.tls ? 'https' : 'http'}://${urlHost}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
