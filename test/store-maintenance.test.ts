/**
 * fsck finds corrupt objects and images, images whose objects are missing, dangling and bad
 * tags, leftover temporary files; --repair quarantines and cleans. gc deletes exactly what
 * no tag reaches (minus the grace period), dry-run deletes nothing, and the store lock keeps gc
 * away from running writers (including a writer whose lock file a crash left behind).
 * The CLI commands exit 1 on problems.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { StoreError } from '../src/store/errors.js';
import { fsverityDigest, toHex } from '../src/verity/digest.js';
import { selfId } from '../src/store/procid.js';
import { CLI } from './helpers.js';

const root = mkdtempSync('/var/tmp/cfsdist-maint-');
test.after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (): Promise<Store> => Store.open(join(root, `s${++n}`), { create: true });

/** A pid that is not running (and a plausible start time). */
function deadId(): string {
  for (let pid = 4_000_000; ; pid--) if (!existsSync(`/proc/${pid}`)) return `${pid}-12345`;
}

const OLD = new Date(Date.now() - 3600_000);
function age(path: string): void {
  utimesSync(path, OLD, OLD);
}

/** A store with image A (tagged, objects o1 o2), image B (untagged, objects o2 o3), object o4 loose. */
async function populated(): Promise<{ s: Store; A: Buffer; B: Buffer; o: Buffer[] }> {
  const s = await fresh();
  const o: Buffer[] = [];
  for (let i = 0; i < 4; i++) o.push((await s.objects.addBuffer(randomBytes(1000 + i * 3000))).digest);
  const A = await s.addImage(Buffer.from('image A'), [o[0], o[1]]);
  const B = await s.addImage(Buffer.from('image B'), [o[1], o[2]]);
  await s.setTag('app', 'v1', A);
  return { s, A, B, o };
}

test('fsck: clean store is ok; corrupt object found, quarantined with --repair, then reported missing', async () => {
  const { s, A, o } = await populated();
  let r = await s.fsck();
  assert.equal(r.ok, true);
  assert.equal(r.objects, 4);
  assert.equal(r.images, 2);
  assert.deepEqual([r.corruptObjects, r.imagesMissingObjects, r.danglingTags, r.tempFiles], [[], [], [], []]);

  writeFileSync(s.objects.path(o[0]), 'garbage');
  r = await s.fsck();
  assert.equal(r.ok, false);
  assert.deepEqual(r.corruptObjects.map((c) => [c.hex, c.actual]), [[toHex(o[0]), toHex(fsverityDigest(Buffer.from('garbage')))]]);
  assert.equal(existsSync(s.objects.path(o[0])), true, 'no repair: left in place');

  r = await s.fsck({ repair: true });
  assert.equal(r.ok, false, 'problems found, even if repaired');
  assert.ok(r.corruptObjects[0].quarantined && existsSync(r.corruptObjects[0].quarantined));
  assert.equal(existsSync(s.objects.path(o[0])), false);
  assert.deepEqual(r.imagesMissingObjects, [{ image: toHex(A), missing: [toHex(o[0])] }]);

  // Re-adding the object repairs the store.
  r = await s.fsck();
  assert.deepEqual(r.corruptObjects, []);
  assert.equal(r.imagesMissingObjects.length, 1);
});

test('fsck: corrupt image, missing object list, dangling and bad tags, stray files', async () => {
  const { s, A, B } = await populated();
  writeFileSync(s.imagePath(B), 'not image B');
  unlinkSync(s.sidecarPath(A));
  await s.setTag('gone', 'x', A);
  unlinkSync(s.imagePath(A));
  writeFileSync(join(s.tagsDir, 'app', ':broken'), 'zz\n');
  writeFileSync(join(s.objects.dir, 'README'), 'hi');
  const r = await s.fsck();
  assert.equal(r.ok, false);
  assert.deepEqual(r.corruptImages.map((c) => c.hex), [toHex(B)]);
  assert.deepEqual(r.danglingTags.map((t) => `${t.name}:${t.tag}`).sort(), ['app:v1', 'gone:x']);
  assert.equal(r.badTags.length, 1);
  assert.ok(r.badTags[0].path.endsWith(':broken'));
  assert.deepEqual(r.strays, [join(s.objects.dir, 'README')]);
  const r2 = await s.fsck({ repair: true });
  assert.ok(r2.corruptImages[0].quarantined);
  assert.equal(await s.hasImage(B), false);

  // An image present without its object list.
  const C = await s.addImage(Buffer.from('image C'), []);
  unlinkSync(s.sidecarPath(C));
  assert.deepEqual((await s.fsck()).imagesWithoutObjectList, [toHex(C)]);
});

