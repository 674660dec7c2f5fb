/**
 * HttpClient against servers that misbehave on purpose: idle keep-alive sockets are closed and
 * forgotten, a trickling body fails TOO_SLOW while slow-but-finishing small bodies pass, an
 * untrusted certificate is a TLS_CERT error naming the host, and proxies see what curl's rules
 * say they should (absolute URIs for http://, CONNECT for https://, never loopback).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HttpClient } from '../src/client/http.js';
import { noProxyMatches, proxyFor } from '../src/client/transport.js';
import { makeTestCa } from './registry-fixtures.js';
import type { TestCa } from './registry-fixtures.js';
import { cleanup } from './pull-fixtures.js';

let dir = '';
let ca: TestCa;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-net-http-'));
  ca = makeTestCa(dir);
});
after(() => cleanup(dir));

function listen(s: Server): Promise<number> {
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as AddressInfo).port)));
}

function close(s: Server): Promise<void> {
  s.closeAllConnections?.();
  return new Promise((resolve) => s.close(() => resolve()));
}

/** A forward proxy that maps every host name to 127.0.0.1 and records what it was asked. */
async function startProxy(): Promise<{ port: number; seen: string[]; server: Server }> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const u = new URL(req.url ?? '');
    const up = request({ host: '127.0.0.1', port: Number(u.port || 80), method: req.method, path: `${u.pathname}${u.search}`, headers: req.headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connect', (req: IncomingMessage, sock: Socket, head: Buffer) => {
    seen.push(`CONNECT ${req.url}`);
    const [, port] = /:(\d+)$/.exec(req.url ?? '') ?? [];
    const up = connect(Number(port), '127.0.0.1', () => {
      sock.write('HTTP/1.1 200 Connection established\r\n\r\n');
      if (head.length) up.write(head);
      up.pipe(sock);
      sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
    sock.on('error', () => up.destroy());
  });
  return { port: await listen(server), seen, server };
}

test('idle keep-alive sockets are closed after freeSocketTimeoutMs and leave the set; their bytes stay counted', async () => {
  const open = new Set<Socket>();
  const srv = createServer((_req, res) => res.end('hello'));
  srv.keepAliveTimeout = 60_000;
  srv.on('connection', (s: Socket) => {
    open.add(s);
    s.on('close', () => open.delete(s));
  });
  const port = await listen(srv);
  const c = new HttpClient(`http://127.0.0.1:${port}`, { freeSocketTimeoutMs: 300 });
  try {
    for (let i = 0; i < 3; i++) assert.equal((await (await c.request('GET', `/x${i}`)).buffer(100)).toString(), 'hello');
    assert.equal(c.openSockets, 1, 'the three requests reused one keep-alive socket');
    assert.equal(open.size, 1);
    const before = c.wire;
    assert.ok(before.received > 0 && before.sent > 0);
    await new Promise((r) => setTimeout(r, 900));
    assert.equal(open.size, 0, 'the server saw the idle socket closed');
    assert.equal(c.openSockets, 0, 'the client forgot the closed socket');
    assert.deepEqual(c.wire, before, 'bytes of closed sockets stay in the totals');
    // A new request opens a new socket and is counted on top.
    await (await c.request('GET', '/again')).buffer(100);
    assert.ok(c.wire.received > before.received);
  } finally {
    c.close();
    await close(srv);
  }
});

test('a server trickling bytes fails TOO_SLOW within the window, naming the URL; the idle timeout never fires', async () => {
  const timers: NodeJS.Timeout[] = [];
  const srv = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    timers.push(setInterval(() => res.write(Buffer.alloc(10, 0x61)), 100));
  });
  const port = await listen(srv);
  const c = new HttpClient(`http://127.0.0.1:${port}`, { timeoutMs: 1000 });
  try {
    const r = await c.request('GET', '/trickle');
    const t0 = Date.now();
    await assert.rejects(r.buffer(1 << 20), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'TOO_SLOW');
      assert.match(e.message, new RegExp(`http://127\\.0\\.0\\.1:${port}/trickle`));
      assert.match(e.message, /fewer than 1024 bytes in 1 s/);
      return true;
    });
    const took = Date.now() - t0;
    assert.ok(took >= 900 && took < 2500, `failed after ${took} ms`);
  } finally {
    for (const t of timers) clearInterval(t);
    c.close();
    await close(srv);
  }
});

test('small bodies that complete are never TOO_SLOW, even when they pause; the floor is an option', async () => {
  const srv = createServer((req, res) => {
    res.writeHead(200);
    res.write('a'.repeat(100));
    setTimeout(() => res.end('b'.repeat(100)), req.url === '/pause' ? 700 : 0);
  });
  const port = await listen(srv);
  const c = new HttpClient(`http://127.0.0.1:${port}`, { timeoutMs: 1000 });
  const strict = new HttpClient(`http://127.0.0.1:${port}`, { timeoutMs: 1000, lowSpeedBytes: 0 });
  try {
    assert.equal((await (await c.request('GET', '/now')).buffer(1000)).length, 200);
    assert.equal((await (await c.request('GET', '/pause')).buffer(1000)).length, 200);
    assert.equal((await (await strict.request('GET', '/pause')).buffer(1000)).length, 200);
  } finally {
    c.close();
    strict.close();
    await close(srv);
  }
});

