/**
 * A client of the OCI distribution spec (v2 API): blobs (HEAD, GET with Range, monolithic and
 * chunked uploads, cross-repository mount), manifests (GET/PUT/HEAD by tag or digest), tag
 * lists (with pagination) and the referrers API. Auth (Basic and Bearer token, auth.ts) is
 * negotiated on the first 401; the registry's credentials go to it only — a token realm on
 * another host, or over plain http outside loopback, never receives them. Redirects of
 * GET/HEAD are followed (without the Authorization header when they leave the registry's
 * origin, as storage back ends want), but never from https down to plain http
 * (INSECURE_REDIRECT); 429 and 5xx
 * answers, and connections that fail before an answer, are retried with exponential backoff
 * (honouring Retry-After) when the request can be replayed (no streamed body).
 *
 * Bytes on the wire are counted per socket (http.ts), requests one by one, for the figures.
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpClient, HttpResponse } from '../client/http.js';
import { TransportError } from '../client/errors.js';
import { isLocalhostName } from '../client/transport.js';
import type { TransportOptions } from '../client/transport.js';
import { basicHeader, findCredentials, parseChallenge } from './auth.js';
import type { Challenge, RegistryAuth } from './auth.js';
import { RegistryError } from './errors.js';

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

/** A manifest as fetched: its bytes, digest and parsed JSON. */
export interface FetchedManifest {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  // The manifest's JSON as parsed; callers check the fields they use.
  json: Record<string, unknown>;
}

/** Options of a RegistryClient. */
export interface RegistryClientOptions {
  /** Credentials for this registry (default: `transport.creds`, else the environment or the
   * Docker config file, auth.ts). */
  auth?: RegistryAuth;
  /** CAs, --tls-verify, proxies and --creds (src/client/transport.ts). */
  transport?: TransportOptions;
  /** Idle timeout per request in ms (default 60 s). */
  timeoutMs?: number;
  /** Most sockets per origin (default 8). */
  maxSockets?: number;
  /** Retries of a replayable request on 429/5xx/connection failure (default 4). */
  retries?: number;
  /** First backoff in ms, doubled each retry (default 200). */
  retryBaseMs?: number;
}

/** Options of one request. */
export interface RegistryRequest {
  /** Token scopes this request needs, e.g. `repository:app:pull`. */
  scopes: string[];
  headers?: Record<string, string>;
  body?: Buffer | AsyncIterable<Buffer>;
  signal?: AbortSignal;
}

/** Manifest media types a client accepts. */
export const MANIFEST_TYPES = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
];

/** Largest manifest or tag list read (the distribution default limit is 4 MiB). */
export const MAX_MANIFEST = 4 << 20;

const RETRY_STATUS = new Set([429, 500, 502, 503, 504]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);

/** `pull` or `pull,push` scope of a repository. */
export function repoScope(repo: string, push = false): string {
  return `repository:${repo}:${push ? 'pull,push' : 'pull'}`;
}

