/**
 * SIGKILL a pulling client at random moments (32 trials): the store stays consistent (fsck
 * clean: no corrupt or half-written object, no dangling tag), and rerunning the pull completes,
 * fetching only what the killed run had not verified yet — objects it had verified are resumed
 * (re-hashed) from its ingest area, an object cut short by the kill is dropped and fetched
 * again, objects it had committed are present.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ObjectDir, Store } from '../src/store/store.js';
import { toHex } from '../src/verity/digest.js';
import { PULL_CLI, cleanup, makeImageFamily, runCli, signFamily, startServe } from './pull-fixtures.js';
import type { ImageFamily, ServeProcess } from './pull-fixtures.js';

const TRIALS = 32;
const PARALLEL = 3;

let dir = '';
let fam: ImageFamily;
let srv: ServeProcess;
let pub = '';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-kill-'));
  fam = await makeImageFamily(join(dir, 'server'));
  pub = await signFamily(fam, join(dir, 'keys'), ['v2']);
  srv = await startServe(fam.storeDir);
});

after(async () => {
  await srv?.stop();
  cleanup(dir, fam?.root ?? '');
});

/** Run a pull and SIGKILL it after `delayMs`; resolves with how it ended. */
function pullAndKill(store: string, delayMs: number): Promise<{ killed: boolean; code: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [PULL_CLI, 'pull', `${srv.url}/${fam.name}:v2`, '--store', store, '--trust', pub, '--quiet'], { stdio: 'ignore' });
    const t = setTimeout(() => child.kill('SIGKILL'), delayMs);
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ killed: signal === 'SIGKILL', code });
    });
  });
}

/** Objects waiting in ingest areas whose content is intact (a kill can cut the last one
 * written short: a resuming pull must re-hash and drop it). */
async function staged(store: string): Promise<{ intact: Set<string>; damaged: number }> {
  const intact = new Set<string>();
  let damaged = 0;
  const root = join(store, 'ingest');
  if (!existsSync(root)) return { intact, damaged };
  for (const n of readdirSync(root)) {
    const dir = new ObjectDir(join(root, n, 'objects'));
    for (const o of (await dir.scan()).objects) {
      if (await dir.verify(Buffer.from(o.hex, 'hex'))) intact.add(o.hex);
      else damaged++;
    }
  }
  return { intact, damaged };
}

interface Trial {
  delay: number;
  killed: boolean;
  staged: number;
  present: number;
  damaged: number;
}

