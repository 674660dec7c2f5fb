/**
 * `docker://` import: `skopeo copy` the real multi-layer Debian image into a real registry
 * (htpasswd auth), import it with the registry source, and check the result equals the import
 * of the same image from its `oci:` layout (same composefs image digest, same objects); a
 * missing tag and a wrong password are refused with messages naming them.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { importImage } from '../src/oci/import.js';
import { openSource } from '../src/oci/source.js';
import { openRegistrySource } from '../src/registry/index.js';
import { cleanup } from './pull-fixtures.js';
import { registryMissing, startRegistry } from './registry-fixtures.js';
import type { RegistryProcess } from './registry-fixtures.js';
import { notRoot } from './helpers.js';

const skopeo = spawnSync('sh', ['-c', 'command -v skopeo'], { stdio: 'ignore' }).status === 0;
const skip = registryMissing() || notRoot() || (skopeo ? false : 'skopeo is not installed');
let dir = '';
let reg: RegistryProcess;
let layout = '';

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-regimport-'));
  reg = await startRegistry();
  const { ensureDebianFamily } = await import('../src/demo/family.js');
  layout = (await ensureDebianFamily()).layout;
  const r = spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', `${reg.user}:${reg.password}`, `oci:${layout}:v1`, `docker://${reg.host}/library/debian:v1`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  process.env.CFSDIST_REGISTRY_USER = reg.user;
  process.env.CFSDIST_REGISTRY_PASSWORD = reg.password;
});

after(async () => {
  delete process.env.CFSDIST_REGISTRY_USER;
  delete process.env.CFSDIST_REGISTRY_PASSWORD;
  await reg?.stop();
  if (dir) cleanup(dir);
});

test('import docker://… equals import oci:… of the same multi-layer image', { skip }, async () => {
  const a = await Store.open(join(dir, 'a'), { create: true });
  const b = await Store.open(join(dir, 'b'), { create: true });
  const src = await openRegistrySource(`docker://${reg.host}/library/debian:v1`);
  assert.equal(src.kind, 'layers');
  assert.equal(src.kind === 'layers' ? src.layers.length : 0, 2);
  const ra = await importImage(src, a, { name: 'debian', tag: 'v1', sync: false });
  const rb = await importImage(await openSource(`oci:${layout}:v1`), b, { name: 'debian', tag: 'v1', sync: false });
  assert.ok(ra.image.equals(rb.image), `docker:// gave ${ra.image.toString('hex')}, oci: gave ${rb.image.toString('hex')}`);
  assert.equal(ra.objects, rb.objects);
  assert.equal(ra.entries, rb.entries);
  const oa = (await a.objects.scan()).objects.map((o) => o.hex).sort();
  const ob = (await b.objects.scan()).objects.map((o) => o.hex).sort();
  assert.deepEqual(oa, ob);
});

test('a missing tag and a wrong password are refused with clear errors', { skip }, async () => {
  await assert.rejects(openRegistrySource(`docker://${reg.host}/library/debian:nope`), /library\/debian:nope: no such image/);
  process.env.CFSDIST_REGISTRY_PASSWORD = 'wrong';
  try {
    await assert.rejects(openRegistrySource(`docker://${reg.host}/library/debian:v1`), (e: Error & { code?: string }) => e.code === 'AUTH' && /user cfsdist refused/.test(e.message));
  } finally {
    process.env.CFSDIST_REGISTRY_PASSWORD = reg.password;
  }
});
