/** Small HTTP helpers of the server: JSON errors, bounded request bodies, Range, bearer tokens. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { decoder } from './compress.js';
import { ProtocolError } from './protocol.js';

/** An error with an HTTP status, thrown by handlers. */
export class HttpStatusError extends Error {
  readonly status: number;
  readonly extra?: Record<string, unknown>;
  constructor(status: number, message: string, extra?: Record<string, unknown>) {
    super(message);
    this.status = status;
    this.extra = extra;
  }
}

/** Send a JSON body. */
export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = Buffer.from(JSON.stringify(value) + '\n');
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': String(body.length), ...headers });
  res.end(body);
}

/** Send a JSON error {"error": message, …extra}. */
export function sendError(res: ServerResponse, status: number, message: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy(new Error(message));
    return;
  }
  sendJson(res, status, { error: message, ...extra }, headers);
}

/** The request body, decoded (Content-Encoding) as a stream. */
export function requestBody(req: IncomingMessage, where: string): AsyncIterable<Buffer> {
  const dec = decoder(req.headers['content-encoding'], where);
  if (!dec) return req;
  req.on('error', (e) => dec.destroy(e));
  dec.on('error', () => req.destroy());
  return req.pipe(dec);
}

/** Read a whole (small) request body, at most `limit` decoded bytes (413 beyond). */
export async function readBody(req: IncomingMessage, limit: number, where: string): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > limit && !req.headers['content-encoding']) throw new HttpStatusError(413, `${where}: body of ${declared} bytes exceeds ${limit}`);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of requestBody(req, where)) {
    n += c.length;
    if (n > limit) throw new HttpStatusError(413, `${where}: body exceeds ${limit} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** A byte range [start, end] (inclusive) of a resource of `size` bytes. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * Interpret a Range header for a resource of `size` bytes: undefined = serve it whole (no
 * header, another unit, several ranges, or a malformed one — all allowed by RFC 9110),
 * 'unsatisfiable' = 416, else the one range.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

/** Compare a presented bearer token with the expected one in constant time. */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The bearer token of a request, '' if none. */
export function bearerOf(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1]! : '';
}

/** Map an error to an HTTP status. */
export function statusOf(err: unknown): number {
  if (err instanceof HttpStatusError) return err.status;
  if (err instanceof ProtocolError) return err.code === 'TOO_LARGE' ? 413 : 400;
  const code = (err as { code?: string }).code;
  if (code === 'DIGEST_MISMATCH' || code === 'SIZE_MISMATCH' || code === 'BAD_NAME' || code === 'BAD_TAG' || code === 'ENCODING_CORRUPT' || code === 'ENCODING_UNKNOWN') return 400;
  if (code && /^(STATEMENT_MALFORMED|ENVELOPE_MALFORMED|UNSIGNED|UNKNOWN_KEY|BAD_SIGNATURE|EXPIRED|WRONG_SUBJECT|NOT_YET_VALID|NO_TRUST)$/.test(code)) return 400;
  if ((err as Error).name === 'ErofsError' || code === 'IMAGE_UNVERIFIABLE') return 400;
  return 500;
}