test(`SIGKILL during pull (${TRIALS} trials): fsck clean, rerun completes and resumes`, async () => {
  // Reference duration of an uninterrupted pull.
  const t0 = Date.now();
  const ref = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', join(dir, 'ref'), '--trust', pub, '--quiet']);
  assert.equal(ref.code, 0, ref.stderr);
  const duration = Date.now() - t0;
  const needed = new Set(fam.v2.objects.map((o) => toHex(o.digest)));

  const trials: Trial[] = [];
  let next = 0;
  const runTrial = async (i: number): Promise<void> => {
    const store = join(dir, `c${i}`);
    // A quarter anywhere in the run (start-up included), the rest where the store is busy.
    const delay = Math.floor(i % 4 === 0 ? Math.random() * duration * 1.2 : duration * (0.4 + Math.random() * 0.7));
    const k = await pullAndKill(store, delay);
    let present = 0;
    let stagedNow = new Set<string>();
    let damaged = 0;
    if (existsSync(join(store, 'objects'))) {
      const s = await Store.open(store, { create: true });
      const r = await s.fsck();
      assert.equal(r.ok, true, `trial ${i} (kill at ${delay} ms): fsck ${JSON.stringify({ corrupt: r.corruptObjects, missing: r.imagesMissingObjects, dangling: r.danglingTags, bad: r.badTags })}`);
      assert.equal(r.corruptObjects.length, 0);
      for (const o of (await s.objects.scan()).objects) if (needed.has(o.hex)) present++;
      ({ intact: stagedNow, damaged } = await staged(store));
      for (const h of stagedNow) assert.ok(needed.has(h), `trial ${i}: unexpected staged object ${h}`);
      if (k.killed) {
        const tag = await s.getTag(fam.name, 'v2');
        // A tag only ever names the complete image.
        if (tag) assert.equal(r.imagesMissingObjects.length, 0);
      }
    }
    const again = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', store, '--trust', pub, '--json'], { timeoutMs: 30_000 });
    assert.equal(again.code, 0, `trial ${i} rerun: ${again.stderr}`);
    const sum = JSON.parse(again.stdout);
    assert.equal(sum.objects.present, present, `trial ${i}: present`);
    assert.equal(sum.objects.resumed, stagedNow.size, `trial ${i} (kill at ${delay} ms): resumed ${JSON.stringify(sum.objects)}, intact staged ${stagedNow.size}`);
    assert.equal(sum.objects.fetched, needed.size - sum.objects.present - sum.objects.resumed, `trial ${i}: fetched`);
    const s = await Store.open(store);
    const r = await s.fsck();
    assert.equal(r.ok, true, `trial ${i}: fsck after rerun`);
    assert.equal(toHex((await s.getTag(fam.name, 'v2'))!), toHex(fam.v2.image));
    assert.deepEqual(readdirSync(join(store, 'ingest')), []);
    trials.push({ delay, killed: k.killed, staged: stagedNow.size, present, damaged });
    cleanup(store);
  };
  await Promise.all(
    Array.from({ length: PARALLEL }, async () => {
      while (next < TRIALS) await runTrial(next++);
    }),
  );
  const killed = trials.filter((t) => t.killed);
  const midObjects = killed.filter((t) => t.staged > 0);
  process.stdout.write(
    `# reference pull ${duration} ms; ${killed.length}/${TRIALS} killed, ${midObjects.length} with verified objects waiting (resumed), ` +
      `${killed.filter((t) => t.present > 0).length} after a partial commit, ${killed.filter((t) => t.damaged > 0).length} with a cut-short object re-fetched\n`,
  );
  assert.ok(killed.length >= TRIALS / 2, `only ${killed.length} trials were killed before completing`);
  assert.ok(midObjects.length >= 3, `only ${midObjects.length} kills landed while objects were being fetched`);
});

test('an adopted ingest area is re-hashed: intact objects are resumed, a damaged one is fetched again', async () => {
  const store = join(dir, 'adopt');
  await Store.open(store, { create: true });
  const server = await Store.open(fam.storeDir);
  // The area of a pull that died (pid 999999 does not run), holding the image, one intact
  // object and one cut short.
  const area = join(store, 'ingest', `999999-1-1-${toHex(fam.v2.image)}`);
  const objs = new ObjectDir(join(area, 'objects'));
  const [good, bad] = fam.v2.objects.filter((o) => o.size > 100).slice(0, 2);
  await objs.addBuffer(await server.objects.read(good!.digest));
  mkdirSync(dirname(objs.path(bad!.digest)), { recursive: true });
  writeFileSync(objs.path(bad!.digest), (await server.objects.read(bad!.digest)).subarray(0, 50));
  copyFileSync(server.imagePath(fam.v2.image), join(area, 'image'));
  const r = await runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', store, '--trust', pub, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const sum = JSON.parse(r.stdout);
  assert.equal(sum.objects.resumed, 1);
  assert.equal(sum.objects.fetched, fam.v2.objects.length - 1);
  assert.equal(sum.bytes.image, 0, 'the adopted image was used');
  const after = await Store.open(store);
  assert.equal(await after.objects.verify(bad!.digest), true);
  assert.equal((await after.fsck()).ok, true);
  assert.deepEqual(readdirSync(join(store, 'ingest')), []);
});
