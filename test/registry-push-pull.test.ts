/**
 * cfsdist images through a real distribution registry (docker-registry 2.8.2, htpasswd auth):
 * push v1 and v2 of the Debian family (v2 uploads only what v1 lacks), pull both into a fresh
 * store (v2 fetches only the missing objects; objects travel compressed, verified by their
 * fs-verity digests), dry run, credentials refused, and tampering — a replaced blob in the
 * registry's storage, a tag moved to another image's manifest, a tag rolled back to an older
 * statement — refused with the store unchanged.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { push } from '../src/client/push.js';
import { pull } from '../src/client/pull.js';
import type { PullSummary } from '../src/client/pull.js';
import { loadPublicKey, loadPrivateKey } from '../src/sign/keys.js';
import type { PublicKeyEntry } from '../src/sign/keys.js';
import { signImage } from '../src/sign/sign-image.js';
import { imageFacts } from '../src/sign/image-facts.js';
import { toHex } from '../src/verity/digest.js';
import { RegistryRemote, parseRegistryRef, openRegistryRemote } from '../src/registry/index.js';
import { MT_IMAGE_CONFIG, MT_OBJECT_INDEX, MT_PACK } from '../src/registry/artifact.js';
import { cleanup, snapshotStore } from './pull-fixtures.js';
import { registryMissing, signedDebian, startRegistry } from './registry-fixtures.js';
import type { RegistryProcess, SignedDebian } from './registry-fixtures.js';
import { notRoot } from './helpers.js';

const skip = registryMissing() || notRoot();
const NAME = 'cfsdist/debian';
let dir = '';
let reg: RegistryProcess;
let deb: SignedDebian;
let trusted: PublicKeyEntry[] = [];

function remote(tag?: string): RegistryRemote {
  return new RegistryRemote(parseRegistryRef(`docker://${reg.host}/${NAME}${tag ? `:${tag}` : ''}`), { auth: { username: reg.user, password: reg.password } });
}

async function pullInto(storeDir: string, tag: string, extra: { dryRun?: boolean } = {}): Promise<PullSummary> {
  const r = remote();
  try {
    return await pull({ store: await Store.open(storeDir, { create: true }), remote: r, name: NAME, tag, trusted, ...extra });
  } finally {
    r.close();
  }
}

async function objectsOf(image: Buffer, storeDir: string) {
  const s = await Store.open(storeDir);
  return (await imageFacts(readFileSync(s.imagePath(image)), 'image')).objects;
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-regtest-'));
  reg = await startRegistry();
  deb = await signedDebian(dir, NAME);
  trusted = [await loadPublicKey(deb.pub)];
});

after(async () => {
  await reg?.stop();
  if (dir) cleanup(dir);
});

test('no credentials: the push is refused with an AUTH error', { skip }, async () => {
  const saved = { u: process.env.CFSDIST_REGISTRY_USER, h: process.env.HOME };
  delete process.env.CFSDIST_REGISTRY_USER;
  process.env.CFSDIST_REGISTRY_AUTH_FILE = join(dir, 'no-such-auth.json');
  try {
    const { remote: r } = openRegistryRemote(`docker://${reg.host}/${NAME}`);
    await assert.rejects(push({ store: await Store.open(deb.storeDir), target: r, name: NAME, tag: 'v1' }), (e: Error & { code?: string }) => e.code === 'AUTH' && /CFSDIST_REGISTRY_USER/.test(e.message));
    r.close();
  } finally {
    delete process.env.CFSDIST_REGISTRY_AUTH_FILE;
    if (saved.u !== undefined) process.env.CFSDIST_REGISTRY_USER = saved.u;
  }
});

test('push v1, then v2 uploads only what v1 lacks; a wrong destination name is refused', { skip }, async () => {
  const store = await Store.open(deb.storeDir);
  const o1 = await objectsOf(deb.images.v1, deb.storeDir);
  const o2 = await objectsOf(deb.images.v2, deb.storeDir);
  const have = new Set(o1.map((o) => toHex(o.digest)));
  const fresh = o2.filter((o) => !have.has(toHex(o.digest)));
  let r = remote();
  const p1 = await push({ store, target: r, name: NAME, tag: 'v1' });
  r.close();
  assert.deepEqual(p1.objects, { needed: o1.length, present: 0, sent: o1.length });
  // Compressed on the wire: fewer bytes sent than the objects' content.
  assert.ok(p1.wire.sent < p1.bytes.needed, `sent ${p1.wire.sent} for ${p1.bytes.needed} content bytes`);
  r = remote();
  const p2 = await push({ store, target: r, name: NAME, tag: 'v2' });
  r.close();
  assert.deepEqual(p2.objects, { needed: o2.length, present: o2.length - fresh.length, sent: fresh.length });
  r = remote('other');
  await assert.rejects(push({ store, target: r, name: NAME, tag: 'v1' }), (e: Error & { code?: string }) => e.code === 'NAME_MISMATCH');
  r.close();
  // The manifest is our artifact: image, index, packs.
  const m = await remote().client.getManifest(NAME, 'v1');
  const layers = (m!.json as { layers: { mediaType: string }[] }).layers;
  assert.equal((m!.json as { artifactType: string }).artifactType, 'application/vnd.cfsdist.image.v1');
  assert.ok(layers.some((l) => l.mediaType === MT_OBJECT_INDEX));
  assert.ok(layers.filter((l) => l.mediaType === MT_PACK).length >= 1);
});

test('pull v1 into a fresh store, then v2 fetches only the missing objects; dry run changes nothing', { skip }, async () => {
  const storeDir = join(dir, 'client');
  const dry = await pullInto(storeDir, 'v1', { dryRun: true });
  assert.equal(dry.plan!.fetch.count, dry.objects.needed);
  assert.deepEqual((await snapshotStore(storeDir)).tags, {});
  const s1 = await pullInto(storeDir, 'v1');
  const o1 = await objectsOf(deb.images.v1, deb.storeDir);
  assert.equal(s1.image, toHex(deb.images.v1));
  assert.equal(s1.objects.fetched, o1.length);
  assert.ok(s1.wire.received < s1.bytes.needed, `cold pull received ${s1.wire.received} bytes for ${s1.bytes.needed} content bytes (compressed on the wire)`);
  const o2 = await objectsOf(deb.images.v2, deb.storeDir);
  const have = new Set(o1.map((o) => toHex(o.digest)));
  const fresh = o2.filter((o) => !have.has(toHex(o.digest)));
  const s2 = await pullInto(storeDir, 'v2');
  assert.equal(s2.objects.fetched, fresh.length);
  assert.equal(s2.objects.present, o2.length - fresh.length);
  const store = await Store.open(storeDir);
  assert.equal((await store.fsck()).ok, true);
  const snap = await snapshotStore(storeDir);
  assert.equal(snap.tags[`${NAME}:v1`], toHex(deb.images.v1));
  assert.equal(snap.tags[`${NAME}:v2`], toHex(deb.images.v2));
  console.log(`# cold pull: ${s1.wire.requests} requests, ${s1.wire.received} bytes; update: ${s2.wire.requests} requests, ${s2.wire.received} bytes`);
});

/** Pull into a fresh store expecting a refusal matching `re`; the store stays empty. */
async function refused(tag: string, re: RegExp, storeDir = join(dir, `fresh-${Math.random().toString(36).slice(2)}`)): Promise<void> {
  const before = await snapshotStore(storeDir);
  await assert.rejects(pullInto(storeDir, tag), (e: Error) => re.test(`${(e as { code?: string }).code} ${e.message}`));
  assert.deepEqual(await snapshotStore(storeDir), before);
}

