/**
 * A hostile-server suite against `cfsdist pull`: a hostile proxy in front of a real
 * `cfsdist serve` (a delta that expands without bound, a server that trickles bytes forever),
 * and fake registries (an object index claiming millions of entries, a redirect from https to
 * plain http, a Bearer realm on another host). Each pull must end with a typed error, the
 * client's peak RSS must stay under 300 MiB, and its store must be unchanged.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { PULL_CLI, makeImageFamily, signFamily, snapshotStore, startServe } from './pull-fixtures.js';
import type { ImageFamily, ServeProcess } from './pull-fixtures.js';
import { makeTestCa, registryMissing, startRegistry } from './registry-fixtures.js';

const RSS_CAP_KIB = 300 * 1024;

let work: string;
let fam: ImageFamily;
let pub: string;
let srv: ServeProcess;

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'cfsdist-hostile-server-'));
  fam = await makeImageFamily(join(work, 'server'));
  pub = await signFamily(fam, join(work, 'keys'));
  srv = await startServe(fam.storeDir);
});

after(async () => {
  await srv?.stop();
  rmSync(work, { recursive: true, force: true });
  rmSync(fam?.root ?? '/nonexistent', { recursive: true, force: true });
});

/** A CLI run with its peak RSS (VmHWM sampled from /proc while it runs). */
function pullWithRss(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string; hwmKiB: number; seconds: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [PULL_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let hwmKiB = 0;
    const sample = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) hwmKiB = Math.max(hwmKiB, Number(m[1]));
      } catch {
        /* exited */
      }
    }, 10);
    const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('close', (code) => {
      clearInterval(sample);
      clearTimeout(kill);
      resolve({ code, stdout, stderr, hwmKiB, seconds: (Date.now() - t0) / 1000 });
    });
  });
}

/** A proxy to the real server that lets `hostile` answer some requests itself. */
async function hostileProxy(hostile: (req: IncomingMessage, res: ServerResponse) => boolean): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    if (hostile(req, res)) return;
    const up = request({ host: '127.0.0.1', port: srv.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, server };
}

function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/** A client that has v1 (pulled honestly), and its store's snapshot. */
async function clientWithV1(name: string) {
  const client = join(work, name);
  const r = await pullWithRss(['--store', client, '--quiet', 'pull', `${srv.url}/${fam.name}:v1`, '--trust', pub]);
  assert.equal(r.code, 0, r.stderr);
  return { client, before: await snapshotStore(client) };
}

test('a delta that expands without bound: refused as it expands (DELTA_TOO_LARGE), bounded memory, store unchanged', async () => {
  const { client, before } = await clientWithV1('delta-client');
  // Copy the base's first line 200,000 times: a few KiB on the wire, megabytes of lines.
  const ops = Buffer.concat([Buffer.from([0]), varint(0), varint(1)]);
  const raw = Buffer.concat([Buffer.from('CFSDELTA2\n'), fam.v1.image, fam.v2.image, varint(1), Buffer.concat(Array.from({ length: 200_000 }, () => ops)), Buffer.from([2])]);
  const bomb = brotliCompressSync(raw);
  let served = 0;
  const proxy = await hostileProxy((req, res) => {
    const url = req.url ?? '';
    if (url.startsWith('/v1/deltas/') && url.endsWith('/zpatch')) {
      res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"none"}');
      return true;
    }
    if (url.startsWith('/v1/deltas/')) {
      served++;
      res.writeHead(200, { 'Content-Type': 'application/vnd.cfsdist.delta.v1', 'Content-Length': String(bomb.length) }).end(bomb);
      return true;
    }
    if (url.startsWith(`/v1/images/${fam.v2.image.toString('hex')}`)) {
      res.writeHead(503, { 'Content-Type': 'application/json' }).end('{"error":"gone"}');
      return true;
    }
    return false;
  });
  try {
    const r = await pullWithRss(['--store', client, 'pull', `${proxy.url}/${fam.name}:v2`, '--trust', pub]);
    assert.equal(served, 1, 'the client asked for the delta');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /delta .*unusable \(delta expands beyond what an image of \d+ bytes holds/);
    assert.match(r.stderr, /503/);
    assert.ok(r.hwmKiB > 0 && r.hwmKiB < RSS_CAP_KIB, `client peak RSS ${r.hwmKiB} KiB`);
    assert.deepEqual(await snapshotStore(client), before);
    console.log(`# delta bomb (${bomb.length} B → ${raw.length} B of ops): refused, client peak RSS ${(r.hwmKiB / 1024).toFixed(0)} MiB`);
  } finally {
    proxy.server.close();
  }
});

