/**
 * Credentials stay with their host. Two fake registries in this process — A on 127.0.0.1 and B
 * reached as `localhost` — record every Authorization header; the CLI runs as a child
 * (asynchronously: this process must keep serving). Whatever A is configured with (an auths
 * entry, a credential helper through credHelpers or credsStore, CFSDIST_REGISTRY_HOST, --creds),
 * B never receives it: not as a registry, not as A's token realm. An https registry redirecting
 * to plain http is refused.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanup, runCli } from './pull-fixtures.js';
import { makeTestCa } from './registry-fixtures.js';
import type { TestCa } from './registry-fixtures.js';

interface Seen {
  method: string;
  url: string;
  authorization?: string;
}

/** A fake registry: `handle` answers, every request is recorded first. */
interface Fake {
  port: number;
  seen: Seen[];
  server: Server;
  handle: (req: IncomingMessage, res: ServerResponse) => void;
}

function basic(user: string, pass: string): string {
  return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
}

/** Answers: 401 Basic without Authorization, 404 (no such manifest) with it. */
function basicRegistry(req: IncomingMessage, res: ServerResponse): void {
  if (!req.headers.authorization) {
    res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="fake"', 'Content-Type': 'application/json' });
    res.end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    return;
  }
  res.writeHead(404, { 'Content-Type': 'application/json' });
  res.end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
}

async function fake(tls?: TestCa): Promise<Fake> {
  const f: Fake = { port: 0, seen: [], server: undefined as unknown as Server, handle: basicRegistry };
  const on = (req: IncomingMessage, res: ServerResponse): void => {
    f.seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    f.handle(req, res);
  };
  f.server = tls ? createHttpsServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, on) : createServer(on);
  await new Promise<void>((r) => f.server.listen(0, '127.0.0.1', () => r()));
  f.port = (f.server.address() as AddressInfo).port;
  return f;
}

let dir = '';
let ca: TestCa;
let A: Fake;
let B: Fake;
let a = '';
let b = '';
const clean: NodeJS.ProcessEnv = { CFSDIST_REGISTRY_USER: '', CFSDIST_REGISTRY_PASSWORD: '', CFSDIST_REGISTRY_HOST: '', DOCKER_CONFIG: '' };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-net-creds-'));
  ca = makeTestCa(dir);
  A = await fake();
  B = await fake();
  a = `127.0.0.1:${A.port}`;
  b = `localhost:${B.port}`;
  // A credential helper that knows A only, and logs what it was asked.
  mkdirSync(join(dir, 'bin'));
  writeFileSync(
    join(dir, 'bin', 'docker-credential-test'),
    `#!/bin/sh\nread -r host\necho "$1 $host" >> ${join(dir, 'helper.log')}\n` +
      `if [ "$host" = "${a}" ]; then echo '{"ServerURL":"${a}","Username":"helper-user","Secret":"helper-secret"}'; exit 0; fi\n` +
      `echo "credentials not found in native keychain"; exit 1\n`,
  );
  chmodSync(join(dir, 'bin', 'docker-credential-test'), 0o755);
});

after(async () => {
  for (const f of [A, B]) {
    f?.server.closeAllConnections?.();
    await new Promise((r) => f?.server.close(r));
  }
  if (dir) cleanup(dir);
});

function reset(): void {
  A.seen.length = 0;
  B.seen.length = 0;
  A.handle = basicRegistry;
  B.handle = basicRegistry;
}

function authFile(name: string, doc: unknown): string {
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(doc));
  return p;
}

async function importFrom(host: string, env: NodeJS.ProcessEnv, extra: string[] = []) {
  return runCli(['import', `docker://${host}/app/x:v1`, 'x:v1', '--store', join(dir, 'store'), ...extra], { env: { ...clean, ...env, PATH: `${join(dir, 'bin')}:${process.env.PATH}` } });
}

const auths = (s: Seen[]) => s.map((x) => x.authorization).filter(Boolean);

test('an auths entry for A is sent to A and never to B', async () => {
  reset();
  const file = authFile('auths.json', { auths: { [a]: { auth: Buffer.from('alice:a-pass').toString('base64') } } });
  const ra = await importFrom(a, { CFSDIST_REGISTRY_AUTH_FILE: file });
  assert.match(ra.stderr, /no such image/);
  assert.deepEqual(auths(A.seen), [basic('alice', 'a-pass')]);
  const rb = await importFrom(b, { CFSDIST_REGISTRY_AUTH_FILE: file });
  assert.notEqual(rb.code, 0);
  assert.ok(B.seen.length > 0);
  assert.deepEqual(auths(B.seen), [], 'B received no Authorization at all');
  assert.match(rb.stderr, /wants a user name and password/);
});

