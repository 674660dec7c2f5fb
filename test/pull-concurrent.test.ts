/**
 * 20 clients pull the same image from one server at once (separate stores, cold): all succeed
 * with complete, verified stores, and the server's resident memory stays bounded — the image
 * includes a 16 MiB object, so a server that buffered whole objects per client would need
 * hundreds of MiB. The peak RSS is printed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { toHex } from '../src/verity/digest.js';
import { bytesOf, cleanup, makeImageFamily, runCli, signFamily, startServe } from './pull-fixtures.js';
import type { ImageFamily, ServeProcess } from './pull-fixtures.js';

const CLIENTS = 20;
/** Peak server RSS allowed (MiB). */
const RSS_LIMIT_MIB = 200;

let dir = '';
let fam: ImageFamily;
let srv: ServeProcess;
let pub = '';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-conc-'));
  fam = await makeImageFamily(join(dir, 'server'), { files: 200, large: [16 << 20, 1200 * 1024] });
  pub = await signFamily(fam, join(dir, 'keys'), ['v2']);
  srv = await startServe(fam.storeDir);
});

after(async () => {
  await srv?.stop();
  cleanup(dir, fam?.root ?? '');
});

test(`${CLIENTS} concurrent clients pull the same image; server memory stays bounded`, async () => {
  const idle = srv.memory();
  let peakRss = idle.rssKiB;
  const sampler = setInterval(() => {
    try {
      peakRss = Math.max(peakRss, srv.memory().rssKiB);
    } catch {
      /* server gone: the assertions below report it */
    }
  }, 50);
  const t0 = Date.now();
  let results;
  try {
    results = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => runCli(['pull', `${srv.url}/${fam.name}:v2`, '--store', join(dir, `c${i}`), '--trust', pub, '--json'], { timeoutMs: 50_000 })),
    );
  } finally {
    clearInterval(sampler);
  }
  const secs = (Date.now() - t0) / 1000;
  const mem = srv.memory();
  for (const [i, r] of results.entries()) {
    assert.equal(r.code, 0, `client ${i}: ${r.stderr}`);
    const s = JSON.parse(r.stdout);
    assert.equal(s.objects.fetched, fam.v2.objects.length);
    assert.equal(s.bytes.fetched, bytesOf(fam.v2.objects));
  }
  // Spot-check complete stores.
  for (const i of [0, CLIENTS - 1]) {
    const st = await Store.open(join(dir, `c${i}`));
    assert.equal(toHex((await st.getTag(fam.name, 'v2'))!), toHex(fam.v2.image));
    for (const o of fam.v2.objects) assert.equal(await st.objects.verify(o.digest), true);
  }
  const total = (CLIENTS * bytesOf(fam.v2.objects)) / (1 << 20);
  process.stdout.write(
    `# ${CLIENTS} clients, ${total.toFixed(0)} MiB served in ${secs.toFixed(1)} s; server RSS idle ${(idle.rssKiB / 1024).toFixed(0)} MiB, ` +
      `peak sampled ${(peakRss / 1024).toFixed(0)} MiB, VmHWM ${(mem.hwmKiB / 1024).toFixed(0)} MiB\n`,
  );
  assert.ok(mem.hwmKiB / 1024 < RSS_LIMIT_MIB, `server peak RSS ${(mem.hwmKiB / 1024).toFixed(0)} MiB ≥ ${RSS_LIMIT_MIB} MiB`);
});