test('a replaced blob in the registry storage is refused (image, pack), store unchanged', { skip }, async () => {
  const m = await remote().client.getManifest(NAME, 'v2');
  const layers = (m!.json as { layers: { mediaType: string; digest: string }[] }).layers;
  // A pack of v2: rewrite one byte in the middle of its compressed data.
  const pack = layers.find((l) => l.mediaType === MT_PACK)!;
  const p = reg.blobPath(pack.digest);
  const saved = readFileSync(p);
  const bad = Buffer.from(saved);
  for (let i = 0; i < bad.length; i += 4096) bad[i]! ^= 0x55;
  writeFileSync(p, bad);
  try {
    await refused('v2', /OBJECT_CORRUPT|BAD_FRAME|DIGEST|does not decompress|corrupt/i);
  } finally {
    writeFileSync(p, saved);
  }
  // The image blob: replaced by v1's (valid, but not what the statement names).
  const img = layers[0]!;
  const m1 = await remote().client.getManifest(NAME, 'v1');
  const img1 = (m1!.json as { layers: { digest: string }[] }).layers[0]!;
  const ip = reg.blobPath(img.digest);
  const savedImg = readFileSync(ip);
  copyFileSync(reg.blobPath(img1.digest), ip);
  try {
    await refused('v2', /IMAGE_MISMATCH|TRUNCATED|TOO_LONG/);
  } finally {
    writeFileSync(ip, savedImg);
  }
  // Restored: the pull works again.
  const ok = await pullInto(join(dir, 'after-tamper'), 'v2');
  assert.equal(ok.image, toHex(deb.images.v2));
});

