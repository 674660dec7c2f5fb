/**
 * Crash test: in each trial a child process pulling (objects, image, tag) and a child running
 * gc work on the same store and are killed with SIGKILL at random moments (both, one, or
 * neither). Afterwards fsck must find no corrupt object or image, no image missing objects and
 * no dangling tag; then both operations are rerun and must complete: the tag points at the
 * expected image, all its objects are present and correct, and gc leaves exactly what the
 * tags reach. CFSDIST_CRASH_TRIALS sets the number of trials (default 50).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { fsverityDigest, toHex } from '../src/verity/digest.js';
import type { FsckReport } from '../src/store/maintenance.js';
import { imageBytes, pullObjects, runPull, startChild } from './store-fixtures.js';

const TRIALS = Number(process.env.CFSDIST_CRASH_TRIALS ?? 50);
const COUNT = 150;

const root = mkdtempSync('/var/tmp/cfsdist-crash-');
test.after(() => rmSync(root, { recursive: true, force: true }));

function expectedImage(seed: string): Buffer {
  const digests = pullObjects(seed, COUNT).map((o) => fsverityDigest(o));
  return fsverityDigest(imageBytes(seed, digests));
}

function assertConsistent(r: FsckReport, when: string): void {
  assert.deepEqual(r.corruptObjects, [], `${when}: corrupt objects`);
  assert.deepEqual(r.corruptImages, [], `${when}: corrupt images`);
  assert.deepEqual(r.imagesMissingObjects, [], `${when}: images missing objects`);
  assert.deepEqual(r.imagesWithoutObjectList, [], `${when}: images without object list`);
  assert.deepEqual(r.danglingTags, [], `${when}: dangling tags`);
  assert.deepEqual(r.badTags, [], `${when}: bad tags`);
  assert.equal(r.ok, true, when);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test(`${TRIALS} trials of SIGKILL during pull and gc: store stays consistent, reruns complete`, async (t) => {
  const dir = join(root, 'store');
  const store = await Store.open(dir, { create: true });
  await runPull(store, 'base', COUNT, 'base');
  const stats = { pullKilled: 0, gcKilled: 0, staleTemps: 0 };

  const phase = { spawn: 0, kill: 0, fsck1: 0, rerun: 0, fsck2: 0 };
  let t0 = Date.now();
  const lap = (k: keyof typeof phase): void => {
    phase[k] += Date.now() - t0;
    t0 = Date.now();
  };
  for (let i = 0; i < TRIALS; i++) {
    t0 = Date.now();
    if (i > 0) await store.deleteTag('crash', `t${i - 1}`); // gives gc garbage to collect
    const mode = i % 4; // 0: kill both, 1: only the pull, 2: only gc, 3: both, gc very early
    const pull = startChild(['pull', dir, `s${i}`, String(COUNT), `t${i}`]);
    const gc = startChild(['gc', dir]);
    await Promise.all([pull.ready, gc.ready]);
    lap('spawn');
    const kills: Promise<void>[] = [];
    if (mode !== 2) kills.push(sleep(randomInt(0, 120)).then(() => void pull.child.kill('SIGKILL')));
    if (mode !== 1) kills.push(sleep(randomInt(0, mode === 3 ? 20 : 80)).then(() => void gc.child.kill('SIGKILL')));
    await Promise.all(kills);
    const [pe, ge] = await Promise.all([pull.exit, gc.exit]);
    for (const [e, name] of [[pe, 'pull'], [ge, 'gc']] as const) {
      assert.ok(e.code === 0 || e.signal === 'SIGKILL', `trial ${i}: ${name} failed: ${e.stderr}`);
    }
    if (pe.signal === 'SIGKILL' && !pull.stdout().includes('"image"')) stats.pullKilled++;
    if (ge.signal === 'SIGKILL' && !gc.stdout().includes('"images"')) stats.gcKilled++;

    lap('kill');
    const after = await store.fsck();
    lap('fsck1');
    assertConsistent(after, `trial ${i} after kill`);
    stats.staleTemps += after.tempFiles.filter((f) => f.stale).length;

    // Rerun both to completion (in this process).
    await runPull(store, `s${i}`, COUNT, `t${i}`);
    await store.gc({ graceSeconds: 0 });
    lap('rerun');
    const image = await store.getTag('crash', `t${i}`);
    assert.ok(image, `trial ${i}: tag written by the rerun`);
    assert.equal(toHex(image), toHex(expectedImage(`s${i}`)), `trial ${i}: tag names the expected image`);

    // The gc rerun left exactly what the tags reach (grace 0) and no leftovers; every 5th
    // trial (and the last) fsck rehashes everything again after the reruns.
    if (i % 5 === 4 || i === TRIALS - 1) assertConsistent(await store.fsck(), `trial ${i} after reruns`);
    lap('fsck2');
    const reach = new Set<string>();
    const tags = await store.listTags();
    for (const tag of tags) for (const d of await store.imageObjects(tag.image)) reach.add(toHex(d));
    const present = (await store.objects.scan()).objects.map((o) => o.hex);
    const tagsHex = new Set(tags.map((x) => toHex(x.image)));
    const images = (await store.listImages()).map((d) => toHex(d));
    assert.deepEqual(new Set(present), reach, `trial ${i}: objects = what the tags reach`);
    assert.deepEqual(new Set(images), tagsHex, `trial ${i}: images = tagged images`);
    assert.deepEqual(await store.objects.tempFiles(), [], `trial ${i}: gc removed leftover temporary files`);
  }
  t.diagnostic(`trials ${TRIALS}: pull killed mid-way ${stats.pullKilled}, gc killed mid-way ${stats.gcKilled}, stale temp files seen ${stats.staleTemps}; ms ${JSON.stringify(phase)}`);
  assert.ok(stats.pullKilled >= TRIALS / 8, `kills landed inside pulls (${stats.pullKilled})`);
  assert.ok(stats.gcKilled >= TRIALS / 8, `kills landed inside gc runs (${stats.gcKilled})`);
});