test('fsck: temporary files of dead writers are leftovers (--repair deletes), live ones are not', async () => {
  const { s } = await populated();
  const stale = join(s.tmpDir, `.${deadId()}-1-abcd.tmp`);
  const live = join(s.tmpDir, `.${selfId()}-999999-abcd.tmp`);
  // A standalone ObjectDir on STORE/objects (mkcomposefs --digest-store) writes its temporary
  // files into objects/ itself.
  const staleInObjects = join(s.objects.dir, `.${deadId()}-2-abcd.tmp`);
  writeFileSync(stale, 'half an object');
  writeFileSync(live, 'being written');
  writeFileSync(staleInObjects, 'half an object');
  let r = await s.fsck();
  assert.equal(r.ok, true, 'leftovers are warnings');
  assert.deepEqual(r.strays, [], 'temporary files are not strays');
  assert.deepEqual(r.tempFiles.map((t) => [t.path, t.stale]).sort(), [[stale, true], [live, false], [staleInObjects, true]].sort());
  r = await s.fsck({ repair: true });
  assert.equal(existsSync(stale), false);
  assert.equal(existsSync(staleInObjects), false);
  assert.equal(existsSync(live), true);
  unlinkSync(live);
});

test('gc: deletes untagged images and unreferenced objects; dry-run deletes nothing', async () => {
  const { s, A, B, o } = await populated();
  for (const d of o) age(s.objects.path(d));
  age(s.imagePath(B));
  const stale = join(s.tmpDir, `.${deadId()}-1-abcd.tmp`);
  writeFileSync(stale, 'x'.repeat(100));
  const dry = await s.gc({ dryRun: true });
  assert.deepEqual(dry.removedImages, [toHex(B)]);
  assert.deepEqual(dry.removedObjects.sort(), [toHex(o[2]), toHex(o[3])].sort());
  assert.deepEqual(dry.removedTempFiles, [stale]);
  assert.ok(dry.freedBytes > 4000 + 7000);
  assert.equal(await s.hasImage(B), true);
  assert.equal(existsSync(stale), true);

  const r = await s.gc();
  assert.deepEqual({ ...r, dryRun: true }, dry);
  assert.equal(await s.hasImage(B), false);
  assert.equal(existsSync(s.sidecarPath(B)), false);
  assert.equal(await s.hasImage(A), true);
  for (const d of [o[0], o[1]]) assert.equal(await s.objects.has(d), true);
  for (const d of [o[2], o[3]]) assert.equal(await s.objects.has(d), false);
  assert.equal(existsSync(stale), false);
  assert.equal((await s.fsck()).ok, true);
  // Nothing more to do.
  const again = await s.gc();
  assert.deepEqual([again.removedImages, again.removedObjects], [[], []]);

  // Untag: everything goes.
  await s.deleteTag('app', 'v1');
  age(s.imagePath(A));
  const last = await s.gc();
  assert.deepEqual(last.removedImages, [toHex(A)]);
  assert.equal(last.removedObjects.length, 2);
  assert.deepEqual(readdirSync(s.imagesDir), []);
});

test('gc grace: young untagged images keep their objects; re-adding refreshes age', async () => {
  const { s, B, o } = await populated();
  // Everything is young: nothing removed.
  let r = await s.gc();
  assert.deepEqual([r.removedImages, r.removedObjects], [[], []]);
  assert.equal(r.youngImages, 1);
  // Old objects, young untagged image B: o2 (B's) stays, o3 (B's) stays, o4 (loose) goes.
  for (const d of o) age(s.objects.path(d));
  r = await s.gc();
  assert.deepEqual(r.removedObjects, [toHex(o[3])]);
  assert.equal(await s.objects.has(o[2]), true);
  // An add that finds o3 present refreshes it; with B aged, o3 is now kept by its own age only.
  age(s.imagePath(B));
  const data = await s.objects.read(o[2]);
  assert.equal((await s.objects.addBuffer(data)).existed, true);
  r = await s.gc();
  assert.deepEqual(r.removedImages, [toHex(B)]);
  assert.equal(await s.objects.has(o[2]), true, 'refreshed by the add');
  r = await s.gc({ graceSeconds: 0 });
  assert.deepEqual(r.removedObjects, [toHex(o[2])]);
});

