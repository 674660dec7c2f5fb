/**
 * Concurrency between processes: two processes adding the same 1,000 objects at once (no
 * error, every object correct, no leftovers), and pulls racing a gc loop (no tagged image
 * ever loses an object, although every pull re-uses objects that are garbage at that moment).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { fsverityDigest, toHex } from '../src/verity/digest.js';
import { bytesFor, sizeFor, startChild } from './store-fixtures.js';

const root = mkdtempSync('/var/tmp/cfsdist-conc-');
test.after(() => rmSync(root, { recursive: true, force: true }));

test('two processes add the same 1,000 objects at once', async () => {
  const dir = join(root, 'same');
  await Store.open(dir, { create: true });
  const a = startChild(['addmany', dir, 'same', '1000']);
  const b = startChild(['addmany', dir, 'same', '1000']);
  const [ea, eb] = await Promise.all([a.exit, b.exit]);
  assert.equal(ea.code, 0, ea.stderr);
  assert.equal(eb.code, 0, eb.stderr);
  const ra = JSON.parse(a.stdout().trim().split('\n').pop()!) as { created: number; existed: number };
  const rb = JSON.parse(b.stdout().trim().split('\n').pop()!) as { created: number; existed: number };
  assert.equal(ra.created + ra.existed, 1000);
  assert.equal(rb.created + rb.existed, 1000);

  const store = await Store.open(dir);
  const want = new Set<string>();
  for (let i = 0; i < 1000; i++) want.add(toHex(fsverityDigest(bytesFor('same', i, sizeFor('same', i)))));
  assert.ok(ra.created + rb.created >= want.size, 'every distinct object was created by someone');
  const scan = await store.objects.scan();
  assert.deepEqual(new Set(scan.objects.map((o) => o.hex)), want);
  assert.deepEqual(scan.strays, []);
  const report = await store.fsck();
  assert.equal(report.ok, true);
  assert.equal(report.corruptObjects.length, 0);
  assert.equal(report.objects, want.size);
  assert.deepEqual(readdirSync(store.tmpDir), [], 'no temporary files left');
  assert.deepEqual(readdirSync(join(store.lock.dir, 'leases')), [], 'no lease left');
});

test('pulls racing a gc loop never lose an object of a tagged image', async () => {
  const dir = join(root, 'race');
  await Store.open(dir, { create: true });
  const stop = join(root, 'stop-gc');
  const gc = startChild(['gcloop', dir, stop]);
  await gc.ready;
  const pulls = [startChild(['pulls', dir, 'p', '100', '8']), startChild(['pulls', dir, 'q', '100', '8'])];
  const results = await Promise.all(pulls.map((p) => p.exit));
  writeFileSync(stop, '');
  results.push(await gc.exit);
  for (const r of results) assert.equal(r.code, 0, r.stderr);
  for (const p of pulls) {
    const r = JSON.parse(p.stdout().trim().split('\n').pop()!) as { images: string[]; missing: number };
    assert.equal(r.images.length, 8);
    assert.equal(r.missing, 0, 'objects of a just-tagged image were deleted');
  }
  const g = JSON.parse(gc.stdout().trim().split('\n').pop()!) as { runs: number; objects: number };
  assert.ok(g.runs >= 5, `gc ran ${g.runs} times`);
  assert.ok(g.objects > 0, `gc did collect the untagged rounds: ${JSON.stringify(g)}`);
  const store = await Store.open(dir);
  const report = await store.fsck();
  assert.equal(report.ok, true, JSON.stringify(report.imagesMissingObjects).slice(0, 500));
  assert.deepEqual((await store.listTags()).map((t) => t.tag).sort(), ['p-7', 'q-7']);
});
