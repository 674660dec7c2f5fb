/**
 * The registry client's protocol paths that docker-registry with htpasswd cannot show, against
 * a small in-process fake: the Bearer token flow (challenge → token server with Basic
 * credentials → retried request, token reused), retries with backoff on 503/429 (Retry-After),
 * Range reads, chunked uploads with Content-Range, a refused token, and docker:// parsing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { RegistryClient, parseRegistryRef, parseChallenge } from '../src/registry/index.js';

let srv: Server;
let origin = '';
const log: string[] = [];
let flaky = 0;
const blob = Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz');
const blobDigest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
const uploads = new Map<string, Buffer[]>();

function handler(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const url = new URL(req.url!, origin);
    log.push(`${req.method} ${url.pathname} ${req.headers.authorization ?? '-'} ${req.headers['content-range'] ?? ''}`);
    if (url.pathname === '/token') {
      const ok = req.headers.authorization === `Basic ${Buffer.from('alice:secret').toString('base64')}`;
      res.writeHead(ok ? 200 : 401, { 'Content-Type': 'application/json' });
      res.end(ok ? JSON.stringify({ token: `tok-${url.searchParams.getAll('scope').join('+')}` }) : '{}');
      return;
    }
    if (!/^Bearer tok-.*repository:app:pull/.test(String(req.headers.authorization ?? ''))) {
      res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="${origin}/token",service="fake",scope="repository:app:pull"`, 'Content-Type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
      return;
    }
    if (url.pathname === '/v2/app/blobs/' + blobDigest) {
      if (flaky > 0) {
        flaky--;
        res.writeHead(flaky % 2 ? 503 : 429, { 'Retry-After': '0' });
        res.end();
        return;
      }
      const m = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
      if (m) {
        const part = blob.subarray(Number(m[1]), Number(m[2]) + 1);
        res.writeHead(206, { 'Content-Length': part.length, 'Content-Range': `bytes ${m[1]}-${m[2]}/${blob.length}` });
        res.end(part);
      } else {
        res.writeHead(200, { 'Content-Length': blob.length });
        res.end(req.method === 'HEAD' ? undefined : blob);
      }
      return;
    }
    if (req.method === 'POST' && url.pathname === '/v2/app/blobs/uploads/') {
      const id = `u${uploads.size}`;
      uploads.set(id, []);
      res.writeHead(202, { Location: `/v2/app/blobs/uploads/${id}?_state=x` });
      res.end();
      return;
    }
    const up = /^\/v2\/app\/blobs\/uploads\/(u\d+)$/.exec(url.pathname);
    if (up && req.method === 'PATCH') {
      uploads.get(up[1]!)!.push(Buffer.concat(chunks));
      res.writeHead(202, { Location: `/v2/app/blobs/uploads/${up[1]}?_state=y` });
      res.end();
      return;
    }
    if (up && req.method === 'PUT') {
      const all = Buffer.concat([...uploads.get(up[1]!)!, Buffer.concat(chunks)]);
      const d = `sha256:${createHash('sha256').update(all).digest('hex')}`;
      res.writeHead(d === url.searchParams.get('digest') ? 201 : 400);
      res.end();
      return;
    }
    res.writeHead(404);
    res.end();
  });
}

before(async () => {
  srv = createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const a = srv.address();
  origin = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
});

after(() => new Promise<void>((r) => srv.close(() => r())));

test('Bearer flow: 401 challenge, token with Basic credentials, retried request; token reused', async () => {
  log.length = 0;
  const c = new RegistryClient(origin, { auth: { username: 'alice', password: 'secret' } });
  assert.equal(await c.headBlob('app', blobDigest), blob.length);
  assert.equal(await c.headBlob('app', blobDigest), blob.length);
  c.close();
  assert.equal(log.filter((l) => l.startsWith('GET /token')).length, 1);
  assert.equal(log.filter((l) => l.includes('Bearer tok-repository:app:pull')).length, 2);
});

test('a token server refusing the credentials gives AUTH naming the user', async () => {
  const c = new RegistryClient(origin, { auth: { username: 'alice', password: 'wrong' } });
  await assert.rejects(c.headBlob('app', blobDigest), (e: Error & { code?: string }) => e.code === 'AUTH' && /user alice/.test(e.message));
  c.close();
});

test('429 and 503 are retried with backoff (Retry-After); Range reads return the asked bytes', async () => {
  const c = new RegistryClient(origin, { auth: { username: 'alice', password: 'secret' }, retryBaseMs: 1 });
  flaky = 3;
  const r = await c.getBlob('app', blobDigest, { range: [10, 19] });
  assert.equal(r.status, 206);
  assert.equal((await r.buffer(100)).toString(), 'abcdefghij');
  assert.equal(flaky, 0);
  flaky = 10;
  await assert.rejects(c.readBlob('app', blobDigest, 100), /HTTP 503|429|503/);
  flaky = 0;
  c.close();
});

test('chunked upload: PATCHes with Content-Range, closing PUT with the digest', async () => {
  log.length = 0;
  const c = new RegistryClient(origin, { auth: { username: 'alice', password: 'secret' } });
  const parts = [Buffer.alloc(3000, 1), Buffer.alloc(3000, 2), Buffer.alloc(500, 3)];
  const r = await c.uploadChunked('app', (async function* () { yield* parts; })(), 4096);
  assert.equal(r.size, 6500);
  assert.equal(r.digest, `sha256:${createHash('sha256').update(Buffer.concat(parts)).digest('hex')}`);
  const patches = log.filter((l) => l.startsWith('PATCH'));
  assert.deepEqual(patches.map((l) => l.split(' ').pop()), ['0-5999', '6000-6499']);
  c.close();
});

test('docker:// references and challenges parse', () => {
  assert.deepEqual(parseRegistryRef('docker://127.0.0.1:5000/team/app:v1'), { host: '127.0.0.1:5000', repo: 'team/app', tag: 'v1', digest: undefined, origin: 'http://127.0.0.1:5000' });
  assert.equal(parseRegistryRef('docker://registry.example.com/app').origin, 'https://registry.example.com');
  assert.equal(parseRegistryRef('docker://registry.example.com/app', { insecure: true }).origin, 'http://registry.example.com');
  assert.throws(() => parseRegistryRef('docker://host/App'), /invalid repository name/);
  assert.throws(() => parseRegistryRef('http://host/app'), /not a registry reference/);
  assert.deepEqual(parseChallenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull,push"'), { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'reg', scope: 'repository:a:pull,push' } });
});