/** Read and drop a (small) body, keeping the connection for reuse. */
export async function drain(r: HttpResponse): Promise<void> {
  await r.buffer(1 << 20).catch(() => undefined);
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function encRepo(repo: string): string {
  return repo.split('/').map(encodeURIComponent).join('/');
}

/** A registry reached at one origin (see the file comment). */
export class RegistryClient {
  /** scheme://host[:port]. */
  readonly origin: string;
  private clients = new Map<string, HttpClient>();
  private creds: RegistryAuth | undefined;
  private credsLooked = false;
  private credsLookup: Promise<RegistryAuth | undefined> | undefined;
  private transport: TransportOptions;
  private basic: string | undefined;
  private bearer: Challenge | undefined;
  private tokens = new Map<string, string>();
  private requests = 0;
  private opts: Required<Omit<RegistryClientOptions, 'auth' | 'transport'>>;

  constructor(origin: string, opts: RegistryClientOptions = {}) {
    this.origin = new URL(origin).origin;
    this.transport = opts.transport ?? {};
    this.creds = opts.auth ?? this.transport.creds;
    this.credsLooked = this.creds !== undefined;
    this.opts = { timeoutMs: opts.timeoutMs ?? 60_000, maxSockets: opts.maxSockets ?? 8, retries: opts.retries ?? 4, retryBaseMs: opts.retryBaseMs ?? 200 };
  }

  private http(origin: string): HttpClient {
    let c = this.clients.get(origin);
    if (!c) {
      c = new HttpClient(origin, { timeoutMs: this.opts.timeoutMs, maxSockets: this.opts.maxSockets, compress: 'none', transport: this.transport });
      this.clients.set(origin, c);
    }
    return c;
  }

  /** This registry's credentials (looked up once). */
  private async credentials(): Promise<RegistryAuth | undefined> {
    if (!this.credsLooked) {
      this.credsLookup ??= findCredentials(new URL(this.origin).host, undefined, { own: true });
      this.creds = await this.credsLookup;
      this.credsLooked = true;
    }
    return this.creds;
  }

  /** What to say when the registry wants credentials we lack. */
  private credentialsHint(): string {
    const host = new URL(this.origin).host;
    const env = process.env.CFSDIST_REGISTRY_USER && process.env.CFSDIST_REGISTRY_HOST ? `; CFSDIST_REGISTRY_USER is set for ${process.env.CFSDIST_REGISTRY_HOST}, not ${host}` : '';
    return `give --creds USER:PASSWORD, set CFSDIST_REGISTRY_USER and CFSDIST_REGISTRY_PASSWORD, or configure ${host} in ~/.docker/config.json (auths, credHelpers or credsStore)${env}`;
  }

  /**
   * The credentials a token realm receives: this registry's when the realm is on the same host
   * and not plain http outside loopback; for a realm on another host, those configured for
   * that host (never this registry's); none over plain http outside loopback.
   */
  private async realmCredentials(realm: URL): Promise<{ creds?: RegistryAuth; withheld?: string }> {
    const reg = new URL(this.origin);
    if (realm.protocol !== 'https:' && !isLocalhostName(realm.hostname)) return { withheld: `the realm ${realm.origin} is plain http` };
    if (realm.hostname.toLowerCase() === reg.hostname.toLowerCase()) return { creds: await this.credentials() };
    const own = await findCredentials(realm.host, undefined, { own: false });
    return own ? { creds: own } : { withheld: `the realm ${realm.origin} is not on the registry's host ${reg.hostname}` };
  }

  /** Bytes and requests so far (all origins: registry, token realm, redirects). */
  stats(): { received: number; sent: number; requests: number } {
    let received = 0;
    let sent = 0;
    for (const c of this.clients.values()) {
      received += c.wire.received;
      sent += c.wire.sent;
    }
    return { received, sent, requests: this.requests };
  }

  /** Close idle connections. */
  close(): void {
    for (const c of this.clients.values()) c.close();
  }

  private authorization(scopes: string[]): string | undefined {
    if (this.bearer) return this.tokens.has(scopes.join(' ')) ? `Bearer ${this.tokens.get(scopes.join(' '))}` : undefined;
    return this.basic;
  }

  /** Answer a 401 challenge: remember Basic credentials, or fetch a token for `scopes`. */
  private async authenticate(ch: Challenge, scopes: string[], what: string): Promise<void> {
    if (ch.scheme === 'basic') {
      const creds = await this.credentials();
      if (!creds) throw new RegistryError('AUTH', `${what}: the registry wants a user name and password (${this.credentialsHint()})`, { status: 401 });
      this.basic = basicHeader(creds);
      return;
    }
    if (ch.scheme !== 'bearer' || !ch.params.realm) throw new RegistryError('AUTH', `${what}: unsupported authentication challenge ${JSON.stringify(ch.scheme)}`, { status: 401 });
    this.bearer = ch;
    const want = new Set(scopes);
    for (const s of (ch.params.scope ?? '').split(' ')) if (s) want.add(s);
    let url: URL;
    try {
      url = new URL(ch.params.realm);
    } catch {
      throw new RegistryError('AUTH', `${what}: the token realm ${JSON.stringify(ch.params.realm)} is not a URL`, { status: 401 });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RegistryError('AUTH', `${what}: the token realm ${url.href} is not http(s)`, { status: 401 });
    if (ch.params.service) url.searchParams.set('service', ch.params.service);
    for (const s of want) url.searchParams.append('scope', s);
    const { creds, withheld } = await this.realmCredentials(url);
    const headers: Record<string, string> = {};
    if (creds) headers.Authorization = basicHeader(creds);
    this.requests++;
    const r = await this.http(url.origin).request('GET', url.pathname + url.search, { headers, compressed: false });
    if (r.status !== 200) {
      const msg = await r.errorMessage();
      const why = withheld ? ` (no credentials were sent: ${withheld})` : '';
      throw new RegistryError('AUTH', `${what}: token server ${url.origin}${url.pathname} refused ${creds ? `user ${creds.username}` : 'anonymous access'}: ${r.status} ${msg}${why}`, { status: r.status });
    }
    let tok: { token?: string; access_token?: string };
    try {
      tok = JSON.parse((await r.buffer(1 << 20)).toString('utf8')) as typeof tok;
    } catch {
      throw new RegistryError('AUTH', `${what}: token server ${url.origin}${url.pathname} answered something other than JSON`);
    }
    const t = tok.token ?? tok.access_token;
    if (!t) throw new RegistryError('AUTH', `${what}: token server ${url.origin}${url.pathname} gave no token`);
    this.tokens.set(scopes.join(' '), t);
  }

  /**
   * One request with auth, redirects and retries (see the file comment). `path` is a path on
   * the registry or an absolute URL (upload locations). Resolves with any final status; the
   * caller checks it.
   */
  async request(method: string, path: string, o: RegistryRequest): Promise<HttpResponse> {
    const replayable = o.body === undefined || Buffer.isBuffer(o.body);
    let url = new URL(path, this.origin);
    let authTried = false;
    let redirects = 0;
    for (let attempt = 0; ; ) {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      const sameOrigin = url.origin === this.origin;
      const authz = sameOrigin ? this.authorization(o.scopes) : undefined;
      if (authz) headers.Authorization = authz;
      if (Buffer.isBuffer(o.body)) headers['Content-Length'] = String(o.body.length);
      const what = `${method} ${url.href}`;
      let r: HttpResponse;
      try {
        r = await this.http(url.origin).request(method, url.pathname + url.search, { headers, body: o.body, compressed: false, signal: o.signal });
      } catch (err) {
        this.requests++;
        const code = (err as { code?: string }).code;
        if (replayable && attempt < this.opts.retries && (code === 'NETWORK' || code === 'TIMEOUT') && !o.signal?.aborted) {
          await sleep(this.backoff(attempt++, undefined), undefined, { signal: o.signal });
          continue;
        }
        throw err;
      }
      this.requests++;
      if (r.status === 401 && sameOrigin) {
        const ch = parseChallenge(String(r.headers['www-authenticate'] ?? ''));
        await r.buffer(64 * 1024).catch(() => undefined);
        if (!ch || authTried) {
          const creds = await this.credentials();
          throw new RegistryError('AUTH', `${what}: 401 unauthorized${creds ? ` (user ${creds.username} refused)` : ` (no credentials: ${this.credentialsHint()})`}`, { status: 401 });
        }
        authTried = true;
        await this.authenticate(ch, o.scopes, what);
        if (!replayable) throw new RegistryError('AUTH', `${what}: authentication was asked for in the middle of a streamed upload`, { status: 401 });
        continue;
      }
      if (REDIRECT_STATUS.has(r.status) && (method === 'GET' || method === 'HEAD') && r.headers.location && redirects < 5) {
        await drain(r);
        redirects++;
        const next = new URL(r.headers.location, url);
        if (url.protocol === 'https:' && next.protocol !== 'https:') throw new RegistryError('INSECURE_REDIRECT', `${what}: the registry redirects to ${next.origin}${next.pathname}, from https down to ${next.protocol.slice(0, -1)}; refused`, { status: r.status });
        url = next;
        continue;
      }
      if (RETRY_STATUS.has(r.status) && replayable && attempt < this.opts.retries) {
        const ra = r.headers['retry-after'];
        await drain(r);
        await sleep(this.backoff(attempt++, ra), undefined, { signal: o.signal });
        continue;
      }
      return r;
    }
  }

  private backoff(attempt: number, retryAfter: string | string[] | undefined): number {
    const ra = Number(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter);
    if (Number.isFinite(ra) && ra >= 0) return Math.min(ra * 1000, 30_000);
    const base = this.opts.retryBaseMs * 2 ** attempt;
    return base / 2 + Math.random() * base / 2;
  }

  /** Throw a RegistryError for an unexpected answer (the registry's error list in the message). */
  async fail(r: HttpResponse, context: string): Promise<never> {
    let msg = `HTTP ${r.status}`;
    try {
      const b = await r.buffer(64 * 1024);
      const j = JSON.parse(b.toString('utf8')) as { errors?: { code?: string; message?: string }[] };
      if (Array.isArray(j.errors) && j.errors.length) msg = `${r.status} ${j.errors.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ')}`;
    } catch {
      /* not the registry's JSON */
    }
    const code = r.status === 401 || r.status === 403 ? 'AUTH' : r.status === 404 ? 'NOT_FOUND' : 'HTTP_STATUS';
    throw new RegistryError(code, `${context}: ${msg}`, { status: r.status });
  }

  /** Check the registry answers the v2 API (GET /v2/, authenticating as needed). */
  async ping(repo: string): Promise<void> {
    const r = await this.request('GET', '/v2/', { scopes: [repoScope(repo)] });
    if (r.status !== 200) return this.fail(r, `${this.origin} is not an OCI distribution registry`);
    await drain(r);
  }

  /** Size of a blob, or undefined if the repository does not have it. */
  async headBlob(repo: string, digest: string, push = false): Promise<number | undefined> {
    const r = await this.request('HEAD', `/v2/${encRepo(repo)}/blobs/${digest}`, { scopes: [repoScope(repo, push)] });
    await drain(r);
    if (r.status === 404) return undefined;
    if (r.status !== 200) return this.fail(r, `HEAD blob ${digest} in ${repo}`);
    return Number(r.headers['content-length'] ?? NaN);
  }

  /** GET a blob, or bytes `range[0]..range[1]` (inclusive) of it. Resolves on 200/206 with
   * the response (a 200 to a Range request means the registry sent the whole blob). */
  async getBlob(repo: string, digest: string, opts: { range?: [number, number]; signal?: AbortSignal } = {}): Promise<HttpResponse> {
    const headers: Record<string, string> = {};
    if (opts.range) headers.Range = `bytes=${opts.range[0]}-${opts.range[1]}`;
    const r = await this.request('GET', `/v2/${encRepo(repo)}/blobs/${digest}`, { scopes: [repoScope(repo)], headers, signal: opts.signal });
    if (r.status === 200 || (r.status === 206 && opts.range)) return r;
    return this.fail(r, `blob ${digest} of ${this.origin}/${repo}`);
  }

  /** A whole blob (at most `max` bytes), checked against its digest. */
  async readBlob(repo: string, digest: string, max: number): Promise<Buffer> {
    const r = await this.getBlob(repo, digest);
    const b = await r.buffer(max);
    if (sha256(b) !== digest) throw new RegistryError('DIGEST_MISMATCH', `blob ${digest} of ${this.origin}/${repo}: content does not match its digest`);
    return b;
  }

  private async startUpload(repo: string, query = ''): Promise<HttpResponse> {
    return this.request('POST', `/v2/${encRepo(repo)}/blobs/uploads/${query}`, { scopes: [repoScope(repo, true)], headers: { 'Content-Length': '0' } });
  }

  private location(r: HttpResponse, what: string): string {
    const loc = r.headers.location;
    if (!loc) throw new RegistryError('HTTP_STATUS', `${what}: the registry gave no upload Location`);
    return new URL(loc, this.origin).href;
  }

  /** Upload a blob in one PUT (POST for a session, PUT with the bytes). Returns its descriptor
   * fields. Does not check whether the blob exists (see `ensureBlob`). */
  async uploadBlob(repo: string, data: Buffer): Promise<{ digest: string; size: number }> {
    const digest = sha256(data);
    const what = `upload of blob ${digest} to ${this.origin}/${repo}`;
    const start = await this.startUpload(repo);
    if (start.status !== 202) return this.fail(start, what);
    await drain(start);
    const loc = this.location(start, what);
    const r = await this.request('PUT', `${loc}${loc.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`, { scopes: [repoScope(repo, true)], body: data, headers: { 'Content-Type': 'application/octet-stream' } });
    if (r.status !== 201) return this.fail(r, what);
    await drain(r);
    return { digest, size: data.length };
  }

  /** Upload a blob unless the repository has it already (HEAD first). */
  async ensureBlob(repo: string, data: Buffer): Promise<{ digest: string; size: number; existed: boolean }> {
    const digest = sha256(data);
    if ((await this.headBlob(repo, digest, true)) === data.length) return { digest, size: data.length, existed: true };
    return { ...(await this.uploadBlob(repo, data)), existed: false };
  }

  /** Upload a stream as a chunked upload: PATCH per `chunkSize` bytes (with Content-Range),
   * then the closing PUT with the digest computed on the way. */
  async uploadChunked(repo: string, src: AsyncIterable<Buffer>, chunkSize = 8 << 20): Promise<{ digest: string; size: number }> {
    const what = `chunked upload to ${this.origin}/${repo}`;
    const start = await this.startUpload(repo);
    if (start.status !== 202) return this.fail(start, what);
    await drain(start);
    let loc = this.location(start, what);
    const h = createHash('sha256');
    let offset = 0;
    let parts: Buffer[] = [];
    let pending = 0;
    const flush = async (): Promise<void> => {
      if (pending === 0) return;
      const chunk = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
      parts = [];
      pending = 0;
      const r = await this.request('PATCH', loc, {
        scopes: [repoScope(repo, true)],
        body: chunk,
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${offset + chunk.length - 1}` },
      });
      if (r.status !== 202) return this.fail(r, `${what} (chunk at ${offset})`);
      await drain(r);
      loc = this.location(r, what);
      offset += chunk.length;
    };
    for await (const c of src) {
      h.update(c);
      parts.push(c);
      pending += c.length;
      if (pending >= chunkSize) await flush();
    }
    await flush();
    const digest = `sha256:${h.digest('hex')}`;
    const r = await this.request('PUT', `${loc}${loc.includes('?') ? '&' : '?'}digest=${encodeURIComponent(digest)}`, { scopes: [repoScope(repo, true)], headers: { 'Content-Length': '0' } });
    if (r.status !== 201) return this.fail(r, what);
    await drain(r);
    return { digest, size: offset };
  }

  /** Cross-repository mount of `digest` from `from` into `repo`; false when the registry
   * declined (it then opened an upload session, which is cancelled). */
  async mountBlob(repo: string, digest: string, from: string): Promise<boolean> {
    const r = await this.request('POST', `/v2/${encRepo(repo)}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`, {
      scopes: [repoScope(repo, true), repoScope(from)],
      headers: { 'Content-Length': '0' },
    });
    if (r.status === 201) {
      await drain(r);
      return true;
    }
    if (r.status === 202) {
      await drain(r);
      const loc = this.location(r, `mount of ${digest}`);
      const d = await this.request('DELETE', loc, { scopes: [repoScope(repo, true)] });
      await drain(d);
      return false;
    }
    return this.fail(r, `mount of blob ${digest} from ${from} into ${repo}`);
  }

  /** A manifest by tag or digest, or undefined on 404. Its digest is computed from the bytes
   * and must equal `ref` when `ref` is a digest. */
  async getManifest(repo: string, ref: string, accept: string[] = MANIFEST_TYPES): Promise<FetchedManifest | undefined> {
    const r = await this.request('GET', `/v2/${encRepo(repo)}/manifests/${encodeURIComponent(ref)}`, { scopes: [repoScope(repo)], headers: { Accept: accept.join(', ') } });
    if (r.status === 404) {
      await drain(r);
      return undefined;
    }
    if (r.status !== 200) return this.fail(r, `manifest ${repo}:${ref} at ${this.origin}`);
    const bytes = await r.buffer(MAX_MANIFEST);
    const digest = sha256(bytes);
    if (ref.startsWith('sha256:') && digest !== ref) throw new RegistryError('DIGEST_MISMATCH', `manifest ${repo}@${ref} at ${this.origin}: content has digest ${digest}`);
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new RegistryError('BAD_MANIFEST', `manifest ${repo}:${ref} at ${this.origin} is not JSON`);
    }
    const mediaType = (typeof json.mediaType === 'string' ? json.mediaType : String(r.headers['content-type'] ?? '')).split(';')[0]!.trim();
    return { digest, mediaType, bytes, json };
  }

  /** PUT a manifest under a tag or its digest. `subject`: the registry answered with an
   * OCI-Subject header (it indexes referrers itself). */
  async putManifest(repo: string, ref: string, bytes: Buffer, mediaType: string): Promise<{ digest: string; subject: boolean }> {
    const r = await this.request('PUT', `/v2/${encRepo(repo)}/manifests/${encodeURIComponent(ref)}`, { scopes: [repoScope(repo, true)], body: bytes, headers: { 'Content-Type': mediaType } });
    if (r.status !== 201 && r.status !== 200) return this.fail(r, `manifest ${repo}:${ref} to ${this.origin}`);
    await drain(r);
    return { digest: sha256(bytes), subject: r.headers['oci-subject'] !== undefined };
  }

  /** Delete a manifest (by digest). */
  async deleteManifest(repo: string, digest: string): Promise<void> {
    const r = await this.request('DELETE', `/v2/${encRepo(repo)}/manifests/${digest}`, { scopes: [repoScope(repo, true)] });
    if (r.status !== 202 && r.status !== 200 && r.status !== 404) return this.fail(r, `delete of ${repo}@${digest}`);
    await drain(r);
  }

  /** Tags of a repository ([] when it does not exist); follows `Link` pagination. */
  async listTags(repo: string): Promise<string[]> {
    const out: string[] = [];
    let path: string | undefined = `/v2/${encRepo(repo)}/tags/list?n=1000`;
    for (let pages = 0; path && pages < 100; pages++) {
      const r = await this.request('GET', path, { scopes: [repoScope(repo)] });
      if (r.status === 404) {
        await drain(r);
        return out;
      }
      if (r.status !== 200) return this.fail(r, `tags of ${repo} at ${this.origin}`);
      const j = JSON.parse((await r.buffer(MAX_MANIFEST)).toString('utf8')) as { tags?: string[] | null };
      out.push(...(j.tags ?? []));
      const link = String(r.headers.link ?? '');
      const m = /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
      path = m ? m[1] : undefined;
    }
    return out;
  }

  /** Referrers of a manifest through the referrers API, or undefined when the registry has no
   * such API (404 — the caller then uses the `sha256-<hex>` tag schema). */
  async referrers(repo: string, digest: string, artifactType?: string): Promise<Descriptor[] | undefined> {
    const q = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
    const r = await this.request('GET', `/v2/${encRepo(repo)}/referrers/${digest}${q}`, { scopes: [repoScope(repo)], headers: { Accept: 'application/vnd.oci.image.index.v1+json' } });
    if (r.status === 404 || r.status === 400 || r.status === 405) {
      await drain(r);
      return undefined;
    }
    if (r.status !== 200) return this.fail(r, `referrers of ${repo}@${digest}`);
    const ctype = String(r.headers['content-type'] ?? '');
    const b = await r.buffer(MAX_MANIFEST);
    if (!ctype.includes('json')) return undefined;
    const j = JSON.parse(b.toString('utf8')) as { manifests?: Descriptor[] };
    const list = Array.isArray(j.manifests) ? j.manifests : [];
    return artifactType ? list.filter((d) => d.artifactType === artifactType) : list;
  }
}

/** Translate a transport failure into a message naming the registry (kept as is otherwise). */
export function isTransportError(e: unknown): e is TransportError {
  return e instanceof TransportError;
}
