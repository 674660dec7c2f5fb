/**
 * The tamper matrix: a pull through a hostile path must fail with a clear message and leave
 * the client store exactly as it was (no new object or image, tags and rollback floor
 * unchanged, no temporary file left). Server-side damage is done to the real server's store;
 * wire-level misbehaviour (hang mid-body, more bytes than declared) comes from a proxy in this
 * test that forwards to the real server and alters its answers.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { mkdtempSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync, existsSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ObjectDir, Store } from '../src/store/store.js';
import { SignRecords, tagStatementPath } from '../src/sign/records.js';
import { parseEnvelope } from '../src/sign/dsse.js';
import { toHex } from '../src/verity/digest.js';
import { cleanup, makeImageFamily, makeKey, newObjects, runCli, signTag, snapshotStore, startServe } from './pull-fixtures.js';
import type { ImageFamily, ServeProcess } from './pull-fixtures.js';

let dir = '';
let fam: ImageFamily;
let srv: ServeProcess;
let pub = '';
let keyA = '';
let keyB = '';
let client = '';
let proxy: Server;
let proxyUrl = '';
const sockets = new Set<Socket>();
type Mode = 'pass' | 'hang' | 'overlong-object' | 'overlong-chunked' | 'overlong-pack' | 'overlong-image';
let mode: Mode = 'pass';

/** Forward to the real server (identity encoding), altering the answer as `mode` says. */
function startProxy(): Promise<void> {
  proxy = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (c: Buffer) => parts.push(c));
    req.on('end', () => {
      const headers = { ...req.headers, 'accept-encoding': 'identity' };
      delete headers.host;
      const up = request(srv.url + req.url, { method: req.method, headers }, (ur) => {
        const body: Buffer[] = [];
        ur.on('data', (c: Buffer) => body.push(c));
        ur.on('end', () => {
          const b = Buffer.concat(body);
          const h = { ...ur.headers };
          const url = req.url ?? '';
          const isObject = /^\/v1\/objects\/[0-9a-f]{64}$/.test(url) && req.method === 'GET';
          const isPack = url === '/v1/objects/pack';
          const isImage = /^\/v1\/images\/[0-9a-f]{64}$/.test(url) && req.method === 'GET';
          const junk = Buffer.alloc(100, 0x5a);
          if (mode === 'hang' && (isObject || isPack) && ur.statusCode === 200) {
            res.writeHead(200, h);
            res.write(b.subarray(0, Math.floor(b.length / 2)));
            return; // …and never more
          }
          if ((mode === 'overlong-object' && isObject) || (mode === 'overlong-image' && isImage)) {
            h['content-length'] = String(b.length + junk.length);
            res.writeHead(ur.statusCode ?? 500, h);
            return res.end(Buffer.concat([b, junk]));
          }
          if ((mode === 'overlong-chunked' && isObject) || (mode === 'overlong-pack' && isPack)) {
            delete h['content-length'];
            res.writeHead(ur.statusCode ?? 500, h);
            res.write(b);
            return res.end(junk);
          }
          res.writeHead(ur.statusCode ?? 500, h);
          res.end(b);
        });
      });
      up.on('error', () => res.destroy());
      up.end(Buffer.concat(parts));
    });
  });
  proxy.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return new Promise((r) =>
    proxy.listen(0, '127.0.0.1', () => {
      const a = proxy.address();
      proxyUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
      r();
    }),
  );
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-tamper-'));
  fam = await makeImageFamily(join(dir, 'server'), { files: 100, large: [1500 * 1024] });
  const a = await makeKey(join(dir, 'keys'), 'a');
  const b = await makeKey(join(dir, 'keys'), 'b');
  pub = a.pub;
  keyA = a.key;
  keyB = b.key;
  await signTag(fam.storeDir, fam.name, 'v1', keyA);
  await signTag(fam.storeDir, fam.name, 'v2', keyA);
  srv = await startServe(fam.storeDir);
  await startProxy();
  client = join(dir, 'client');
  const r = await runCli(['pull', `${srv.url}/${fam.name}:v1`, '--store', client, '--trust', pub]);
  assert.equal(r.code, 0, r.stderr);
});