test('a server that trickles bytes forever: TOO_SLOW within the timeout window, store unchanged', async () => {
  const client = join(work, 'trickle-client');
  const before = await snapshotStore(client);
  const timers: NodeJS.Timeout[] = [];
  const proxy = await hostileProxy((req, res) => {
    if (!(req.url ?? '').startsWith(`/v1/images/`)) return false;
    // Headers at once, then one byte every 100 ms: never idle, never done.
    res.writeHead(200, { 'Content-Type': 'application/vnd.cfsdist.composefs.erofs', 'Content-Length': String(fam.v1.imageSize) });
    const t = setInterval(() => res.write(Buffer.alloc(1)), 100);
    timers.push(t);
    res.on('close', () => clearInterval(t));
    return true;
  });
  try {
    const r = await pullWithRss(['--store', client, 'pull', `${proxy.url}/${fam.name}:v1`, '--trust', pub, '--timeout', '2']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /TOO_SLOW|too slow|fewer than/i);
    assert.ok(r.seconds < 15, `gave up after ${r.seconds} s`);
    assert.ok(r.hwmKiB < RSS_CAP_KIB, `client peak RSS ${r.hwmKiB} KiB`);
    assert.deepEqual(await snapshotStore(client), before);
    console.log(`# trickle: gave up after ${r.seconds.toFixed(1)} s: ${r.stderr.trim().split('\n').pop()}`);
  } finally {
    for (const t of timers) clearInterval(t);
    proxy.server.closeAllConnections();
    proxy.server.close();
  }
});

/** A fake registry on `server` answering /v2/ and what `route` handles; every request is logged. */
function fakeRegistry(log: { method: string; url: string; auth?: string; host?: string }[], route: (req: IncomingMessage, res: ServerResponse) => boolean) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    log.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization, host: req.headers.host });
    if (route(req, res)) return;
    res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"errors":[{"code":"NOT_FOUND"}]}');
  };
}

test('a redirect from https to plain http: refused (INSECURE_REDIRECT), the http side never contacted, store unchanged', async () => {
  mkdirSync(join(work, 'ca'), { recursive: true });
  const ca = makeTestCa(join(work, 'ca'));
  const plainLog: { method: string; url: string }[] = [];
  const plain = createServer((req, res) => {
    plainLog.push({ method: req.method ?? '', url: req.url ?? '' });
    res.writeHead(500).end();
  });
  await new Promise<void>((r) => plain.listen(0, '127.0.0.1', () => r()));
  const plainPort = (plain.address() as { port: number }).port;
  const log: { method: string; url: string }[] = [];
  const tls = createHttpsServer({ cert: readFileSync(ca.cert), key: readFileSync(ca.key) }, fakeRegistry(log, (req, res) => {
    if (req.url === '/v2/') {
      res.writeHead(200, { 'Docker-Distribution-API-Version': 'registry/2.0' }).end('{}');
      return true;
    }
    res.writeHead(307, { Location: `http://127.0.0.1:${plainPort}${req.url}` }).end();
    return true;
  }));
  await new Promise<void>((r) => tls.listen(0, '127.0.0.1', () => r()));
  const client = join(work, 'redirect-client');
  const before = await snapshotStore(client);
  try {
    const r = await pullWithRss(['--store', client, 'pull', `docker://127.0.0.1:${(tls.address() as { port: number }).port}/app/x:1`, '--trust', pub, '--ca-file', ca.caCert]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /redirects to http:.*from https down to http; refused/);
    assert.equal(plainLog.length, 0, 'nothing reached the plain http side');
    assert.ok(log.length > 0);
    assert.ok(r.hwmKiB < RSS_CAP_KIB);
    assert.deepEqual(await snapshotStore(client), before);
  } finally {
    tls.close();
    plain.close();
  }
});

