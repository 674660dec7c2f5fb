/**
 * Push to a real `cfsdist serve --token-file`: refused with 401 (no token) and 403 (wrong
 * token) leaving the server store untouched; with the token, v1 sends everything (zstd), v2
 * only the objects v1 lacks (gzip), a repeat nothing; an unsigned tag is not pushed; an older statement
 * is refused by the server; what was pushed pulls back intact.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { SignRecords } from '../src/sign/records.js';
import type { PushSummary } from '../src/client/push.js';
import { toHex } from '../src/verity/digest.js';
import { bytesOf, cleanup, makeImageFamily, makeKey, newObjects, runCli, signTag, snapshotStore, startServe } from './pull-fixtures.js';
import type { ImageFamily, ServeProcess } from './pull-fixtures.js';

let dir = '';
let fam: ImageFamily;
let srv: ServeProcess;
let pub = '';
let key = '';
let serverStore = '';
const TOKEN = 'push-token-0123456789';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-push-'));
  fam = await makeImageFamily(join(dir, 'local'), { files: 120, large: [1500 * 1024] });
  const k = await makeKey(join(dir, 'keys'));
  pub = k.pub;
  key = k.key;
  await signTag(fam.storeDir, fam.name, 'v1', key);
  await signTag(fam.storeDir, fam.name, 'v2', key);
  writeFileSync(join(dir, 'token'), TOKEN + '\n');
  writeFileSync(join(dir, 'wrong'), 'not-the-token\n');
  serverStore = join(dir, 'server');
  srv = await startServe(serverStore, ['--token-file', join(dir, 'token')]);
});

after(async () => {
  await srv?.stop();
  cleanup(dir, fam?.root ?? '');
});

async function pushJson(tag: string, tokenFile = join(dir, 'token'), extra: string[] = []): Promise<PushSummary> {
  const r = await runCli(['push', `${fam.name}:${tag}`, srv.url, '--store', fam.storeDir, '--token-file', tokenFile, '--json', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as PushSummary;
}

test('push without a token (401) or with a wrong one (403) is refused and stores nothing', async () => {
  const before = await snapshotStore(serverStore);
  const none = await runCli(['push', `${fam.name}:v1`, srv.url, '--store', fam.storeDir], { env: { CFSDIST_TOKEN: '' } });
  assert.equal(none.code, 1);
  assert.match(none.stderr, /: 401: push needs a bearer token/);
  const wrong = await runCli(['push', `${fam.name}:v1`, srv.url, '--store', fam.storeDir, '--token-file', join(dir, 'wrong')]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /: 403: wrong bearer token/);
  assert.deepEqual(await snapshotStore(serverStore), before);
  assert.deepEqual(before, { objects: [], images: [], tags: {}, configs: [], tagConfigs: {} });
  assert.equal(await new SignRecords(serverStore).readStatement(fam.name, 'v1'), undefined);
});

test('push v1 sends everything, v2 only what the server lacks, a repeat nothing', async () => {
  const p1 = await pushJson('v1', join(dir, 'token'), ['--compress', 'zstd']);
  assert.deepEqual(p1.objects, { needed: fam.v1.objects.length, present: 0, sent: fam.v1.objects.length });
  assert.equal(p1.bytes.sent, bytesOf(fam.v1.objects));
  const fresh = newObjects(fam.v1, fam.v2);
  const p2 = await pushJson('v2', join(dir, 'token'), ['--compress', 'gzip']);
  assert.deepEqual(p2.objects, { needed: fam.v2.objects.length, present: fam.v2.objects.length - fresh.length, sent: fresh.length });
  assert.equal(p2.bytes.sent, bytesOf(fresh));
  const p3 = await pushJson('v2');
  assert.equal(p3.objects.sent, 0);
  const snap = await snapshotStore(serverStore);
  assert.equal(snap.tags[`${fam.name}:v1`], toHex(fam.v1.image));
  assert.equal(snap.tags[`${fam.name}:v2`], toHex(fam.v2.image));
  const rec = new SignRecords(serverStore);
  assert.ok((await rec.readStatement(fam.name, 'v2'))!.equals((await new SignRecords(fam.storeDir).readStatement(fam.name, 'v2'))!));
  const s = await Store.open(serverStore);
  assert.equal((await s.fsck()).ok, true);
});

test('what was pushed pulls back intact', async () => {
  const client = join(dir, 'client');
  const r = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', client, '--trust', pub, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const c = await Store.open(client);
  for (const o of fam.v2.objects) assert.equal(await c.objects.verify(o.digest), true);
  assert.ok(readFileSync(c.imagePath(fam.v2.image)).equals(readFileSync((await Store.open(fam.storeDir)).imagePath(fam.v2.image))));
});

test('an unsigned tag is not pushed; an older statement is refused by the server', async () => {
  const local = await Store.open(fam.storeDir);
  await local.setTag(fam.name, 'unsigned', fam.v1.image);
  const u = await runCli(['push', `${fam.name}:unsigned`, srv.url, '--store', fam.storeDir, '--token-file', join(dir, 'token')]);
  assert.equal(u.code, 1);
  assert.match(u.stderr, /no signed statement .* sign it first/);
  // v1 is re-signed (version 2) and pushed; then the version-1 statement is pushed again
  const rec = new SignRecords(fam.storeDir);
  const old = (await rec.readStatement(fam.name, 'v1'))!;
  await signTag(fam.storeDir, fam.name, 'v1', key);
  assert.equal((await pushJson('v1')).version, 2);
  writeFileSync(rec.statementPath(fam.name, 'v1'), old);
  const r = await runCli(['push', `${fam.name}:v1`, srv.url, '--store', fam.storeDir, '--token-file', join(dir, 'token')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /409: .*version 1 is not newer than the server's version 2/);
});
