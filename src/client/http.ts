/**
 * A small HTTP/1.1 client over node:http(s) for the cfsdist protocol: keep-alive sockets, an
 * idle timeout on every request (no byte for `timeoutMs` fails the request with
 * TransportError TIMEOUT, whatever phase it is in), bodies decoded as streams (zstd/gzip) and
 * bounded by the caller, and a count of the bytes that crossed the wire (socket level, headers
 * included) for the bytes-moved figures.
 *
 * Network settings come from one TransportOptions (transport.ts): the CAs trusted and whether
 * certificates are checked (a refused certificate is TransportError TLS_CERT naming the host),
 * and the proxy of the environment — http:// targets through an HTTP proxy as absolute-URI
 * requests, https:// targets through a CONNECT tunnel with TLS end to end.
 *
 * Long-lived clients (a lazy FUSE mount keeps one for days) stay small: keep-alive sockets
 * left idle for `freeSocketTimeoutMs` are closed by the agent, and closed sockets leave the
 * byte-count set (their bytes move into running totals). Besides the idle timeout, a body that
 * delivers fewer than `lowSpeedBytes` in any `timeoutMs` spent waiting for it fails with
 * TransportError TOO_SLOW: a server trickling a byte a second never trips the idle timeout.
 */
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { ClientRequest, ClientRequestArgs, IncomingHttpHeaders, IncomingMessage, RequestOptions as NodeRequestOptions } from 'node:http';
import type { Socket } from 'node:net';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { acceptEncoding, decoder, encoder } from '../server/compress.js';
import type { CompressMode, Encoding } from '../server/compress.js';
import { TransportError } from './errors.js';
import { certificateError, isCertificateError, proxyAuthorization, proxyFor, tlsOptionsOf } from './transport.js';
import type { TransportOptions } from './transport.js';

/** Options of an HttpClient. */
export interface HttpClientOptions {
  /** Idle timeout per request in ms (default 30 s). */
  timeoutMs?: number;
  /** Most sockets to the server (default 8). */
  maxSockets?: number;
  /** Bearer token sent with every request. */
  token?: string;
  /** Encodings offered for responses (default auto). */
  compress?: CompressMode;
  /** CAs, certificate checking and proxy environment (transport.ts). */
  transport?: TransportOptions;
  /** Idle keep-alive sockets are closed after this many ms (default 15 s). */
  freeSocketTimeoutMs?: number;
  /** Low-speed floor: a body delivering fewer bytes than this in any `timeoutMs` of waiting
   * fails with TOO_SLOW (default 1024; 0 turns the check off). */
  lowSpeedBytes?: number;
}

/** Options of one request. */
export interface RequestOptions {
  body?: Buffer | AsyncIterable<Buffer>;
  /** Encode the body with this Content-Encoding. */
  bodyEncoding?: Encoding;
  headers?: Record<string, string>;
  /** Offer compressed responses (default true). */
  compressed?: boolean;
  signal?: AbortSignal;
}

const AGENT_OPTS = { keepAlive: true, keepAliveMsecs: 1000 };

/** What a response shares with its request: why it failed, and the low-speed floor. */
interface RequestState {
  timedOut: boolean;
  timeoutMs: number;
  aborted: boolean;
  lowSpeedBytes: number;
  /** Set when the low-speed floor was hit. */
  tooSlow?: TransportError;
}

/**
 * The low-speed floor of one body: the clock runs only while the reader waits for data (a slow
 * consumer is not the server's fault); fewer than `floor` bytes in `windowMs` of waiting calls
 * `onSlow`. Reaching the floor starts a new window.
 */