test('a Bearer realm on another host: it gets no credentials, the pull fails with AUTH, store unchanged', async () => {
  const realmLog: { method: string; url: string; auth?: string; host?: string }[] = [];
  const realm = createServer(fakeRegistry(realmLog, (_req, res) => {
    res.writeHead(401, { 'Content-Type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    return true;
  }));
  await new Promise<void>((r) => realm.listen(0, '127.0.0.1', () => r()));
  const realmPort = (realm.address() as { port: number }).port;
  const log: { method: string; url: string; auth?: string; host?: string }[] = [];
  const reg = createServer(fakeRegistry(log, (_req, res) => {
    res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://localhost:${realmPort}/token",service="reg"`, 'Content-Type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    return true;
  }));
  await new Promise<void>((r) => reg.listen(0, '127.0.0.1', () => r()));
  const client = join(work, 'realm-client');
  const before = await snapshotStore(client);
  try {
    const r = await pullWithRss(['--store', client, 'pull', `docker://127.0.0.1:${(reg.address() as { port: number }).port}/app/x:1`, '--trust', pub, '--creds', 'alice:secret-password']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /AUTH|token server|realm/i);
    assert.ok(realmLog.length > 0, 'the realm was asked (anonymously)');
    for (const e of realmLog) assert.equal(e.auth, undefined, `the realm on another host received ${e.auth}`);
    assert.ok(!r.stderr.includes('secret-password'));
    assert.ok(r.hwmKiB < RSS_CAP_KIB);
    assert.deepEqual(await snapshotStore(client), before);
  } finally {
    reg.close();
    realm.close();
  }
});

/** An object index (gzip) claiming `count` entries, all zero: 56 bytes each uncompressed
 * (280 MB for five million), a few hundred KiB on the wire. */
function indexBomb(count: number): Buffer {
  const header = Buffer.from(JSON.stringify({ count, blobs: [] }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return gzipSync(Buffer.concat([Buffer.from('cfsdist-object-index-v1\n'), len, header, Buffer.alloc(count * 56)]), { level: 9 });
}

test('an object index claiming millions of entries: refused by the signed object count, before it is decompressed whole', async () => {
  const { decodeIndex, indexBound } = await import('../src/registry/artifact.js');
  const count = 5_000_000;
  const bomb = indexBomb(count);
  const rss0 = process.memoryUsage().rss;
  await assert.rejects(decodeIndex(bomb, 'hostile index', 1000), (e: Error & { code?: string }) => e.code === 'BAD_INDEX' && /does not decompress|entries, but the signed image has 1000/.test(e.message));
  const grew = (process.memoryUsage().rss - rss0) / (1 << 20);
  assert.ok(grew < 64, `decoding grew RSS by ${grew.toFixed(0)} MiB`);
  assert.ok(indexBound(1000) < 1 << 20, 'the bound for 1000 objects is under a MiB');
  console.log(`# index bomb: ${bomb.length} B claiming ${count} entries refused, RSS grew ${grew.toFixed(1)} MiB`);
});

test('a registry whose cfsdist manifest names an object index of millions of entries: cfsdist pull refuses it by the signed object count, store unchanged', { skip: registryMissing() }, async () => {
  const reg = await startRegistry({ auth: false });
  try {
    const push = await pullWithRss(['--store', fam.storeDir, '--quiet', 'push', `${fam.name}:v1`, `docker://${reg.host}/${fam.name}:v1`]);
    assert.equal(push.code, 0, push.stderr);
    const bomb = indexBomb(5_000_000);
    const bombDigest = 'sha256:' + createHash('sha256').update(bomb).digest('hex');
    const renamed = new Map<string, string>(); // rewritten manifest hex → the real one
    let bombServed = 0;
    const upstream = (path: string, accept: string): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> =>
      fetch(`http://${reg.host}${path}`, { headers: { Accept: accept } }).then(async (r) => ({ status: r.status, headers: Object.fromEntries(r.headers), body: Buffer.from(await r.arrayBuffer()) }));
    const proxy = createServer((req, res) => {
      const url = req.url ?? '/';
      const accept = String(req.headers.accept ?? '*/*');
      const send = (status: number, headers: Record<string, string>, body: Buffer): void => {
        res.writeHead(status, { 'Content-Type': headers['content-type'] ?? 'application/octet-stream', 'Content-Length': String(body.length), ...(headers['docker-content-digest'] ? { 'Docker-Content-Digest': headers['docker-content-digest'] } : {}) });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      if (url.includes('/referrers/')) return send(404, {}, Buffer.from('{}'));
      if (url.endsWith(`/blobs/${bombDigest}`)) {
        bombServed++;
        return send(200, {}, bomb);
      }
      const fallback = /\/manifests\/sha256-([0-9a-f]{64})$/.exec(url);
      if (fallback && renamed.has(fallback[1]!)) {
        void upstream(url.replace(fallback[1]!, renamed.get(fallback[1]!)!), accept).then((u) => send(u.status, u.headers, u.body));
        return;
      }
      if (url.endsWith(`/manifests/v1`)) {
        void upstream(url, accept).then((u) => {
          const m = JSON.parse(u.body.toString()) as { layers: { mediaType: string; digest: string; size: number }[] };
          for (const l of m.layers) if (l.mediaType.includes('index')) Object.assign(l, { digest: bombDigest, size: bomb.length });
          const body = Buffer.from(JSON.stringify(m));
          const hex = createHash('sha256').update(body).digest('hex');
          renamed.set(hex, (u.headers['docker-content-digest'] ?? '').slice(7));
          send(200, { ...u.headers, 'docker-content-digest': `sha256:${hex}` }, body);
        });
        return;
      }
      const up = request({ host: '127.0.0.1', port: reg.port, method: req.method, path: url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const client = join(work, 'index-client');
    const before = await snapshotStore(client);
    try {
      const r = await pullWithRss(['--store', client, 'pull', `docker://127.0.0.1:${(proxy.address() as { port: number }).port}/${fam.name}:v1`, '--trust', pub]);
      assert.equal(renamed.size, 1, 'the rewritten manifest was served');
      assert.notEqual(r.code, 0, r.stdout);
      assert.match(r.stderr, /object index .*(bytes for \d+ objects|entries, but the signed image has \d+ objects|does not decompress)/);
      assert.equal(bombServed, 0, 'refused by its declared size before any byte of it was fetched');
      assert.ok(r.hwmKiB < RSS_CAP_KIB, `client peak RSS ${r.hwmKiB} KiB`);
      assert.deepEqual(await snapshotStore(client), before);
      console.log(`# index bomb through cfsdist pull: ${r.stderr.trim().split('\n').pop()}; client peak RSS ${(r.hwmKiB / 1024).toFixed(0)} MiB`);
    } finally {
      proxy.close();
    }
  } finally {
    await reg.stop();
  }
});