after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => (proxy ? proxy.close(() => r()) : r()));
  await srv?.stop();
  cleanup(dir, fam?.root ?? '');
});

/** Everything a failed pull must leave alone. */
async function state(): Promise<unknown> {
  const snap = await snapshotStore(client);
  const rec = new SignRecords(client);
  const accepted: Record<string, unknown> = {};
  for (const t of ['v1', 'v2', 'latest']) accepted[t] = (await rec.readAccepted(fam.name, t))?.version ?? null;
  return { ...snap, accepted, tmp: readdirSync(join(client, 'tmp')) };
}

/** Pull NAME:TAG (through the proxy unless `direct`), expect refusal matching `pattern`, and
 * an unchanged client store. */
async function refused(tag: string, pattern: RegExp, opts: { direct?: boolean; timeout?: number } = {}): Promise<void> {
  // Start without what earlier failed pulls verified and kept for a resume (ingest areas).
  rmSync(join(client, 'ingest'), { recursive: true, force: true });
  const before = await state();
  const url = `${opts.direct ? srv.url : proxyUrl}/${fam.name}:${tag}`;
  // --no-delta: these cases attack the full-image path (test/delta-pull.test.ts covers deltas).
  const r = await runCli(['pull', url, '--store', client, '--trust', pub, '--timeout', String(opts.timeout ?? 10), '--compress', 'none', '--no-delta'], { timeoutMs: 40_000 });
  assert.equal(r.code, 1, `pull should fail: ${r.stdout} ${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.deepEqual(await state(), before, 'client store changed');
}

const serverStore = (): Promise<Store> => Store.open(fam.storeDir);

/** Alter a server file for the duration of `fn`. */
async function withFile(path: string, alter: (b: Buffer) => Buffer | 'truncate', fn: () => Promise<void>): Promise<void> {
  const saved = readFileSync(path);
  const out = alter(Buffer.from(saved));
  if (out === 'truncate') truncateSync(path, saved.length - 100);
  else writeFileSync(path, out);
  try {
    await fn();
  } finally {
    writeFileSync(path, saved);
  }
}

function flip(b: Buffer): Buffer {
  b[Math.floor(b.length / 2)]! ^= 0x01;
  return b;
}

const fresh = () => newObjects(fam.v1, fam.v2);
const small = () => fresh().find((o) => o.size > 1000 && o.size < 100_000)!;
const large = () => fresh().find((o) => o.size >= 1 << 20)!;

test('a corrupted object on the server (in a pack, and fetched alone) is refused', async () => {
  const s = await serverStore();
  await withFile(s.objects.path(small().digest), flip, () => refused('v2', new RegExp(`object ${toHex(small().digest)} .*does not match the signed image.*digest mismatch`)));
  // What the failed pull kept for a resume is verified content only.
  const kept = readdirSync(join(client, 'ingest'));
  assert.equal(kept.length, 1);
  const staged = new ObjectDir(join(client, 'ingest', kept[0]!, 'objects'));
  const { objects } = await staged.scan();
  assert.ok(!objects.some((o) => o.hex === toHex(small().digest)), 'the corrupt object was kept');
  for (const o of objects) assert.equal(await staged.verify(Buffer.from(o.hex, 'hex')), true, o.hex);
  await withFile(s.objects.path(large().digest), flip, () => refused('v2', new RegExp(`object ${toHex(large().digest)} .*does not match the signed image`)));
});

test('a truncated object on the server is refused', async () => {
  const s = await serverStore();
  await withFile(s.objects.path(small().digest), () => 'truncate', () => refused('v2', new RegExp(`pack declares ${small().size - 100} bytes for object ${toHex(small().digest)}; the image says ${small().size}`)));
  await withFile(s.objects.path(large().digest), () => 'truncate', () => refused('v2', new RegExp(`object ${toHex(large().digest)} .*declares ${large().size - 100} bytes, but it has ${large().size}`)));
});

test('a corrupted image on the server is refused before anything else happens', async () => {
  const s = await serverStore();
  await withFile(s.imagePath(fam.v2.image), flip, () => refused('v2', new RegExp(`image from .*fs-verity digest [0-9a-f]{64}, but the signed statement names ${toHex(fam.v2.image)}`)));
});

test('statements: edited, signed by another key, expired, missing', async () => {
  // The statement the server serves: the one the tag names.
  const s = await serverStore();
  const records = new SignRecords(fam.storeDir);
  const served = (): Promise<string> => tagStatementPath(s, records, fam.name, 'v2');
  const tag0 = (await s.getTagRecord(fam.name, 'v2'))!;
  const path = await served();
  // edited: claims version 9 with the original signature
  await withFile(
    path,
    (b) => {
      const env = parseEnvelope(b, 't');
      const doc = JSON.parse(Buffer.from(env.payload, 'base64').toString());
      doc.predicate.version = 9;
      return Buffer.from(JSON.stringify({ ...env, payload: Buffer.from(JSON.stringify(doc)).toString('base64') }));
    },
    () => refused('v2', /bad signature/),
  );
  // another key
  const saved = readFileSync(path);
  try {
    await signTag(fam.storeDir, fam.name, 'v2', keyB);
    await refused('v2', /signed by unknown key/);
    // expired: signed long ago for a day
    await signTag(fam.storeDir, fam.name, 'v2', keyA, { now: Math.floor(Date.now() / 1000) - 10 * 86400, expiresIn: 86400 });
    await refused('v2', /expired at/);
    unlinkSync(await served());
    await refused('v2', /no signed statement .*unsigned images are refused/);
  } finally {
    writeFileSync(path, saved);
    await s.setTag(fam.name, 'v2', tag0.image, tag0.meta);
  }
});

test('a server that hangs mid-body fails the pull by timeout', async () => {
  mode = 'hang';
  try {
    await refused('v2', /no data from the server for 2 s \(timeout\)/, { timeout: 2 });
  } finally {
    mode = 'pass';
    for (const s of sockets) s.destroy();
  }
});

test('a server that sends more bytes than declared is refused', async () => {
  try {
    mode = 'overlong-object';
    await refused('v2', new RegExp(`object ${toHex(large().digest)} .*declares ${large().size + 100} bytes, but it has ${large().size}`));
    mode = 'overlong-chunked';
    await refused('v2', new RegExp(`object ${toHex(large().digest)} .*sent more than the ${large().size} bytes expected`));
    mode = 'overlong-pack';
    await refused('v2', /pack from .*(more than the \d+ bytes allowed|bytes after the pack trailer)/);
    mode = 'overlong-image';
    await refused('v2', new RegExp(`image ${toHex(fam.v2.image)} .*declares ${fam.v2.imageSize + 100} bytes`));
  } finally {
    mode = 'pass';
  }
});

test('a rollback to an older version is refused', async () => {
  // latest → v1 as version 1 (kept), then latest → v2 as version 2, which the client accepts
  const s = await serverStore();
  const rec = new SignRecords(fam.storeDir);
  await s.setTag(fam.name, 'latest', fam.v1.image);
  await signTag(fam.storeDir, fam.name, 'latest', keyA);
  const old = (await rec.readStatement(fam.name, 'latest'))!;
  await s.setTag(fam.name, 'latest', fam.v2.image);
  await signTag(fam.storeDir, fam.name, 'latest', keyA);
  const ok = await runCli(['pull', `${srv.url}/${fam.name}:latest`, '--store', client, '--trust', pub, '--json']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).version, 2);
  // the server (or a mirror) now serves the older, validly signed statement
  writeFileSync(await tagStatementPath(s, rec, fam.name, 'latest'), old);
  await refused('latest', /rollback refused: statement version 1 for .*:latest is older than version 2 accepted before/, { direct: true });
  assert.equal((await snapshotStore(client)).tags[`${fam.name}:latest`], toHex(fam.v2.image));
  assert.ok(existsSync(join(client, 'signatures', fam.name, ':latest.accepted')));
});
