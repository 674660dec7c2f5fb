/**
 * A small HTTP/1.1 client over node:http(s) for the cfsdist protocol: keep-alive sockets, an
 * idle timeout on every request (no byte for `timeoutMs` fails the request with
 * TransportError TIMEOUT, whatever phase it is in), bodies decoded as streams (zstd/gzip) and
 * bounded by the caller, and a count of the bytes that crossed the wire (socket level, headers
 * included) for the bytes-moved figures.
 */
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { acceptEncoding, decoder, encoder } from '../server/compress.js';
import type { CompressMode, Encoding } from '../server/compress.js';
import { TransportError } from './errors.js';

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
    private readonly state: { timedOut: boolean; timeoutMs: number; aborted: boolean },
  ) {
    this.status = raw.statusCode ?? 0;
    this.headers = raw.headers;
    this.what = what;
  }

  /** Translate a stream error into a TransportError. */
  private translate(err: unknown): Error {
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
    try {
      for await (const c of src) {
        n += c.length;
        if (max !== undefined && n > max) throw new TransportError('TOO_LONG', `${what}: the server sent more than the ${max} bytes ${opts.exact !== undefined ? 'expected' : 'allowed'}`);
        yield c;
      }
      if (opts.exact !== undefined && n < opts.exact) throw new TransportError('TRUNCATED', `${what}: body ended after ${n} of ${opts.exact} bytes`);
      done = true;
    } catch (err) {
      throw this.translate(err);
    } finally {
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
  private agent: HttpAgent;
  private sockets = new Set<Socket>();
  private opts: Required<Omit<HttpClientOptions, 'token'>> & { token?: string };

  constructor(base: string | URL, opts: HttpClientOptions = {}) {
    this.base = new URL(base);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') throw new TransportError('BAD_URL', `${this.base.href}: only http:// and https:// remotes are served by cfsdist`);
    this.opts = { timeoutMs: opts.timeoutMs ?? 30_000, maxSockets: opts.maxSockets ?? 8, compress: opts.compress ?? 'auto', token: opts.token };
    const agentOpts = { ...AGENT_OPTS, maxSockets: this.opts.maxSockets };
    this.agent = this.base.protocol === 'https:' ? new HttpsAgent(agentOpts) : new HttpAgent(agentOpts);
  }

  /** Bytes received and sent on the wire so far (headers included). */
  get wire(): { received: number; sent: number } {
    let received = 0;
    let sent = 0;
    for (const s of this.sockets) {
      received += s.bytesRead;
      sent += s.bytesWritten;
    }
    return { received, sent };
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
    const state = { timedOut: false, timeoutMs: this.opts.timeoutMs, aborted: false };
    const doRequest = this.base.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      const req: ClientRequest = doRequest(url, { method, headers, agent: this.agent });
      const fail = (err: Error): void => {
        if (settled) return;
        settled = true;
        reject(err);
      };
      req.on('socket', (s: Socket) => this.sockets.add(s));
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