test('an untrusted certificate is TLS_CERT naming the host and the way out; --ca-file or --tls-verify=false connect', async () => {
  const srv = createHttpsServer({ cert: readFileSync(ca.cert), key: readFileSync(ca.key) }, (_req, res) => res.end('secure'));
  const port = await listen(srv);
  const base = `https://127.0.0.1:${port}`;
  const plain = new HttpClient(base);
  const withCa = new HttpClient(base, { transport: { caFiles: [ca.caCert] } });
  const noVerify = new HttpClient(base, { transport: { tlsVerify: false } });
  try {
    await assert.rejects(plain.request('GET', '/'), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'TLS_CERT');
      assert.match(e.message, new RegExp(`certificate of 127\\.0\\.0\\.1:${port} was not accepted`));
      assert.match(e.message, /--ca-file FILE/);
      assert.match(e.message, /--tls-verify=false/);
      return true;
    });
    assert.equal((await (await withCa.request('GET', '/')).buffer(100)).toString(), 'secure');
    assert.equal((await (await noVerify.request('GET', '/')).buffer(100)).toString(), 'secure');
  } finally {
    plain.close();
    withCa.close();
    noVerify.close();
    await close(srv);
  }
});

test('http:// through an HTTP proxy is an absolute-URI request; loopback targets are never proxied', async () => {
  const proxy = await startProxy();
  const hits: string[] = [];
  const srv = createServer((req: IncomingMessage, res: ServerResponse) => {
    hits.push(`${req.headers.host} ${req.url}`);
    res.setHeader('Connection', 'close');
    res.end('via');
  });
  const port = await listen(srv);
  const env = { http_proxy: `http://127.0.0.1:${proxy.port}` };
  // registry.test resolves nowhere: only the proxy (which maps it to 127.0.0.1) can reach it.
  const viaProxy = new HttpClient(`http://registry.test:${port}`, { transport: { env } });
  const direct = new HttpClient(`http://127.0.0.1:${port}`, { transport: { env } });
  try {
    assert.equal(viaProxy.proxy?.port, String(proxy.port));
    assert.equal((await (await viaProxy.request('GET', '/v2/?q=1')).buffer(100)).toString(), 'via');
    assert.deepEqual(proxy.seen, [`GET http://registry.test:${port}/v2/?q=1`]);
    assert.deepEqual(hits, [`registry.test:${port} /v2/?q=1`]);
    assert.equal((await (await direct.request('GET', '/local')).buffer(100)).toString(), 'via');
    assert.equal(proxy.seen.length, 1, 'the loopback request did not go through the proxy');
  } finally {
    viaProxy.close();
    direct.close();
    await close(srv);
    await close(proxy.server);
  }
});

test('https:// through a proxy is a CONNECT tunnel with TLS verified end to end', async () => {
  const proxy = await startProxy();
  const srv = createHttpsServer({ cert: readFileSync(ca.cert), key: readFileSync(ca.key) }, (req, res) => res.end(`tunnelled ${req.headers.host}`));
  const port = await listen(srv);
  const env = { https_proxy: `http://127.0.0.1:${proxy.port}`, http_proxy: 'http://127.0.0.1:1' };
  const c = new HttpClient(`https://registry.test:${port}`, { transport: { env, caFiles: [ca.caCert] } });
  const untrusted = new HttpClient(`https://registry.test:${port}`, { transport: { env } });
  try {
    const r = await c.request('GET', '/a');
    assert.equal((await r.buffer(100)).toString(), `tunnelled registry.test:${port}`);
    await (await c.request('GET', '/b')).buffer(100);
    assert.deepEqual(proxy.seen, [`CONNECT registry.test:${port}`], 'one tunnel, kept alive for both requests');
    await assert.rejects(untrusted.request('GET', '/'), (e: Error & { code?: string }) => e.code === 'TLS_CERT' && e.message.includes(`registry.test:${port}`));
  } finally {
    c.close();
    untrusted.close();
    await close(srv);
    await close(proxy.server);
  }
});

test('no_proxy follows curl: *, suffixes, leading dots, ports, IPs and CIDR; https_proxy/http_proxy by scheme', () => {
  assert.ok(noProxyMatches('*', 'a.example', 80));
  assert.ok(noProxyMatches('example.com', 'example.com', 443));
  assert.ok(noProxyMatches('example.com', 'reg.example.com', 443));
  assert.ok(noProxyMatches('.example.com', 'example.com', 443));
  assert.ok(!noProxyMatches('example.com', 'badexample.com', 443));
  assert.ok(noProxyMatches('reg.example:5000', 'reg.example', 5000));
  assert.ok(!noProxyMatches('reg.example:5000', 'reg.example', 443));
  assert.ok(noProxyMatches('10.0.0.0/8, 192.168.1.7', '10.2.3.4', 80));
  assert.ok(noProxyMatches('10.0.0.0/8, 192.168.1.7', '192.168.1.7', 80));
  assert.ok(!noProxyMatches('10.0.0.0/8', '11.0.0.1', 80));
  assert.ok(noProxyMatches('[::2]:8080', '[::2]', 8080));
  const env = { HTTPS_PROXY: 'proxy.corp:3128', http_proxy: 'http://plain.corp:8080', NO_PROXY: 'internal.corp' };
  assert.equal(proxyFor(new URL('https://reg.example/v2/'), env)?.href, 'http://proxy.corp:3128/');
  assert.equal(proxyFor(new URL('http://reg.example/v2/'), env)?.href, 'http://plain.corp:8080/');
  assert.equal(proxyFor(new URL('https://a.internal.corp/'), env), undefined);
  assert.equal(proxyFor(new URL('https://localhost:5000/'), env), undefined);
  assert.equal(proxyFor(new URL('http://127.0.0.1:5000/'), env), undefined);
  assert.equal(proxyFor(new URL('https://reg.example/'), {}), undefined);
});