test('gc refuses to guess: unreadable tag or missing object list of a kept image → nothing deleted', async () => {
  const { s, o } = await populated();
  for (const d of o) age(s.objects.path(d));
  writeFileSync(join(s.tagsDir, 'app', ':bad'), 'not a digest');
  await assert.rejects(s.gc({ graceSeconds: 0 }), (e: unknown) => e instanceof StoreError && e.code === 'TAG_CORRUPT');
  unlinkSync(join(s.tagsDir, 'app', ':bad'));
  const A = (await s.getTag('app', 'v1'))!;
  unlinkSync(s.sidecarPath(A));
  await assert.rejects(s.gc({ graceSeconds: 0 }), (e: unknown) => e instanceof StoreError && e.code === 'SIDECAR_MISSING');
  for (const d of o) assert.equal(await s.objects.has(d), true);
});

test('lock: gc waits for a lease and fails with STORE_BUSY; writers wait for a running gc; dead holders are ignored', async () => {
  const { s, o } = await populated();
  for (const d of o) age(s.objects.path(d));
  const lease = await s.lease();
  await assert.rejects(s.gc({ graceSeconds: 0, timeoutMs: 150 }), (e: unknown) => e instanceof StoreError && e.code === 'STORE_BUSY');
  assert.equal(await s.objects.has(o[3]), true, 'nothing deleted while a writer holds the lock');
  assert.deepEqual(readdirSync(join(s.lock.dir, 'gc')), [], 'gc gave up its marker');
  lease.release();

  // Stale lease and stale gc marker of killed processes: ignored, cleaned.
  writeFileSync(join(s.lock.dir, 'leases', `${deadId()}-1`), '');
  writeFileSync(join(s.lock.dir, 'gc', `${deadId()}-2`), '');
  await new Promise((r) => setTimeout(r, 80)); // let our own lingering lease lapse
  const r = await s.gc({ graceSeconds: 0, timeoutMs: 2000 });
  assert.deepEqual(r.removedObjects.sort(), [toHex(o[2]), toHex(o[3])].sort(), 'untagged B and its own object, and the loose one');
  assert.equal((await s.objects.addBuffer(randomBytes(10))).existed, false, 'a dead gc marker does not block adds');
  assert.deepEqual(readdirSync(join(s.lock.dir, 'gc')), []);

  // A live gc (simulated by a marker of this very process): adds wait until it is gone.
  await new Promise((r) => setTimeout(r, 80));
  const marker = join(s.lock.dir, 'gc', `${selfId()}-777777`);
  writeFileSync(marker, '');
  let done = false;
  const add = s.objects.addBuffer(randomBytes(10)).then(() => (done = true));
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(done, false, 'add waits while a gc runs');
  unlinkSync(marker);
  await add;
  assert.equal(done, true);
});

test('CLI: fsck and gc honour --store/--json/--quiet; fsck exits 1 on problems', async () => {
  const { s, B, o } = await populated();
  const run = (...args: string[]) => spawnSync(process.execPath, [CLI, '--store', s.dir, ...args]);
  let p = run('fsck');
  assert.equal(p.status, 0, p.stderr.toString());
  assert.match(p.stderr.toString(), /4 objects.*2 images: ok/);
  const j = JSON.parse(run('fsck', '--json').stdout.toString());
  assert.equal(j.ok, true);
  assert.equal(run('fsck', '--quiet').stderr.toString(), '');

  p = run('gc', '--dry-run', '--grace', '0');
  assert.equal(p.status, 0);
  assert.match(p.stdout.toString(), new RegExp(`would remove image ${toHex(B)}`));
  assert.match(p.stdout.toString(), /would remove 1 image\(s\), 2 object\(s\)/);
  assert.equal(await s.hasImage(B), true);
  const g = JSON.parse(run('gc', '--grace', '0', '--json').stdout.toString());
  assert.deepEqual(g.removedImages, [toHex(B)]);
  assert.equal(run('gc', '--grace', 'soon').status, 2);

  writeFileSync(s.objects.path(o[0]), 'corrupt');
  p = run('fsck');
  assert.equal(p.status, 1);
  assert.match(p.stdout.toString(), new RegExp(`corrupt object ${toHex(o[0])}`));
  p = run('fsck', '--repair');
  assert.equal(p.status, 1);
  assert.match(p.stdout.toString(), /moved to .*quarantine/, p.stderr.toString());
  assert.equal(spawnSync(process.execPath, [CLI, '--store', join(root, 'none'), 'fsck']).status, 1);
});