class SpeedFloor {
  private waited = 0;
  private bytes = 0;
  private since = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly floor: number, private readonly windowMs: number, private readonly onSlow: () => void) {}

  /** The reader starts waiting for the next chunk. */
  waiting(): void {
    this.since = Date.now();
    this.timer = setTimeout(this.onSlow, Math.max(0, this.windowMs - this.waited));
  }

  /** A chunk of `n` bytes (0 at the end) arrived. */
  arrived(n: number): void {
    this.stop();
    this.waited += Date.now() - this.since;
    this.bytes += n;
    if (this.bytes >= this.floor) {
      this.bytes = 0;
      this.waited = 0;
    }
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** An https agent whose connections are CONNECT tunnels through `proxy`, TLS end to end. */
class TunnelAgent extends HttpsAgent {
  constructor(
    private readonly proxy: URL,
    private readonly tls: { ca: string[]; rejectUnauthorized: boolean },
    opts: ConstructorParameters<typeof HttpsAgent>[0],
  ) {
    super({ ...opts, ...tls });
  }

  override createConnection(options: NodeRequestOptions, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const host = String(options.host ?? options.hostname ?? 'localhost').replace(/^\[|\]$/g, '');
    const port = Number(options.port ?? 443);
    const target = `${isIP(host) === 6 ? `[${host}]` : host}:${port}`;
    const via = `CONNECT ${target} through the proxy ${this.proxy.origin}`;
    const headers: Record<string, string> = { Host: target };
    const pa = proxyAuthorization(this.proxy);
    if (pa) headers['Proxy-Authorization'] = pa;
    const doRequest = this.proxy.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = doRequest({ host: this.proxy.hostname, port: this.proxy.port || (this.proxy.protocol === 'https:' ? 443 : 80), method: 'CONNECT', path: target, headers, agent: false, ...(this.proxy.protocol === 'https:' ? this.tls : {}) });
    const done = (err: Error | null, s?: Duplex): void => {
      const cb = callback;
      callback = undefined;
      if (cb) cb(err, s as Duplex);
    };
    req.setTimeout(Number((options as { timeout?: number }).timeout) || 30_000, () => req.destroy(new TransportError('PROXY', `${via}: no answer (timeout)`)));
    req.once('connect', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      req.setTimeout(0);
      if (res.statusCode !== 200) {
        socket.destroy();
        return done(new TransportError('PROXY', `${via}: the proxy answered ${res.statusCode} ${res.statusMessage ?? ''}`.trim(), { status: res.statusCode }));
      }
      if (head.length) socket.unshift(head);
      const servername = (options as { servername?: string }).servername || (isIP(host) ? undefined : host);
      const t = tlsConnect({ socket, host, servername, ca: this.tls.ca, rejectUnauthorized: this.tls.rejectUnauthorized, ALPNProtocols: ['http/1.1'] });
      done(null, t);
    });
    req.once('error', (err: Error) => done(err instanceof TransportError ? err : new TransportError('PROXY', `${via}: ${err.message}`, { cause: err })));
    req.end();
    return undefined;
  }
}

/** A response whose body has not been read yet. */
export class HttpResponse {
  /** HTTP status. */
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** "METHOD URL", for messages. */
  readonly what: string;
  private consumed = false;

  constructor(
    readonly raw: IncomingMessage,
    what: string,
    private readonly state: RequestState,
  ) {
    this.status = raw.statusCode ?? 0;
    this.headers = raw.headers;
    this.what = what;
  }

