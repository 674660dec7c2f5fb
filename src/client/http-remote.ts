/**
 * The cfsdist HTTP server as a Remote / PushTarget (protocol: src/server/protocol.ts).
 * Objects larger than `largeObject` travel one per GET; smaller ones in packs (one POST naming
 * many digests, one streamed response), so thousands of small files cost a handful of round
 * trips.
 */
import { open } from 'node:fs/promises';
import { toHex } from '../verity/digest.js';
import type { ObjectRef } from '../sign/image-facts.js';
import type { CompressMode, Encoding } from '../server/compress.js';
import { encodingsFor } from '../server/compress.js';
import { API, MAX_QUERY_DIGESTS, decodeBitmap, digestList, frameHeader, readPack, trailer } from '../server/protocol.js';
import { MAX_ENVELOPE_BYTES } from '../sign/dsse.js';
import { HttpClient } from './http.js';
import type { DeltaKind, FetchedObject, OutgoingObject, PushTarget, WireStats } from './remote.js';
import { PullError, TransportError } from './errors.js';
import { isLoopbackHost } from './transport.js';
import type { TransportOptions } from './transport.js';

/** Options of an HttpRemote. */
export interface HttpRemoteOptions {
  timeoutMs?: number;
  compress?: CompressMode;
  token?: string;
  maxSockets?: number;
  /** CAs, --tls-verify and proxies (src/client/transport.ts). */
  transport?: TransportOptions;
}

/** True for a loopback host (127.0.0.0/8, ::1, localhost): transport.ts isLoopbackHost. */
export { isLoopbackHost as isLoopback } from './transport.js';

/**
 * The encoding mode a client uses: `auto` compresses (zstd, else gzip) except to a loopback
 * server, where bandwidth is free and compressing only costs time (measured: bench/pull.ts);
 * an explicit mode is used as given.
 */
export function clientCompressMode(mode: CompressMode, hostname: string): CompressMode {
  return mode === 'auto' && isLoopbackHost(hostname) ? 'none' : mode;
}

function encPath(name: string): string {
  return name.split('/').map(encodeURIComponent).join('/');
}

/** A cfsdist server reached over HTTP(S). */
export class HttpRemote implements PushTarget {
  readonly location: string;
  private http: HttpClient;
  private requests = 0;
  private uploadEncoding: Encoding;

  constructor(base: string, opts: HttpRemoteOptions = {}) {
    const mode = clientCompressMode(opts.compress ?? 'auto', new URL(base).hostname);
    this.http = new HttpClient(base, { timeoutMs: opts.timeoutMs, compress: mode, token: opts.token, maxSockets: opts.maxSockets, transport: opts.transport });
    this.location = this.http.base.origin;
    this.uploadEncoding = encodingsFor(mode)[0] ?? 'identity';
  }

  private req(method: string, path: string, opts: Parameters<HttpClient['request']>[2] = {}) {
    this.requests++;
    return this.http.request(method, path, opts);
  }

  async getStatement(name: string, tag: string): Promise<Buffer | undefined> {
    const r = await this.req('GET', `${API}/statements/${encPath(name)}/${encodeURIComponent(tag)}`, { compressed: false });
    if (r.status === 404) {
      await r.buffer(64 * 1024).catch(() => undefined);
      return undefined;
    }
    if (r.status !== 200) return r.fail(`statement of ${name}:${tag} from ${this.location}`);
    return r.buffer(MAX_ENVELOPE_BYTES);
  }

  async *getImage(digest: Buffer, size: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const hex = toHex(digest);
    const r = await this.req('GET', `${API}/images/${hex}`, { signal });
    if (r.status !== 200) await r.fail(`image ${hex} from ${this.location}`);
    yield* r.body({ exact: size, what: `image ${hex} from ${this.location}` });
  }

  async getFsveritySignature(digest: Buffer): Promise<Buffer | undefined> {
    const r = await this.req('GET', `${API}/images/${toHex(digest)}/fsverity-signature`, { compressed: false });
    if (r.status === 404) {
      await r.buffer(64 * 1024).catch(() => undefined);
      return undefined;
    }
    if (r.status !== 200) return r.fail();
    return r.buffer(64 * 1024);
  }

  async getConfig(digest: string, size: number): Promise<Buffer | undefined> {
    const hex = configHex(digest);
    const r = await this.req('GET', `${API}/configs/${hex}`, { compressed: false });
    if (r.status === 404) {
      await r.buffer(64 * 1024).catch(() => undefined);
      return undefined;
    }
    if (r.status !== 200) return r.fail(`config ${digest} from ${this.location}`);
    // At most the signed size (+1, so that a longer body is seen as longer, not cut to fit).
    return r.buffer(size + 1);
  }

  async putConfig(digest: string, bytes: Buffer): Promise<void> {
    const r = await this.req('PUT', `${API}/configs/${configHex(digest)}`, { body: bytes, headers: { 'Content-Type': 'application/vnd.oci.image.config.v1+json' } });
    if (r.status !== 200 && r.status !== 201) return r.fail(`upload of config ${digest} to ${this.location}`);
    await r.buffer(64 * 1024);
  }

