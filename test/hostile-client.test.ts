/**
 * A hostile-client suite against a real `cfsdist serve` process holding the Debian family: while
 * slow-loris connections, a query and a pack request with 16,384 copies of the largest digest, a
 * burst of zstd-encoded requests, oversized and malformed bodies and URLs hit it, 20 honest
 * clients pull v1 then v2 and must all succeed. The server's RSS and its child-process count are
 * sampled throughout and must stay under fixed caps; the hostile connections must be closed
 * within the configured timeouts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, notRoot } from './helpers.js';
import { runCli, startServe } from './pull-fixtures.js';
import type { ServeProcess } from './pull-fixtures.js';

const HEADERS_TIMEOUT_S = 2;
const REQUEST_TIMEOUT_S = 5;
const IDLE_TIMEOUT_S = 8;
const MAX_COMPRESSORS = 3;
const HONEST = 20;
const RSS_CAP_MIB = 256;
const NAME = 'debian/family';
const log = (line: string): void => void (process.env.CFSDIST_TEST_VERBOSE && process.stderr.write(`# ${line}\n`));

const skip = notRoot() || (spawnSync('sh', ['-c', 'command -v zstd && command -v debootstrap'], { stdio: 'ignore' }).status !== 0 ? 'needs zstd and debootstrap (Debian packages)' : false);

function cfs(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

/** Children of a process (from /proc). */
function childrenOf(pid: number): number {
  let n = 0;
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) n++;
    } catch {
      /* gone */
    }
  }
  return n;
}

/** One raw request; resolves with status, headers and body bytes. */
function send(port: number, method: string, path: string, opts: { headers?: Record<string, string>; body?: Buffer } = {}): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers: opts.headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** A connection that dribbles `first`, then one byte of `rest` every `everyMs`; resolves with
 * how long the server let it live. */
function slowLoris(port: number, first: string, rest: string, everyMs: number): Promise<number> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s: Socket = connect(port, '127.0.0.1');
    let i = 0;
    let timer: NodeJS.Timeout | undefined;
    s.on('connect', () => {
      if (first) s.write(first);
      timer = setInterval(() => {
        if (!s.destroyed && s.writable) s.write(rest[i++ % rest.length]!);
      }, everyMs);
    });
    s.on('data', () => undefined);
    s.on('error', () => undefined);
    s.on('close', () => {
      clearInterval(timer);
      resolve((Date.now() - t0) / 1000);
    });
    // A connection the server never closes is a failure, not a hang of the suite.
    setTimeout(() => s.destroy(), 60_000).unref();
  });
}