  /** Translate a stream error into a TransportError. */
  private translate(err: unknown): Error {
    if (this.state.tooSlow) return this.state.tooSlow;
    if (err instanceof TransportError) return err;
    if (this.state.timedOut) return new TransportError('TIMEOUT', `${this.what}: no data from the server for ${this.state.timeoutMs / 1000} s (timeout)`, { cause: err });
    if (this.state.aborted) return new TransportError('ABORTED', `${this.what}: aborted`, { cause: err });
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ECONNRESET' || e.message === 'aborted' || e.code === 'ERR_STREAM_PREMATURE_CLOSE') {
      return new TransportError('TRUNCATED', `${this.what}: connection closed before the body ended`, { cause: err });
    }
    if (e.name === 'EncodingError') return err as Error;
    return new TransportError('NETWORK', `${this.what}: ${e.message}`, { cause: err });
  }

  /**
   * The decoded body. `max`: more decoded bytes than this fail with TOO_LONG as soon as they
   * arrive; `exact`: the body must be exactly this long (TOO_LONG / TRUNCATED), and with an
   * identity encoding a Content-Length other than it is refused before any byte is read.
   */
  async *body(opts: { max?: number; exact?: number; what?: string } = {}): AsyncGenerator<Buffer> {
    if (this.consumed) throw new Error(`${this.what}: body read twice`);
    this.consumed = true;
    const what = opts.what ?? this.what;
    const max = opts.exact ?? opts.max;
    const enc = this.headers['content-encoding'];
    const declared = this.headers['content-length'] !== undefined ? Number(this.headers['content-length']) : undefined;
    if (declared !== undefined && (!enc || enc === 'identity')) {
      if (max !== undefined && declared > max) {
        this.raw.destroy();
        throw new TransportError('TOO_LONG', `${what}: the server declares ${declared} bytes, but ${opts.exact !== undefined ? 'it has' : 'at most'} ${max} bytes`);
      }
      if (opts.exact !== undefined && declared < opts.exact) {
        this.raw.destroy();
        throw new TransportError('TRUNCATED', `${what}: the server declares ${declared} bytes, but it has ${opts.exact}`);
      }
    }
    let src: AsyncIterable<Buffer> = this.raw;
    const dec = decoder(enc, what);
    if (dec) {
      this.raw.on('error', (e) => dec.destroy(this.translate(e)));
      this.raw.pipe(dec);
      src = dec;
    }
    let n = 0;
    let done = false;
    const floor = this.state.lowSpeedBytes;
    const slow = floor > 0
      ? new SpeedFloor(floor, this.state.timeoutMs, () => {
          const e = new TransportError('TOO_SLOW', `${what}: the server sent fewer than ${floor} bytes in ${this.state.timeoutMs / 1000} s (too slow)`);
          this.state.tooSlow = e;
          dec?.destroy(e);
          this.raw.destroy(e);
        })
      : undefined;
    const it = src[Symbol.asyncIterator]();
    try {
      for (;;) {
        slow?.waiting();
        const step = await it.next();
        slow?.arrived(step.done ? 0 : step.value.length);
        if (step.done) break;
        const c = step.value;
        n += c.length;
        if (max !== undefined && n > max) throw new TransportError('TOO_LONG', `${what}: the server sent more than the ${max} bytes ${opts.exact !== undefined ? 'expected' : 'allowed'}`);
        yield c;
      }
      if (opts.exact !== undefined && n < opts.exact) throw new TransportError('TRUNCATED', `${what}: body ended after ${n} of ${opts.exact} bytes`);
      done = true;
    } catch (err) {
      throw this.translate(err);
    } finally {
      slow?.stop();
      if (!done) {
        dec?.destroy();
        this.raw.destroy();
      }
    }
  }

  /** The whole decoded body: at most `max` bytes, or bounded as body() does with an options
   * object (`exact`). */
  async buffer(max: number | { max?: number; exact?: number; what?: string }): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of this.body(typeof max === 'number' ? { max } : max)) parts.push(c);
    return Buffer.concat(parts);
  }

  /** The server's error message (JSON {"error"}), or the status line. */
  async errorMessage(): Promise<string> {
    try {
      const b = await this.buffer(64 * 1024);
      const j = JSON.parse(b.toString('utf8')) as { error?: string };
      if (j.error) return j.error;
    } catch {
      /* not our JSON */
    }
    return `HTTP ${this.status} ${this.raw.statusMessage ?? ''}`.trim();
  }

  /** Drop the body (closes the connection if it is not finished). */
  discard(): void {
    if (!this.consumed) {
      this.consumed = true;
      if (this.raw.complete) this.raw.resume();
      else this.raw.destroy();
    }
  }

  /** Throw TransportError (AUTH for 401/403, HTTP_STATUS otherwise) for an unexpected status. */
  async fail(context?: string): Promise<never> {
    const msg = await this.errorMessage();
    const code = this.status === 401 || this.status === 403 ? 'AUTH' : 'HTTP_STATUS';
    throw new TransportError(code, `${context ?? this.what}: ${this.status}: ${msg}`, { status: this.status });
  }
}

/** HTTP client bound to one server (see the file comment). */
export class HttpClient {
  /** Base URL (scheme://host:port). */
  readonly base: URL;
  /** The proxy requests go through, if any (transport.ts proxyFor). */
  readonly proxy: URL | undefined;
  private agent: HttpAgent;
  private doRequest: typeof httpRequest;
  /** Open sockets; a closed one moves its bytes into `closedBytes` and leaves. */
  private sockets = new Set<Socket>();
  private closedBytes = { received: 0, sent: 0 };
  private opts: Required<Omit<HttpClientOptions, 'token' | 'transport'>> & { token?: string };

  constructor(base: string | URL, opts: HttpClientOptions = {}) {
    this.base = new URL(base);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') throw new TransportError('BAD_URL', `${this.base.href}: only http:// and https:// remotes are served by cfsdist`);
    this.opts = {
      timeoutMs: opts.timeoutMs ?? 30_000,
      maxSockets: opts.maxSockets ?? 8,
      compress: opts.compress ?? 'auto',
      token: opts.token,
      freeSocketTimeoutMs: opts.freeSocketTimeoutMs ?? 15_000,
      lowSpeedBytes: opts.lowSpeedBytes ?? 1024,
    };
    const t = opts.transport ?? {};
    this.proxy = proxyFor(this.base, t.env);
    // Agent `timeout` is the socket timeout of idle (free) keep-alive sockets: on expiry the
    // agent destroys a free socket (Node's keepSocketAlive/onTimeout); requests set their own.
    const agentOpts = { ...AGENT_OPTS, maxSockets: this.opts.maxSockets, timeout: this.opts.freeSocketTimeoutMs };
    const httpsHop = this.base.protocol === 'https:' || this.proxy?.protocol === 'https:';
    const tls = httpsHop ? tlsOptionsOf(t) : undefined;
    if (this.base.protocol === 'https:' && this.proxy) {
      this.agent = new TunnelAgent(this.proxy, tls!, agentOpts);
      this.doRequest = httpsRequest;
    } else if (httpsHop) {
      this.agent = new HttpsAgent({ ...agentOpts, ...tls });
      this.doRequest = httpsRequest;
    } else {
      this.agent = new HttpAgent(agentOpts);
      this.doRequest = httpRequest;
    }
  }

