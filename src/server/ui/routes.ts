/**
 * The read-only web page of `cfsdist serve` (issue 21): `GET /` (the page), `/ui/app.js`,
 * `/ui/app.css`, `/ui/chart.js` (Chart.js, from node_modules) and the JSON endpoints under
 * `/ui/api/`. Everything comes from the store's metadata: tags, statements, images and their
 * object lists; file contents only for `/ui/api/file`. Nothing here names a store path, a
 * token or a key other than a public keyid.
 */
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { Store } from '../../store/store.js';
import type { SignRecords } from '../../sign/records.js';
import { tagStatement } from '../../sign/records.js';
import { parseEnvelope } from '../../sign/dsse.js';
import { parseStatementPayload } from '../../sign/statement.js';
import { ErofsImage, FileSource } from '../../erofs/reader.js';
import { LAYOUT_CHUNK_BASED } from '../../erofs/format.js';
import { fromHex, isHexDigest, toHex } from '../../verity/digest.js';
import { HttpStatusError, sendJson } from '../http-util.js';
import { deltaPath } from '../../delta/store.js';
import { zpatchAvailable } from '../../delta/zpatch.js';
import { APP_CSS, APP_JS, PAGE_HTML } from './page.js';
import { S_IFDIR, S_IFMT, S_IFREG, fileTypeOf } from '../../tree/tree.js';
import type { FileType } from '../../tree/tree.js';

/** What the UI needs from the server. */
export interface UiContext {
  store: Store;
  records: SignRecords;
}

/** Most entries one tree page may carry. */
export const MAX_TREE_LIMIT = 1000;
/** A statement expiring within this many milliseconds is marked on the page. */
export const EXPIRY_WARNING_MS = 7 * 24 * 3600 * 1000;
/** Most images of one name the sharing view compares. */
const MAX_SHARE_IMAGES = 32;


/** Headers of every UI response: no framing, no sniffing, scripts only from this server. */
const SECURITY: Record<string, string> = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
};

/** Facts of one image, computed once (images are immutable). */
interface ImageFacts {
  size: number;
  entries: number;
  /** Object digest (hex) → size in bytes (-1 when the object is missing from the store). */
  objects: Map<string, number>;
  objectBytes: number;
}

/** Bytes as text: UTF-8 when they are valid UTF-8, else undefined. */
function utf8(b: Buffer): string | undefined {
  const s = b.toString('utf8');
  return Buffer.from(s, 'utf8').equals(b) ? s : undefined;
}

/** A name for JSON: its text (lossy for non-UTF-8) and, when lossy, its exact bytes in hex. */
function nameFields(b: Buffer): { name: string; nameHex?: string } {
  const s = utf8(b);
  return s !== undefined ? { name: s } : { name: b.toString('utf8'), nameHex: b.toString('hex') };
}

/** An xattr value for JSON: text when printable UTF-8, else hex. */
function valueFields(b: Buffer): { value: string } | { valueHex: string } {
  const s = utf8(b);
  // eslint-disable-next-line no-control-regex
  return s !== undefined && !/[\x00-\x08\x0e-\x1f\x7f]/.test(s) ? { value: s } : { valueHex: b.toString('hex') };
}

/** The type names of the JSON API, by tree file type. */
const TYPE_NAMES: Record<FileType, string> = { reg: 'file', dir: 'dir', lnk: 'symlink', chr: 'chardev', blk: 'blockdev', fifo: 'fifo', sock: 'socket' };

function typeName(mode: number): string {
  const t = fileTypeOf(mode);
  return t ? TYPE_NAMES[t] : 'unknown';
}

/** Count and bytes of some objects (a missing object counts no bytes). */
interface ObjectTally {
  count: number;
  bytes: number;
}

/** The objects of `b` split by whether `a` has them (`a` undefined: none has). */
function splitObjects(a: ImageFacts | undefined, b: ImageFacts): { inA: ObjectTally; notInA: ObjectTally } {
  const inA = { count: 0, bytes: 0 };
  const notInA = { count: 0, bytes: 0 };
  for (const [k, s] of b.objects) {
    const t = a?.objects.has(k) ? inA : notInA;
    t.count++;
    t.bytes += Math.max(0, s);
  }
  return { inA, notInA };
}