test('the image config travels with the image; a config changed in the registry is refused, store unchanged', { skip }, async () => {
  const m = await remote().client.getManifest(NAME, 'v1');
  const cfg = (m!.json as { layers: { mediaType: string; digest: string; size: number }[] }).layers.find((l) => l.mediaType === MT_IMAGE_CONFIG);
  assert.ok(cfg, 'the cfsdist manifest carries the image config');
  const p = reg.blobPath(cfg.digest);
  const saved = readFileSync(p);
  writeFileSync(p, Buffer.from(saved.toString('latin1').replace('"architecture"', '"architecturE"'), 'latin1'));
  try {
    await refused('v1', /CONFIG|digest/i);
  } finally {
    writeFileSync(p, saved);
  }
  const storeDir = join(dir, 'config-ok');
  await pullInto(storeDir, 'v1');
  const s = await Store.open(storeDir);
  const meta = (await s.getTagRecord(NAME, 'v1'))!.meta;
  assert.equal(meta.config, cfg.digest);
  assert.deepEqual(await s.readConfig(cfg.digest), saved);
  assert.match(meta.manifest ?? '', /^sha256:/);
  assert.equal(meta.platform, 'linux/amd64');
});

test('a tag moved to another image, or rolled back to an older statement, is refused', { skip }, async () => {
  const c = remote().client;
  // v2 → v1's manifest: the statement names cfsdist/debian:v1, not :v2.
  const m1 = (await c.getManifest(NAME, 'v1'))!;
  const m2 = (await c.getManifest(NAME, 'v2'))!;
  await c.putManifest(NAME, 'v2', m1.bytes, m1.mediaType);
  try {
    await refused('v2', /is for cfsdist\/debian:v1, not cfsdist\/debian:v2/);
  } finally {
    await c.putManifest(NAME, 'v2', m2.bytes, m2.mediaType);
  }
  // Rollback: "rb" signed at version 1 (image v1), then version 2 (image v2); a client that
  // accepted version 2 refuses the registry's tag moved back to the version-1 manifest.
  const store = await Store.open(deb.storeDir);
  const key = await loadPrivateKey(deb.key);
  await store.setTag(NAME, 'rb', deb.images.v1);
  await signImage(store, NAME, 'rb', key);
  let r = remote();
  await push({ store, target: r, name: NAME, tag: 'rb' });
  r.close();
  const old = (await c.getManifest(NAME, 'rb'))!;
  await store.setTag(NAME, 'rb', deb.images.v2);
  await signImage(store, NAME, 'rb', key);
  r = remote();
  await push({ store, target: r, name: NAME, tag: 'rb' });
  r.close();
  const clientDir = join(dir, 'client');
  const got = await pullInto(clientDir, 'rb');
  assert.equal(got.image, toHex(deb.images.v2));
  await c.putManifest(NAME, 'rb', old.bytes, old.mediaType);
  await refused('rb', /ROLLBACK|older|version/i, clientDir);
});
