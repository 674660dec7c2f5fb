/**
 * Pull end to end against a real `cfsdist serve` on 127.0.0.1: v1, then v2 sharing most files —
 * the v2 pull fetches exactly the objects v1 lacks (counts and bytes), the dry-run plan
 * predicts it and changes nothing, the result equals the server's (image dump, every object,
 * and — as root — the kernel mount equals the source directory), a re-pull fetches nothing,
 * fsck is clean; the statement and rollback floor are recorded.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { readImage } from '../src/erofs/reader.js';
import { formatDumpfile } from '../src/dumpfile/index.js';
import { SignRecords } from '../src/sign/records.js';
import { ProgressLine } from '../src/client/progress.js';
import type { PullSummary } from '../src/client/pull.js';
import { toHex } from '../src/verity/digest.js';
import { notRoot } from './helpers.js';
import { bytesOf, cleanup, makeImageFamily, newObjects, runCli, signFamily, snapshotStore, startServe, treeFiles } from './pull-fixtures.js';
import type { ImageFamily, ServeProcess } from './pull-fixtures.js';

let dir = '';
let fam: ImageFamily;
let srv: ServeProcess;
let pub = '';
let client = '';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-pull-'));
  fam = await makeImageFamily(join(dir, 'server'));
  pub = await signFamily(fam, join(dir, 'keys'));
  srv = await startServe(fam.storeDir);
  client = join(dir, 'client');
});

after(async () => {
  await srv?.stop();
  cleanup(dir, fam?.root ?? '');
});

async function pullJson(tag: string, extra: string[] = []): Promise<PullSummary> {
  const r = await runCli(['pull', `${srv.url}/${fam.name}:${tag}`, '--store', client, '--trust', pub, '--json', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as PullSummary;
}

test('pull v1 fetches every object; pull v2 fetches exactly what v1 lacks', async () => {
  const s1 = await pullJson('v1');
  assert.equal(s1.image, toHex(fam.v1.image));
  assert.deepEqual(s1.objects, { needed: fam.v1.objects.length, present: 0, resumed: 0, fetched: fam.v1.objects.length });
  assert.equal(s1.bytes.fetched, bytesOf(fam.v1.objects));
  assert.equal(s1.bytes.image, fam.v1.imageSize);
  assert.ok(s1.wire.requests <= 10, `${s1.wire.requests} requests for ${fam.v1.objects.length} objects`);

  // The plan, without changes.
  const before = await snapshotStore(client);
  const dry = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', client, '--trust', pub, '--dry-run', '--json']);
  assert.equal(dry.code, 0, dry.stderr);
  const plan = JSON.parse(dry.stdout).plan;
  const fresh = newObjects(fam.v1, fam.v2);
  assert.deepEqual(plan.fetch, { count: fresh.length, bytes: bytesOf(fresh) });
  assert.equal(plan.present.count, fam.v2.objects.length - fresh.length);
  assert.equal(plan.imageBytes, fam.v2.imageSize);
  assert.deepEqual(plan.shared, [{ name: fam.name, tag: 'v1', image: toHex(fam.v1.image), objects: plan.present.count, bytes: plan.present.bytes }]);
  assert.deepEqual(new Set(plan.objects.map((o: { digest: string }) => o.digest)), new Set(fresh.map((o) => toHex(o.digest))));
  assert.deepEqual(await snapshotStore(client), before, 'dry run changed the store');
  const human = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', client, '--trust', pub, '--dry-run']);
  assert.match(human.stdout, new RegExp(`to fetch: +${fresh.length} `));
  assert.match(human.stdout, new RegExp(`shares ${plan.present.count} objects .* with ${fam.name}:v1`));
  assert.equal((human.stdout.match(/^ {2}fetch [0-9a-f]{64} {2}/gm) ?? []).length, Math.min(20, fresh.length));

  // A dry run without any store plans against nothing and creates nothing.
  const none = join(dir, 'no-store-here');
  const dry0 = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', none, '--trust', pub, '--dry-run', '--json']);
  assert.equal(dry0.code, 0, dry0.stderr);
  assert.deepEqual(JSON.parse(dry0.stdout).plan.fetch, { count: fam.v2.objects.length, bytes: bytesOf(fam.v2.objects) });
  assert.equal(existsSync(none), false);

  const s2 = await pullJson('v2');
  assert.equal(s2.objects.fetched, fresh.length);
  assert.equal(s2.bytes.fetched, bytesOf(fresh));
  assert.equal(s2.objects.present, fam.v2.objects.length - fresh.length);
  assert.ok(fresh.length > 0 && fresh.length < fam.v2.objects.length / 4, 'v2 shares most objects');

  const after = await snapshotStore(client);
  assert.equal(after.tags[`${fam.name}:v2`], toHex(fam.v2.image));
  assert.equal(after.tags[`${fam.name}:v1`], toHex(fam.v1.image));
  assert.deepEqual(after.objects.length, before.objects.length + fresh.length);
});

test('the pulled result equals the server\'s: image dump and every object', async () => {
  const cs = await Store.open(client);
  const ss = await Store.open(fam.storeDir);
  for (const m of [fam.v1, fam.v2]) {
    const mine = readFileSync(cs.imagePath(m.image));
    const theirs = readFileSync(ss.imagePath(m.image));
    assert.ok(formatDumpfile(readImage(mine)).equals(formatDumpfile(readImage(theirs))));
    for (const o of m.objects) assert.ok((await cs.objects.read(o.digest, { verify: true })).equals(await ss.objects.read(o.digest)), toHex(o.digest));
    assert.deepEqual((await cs.imageObjects(m.image)).map(toHex), m.objects.map((o) => toHex(o.digest)));
  }
  const r = await cs.fsck();
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.tempFiles.length, 0);
  // statement and rollback floor recorded; ingest areas cleaned up
  const rec = new SignRecords(client);
  assert.ok((await rec.readStatement(fam.name, 'v2'))!.equals(readFileSync(join(fam.storeDir, 'signatures', fam.name, ':v2.dsse'))));
  assert.deepEqual(
    { version: (await rec.readAccepted(fam.name, 'v2'))!.version, image: (await rec.readAccepted(fam.name, 'v2'))!.image },
    { version: 1, image: toHex(fam.v2.image) },
  );
  const { readdirSync } = await import('node:fs');
  assert.deepEqual(readdirSync(join(client, 'ingest')), []);
  // the client can verify what it pulled
  const v = await runCli(['verify', `${fam.name}:v2`, '--store', client, '--trust', pub]);
  assert.equal(v.code, 0, v.stderr);
});

test('a re-pull fetches nothing, not even the image', async () => {
  const s = await pullJson('v2', ['--compress', 'none']);
  assert.deepEqual(s.objects, { needed: fam.v2.objects.length, present: fam.v2.objects.length, resumed: 0, fetched: 0 });
  assert.equal(s.bytes.image, 0);
  assert.equal(s.wire.requests, 2, 'statement and fs-verity signature lookups only');
});

test('zstd and gzip: the same result with fewer bytes on the wire (auto sends none to loopback)', async () => {
  const content = bytesOf(fam.v2.objects) + fam.v2.imageSize;
  const seen: Record<string, number> = {};
  for (const mode of ['zstd', 'gzip', 'auto']) {
    const store = join(dir, `enc-${mode}`);
    const r = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', store, '--trust', pub, '--json', '--compress', mode]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.objects.fetched, fam.v2.objects.length);
    seen[mode] = s.wire.received;
    const st = await Store.open(store);
    for (const o of fam.v2.objects) assert.equal(await st.objects.verify(o.digest), true);
  }
  // a third of the files are text: compression must show
  assert.ok(seen.zstd! < content * 0.9, `zstd: ${seen.zstd} bytes for ${content}`);
  assert.ok(seen.gzip! < content * 0.9, `gzip: ${seen.gzip} bytes for ${content}`);
  assert.ok(seen.auto! > content, `auto to loopback compresses nothing: ${seen.auto} for ${content}`);
});

test('refusals name the problem: no trust, unknown tag, bad reference', async () => {
  const noTrust = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', join(dir, 'c2')]);
  assert.equal(noTrust.code, 1);
  assert.match(noTrust.stderr, /no trusted keys/);
  const unknown = await runCli(['pull', `${srv.url}/${fam.name}:nope`, '--store', join(dir, 'c2'), '--trust', pub]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no signed statement .*unsigned images are refused/);
  const bad = await runCli(['pull', 'ftp://x/y', '--store', join(dir, 'c2'), '--trust', pub]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /not a remote image reference/);
  const docker = await runCli(['pull', 'docker://127.0.0.1:5000/x:y', '--store', join(dir, 'c2'), '--trust', pub]);
  assert.equal(docker.code, 1);
  const refused = await runCli(['pull', `http://127.0.0.1:1/${fam.name}:v2`, '--store', join(dir, 'c2'), '--trust', pub]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /ECONNREFUSED/);
});

test('the progress line shows objects, bytes, rate and ETA', () => {
  let text = '';
  const fake = { columns: 200, write: (s: string) => ((text += s), true) } as unknown as NodeJS.WriteStream;
  const p = new ProgressLine(fake, 'pull x:y');
  p.update({ phase: 'objects', objectsDone: 5, objectsTotal: 10, bytesDone: 5 << 20, bytesTotal: 10 << 20 }, true);
  assert.match(text, /pull x:y \[#{10}-{10}\] 5\/10 objects {2}5\.0 MiB\/10\.0 MiB {2}[\d.]+ [KMG]?i?B\/s {2}ETA (\d+:\d\d|--:--)/);
  p.done();
  assert.ok(text.endsWith('\r\x1b[K'));
});

function mountSkip(): string | false {
  const r = notRoot();
  if (r) return r;
  const fs = readFileSync('/proc/filesystems', 'utf8');
  if (!/\berofs\b/.test(fs) || !/\boverlay\b/.test(fs)) return 'kernel lacks erofs or overlayfs';
  return false;
}

test('as root: the kernel mount of the pulled v2 equals its source directory', { skip: mountSkip() }, async () => {
  const cs = await Store.open(client);
  const m1 = join(dir, 'm-erofs');
  const m2 = join(dir, 'm-overlay');
  mkdirSync(m1);
  mkdirSync(m2);
  const mounted: string[] = [];
  try {
    execFileSync('mount', ['-t', 'erofs', '-o', 'ro', cs.imagePath(fam.v2.image), m1]);
    mounted.push(m1);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `ro,metacopy=on,redirect_dir=on,lowerdir=${m1}::${cs.objects.dir}`, m2]);
    mounted.push(m2);
    const want = treeFiles(fam.v2.src);
    const got = treeFiles(m2);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [k, v] of want) assert.ok(got.get(k)!.equals(v), k);
  } finally {
    for (const m of mounted.reverse()) spawnSync('umount', [m]);
  }
});