  async getDelta(base: Buffer, target: Buffer, maxBytes: number, kind: DeltaKind = 'tree'): Promise<Buffer | undefined> {
    const r = await this.req('GET', `${API}/deltas/${toHex(base)}/${toHex(target)}${kind === 'zpatch' ? '/zpatch' : ''}`, { compressed: false });
    if (r.status === 404) {
      await r.buffer(64 * 1024).catch(() => undefined);
      return undefined;
    }
    if (r.status !== 200) return r.fail(`delta ${toHex(base)} → ${toHex(target)} from ${this.location}`);
    return r.buffer(maxBytes);
  }

  async has(digests: Buffer[]): Promise<boolean[]> {
    const out: boolean[] = [];
    for (let i = 0; i < digests.length; i += MAX_QUERY_DIGESTS) {
      const part = digests.slice(i, i + MAX_QUERY_DIGESTS);
      const r = await this.req('POST', `${API}/objects/query`, { body: digestList(part), headers: { 'Content-Type': 'application/octet-stream' }, compressed: false });
      if (r.status !== 200) return r.fail(`object query at ${this.location}`);
      out.push(...decodeBitmap(await r.buffer(Math.ceil(part.length / 8)), part.length));
    }
    return out;
  }

  async *fetchObjects(objects: ObjectRef[], signal?: AbortSignal): AsyncGenerator<FetchedObject> {
    if (objects.length === 0) return;
    if (objects.length === 1) {
      const o = objects[0]!;
      const hex = toHex(o.digest);
      const r = await this.req('GET', `${API}/objects/${hex}`, { signal, compressed: o.size >= 1024 });
      if (r.status !== 200) await r.fail(`object ${hex} from ${this.location}`);
      yield { digest: o.digest, size: o.size, body: r.body({ exact: o.size, what: `object ${hex} from ${this.location}` }) };
      return;
    }
    const expected = new Map<string, number>();
    let total = 0;
    for (const o of objects) {
      expected.set(toHex(o.digest), o.size);
      total += o.size + 40;
    }
    const r = await this.req('POST', `${API}/objects/pack`, {
      body: digestList(objects.map((o) => o.digest)),
      headers: { 'Content-Type': 'application/octet-stream' },
      signal,
    });
    if (r.status !== 200) await r.fail(`pack of ${objects.length} objects from ${this.location}`);
    // The pack can be no longer than its frames plus the trailer: more is refused as it arrives.
    yield* readPack(r.body({ max: total + 40, what: `pack from ${this.location}` }), `pack from ${this.location}`, { expected });
  }

  async putObjects(objects: OutgoingObject[], signal?: AbortSignal): Promise<{ added: number; existed: number }> {
    if (objects.length === 0) return { added: 0, existed: 0 };
    async function* frames(): AsyncGenerator<Buffer> {
      for (const o of objects) {
        yield frameHeader(o.digest, o.size);
        let n = 0;
        for await (const c of await o.open()) {
          n += c.length;
          yield c;
        }
        if (n !== o.size) throw new TransportError('LOCAL_CHANGED', `object ${toHex(o.digest)} changed while being sent (${n} bytes, expected ${o.size})`);
      }
      yield trailer();
    }
    const r = await this.req('PUT', `${API}/objects/pack`, { body: frames(), bodyEncoding: this.uploadEncoding, headers: { 'Content-Type': 'application/vnd.cfsdist.pack.v1' }, signal });
    if (r.status !== 200) return r.fail(`upload of ${objects.length} objects to ${this.location}`);
    return JSON.parse((await r.buffer(64 * 1024)).toString('utf8')) as { added: number; existed: number };
  }

  async putImage(digest: Buffer, path: string): Promise<void> {
    const hex = toHex(digest);
    const fh = await open(path, 'r');
    try {
      async function* chunks(): AsyncGenerator<Buffer> {
        for await (const c of fh.createReadStream({ highWaterMark: 256 * 1024, autoClose: false })) yield c as Buffer;
      }
      const r = await this.req('PUT', `${API}/images/${hex}`, { body: chunks(), bodyEncoding: this.uploadEncoding, headers: { 'Content-Type': 'application/vnd.cfsdist.composefs.erofs' } });
      if (r.status !== 200 && r.status !== 201) return r.fail(`upload of image ${hex} to ${this.location}`);
      await r.buffer(64 * 1024);
    } finally {
      await fh.close();
    }
  }

  async putFsveritySignature(digest: Buffer, der: Buffer): Promise<void> {
    const r = await this.req('PUT', `${API}/images/${toHex(digest)}/fsverity-signature`, { body: der, headers: { 'Content-Type': 'application/pkcs7-signature' } });
    if (r.status !== 200 && r.status !== 201) return r.fail();
    await r.buffer(64 * 1024);
  }

  async putStatement(name: string, tag: string, envelope: Buffer): Promise<void> {
    const r = await this.req('PUT', `${API}/statements/${encPath(name)}/${encodeURIComponent(tag)}`, { body: envelope, headers: { 'Content-Type': 'application/vnd.dsse.envelope.v1+json' } });
    if (r.status !== 200 && r.status !== 201) return r.fail(`statement of ${name}:${tag} to ${this.location}`);
    await r.buffer(64 * 1024);
  }

  stats(): WireStats {
    return { ...this.http.wire, requests: this.requests };
  }

  close(): void {
    this.http.close();
  }
}

/** The hex of a `sha256:<hex>` config digest (as the URL names it). */
function configHex(digest: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
  if (!m) throw new PullError('BAD_DIGEST', `not a sha256 config digest: ${JSON.stringify(digest)}`);
  return m[1]!;
}