  /** Bytes received and sent on the wire so far (headers included). */
  get wire(): { received: number; sent: number } {
    let received = this.closedBytes.received;
    let sent = this.closedBytes.sent;
    for (const s of this.sockets) {
      received += s.bytesRead;
      sent += s.bytesWritten;
    }
    return { received, sent };
  }

  /** Sockets currently open (for tests of the pruning). */
  get openSockets(): number {
    return this.sockets.size;
  }

  private track(s: Socket): void {
    if (this.sockets.has(s)) return;
    this.sockets.add(s);
    s.once('close', () => {
      if (!this.sockets.delete(s)) return;
      this.closedBytes.received += s.bytesRead;
      this.closedBytes.sent += s.bytesWritten;
    });
  }

  /** Where a request for `url` is sent: the server itself, or the proxy (absolute URI). */
  private target(url: URL, headers: Record<string, string>): ClientRequestArgs {
    if (!this.proxy || url.protocol === 'https:') return { protocol: url.protocol, hostname: url.hostname.replace(/^\[|\]$/g, ''), port: url.port || undefined, path: url.pathname + url.search };
    const pa = proxyAuthorization(this.proxy);
    if (pa) headers['Proxy-Authorization'] = pa;
    headers.Host = url.host;
    return { protocol: this.proxy.protocol, hostname: this.proxy.hostname.replace(/^\[|\]$/g, ''), port: this.proxy.port || undefined, path: url.href };
  }

  /** Start a request; resolves when the response headers arrive. */
  request(method: string, path: string, opts: RequestOptions = {}): Promise<HttpResponse> {
    const url = new URL(path, this.base);
    const what = `${method} ${url.href}`;
    const headers: Record<string, string> = { 'User-Agent': 'cfsdist/0.1', ...(opts.headers ?? {}) };
    headers['Accept-Encoding'] = opts.compressed === false ? 'identity' : acceptEncoding(this.opts.compress);
    if (this.opts.token) headers.Authorization = `Bearer ${this.opts.token}`;
    const enc = opts.bodyEncoding && opts.bodyEncoding !== 'identity' ? encoder(opts.bodyEncoding) : undefined;
    if (enc) headers['Content-Encoding'] = opts.bodyEncoding!;
    if (Buffer.isBuffer(opts.body) && !enc) headers['Content-Length'] = String(opts.body.length);
    const state: RequestState = { timedOut: false, timeoutMs: this.opts.timeoutMs, aborted: false, lowSpeedBytes: this.opts.lowSpeedBytes };
    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      const req: ClientRequest = this.doRequest({ ...this.target(url, headers), method, headers, agent: this.agent });
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      req.on('socket', (s: Socket) => this.track(s));
      req.setTimeout(this.opts.timeoutMs, () => {
        state.timedOut = true;
        req.destroy(new TransportError('TIMEOUT', `${what}: no data from the server for ${this.opts.timeoutMs / 1000} s (timeout)`));
      });
      const onAbort = (): void => {
        state.aborted = true;
        req.destroy(new TransportError('ABORTED', `${what}: aborted`));
      };
      if (opts.signal) {
        if (opts.signal.aborted) onAbort();
        else opts.signal.addEventListener('abort', onAbort, { once: true });
        req.on('close', () => opts.signal!.removeEventListener('abort', onAbort));
      }
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err instanceof TransportError) return fail(err);
        if (isCertificateError(err)) return fail(certificateError(what, url.host, err));
        if (state.timedOut) return fail(new TransportError('TIMEOUT', `${what}: no data from the server for ${this.opts.timeoutMs / 1000} s (timeout)`, { cause: err }));
        fail(new TransportError('NETWORK', `${what}: ${err.message}`, { cause: err }));
      });
      req.on('response', (res: IncomingMessage) => {
        if (settled) {
          res.destroy();
          return;
        }
        settled = true;
        resolve(new HttpResponse(res, what, state));
      });
      if (opts.body === undefined) req.end();
      else if (Buffer.isBuffer(opts.body) && !enc) req.end(opts.body);
      else {
        const src = Buffer.isBuffer(opts.body) ? Readable.from([opts.body]) : Readable.from(opts.body);
        const p = enc ? pipeline(src, enc, req) : pipeline(src, req);
        p.catch((err: Error) => {
          req.destroy();
          fail(err instanceof TransportError || err.name === 'EncodingError' ? err : new TransportError('NETWORK', `${what}: sending the body: ${err.message}`, { cause: err }));
        });
      }
    });
  }

  /** Close idle sockets. */
  close(): void {
    this.agent.destroy();
  }
}
