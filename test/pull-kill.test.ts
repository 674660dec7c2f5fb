/**
 * SIGKILL a pulling client at random moments (32 trials): the store stays consistent (fsck
 * clean: no corrupt or half-written object, no dangling tag), and rerunning the pull completes,
 * fetching only what the killed run had not verified yet — objects it had verified are resumed
 * (re-hashed) from its ingest area, objects it had committed are present.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ObjectDir, Store } from '../src/store/store.js';
import { toHex } from '../src/verity/digest.js';
import { PULL_CLI, cleanup, makeImageFamily, makeKey, runCli, signTag, startServe } from './pull-fixtures.js';
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
  const k = await makeKey(join(dir, 'keys'));
  pub = k.pub;
  await signTag(fam.storeDir, fam.name, 'v2', k.key);
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

/** Verified objects waiting in ingest areas. */
async function staged(store: string): Promise<Set<string>> {
  const out = new Set<string>();
  const root = join(store, 'ingest');
  if (!existsSync(root)) return out;
  for (const n of readdirSync(root)) for (const o of (await new ObjectDir(join(root, n, 'objects')).scan()).objects) out.add(o.hex);
  return out;
}

interface Trial {
  delay: number;
  killed: boolean;
  staged: number;
  present: number;
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
    const delay = Math.floor(Math.random() * duration * 1.3);
    const k = await pullAndKill(store, delay);
    let present = 0;
    let stagedNow = new Set<string>();
    if (existsSync(join(store, 'objects'))) {
      const s = await Store.open(store, { create: true });
      const r = await s.fsck();
      assert.equal(r.ok, true, `trial ${i} (kill at ${delay} ms): fsck ${JSON.stringify({ corrupt: r.corruptObjects, missing: r.imagesMissingObjects, dangling: r.danglingTags, bad: r.badTags })}`);
      assert.equal(r.corruptObjects.length, 0);
      for (const o of (await s.objects.scan()).objects) if (needed.has(o.hex)) present++;
      stagedNow = await staged(store);
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
    assert.equal(sum.objects.resumed, stagedNow.size, `trial ${i} (kill at ${delay} ms, killed ${k.killed}): resumed; staged ${[...stagedNow].length}; ${again.stderr}; ${JSON.stringify(sum.objects)}`);
    assert.equal(sum.objects.fetched, needed.size - sum.objects.present - sum.objects.resumed, `trial ${i}: fetched`);
    const s = await Store.open(store);
    const r = await s.fsck();
    assert.equal(r.ok, true, `trial ${i}: fsck after rerun`);
    assert.equal(toHex((await s.getTag(fam.name, 'v2'))!), toHex(fam.v2.image));
    assert.deepEqual(readdirSync(join(store, 'ingest')), []);
    trials.push({ delay, killed: k.killed, staged: stagedNow.size, present });
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
      `${killed.filter((t) => t.present > 0).length} after a partial commit\n`,
  );
  assert.ok(killed.length >= TRIALS / 2, `only ${killed.length} trials were killed before completing`);
  assert.ok(midObjects.length >= 3, `only ${midObjects.length} kills landed while objects were being fetched`);
});