/** A non-negative integer query parameter. */
function intParam(url: URL, key: string, dflt: number, max: number): number {
  const v = url.searchParams.get(key);
  if (v === null || v === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new HttpStatusError(400, `${key} must be a whole number`);
  if (n > max) throw new HttpStatusError(400, `${key} may be at most ${max}`);
  return n;
}

/** The path a request names: `hexpath` (exact bytes) or `path` (UTF-8). */
function pathParam(url: URL): Buffer {
  const hex = url.searchParams.get('hexpath');
  if (hex !== null) {
    if (!/^(?:[0-9a-f]{2})*$/i.test(hex)) throw new HttpStatusError(400, 'hexpath must be hex');
    return Buffer.from(hex, 'hex');
  }
  return Buffer.from(url.searchParams.get('path') ?? '/', 'utf8');
}

/** The UI's request handler factory. */
export function makeUiHandler(ctx: UiContext): (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<void> {
  const { store, records } = ctx;
  const facts = new Map<string, ImageFacts>();

  const send = (res: ServerResponse, type: string, body: string | Buffer, cache = 'no-cache'): void => {
    const b = typeof body === 'string' ? Buffer.from(body) : body;
    res.writeHead(200, { ...SECURITY, 'Content-Type': type, 'Content-Length': String(b.length), 'Cache-Control': cache });
    res.end(b);
  };
  const json = (res: ServerResponse, value: unknown): void => sendJson(res, 200, value, { ...SECURITY, 'Cache-Control': 'no-cache' });

  /** The image a query parameter names (`orNone`: the message says `none` is allowed too). */
  const imageParam = async (url: URL, key: string, orNone = false): Promise<Buffer> => {
    const h = url.searchParams.get(key) ?? '';
    if (!isHexDigest(h)) throw new HttpStatusError(400, `${key} must be an image digest (64 hex)${orNone ? ' or none' : ''}`);
    const d = fromHex(h);
    if (!(await store.hasImage(d))) throw new HttpStatusError(404, `image ${h} not found`);
    return d;
  };
  const imageOf = (url: URL): Promise<Buffer> => imageParam(url, 'image');

  /** The image read lazily; errors name its digest, not its path in the store. */
  const openImage = (d: Buffer): ErofsImage => {
    const src = FileSource.open(store.imagePath(d), 4 << 20);
    try {
      return new ErofsImage(src, `image ${toHex(d)}`);
    } catch (err) {
      src.close();
      throw err;
    }
  };

  const factsOf = async (d: Buffer): Promise<ImageFacts> => {
    const key = toHex(d);
    const known = facts.get(key);
    if (known) return known;
    const path = store.imagePath(d);
    const size = (await stat(path)).size;
    const img = openImage(d);
    let entries: number;
    try {
      entries = img.info.inos;
    } finally {
      img.close();
    }
    const objects = new Map<string, number>();
    let objectBytes = 0;
    let n = 0;
    for (const o of await store.imageObjects(d)) {
      const s = (await stat(store.objects.path(o)).catch(() => undefined))?.size ?? -1;
      objects.set(toHex(o), s);
      if (s > 0) objectBytes += s;
      if (++n % 1024 === 0) await new Promise((r) => setImmediate(r));
    }
    const f = { size, entries, objects, objectBytes };
    facts.set(key, f);
    return f;
  };

  /** The signed statement facts of NAME:TAG, or undefined when unsigned or unreadable. */
  const statementOf = async (name: string, tag: string): Promise<Record<string, unknown> | undefined> => {
    const bytes = await tagStatement(store, records, name, tag).catch(() => undefined);
    if (!bytes) return undefined;
    try {
      const env = parseEnvelope(bytes, `statement ${name}:${tag}`);
      const st = parseStatementPayload(Buffer.from(env.payload, 'base64'), `statement ${name}:${tag}`);
      return {
        version: st.version,
        keyids: env.signatures.map((s) => s.keyid),
        created: new Date(st.created * 1000).toISOString(),
        expires: new Date(st.expires * 1000).toISOString(),
        expired: st.expires * 1000 < Date.now(),
        expiresSoon: st.expires * 1000 >= Date.now() && st.expires * 1000 - Date.now() < EXPIRY_WARNING_MS,
        image: st.image,
      };
    } catch (err) {
      return { error: (err as Error).message.slice(0, 200) };
    }
  };

  const images = async (res: ServerResponse): Promise<void> => {
    const out = [];
    for (const t of await store.listTags()) {
      const f = await factsOf(t.image).catch(() => undefined);
      const st = await statementOf(t.name, t.tag);
      out.push({
        name: t.name,
        tag: t.tag,
        image: toHex(t.image),
        platform: t.meta.platform,
        config: t.meta.config,
        statement: st,
        history: await records.historyVersions(t.name, t.tag).catch(() => [] as number[]),
        imageSize: f?.size,
        entries: f?.entries,
        objects: f?.objects.size,
        objectBytes: f?.objectBytes,
      });
    }
    json(res, { images: out });
  };

  const tree = async (res: ServerResponse, url: URL): Promise<void> => {
    const d = await imageOf(url);
    const path = pathParam(url);
    const offset = intParam(url, 'offset', 0, Number.MAX_SAFE_INTEGER);
    const limit = intParam(url, 'limit', 500, MAX_TREE_LIMIT);
    const q = url.searchParams.get('q') ?? '';
    const img = openImage(d);
    try {
      const nid = img.lookup(path);
      if (nid === undefined) throw new HttpStatusError(404, 'no such path in the image');
      const dir = img.stat(nid);
      if ((dir.mode & S_IFMT) !== S_IFDIR) throw new HttpStatusError(400, 'not a directory');
      let all = img.readdir(nid);
      const qb = Buffer.from(q, 'utf8');
      if (qb.length > 0) all = all.filter((e) => e.name.includes(qb));
      const page = all.slice(offset, offset + limit).map((e) => {
        const st = img.stat(e.nid);
        const type = typeName(st.mode);
        const row: Record<string, unknown> = {
          ...nameFields(e.name),
          type,
          mode: (st.mode & 0o7777).toString(8).padStart(4, '0'),
          uid: st.uid,
          gid: st.gid,
          size: st.size,
          nlink: st.nlink,
        };
        if (type === 'symlink') row.target = nameFields(img.readlink(e.nid)).name;
        if (type === 'file') {
          if (st.digest) row.object = toHex(st.digest);
          else if (st.payload) row.object = st.payload.toString('latin1').replace('/', '');
          row.storage = st.raw.layout === LAYOUT_CHUNK_BASED ? 'object' : 'inline';
        }
        if (st.xattrs.length > 0) row.xattrs = st.xattrs.map((x) => ({ key: nameFields(x.key).name, ...valueFields(x.value) }));
        return row;
      });
      json(res, { image: toHex(d), path: nameFields(path).name, pathHex: path.toString('hex'), total: all.length, offset, limit, entries: page });
    } finally {
      img.close();
    }
  };

  const file = async (req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> => {
    const d = await imageOf(url);
    const path = pathParam(url);
    const img = openImage(d);
    let objectPath: string | undefined;
    let inline: Buffer | undefined;
    let size: number;
    try {
      const nid = img.lookup(path);
      if (nid === undefined) throw new HttpStatusError(404, 'no such path in the image');
      const st = img.stat(nid);
      if ((st.mode & S_IFMT) !== S_IFREG) throw new HttpStatusError(400, 'not a regular file');
      size = st.size;
      if (st.raw.layout === LAYOUT_CHUNK_BASED) {
        if (!st.digest) throw new HttpStatusError(404, 'the file names no object digest');
        objectPath = store.objects.path(st.digest);
      } else inline = img.readData(nid);
    } finally {
      img.close();
    }
    const base = path.subarray(path.lastIndexOf(0x2f) + 1);
    const ascii = base.toString('latin1').replace(/[^A-Za-z0-9._-]/g, '_') || 'file';
    const headers: Record<string, string> = {
      ...SECURITY,
      'Content-Type': 'application/octet-stream',
      'Content-Disposition': `attachment; filename="${ascii}"; filename*=UTF-8''${[...base].map((c) => '%' + c.toString(16).padStart(2, '0')).join('')}`,
      'Cache-Control': 'no-cache',
      'Content-Length': String(size),
    };
    if (inline) {
      res.writeHead(200, headers);
      res.end(req.method === 'HEAD' ? undefined : inline);
      return;
    }
    const s = await stat(objectPath!).catch(() => undefined);
    if (!s) throw new HttpStatusError(404, 'the file\'s object is not in this store');
    headers['Content-Length'] = String(s.size);
    res.writeHead(200, headers);
    if (req.method === 'HEAD') return void res.end();
    await pipeline(createReadStream(objectPath!, { highWaterMark: 256 * 1024 }), res);
  };

  /** The server's metadata deltas from BASE to TARGET: the sizes of the tree and zpatch ones
   * that exist, and the one a pull would take (zpatch when zstd is installed, as tryDelta in
   * src/client/pull.ts), or undefined when there is none. */
  const deltaOf = async (base: Buffer, target: Buffer, imageBytes: number): Promise<Record<string, unknown> | undefined> => {
    if (base.equals(target)) return undefined;
    const size = async (kind: 'tree' | 'zpatch'): Promise<number | undefined> => (await stat(deltaPath(store, base, target, kind)).catch(() => undefined))?.size;
    const tree = await size('tree');
    const zpatch = await size('zpatch');
    const kind = zpatch !== undefined && zpatchAvailable() ? 'zpatch' : tree !== undefined ? 'tree' : undefined;
    if (!kind) return undefined;
    const bytes = kind === 'zpatch' ? zpatch! : tree!;
    return { base: toHex(base), kind, bytes, imageBytes, ...(tree !== undefined ? { treeBytes: tree } : {}), ...(zpatch !== undefined ? { zpatchBytes: zpatch } : {}) };
  };

  /** What a pull of WANT fetches into a store holding HAVE's objects (or nothing). */
  const plan = async (res: ServerResponse, url: URL): Promise<void> => {
    const haveText = url.searchParams.get('have') ?? 'none';
    const have = haveText === 'none' || haveText === '' ? undefined : await imageParam(url, 'have', true);
    const want = await imageParam(url, 'want');
    const w = await factsOf(want);
    const { inA: present, notInA: fetch } = splitObjects(have ? await factsOf(have) : undefined, w);
    const same = have !== undefined && have.equals(want);
    const imageBytes = same ? 0 : w.size;
    const delta = have && !same ? await deltaOf(have, want, w.size) : undefined;
    const metadataBytes = delta ? (delta.bytes as number) : imageBytes;
    const tags = (await store.listTags()).filter((t) => t.image.equals(want)).map((t) => `${t.name}:${t.tag}`);
    json(res, {
      have: have ? toHex(have) : 'none',
      want: toHex(want),
      wantTags: tags,
      needed: { count: w.objects.size, bytes: w.objectBytes },
      present,
      fetch,
      imageBytes,
      delta: delta ?? null,
      transferBytes: fetch.bytes + metadataBytes,
    });
  };

  /** The OCI configs of the tags that point at an image (tag meta `config`). */
  const config = async (res: ServerResponse, url: URL): Promise<void> => {
    const d = await imageOf(url);
    const out = [];
    for (const t of await store.listTags()) {
      if (!t.image.equals(d) || !t.meta.config) continue;
      const row: Record<string, unknown> = { name: t.name, tag: t.tag, digest: t.meta.config };
      try {
        const v = JSON.parse((await store.readConfig(t.meta.config)).toString('utf8')) as { config?: Record<string, unknown>; architecture?: unknown; os?: unknown; created?: unknown };
        const c = v.config ?? {};
        const strings = (x: unknown): string[] | undefined => (Array.isArray(x) ? x.filter((e): e is string => typeof e === 'string') : undefined);
        const str = (x: unknown): string | undefined => (typeof x === 'string' ? x : undefined);
        row.os = str(v.os);
        row.architecture = str(v.architecture);
        row.created = str(v.created);
        row.entrypoint = strings(c.Entrypoint);
        row.cmd = strings(c.Cmd);
        row.env = strings(c.Env);
        row.user = str(c.User);
        row.workingDir = str(c.WorkingDir);
        const labels: Record<string, string> = {};
        if (c.Labels && typeof c.Labels === 'object') for (const [k, val] of Object.entries(c.Labels as Record<string, unknown>)) if (typeof val === 'string') labels[k] = val;
        row.labels = labels;
      } catch (err) {
        const msg = (err as Error).message;
        row.error = msg.includes('not in the store') ? 'the config is not in this store' : msg.includes('does not match') ? 'the stored config is corrupt' : `unreadable config: ${msg.slice(0, 120)}`;
      }
      out.push(row);
    }
    json(res, { image: toHex(d), configs: out });
  };

  const share = async (res: ServerResponse, url: URL): Promise<void> => {
    const name = url.searchParams.get('name') ?? '';
    const tags = (await store.listTags()).filter((t) => t.name === name);
    if (tags.length === 0) throw new HttpStatusError(404, `no tags of ${JSON.stringify(name.slice(0, 100))}`);
    const byImage = new Map<string, { image: string; tags: string[]; objects: number; objectBytes: number }>();
    for (const t of tags) {
      const h = toHex(t.image);
      const e = byImage.get(h);
      if (e) e.tags.push(t.tag);
      else if (byImage.size < MAX_SHARE_IMAGES) {
        const f = await factsOf(t.image);
        byImage.set(h, { image: h, tags: [t.tag], objects: f.objects.size, objectBytes: f.objectBytes });
      }
    }
    const list = [...byImage.values()];
    const pairs = [];
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = await factsOf(fromHex(list[i]!.image));
        const b = await factsOf(fromHex(list[j]!.image));
        const shared = splitObjects(b, a).inA;
        pairs.push({ a: list[i]!.image, b: list[j]!.image, sharedObjects: shared.count, sharedBytes: shared.bytes });
      }
    }
    const result: Record<string, unknown> = { name, images: list, pairs };
    const from = url.searchParams.get('from');
    const to = url.searchParams.get('to');
    if (from && to) {
      const pick = (v: string): Buffer => {
        const t = tags.find((x) => x.tag === v);
        if (t) return t.image;
        if (isHexDigest(v) && byImage.has(v)) return fromHex(v);
        throw new HttpStatusError(404, `${JSON.stringify(v.slice(0, 100))} is neither a tag of ${name} nor one of its images`);
      };
      const ad = pick(from);
      const bd = pick(to);
      const a = await factsOf(ad);
      const b = await factsOf(bd);
      const { inA: kept, notInA: added } = splitObjects(a, b);
      const removed = splitObjects(b, a).notInA;
      const delta = await deltaOf(ad, bd, b.size);
      result.update = { from, to, added: added.count, addedBytes: added.bytes, removed: removed.count, removedBytes: removed.bytes, kept: kept.count, keptBytes: kept.bytes, imageBytes: ad.equals(bd) ? 0 : b.size, delta: delta ?? null };
    }
    json(res, result);
  };

  let chartJs: Buffer | undefined;
  const chart = async (res: ServerResponse): Promise<void> => {
    if (!chartJs) {
      const main = createRequire(import.meta.url).resolve('chart.js');
      chartJs = await readFile(join(dirname(main), 'chart.umd.js'));
    }
    send(res, 'text/javascript; charset=utf-8', chartJs, 'public, max-age=3600');
  };

  return async (req, res, url) => {
    const m = req.method ?? 'GET';
    if (m !== 'GET' && m !== 'HEAD') throw new HttpStatusError(405, 'the web page is read-only');
    const p = url.pathname;
    if (p === '/' || p === '/ui/' || p === '/ui/index.html') return send(res, 'text/html; charset=utf-8', PAGE_HTML);
    if (p === '/ui/app.js') return send(res, 'text/javascript; charset=utf-8', APP_JS);
    if (p === '/ui/app.css') return send(res, 'text/css; charset=utf-8', APP_CSS);
    if (p === '/ui/chart.js') return chart(res);
    if (p === '/ui/api/images') return images(res);
    if (p === '/ui/api/tree') return tree(res, url);
    if (p === '/ui/api/file') return file(req, res, url);
    if (p === '/ui/api/share') return share(res, url);
    if (p === '/ui/api/plan') return plan(res, url);
    if (p === '/ui/api/config') return config(res, url);
    throw new HttpStatusError(404, `no such resource ${p}`);
  };
}
