/**
 * The pull and push commands with an OCI registry behind the same pipeline (docker://,
 * src/registry): push v1 and v2 of the test family to a real docker-registry (credentials from
 * the environment), pull them back by CLI — v2 fetches exactly the objects v1 lacks — and the
 * store is consistent. Skipped without docker-registry.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { toHex } from '../src/verity/digest.js';
import type { PullSummary } from '../src/client/pull.js';
import type { PushSummary } from '../src/client/push.js';
import { bytesOf, cleanup, makeImageFamily, newObjects, runCli, signFamily } from './pull-fixtures.js';
import type { ImageFamily } from './pull-fixtures.js';
import { registryMissing, startRegistry } from './registry-fixtures.js';
import type { RegistryProcess } from './registry-fixtures.js';

const skip = registryMissing();
let dir = '';
let fam: ImageFamily;
let reg: RegistryProcess;
let pub = '';
let env: NodeJS.ProcessEnv = {};

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-pulldocker-'));
  fam = await makeImageFamily(join(dir, 'local'), { files: 80, large: [1500 * 1024] });
  pub = await signFamily(fam, join(dir, 'keys'));
  reg = await startRegistry();
  env = { CFSDIST_REGISTRY_USER: reg.user, CFSDIST_REGISTRY_PASSWORD: reg.password };
});

after(async () => {
  await reg?.stop();
  if (dir) cleanup(dir, fam?.root ?? '');
});

test('cfsdist push/pull with docker:// go through the registry transport', { skip }, async () => {
  for (const tag of ['v1', 'v2']) {
    const r = await runCli(['push', `${fam.name}:${tag}`, `docker://${reg.host}`, '--store', fam.storeDir, '--json'], { env });
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as PushSummary;
    assert.equal(s.image, toHex(tag === 'v1' ? fam.v1.image : fam.v2.image));
    if (tag === 'v2') assert.equal(s.objects.sent, newObjects(fam.v1, fam.v2).length);
  }
  const client = join(dir, 'client');
  const pulls: PullSummary[] = [];
  for (const tag of ['v1', 'v2']) {
    const r = await runCli(['pull', `docker://${reg.host}/${fam.name}:${tag}`, '--store', client, '--trust', pub, '--json'], { env });
    assert.equal(r.code, 0, r.stderr);
    pulls.push(JSON.parse(r.stdout) as PullSummary);
  }
  const fresh = newObjects(fam.v1, fam.v2);
  assert.equal(pulls[1]!.objects.fetched, fresh.length);
  assert.equal(pulls[1]!.bytes.fetched, bytesOf(fresh));
  const st = await Store.open(client);
  assert.equal(toHex((await st.getTag(fam.name, 'v2'))!), toHex(fam.v2.image));
  assert.equal((await st.fsck()).ok, true);
  // Without credentials the registry refuses the push.
  const denied = await runCli(['push', `${fam.name}:v1`, `docker://${reg.host}/${fam.name}`, '--store', fam.storeDir], { env: { CFSDIST_REGISTRY_USER: '', CFSDIST_REGISTRY_PASSWORD: '', HOME: dir } });
  assert.equal(denied.code, 1);
});
