/**
 * The image config travels with the signed statement through a cfsdist server: it is kept on
 * pull (bytes and digest as signed), a config changed on the server is refused with the
 * client store unchanged, and a statement without a config (signed before configs were kept)
 * still pulls.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { Store } from '../src/store/store.js';
import { cleanup, makeImageFamily, runCli, signFamily, snapshotStore, startServe } from './pull-fixtures.js';
import type { ImageFamily, ServeProcess } from './pull-fixtures.js';

let dir = '';
let fam: ImageFamily;
let srv: ServeProcess;
let pub = '';
const CONFIG = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Entrypoint: ['/bin/app'], Env: ['A=1'], User: 'app' }, rootfs: { type: 'layers', diff_ids: [] } }));
const CONFIG_DIGEST = `sha256:${createHash('sha256').update(CONFIG).digest('hex')}`;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-pullcfg-'));
  fam = await makeImageFamily(join(dir, 'server'), { files: 40, large: [] });
  const store = await Store.open(fam.storeDir);
  // v1 as an imported container image would be: with its config. v2 without (an old statement).
  assert.equal(await store.addConfig(CONFIG), CONFIG_DIGEST);
  await store.setTag(fam.name, 'v1', fam.v1.image, { config: CONFIG_DIGEST, platform: 'linux/amd64' });
  pub = await signFamily(fam, join(dir, 'keys'));
  srv = await startServe(fam.storeDir);
});

after(async () => {
  await srv?.stop();
  if (dir) cleanup(dir);
});

const pullTo = (client: string, tag: string) => runCli(['pull', `${srv.url}/${fam.name}:${tag}`, '--store', client, '--trust', pub, '--json']);

test('pull keeps the signed config byte for byte; inspect shows it', async () => {
  const client = join(dir, 'ok');
  const r = await pullTo(client, 'v1');
  assert.equal(r.code, 0, r.stderr);
  const s = await Store.open(client);
  const rec = await s.getTagRecord(fam.name, 'v1');
  assert.equal(rec?.meta.config, CONFIG_DIGEST);
  assert.deepEqual(await s.readConfig(CONFIG_DIGEST), CONFIG);
  const i = await runCli(['inspect', `${fam.name}:v1`, '--store', client, '--json']);
  assert.equal(i.code, 0, i.stderr);
  const j = JSON.parse(i.stdout);
  assert.deepEqual(j.config.entrypoint, ['/bin/app']);
  assert.equal(j.config.user, 'app');
  assert.equal(j.signature.configSigned, true);
});

test('a statement without a config still pulls (then run needs a command)', async () => {
  const client = join(dir, 'old');
  const r = await pullTo(client, 'v2');
  assert.equal(r.code, 0, r.stderr);
  const s = await Store.open(client);
  assert.equal((await s.getTagRecord(fam.name, 'v2'))?.meta.config, undefined);
});

test('a config changed on the server is refused, the client store unchanged', async () => {
  const path = join(fam.storeDir, 'configs', CONFIG_DIGEST.slice(7));
  const saved = readFileSync(path);
  for (const bad of [Buffer.from(saved.toString().replace('"A=1"', '"A=2"')), Buffer.concat([saved, Buffer.from(' ')])]) {
    writeFileSync(path, bad);
    const client = join(dir, `bad-${bad.length}`);
    const before = await snapshotStore(client);
    const r = await pullTo(client, 'v1');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /config .*(changed or substituted config refused|not what|digest)/i);
    assert.deepEqual(await snapshotStore(client), before);
  }
  writeFileSync(path, saved);
  assert.equal((await pullTo(join(dir, 'restored'), 'v1')).code, 0);
});