test('hostile clients against cfsdist serve: honest pulls all succeed, memory and processes bounded, slow connections dropped', { skip, timeout: 600_000 }, async (t) => {
  const { ensureDebianFamily } = await import('../src/demo/family.js');
  const family = await ensureDebianFamily();
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-hostile-client-'));
  let srv: ServeProcess | undefined;
  let sampler: NodeJS.Timeout | undefined;
  try {
    const server = join(work, 'server');
    const key = join(work, 'k');
    for (const args of [
      ['key', 'generate', '--out', key],
      ['--store', server, '--quiet', 'import', `oci:${family.layout}:v1`, `${NAME}:v1`],
      ['--store', server, '--quiet', 'import', `oci:${family.layout}:v2`, `${NAME}:v2`],
      ['--store', server, '--quiet', 'sign', `${NAME}:v1`, '--key', key],
      ['--store', server, '--quiet', 'sign', `${NAME}:v2`, '--key', key],
    ]) {
      const r = cfs(args);
      assert.equal(r.status, 0, `cfsdist ${args.join(' ')}: ${r.stderr}`);
    }
    // The largest object of the store.
    let largest = { hex: '', size: -1 };
    const objects = join(server, 'objects');
    for (const d of readdirSync(objects)) {
      if (!/^[0-9a-f]{2}$/.test(d)) continue;
      for (const f of readdirSync(join(objects, d))) {
        const size = statSync(join(objects, d, f)).size;
        if (size > largest.size) largest = { hex: d + f, size };
      }
    }
    assert.ok(largest.size > 1 << 20, `largest object ${largest.size} bytes`);
    const digest = Buffer.from(largest.hex, 'hex');

    srv = await startServe(server, ['--headers-timeout', String(HEADERS_TIMEOUT_S), '--request-timeout', String(REQUEST_TIMEOUT_S), '--idle-timeout', String(IDLE_TIMEOUT_S), '--max-compressors', String(MAX_COMPRESSORS), '--compress', 'auto']);
    const port = srv.port;
    const pid = srv.proc.pid!;
    let maxChildren = 0;
    let maxRssKiB = 0;
    sampler = setInterval(() => {
      maxChildren = Math.max(maxChildren, childrenOf(pid));
      try {
        maxRssKiB = Math.max(maxRssKiB, srv!.memory().rssKiB);
      } catch {
        /* exited: the assertions below say so */
      }
    }, 50);

    const errorBodies: string[] = [];
    const hostile = async (): Promise<Record<string, unknown>> => {
      const facts: Record<string, unknown> = {};
      // Slow loris: headers a byte at a time; a body a byte at a time; a connection that says nothing.
      const lorisHeaders = Array.from({ length: 60 }, () => slowLoris(port, 'GET /v1/tags HTTP/1.1\r\nHost: x\r\n', 'X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n', 200));
      const lorisBody = Array.from({ length: 30 }, () => slowLoris(port, 'POST /v1/objects/query HTTP/1.1\r\nHost: x\r\nContent-Length: 3200000\r\n\r\n', 'abcdefgh', 200));
      const silent = Array.from({ length: 30 }, () => slowLoris(port, '', '', 1e9));

      log('slow connections opened');
      // 16,384 copies of the largest digest: looked up once, sent once.
      const copies = Buffer.concat(Array.from({ length: 16_384 }, () => digest));
      const q0 = Date.now();
      const q = await send(port, 'POST', '/v1/objects/query', { body: copies, headers: { 'Content-Type': 'application/octet-stream' } });
      assert.equal(q.status, 200, q.body.toString());
      assert.equal(q.headers['x-cfsdist-present'], '16384');
      assert.ok(q.body.equals(Buffer.alloc(2048, 0xff)), 'every copy is reported present');
      facts.querySeconds = (Date.now() - q0) / 1000;
      log('query done');
      const p = await send(port, 'POST', '/v1/objects/pack', { body: copies, headers: { 'Content-Type': 'application/octet-stream', 'Accept-Encoding': 'identity' } });
      assert.equal(p.status, 200, p.body.toString());
      assert.ok(p.body.length <= largest.size + 1024, `a pack of 16,384 copies is ${p.body.length} bytes, the object ${largest.size}`);
      facts.packBytes = p.body.length;

      log('pack done');
      // A burst of zstd requests: 48 at once, none read until all have answered headers.
      const burst = await Promise.all(
        Array.from({ length: 48 }, () =>
          new Promise<string>((resolve, reject) => {
            const req = request({ host: '127.0.0.1', port, path: `/v1/objects/${largest.hex}`, headers: { 'Accept-Encoding': 'zstd, gzip' }, agent: false }, (res) => {
              const enc = String(res.headers['content-encoding'] ?? 'identity');
              setTimeout(() => {
                res.destroy();
                resolve(enc);
              }, 1500);
            });
            req.on('error', reject);
            req.end();
          }),
        ),
      );
      facts.burstEncodings = burst.reduce<Record<string, number>>((m, e) => ({ ...m, [e]: (m[e] ?? 0) + 1 }), {});
      // (A compressor that finished frees its slot, so more than the cap may be zstd over the
      // burst; at no moment do more than the cap run — the sampler below checks that.)
      assert.ok(burst.includes('gzip'), `beyond the compressor cap, answers are gzip: ${JSON.stringify(facts.burstEncodings)}`);

      log('burst done');
      // Encoded bodies without a token: refused, no decompressor started.
      const encoded = await Promise.all(Array.from({ length: 32 }, () => send(port, 'POST', '/v1/objects/query', { body: Buffer.alloc(64), headers: { 'Content-Encoding': 'zstd' } })));
      for (const r of encoded) assert.equal(r.status, 415);
      errorBodies.push(encoded[0]!.body.toString());

      log('encoded done');
      // Oversized and malformed bodies and URLs.
      const cases: [string, string, Record<string, string>, Buffer | undefined, number][] = [
        ['POST', '/v1/objects/query', { 'Content-Length': String(200 << 20) }, undefined, 413],
        ['POST', '/v1/objects/pack', {}, Buffer.alloc(16_385 * 32), 413],
        ['POST', '/v1/objects/query', {}, Buffer.alloc(33), 400],
        ['GET', '/v1/objects/%ZZ', {}, undefined, 400],
        ['GET', '/v1/statements/%E0%A4%A/x', {}, undefined, 400],
        ['GET', `/v1/images/${'0'.repeat(64)}`, {}, undefined, 404],
        ['GET', '/v1/objects/not-a-digest', {}, undefined, 400],
        ['GET', `/v1/statements/${'../'.repeat(8)}etc/passwd`, {}, undefined, 404],
        ['GET', '/v1/statements/..%2F..%2Fetc/x', {}, undefined, 400],
        ['PUT', `/v1/objects/${largest.hex}`, {}, Buffer.alloc(10), 403],
        ['DELETE', '/v1/tags', {}, undefined, 405],
      ];
      for (const [method, path, headers, body, want] of cases) {
        log(`${method} ${path.slice(0, 60)}`);
        const r = await send(port, method, path, { headers, body });
        assert.equal(r.status, want, `${method} ${path}: ${r.status} ${r.body.toString().slice(0, 200)}`);
        errorBodies.push(r.body.toString());
      }
      log('cases done');
      const long = await send(port, 'GET', `/v1/objects/${'a'.repeat(100_000)}`);
      assert.ok(long.status === 431 || long.status === 414 || long.status === 400, `very long URL: ${long.status}`);

      log('long url done');
      const loris = await Promise.all(lorisHeaders);
      const slowBodies = await Promise.all(lorisBody);
      const silence = await Promise.all(silent);
      facts.slowHeadersClosedAfter = Math.max(...loris);
      facts.slowBodyClosedAfter = Math.max(...slowBodies);
      facts.silentClosedAfter = Math.max(...silence);
      log('slow connections closed');
      return facts;
    };

    const honest = async (i: number): Promise<void> => {
      const client = join(work, `client-${i}`);
      for (const tag of ['v1', 'v2']) {
        const r = await runCli(['--store', client, '--quiet', 'pull', `${srv!.url}/${NAME}:${tag}`, '--trust', `${key}.pub`, '--json'], { timeoutMs: 300_000 });
        assert.equal(r.code, 0, `honest client ${i}, ${tag}: ${r.stderr}`);
      }
    };

    const t0 = Date.now();
    // Every side runs to its end before anything is judged (a failure must not leave pulls
    // running into the clean-up).
    const settled = await Promise.allSettled([hostile(), ...Array.from({ length: HONEST }, (_, i) => honest(i))]);
    for (const r of settled) if (r.status === 'rejected') throw r.reason;
    const facts = (settled[0] as PromiseFulfilledResult<Record<string, unknown>>).value;
    clearInterval(sampler);
    const hwm = srv.memory().hwmKiB;
    t.diagnostic(`${HONEST} honest clients pulled v1 and v2 in ${((Date.now() - t0) / 1000).toFixed(1)} s beside the hostile ones: ${JSON.stringify(facts)}`);
    t.diagnostic(`server: peak RSS ${(hwm / 1024).toFixed(0)} MiB, at most ${maxChildren} child processes`);
    assert.ok(hwm < RSS_CAP_MIB * 1024, `server peak RSS ${hwm} KiB`);
    assert.ok(maxRssKiB < RSS_CAP_MIB * 1024);
    assert.ok(maxChildren <= MAX_COMPRESSORS, `server had ${maxChildren} child processes (cap ${MAX_COMPRESSORS})`);
    // Closed within the configured timeouts (plus Node's check interval and a loaded machine).
    assert.ok((facts.slowHeadersClosedAfter as number) < HEADERS_TIMEOUT_S + 3, `slow headers lived ${facts.slowHeadersClosedAfter} s`);
    assert.ok((facts.slowBodyClosedAfter as number) < REQUEST_TIMEOUT_S + 3, `slow body lived ${facts.slowBodyClosedAfter} s`);
    assert.ok((facts.silentClosedAfter as number) < IDLE_TIMEOUT_S + 3, `silent connection lived ${facts.silentClosedAfter} s`);
    for (const b of errorBodies) {
      assert.ok(!b.includes(server) && !b.includes(tmpdir()), `an error body names a path: ${b}`);
    }
    // Still serving.
    const after = await send(port, 'GET', '/v1/tags');
    assert.equal(after.status, 200);
  } finally {
    // Cleared here too: a failure above must not leave the sampler keeping the test alive.
    clearInterval(sampler);
    await srv?.stop();
    rmSync(work, { recursive: true, force: true });
  }
});