test('credHelpers and credsStore run docker-credential-<name> get for that host only; "not found" is no credentials', async () => {
  reset();
  const helpers = authFile('helpers.json', { credHelpers: { [a]: 'test' } });
  await importFrom(a, { CFSDIST_REGISTRY_AUTH_FILE: helpers });
  assert.deepEqual(auths(A.seen), [basic('helper-user', 'helper-secret')]);
  await importFrom(b, { CFSDIST_REGISTRY_AUTH_FILE: helpers });
  assert.deepEqual(auths(B.seen), []);
  assert.deepEqual(readFileSync(join(dir, 'helper.log'), 'utf8').trim().split('\n'), [`get ${a}`], 'the helper of A was not asked about B');

  reset();
  const store = authFile('store.json', { credsStore: 'test' });
  await importFrom(a, { CFSDIST_REGISTRY_AUTH_FILE: store });
  assert.deepEqual(auths(A.seen), [basic('helper-user', 'helper-secret')]);
  const rb = await importFrom(b, { CFSDIST_REGISTRY_AUTH_FILE: store });
  assert.deepEqual(auths(B.seen), []);
  assert.match(rb.stderr, /wants a user name and password/, 'not found is not an error of its own');
  assert.ok(readFileSync(join(dir, 'helper.log'), 'utf8').includes(`get ${b}`));
});

test('CFSDIST_REGISTRY_USER/PASSWORD apply only to the host CFSDIST_REGISTRY_HOST names', async () => {
  reset();
  const env = { CFSDIST_REGISTRY_USER: 'envuser', CFSDIST_REGISTRY_PASSWORD: 'envpass', CFSDIST_REGISTRY_HOST: a, CFSDIST_REGISTRY_AUTH_FILE: join(dir, 'none.json') };
  await importFrom(a, env);
  assert.deepEqual(auths(A.seen), [basic('envuser', 'envpass')]);
  const rb = await importFrom(b, env);
  assert.deepEqual(auths(B.seen), []);
  assert.match(rb.stderr, new RegExp(`CFSDIST_REGISTRY_USER is set for ${a.replace(/\./g, '\\.')}, not ${b}`));
});

test('a Bearer realm on another host gets no Basic credentials (auths, env, --creds): an anonymous token request, and a clear AUTH error naming the realm', async () => {
  reset();
  A.handle = (req, res) => {
    if (req.headers.authorization === 'Bearer anon-token') {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
      return;
    }
    res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://${b}/token",service="fake"` });
    res.end();
  };
  let anonymous = true;
  B.handle = (req, res) => {
    if (anonymous && !req.headers.authorization) {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{"token":"anon-token"}');
      return;
    }
    res.writeHead(401);
    res.end('{"error":"denied"}');
  };
  const file = authFile('auths-a.json', { auths: { [a]: { username: 'alice', password: 'a-pass' } } });
  const env = { CFSDIST_REGISTRY_AUTH_FILE: file, CFSDIST_REGISTRY_USER: 'envuser', CFSDIST_REGISTRY_PASSWORD: 'envpass' };
  const r1 = await importFrom(a, env, ['--creds', 'bob:b-pass']);
  assert.match(r1.stderr, /no such image/, 'the anonymous token was used');
  assert.ok(B.seen.length > 0 && B.seen.every((s) => s.url.startsWith('/token?')));
  assert.deepEqual(auths(B.seen), [], 'the realm on another host received no credentials');
  assert.ok(A.seen.some((s) => s.authorization === 'Bearer anon-token'));

  anonymous = false;
  B.seen.length = 0;
  const r2 = await importFrom(a, env, ['--creds', 'bob:b-pass']);
  assert.notEqual(r2.code, 0);
  assert.match(r2.stderr, new RegExp(`token server http://${b}/token refused anonymous access: 401 .*no credentials were sent: the realm http://${b} is not on the registry's host 127\\.0\\.0\\.1`));
  assert.deepEqual(auths(B.seen), []);
});

test('--creds go to the registry the reference names, and to its realm on the same host', async () => {
  reset();
  A.handle = (req, res) => {
    if (req.url?.startsWith('/token')) {
      res.writeHead(req.headers.authorization === basic('bob', 'b-pass') ? 200 : 401, { 'Content-Type': 'application/json' });
      res.end('{"token":"bob-token"}');
      return;
    }
    if (req.headers.authorization === 'Bearer bob-token') {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://${a}/token",service="fake"` });
    res.end();
  };
  const r = await importFrom(a, { CFSDIST_REGISTRY_AUTH_FILE: join(dir, 'none.json') }, ['--creds', 'bob:b-pass']);
  assert.match(r.stderr, /no such image/);
  assert.ok(A.seen.some((s) => s.url.startsWith('/token') && s.authorization === basic('bob', 'b-pass')));
  assert.equal(B.seen.length, 0);
});

test('an https registry redirecting to plain http is refused (INSECURE_REDIRECT) and the http side is never contacted', async () => {
  reset();
  const S = await fake(ca);
  S.handle = (_req, res) => {
    res.writeHead(307, { Location: `http://${b}/stolen` });
    res.end();
  };
  try {
    const r = await runCli(['import', `docker://127.0.0.1:${S.port}/app/x:v1`, 'x:v1', '--store', join(dir, 'store'), '--ca-file', ca.caCert, '--creds', 'alice:a-pass'], { env: clean });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`redirects to http://${b}/stolen, from https down to http; refused`));
    assert.equal(B.seen.length, 0);
    assert.ok(S.seen.length >= 1);
  } finally {
    S.server.closeAllConnections?.();
    await new Promise((res) => S.server.close(res));
  }
});
