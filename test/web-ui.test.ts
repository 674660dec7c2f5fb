/**
 * The web page of `cfsdist serve` in real headless Chromium (playwright-core): the image list,
 * browsing /usr/bin (the same names as the image's dumpfile), the sharing view (objects an
 * update from v1 to v2 adds: those of v2 not in v1), a hostile file name rendered as text, a
 * directory of 10,000 entries paged and rendered in under a second; the JSON endpoints; and
 * `--no-ui`; the pull plan (equal to `cfsdist pull --dry-run --json` into a store holding the
 * other image, delta included), the update's delta, an image's OCI config, and the expiry
 * warning. Screenshots go to dist/screenshots/.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { Store } from '../src/store/store.js';
import { toHex } from '../src/verity/digest.js';
import { REPO } from './helpers.js';
import { addDirectoryImage, bytesFor, bytesOf, cleanup, makeImageFamily, makeKey, newObjects, runCli, signTag, startServe } from './pull-fixtures.js';
import type { FamilyMember, ImageFamily, ServeProcess } from './pull-fixtures.js';

const CHROMIUM = '/usr/bin/chromium';
const HOSTILE = '<img src=x onerror=window.__pwned=1>';
const BIG = 10_000;
/** A directory name that is not UTF-8 (latin-1 "café"). */
const LATIN1_NAME = Buffer.from('636166e9', 'hex');
const SHOTS = join(REPO, 'dist', 'screenshots');

/** The OCI config of test/tree:latest (a hostile label value among them). */
const CONFIG = { Entrypoint: ['/usr/bin/hello'], Cmd: ['--greet', 'world'], Env: ['PATH=/usr/bin', 'LANG=C.UTF-8'], User: '1000:1000', WorkingDir: '/srv', Labels: { 'org.example.note': HOSTILE } };

let tmp = '';
let key: { key: string; pub: string; keyid: string };
let storeDir = '';
let family: ImageFamily;
let tree: FamilyMember;
let serve: ServeProcess;
let browser: Browser | undefined;
let page: Page;

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'cfsdist-web-'));
  storeDir = join(tmp, 'store');
  family = await makeImageFamily(storeDir, { files: 60 });
  key = await makeKey(join(tmp, 'keys'));
  // v1 expires within the warning's 7 days; signing v2 makes the delta v1 → v2.
  await signTag(storeDir, family.name, 'v1', key.key, { expiresIn: 3 * 24 * 3600 });
  const signed2 = await signTag(storeDir, family.name, 'v2', key.key);
  assert.equal(signed2.deltas.length, 1, 'signing v2 made a delta from v1');
  const src = join(tmp, 'src');
  mkdirSync(join(src, 'usr', 'bin'), { recursive: true });
  writeFileSync(join(src, 'usr', 'bin', 'hello'), '#!/bin/sh\necho hello\n');
  writeFileSync(join(src, 'usr', 'bin', 'tool'), bytesFor('web', 'tool', 20_000));
  writeFileSync(join(src, 'usr', 'bin', HOSTILE), 'hostile\n');
  symlinkSync('tool', join(src, 'usr', 'bin', 'tool-link'));
  const latin1Dir = Buffer.concat([Buffer.from(src + '/'), LATIN1_NAME]);
  mkdirSync(latin1Dir);
  writeFileSync(Buffer.concat([latin1Dir, Buffer.from('/inside')]), 'in a directory whose name is not UTF-8\n');
  mkdirSync(join(src, 'big'));
  for (let i = 0; i < BIG; i++) writeFileSync(join(src, 'big', `entry-${String(i).padStart(5, '0')}`), '');
  const st = await Store.open(storeDir);
  tree = await addDirectoryImage(st, src, 'test/tree', 'latest');
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: CONFIG }));
  await st.setTag('test/tree', 'latest', tree.image, { ...(await st.getTagRecord('test/tree', 'latest'))!.meta, config: await st.addConfig(config) });
  serve = await startServe(storeDir);
  if (existsSync(CHROMIUM)) {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    mkdirSync(SHOTS, { recursive: true });
  }
});

after(async () => {
  await browser?.close();
  await serve?.stop();
  cleanup(tmp, family?.root ?? '');
});

/** GET a JSON endpoint of the running server. */
async function api<T>(path: string): Promise<T> {
  const r = await fetch(serve.url + path);
  assert.equal(r.status, 200, `${path}: ${await r.clone().text()}`);
  return (await r.json()) as T;
}

/** Skip when there is no browser (test.sh installs chromium, so CI runs these). */
function needBrowser(t: { skip(msg: string): void }): boolean {
  if (browser) return true;
  t.skip(`no ${CHROMIUM} (apt-get install chromium)`);
  return false;
}

interface ImagesReply {
  images: { name: string; tag: string; image: string; statement?: { version: number; keyids: string[]; expires: string }; objects: number; objectBytes: number; entries: number; imageSize: number; history: number[] }[];
}

test('the JSON endpoints: images with statement facts, a directory page, a file, an update', async () => {
  const v = await api<ImagesReply>('/ui/api/images');
  const refs = v.images.map((i) => `${i.name}:${i.tag}`).sort();
  assert.deepEqual(refs, ['test/app:v1', 'test/app:v2', 'test/tree:latest']);
  const v2 = v.images.find((i) => i.tag === 'v2')!;
  assert.equal(v2.image, toHex(family.v2.image));
  assert.equal(v2.objects, family.v2.objects.length);
  assert.equal(v2.objectBytes, bytesOf(family.v2.objects));
  assert.equal(v2.imageSize, family.v2.imageSize);
  assert.equal(v2.statement?.version, 1);
  assert.equal(v2.statement?.keyids.length, 1);
  assert.deepEqual(v2.history, [1]);
  assert.equal(v.images.find((i) => i.name === 'test/tree')!.statement, undefined);
  const text = JSON.stringify(v);
  assert.ok(!text.includes(storeDir) && !text.includes(tmp), 'no store path in the JSON');

  const hex = toHex(tree.image);
  const page0 = await api<{ total: number; entries: { name: string }[] }>(`/ui/api/tree?image=${hex}&path=/big&offset=0&limit=1000`);
  assert.equal(page0.total, BIG);
  assert.equal(page0.entries.length, 1000);
  assert.equal(page0.entries[999]!.name, 'entry-00999');
  assert.equal((await fetch(`${serve.url}/ui/api/tree?image=${hex}&path=/big&limit=1001`)).status, 400);
  const found = await api<{ total: number }>(`/ui/api/tree?image=${hex}&path=/big&q=entry-0999`);
  assert.equal(found.total, 10);
  const bin = await api<{ entries: { name: string; storage?: string; object?: string; target?: string }[] }>(`/ui/api/tree?image=${hex}&path=/usr/bin`);
  assert.equal(bin.entries.find((e) => e.name === 'tool')!.storage, 'object');
  assert.match(bin.entries.find((e) => e.name === 'tool')!.object ?? '', /^[0-9a-f]{64}$/);
  assert.equal(bin.entries.find((e) => e.name === 'hello')!.storage, 'inline');
  assert.equal(bin.entries.find((e) => e.name === 'tool-link')!.target, 'tool');

  const inline = await fetch(`${serve.url}/ui/api/file?image=${hex}&path=/usr/bin/hello`);
  assert.equal(await inline.text(), '#!/bin/sh\necho hello\n');
  const obj = Buffer.from(await (await fetch(`${serve.url}/ui/api/file?image=${hex}&path=/usr/bin/tool`)).arrayBuffer());
  assert.ok(obj.equals(bytesFor('web', 'tool', 20_000)));

  const share = await api<{ update: { added: number; addedBytes: number; removed: number } }>('/ui/api/share?name=test/app&from=v1&to=v2');
  assert.equal(share.update.added, newObjects(family.v1, family.v2).length);
  assert.equal(share.update.addedBytes, bytesOf(newObjects(family.v1, family.v2)));
  assert.equal(share.update.removed, newObjects(family.v2, family.v1).length);
});

test('the image list shows every tagged image', async (t) => {
  if (!needBrowser(t)) return;
  await page.goto(serve.url + '/');
  await page.waitForSelector('#images tbody tr');
  const refs = await page.$$eval('#images tbody tr', (rows) => rows.map((r) => r.getAttribute('data-ref')));
  assert.deepEqual(refs.sort(), ['test/app:v1', 'test/app:v2', 'test/tree:latest']);
  const html = await page.content();
  assert.ok(!html.includes(storeDir), 'no store path in the page');
  await page.screenshot({ path: join(SHOTS, 'images.png'), fullPage: true });
});

test('browsing /usr/bin lists the names of the image dumpfile; a hostile name renders as text', async (t) => {
  if (!needBrowser(t)) return;
  const hex = toHex(tree.image);
  await page.goto(`${serve.url}/#tree?image=${hex}&path=%2Fusr%2Fbin`);
  await page.waitForSelector('#tree[data-path="/usr/bin"] tbody tr');
  const shown = await page.$$eval('#tree tbody tr', (rows) => rows.map((r) => r.getAttribute('data-name')));
  const dump = await runCli(['--store', storeDir, 'info', 'dump', hex]);
  assert.equal(dump.code, 0, dump.stderr);
  const names = dump.stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((p) => p.startsWith('/usr/bin/'))
    .map((p) => p.slice('/usr/bin/'.length));
  // The dumpfile escapes bytes outside printable ASCII, and '=' is fine: the hostile name has
  // spaces (\x20), so compare with its escaped form.
  const unescape = (s: string) => s.replace(/\\x([0-9a-f]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
  assert.deepEqual([...shown].sort(), names.map(unescape).sort());
  assert.ok(shown.includes(HOSTILE));
  const texts = await page.$$eval('#tree tbody td.name', (cells) => cells.map((c) => c.textContent));
  assert.ok(texts.includes(HOSTILE), 'the name is shown as text');
  assert.equal(await page.$$eval('#tree img', (imgs) => imgs.length), 0, 'no element made from a name');
  assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
  await page.screenshot({ path: join(SHOTS, 'tree.png'), fullPage: true });
});

test('a directory whose name is not UTF-8 is browsed by its bytes', async (t) => {
  if (!needBrowser(t)) return;
  const hex = toHex(tree.image);
  await page.goto(`${serve.url}/#tree?image=${hex}&path=%2F`);
  await page.waitForSelector('#tree[data-path="/"] tbody tr');
  const row = await page.$$eval('#tree tbody tr', (rows) => rows.map((r) => r.getAttribute('data-name')).find((n) => n !== null && n.startsWith('caf')));
  assert.equal(row, 'caf\ufffd');
  await page.click(`#tree tbody tr[data-name="caf\ufffd"] a`);
  await page.waitForSelector('#tree tbody tr[data-name="inside"]');
  assert.match(page.url(), new RegExp(`hexpath=2f${LATIN1_NAME.toString('hex')}`));
  const href = await page.getAttribute('#tree tbody tr[data-name="inside"] a', 'href');
  const body = await (await fetch(new URL(href!, serve.url))).text();
  assert.equal(body, 'in a directory whose name is not UTF-8\n');
});

test('a directory of 10,000 entries shows its first page in under a second', async (t) => {
  if (!needBrowser(t)) return;
  const hex = toHex(tree.image);
  await page.goto(`${serve.url}/#tree?image=${hex}&path=%2F`);
  await page.waitForSelector('#tree[data-path="/"]');
  const ms = await page.evaluate(async (h) => {
    const t0 = performance.now();
    location.hash = `#tree?image=${h}&path=%2Fbig`;
    await new Promise<void>((resolve) => {
      const check = (): void => (document.querySelector('#tree[data-path="/big"] tbody tr') ? resolve() : void requestAnimationFrame(check));
      check();
    });
    return performance.now() - t0;
  }, hex);
  process.stdout.write(`# web-ui: first page of /big (${BIG} entries) rendered in ${ms.toFixed(1)} ms\n`);
  assert.ok(ms < 1000, `rendered in ${ms} ms`);
  assert.equal(await page.$$eval('#tree tbody tr', (r) => r.length), 500);
  assert.equal(await page.textContent('#range'), `1–500 of ${BIG} entries`);
  await page.click('#next');
  await page.waitForFunction(() => document.querySelector('#range')?.textContent?.startsWith('501–'));
  assert.equal(await page.getAttribute('#tree tbody tr:first-child', 'data-name'), 'entry-00500');
  await page.fill('#search', 'entry-0999');
  await page.press('#search', 'Enter');
  await page.waitForFunction(() => document.querySelector('#tree')?.getAttribute('data-total') === '10');
  await page.screenshot({ path: join(SHOTS, 'tree-big.png') });
});

test('the sharing view shows what an update from v1 to v2 moves', async (t) => {
  if (!needBrowser(t)) return;
  await page.goto(`${serve.url}/#share?name=test%2Fapp&from=v1&to=v2`);
  await page.waitForSelector('#update');
  const added = newObjects(family.v1, family.v2).length;
  const removed = newObjects(family.v2, family.v1).length;
  assert.equal(await page.getAttribute('#update', 'data-added'), String(added));
  assert.equal(await page.getAttribute('#update', 'data-removed'), String(removed));
  const shared = family.v1.objects.length - removed;
  const pairText = await page.textContent('#pairs tbody tr');
  assert.ok(pairText?.includes(String(shared)), `${pairText} shows ${shared} shared objects`);
  await page.waitForSelector('#chart');
  await page.screenshot({ path: join(SHOTS, 'share.png'), fullPage: true });
});

interface PlanReply {
  have: string;
  want: string;
  needed: { count: number; bytes: number };
  present: { count: number; bytes: number };
  fetch: { count: number; bytes: number };
  imageBytes: number;
  delta: { base: string; kind: string; bytes: number; imageBytes: number; treeBytes?: number; zpatchBytes?: number } | null;
}

test('the pull plan equals cfsdist pull --dry-run --json, delta included', async (t) => {
  const client = join(tmp, 'client');
  const ref = (tag: string): string => `${serve.url}/${family.name}:${tag}`;
  const got = await runCli(['pull', ref('v1'), '--store', client, '--trust', key.pub, '--json']);
  assert.equal(got.code, 0, got.stderr);
  const dry = await runCli(['pull', ref('v2'), '--store', client, '--trust', key.pub, '--dry-run', '--json']);
  assert.equal(dry.code, 0, dry.stderr);
  const cli = JSON.parse(dry.stdout) as { plan: { fetch: { count: number; bytes: number }; present: { count: number; bytes: number }; needed: { count: number; bytes: number }; imageBytes: number }; delta?: { kind: string; bytes: number; base: string } };
  const v1 = toHex(family.v1.image);
  const v2 = toHex(family.v2.image);
  const plan = await api<PlanReply>(`/ui/api/plan?have=${v1}&want=${v2}`);
  assert.deepEqual(plan.fetch, cli.plan.fetch);
  assert.deepEqual(plan.present, cli.plan.present);
  assert.deepEqual(plan.needed, cli.plan.needed);
  assert.equal(plan.imageBytes, cli.plan.imageBytes);
  assert.ok(cli.delta, 'the dry run takes a delta');
  assert.ok(plan.delta, 'the plan names a delta');
  assert.deepEqual({ base: plan.delta.base, kind: plan.delta.kind, bytes: plan.delta.bytes }, { base: cli.delta.base, kind: cli.delta.kind, bytes: cli.delta.bytes });
  assert.ok(plan.delta.bytes < plan.imageBytes, `delta ${plan.delta.bytes} < image ${plan.imageBytes}`);
  assert.equal(plan.fetch.count, newObjects(family.v1, family.v2).length);

  // From nothing: everything, and the full image.
  const dry0 = await runCli(['pull', ref('v2'), '--store', join(tmp, 'no-store'), '--trust', key.pub, '--dry-run', '--json']);
  assert.equal(dry0.code, 0, dry0.stderr);
  const cli0 = JSON.parse(dry0.stdout) as { plan: { fetch: unknown; present: unknown; imageBytes: number }; delta?: unknown };
  const plan0 = await api<PlanReply>(`/ui/api/plan?have=none&want=${v2}`);
  assert.deepEqual(plan0.fetch, cli0.plan.fetch);
  assert.deepEqual(plan0.present, cli0.plan.present);
  assert.equal(plan0.imageBytes, cli0.plan.imageBytes);
  assert.equal(plan0.delta, null);
  assert.equal(cli0.delta, undefined);
  assert.equal((await fetch(`${serve.url}/ui/api/plan?have=zz&want=${v2}`)).status, 400);

  if (!needBrowser(t)) return;
  await page.goto(`${serve.url}/#plan?have=${v1}&want=${v2}`);
  await page.waitForSelector('#plan');
  assert.equal(await page.getAttribute('#plan', 'data-fetch'), `${cli.plan.fetch.count}:${cli.plan.fetch.bytes}`);
  assert.equal(await page.getAttribute('#plan', 'data-present'), `${cli.plan.present.count}:${cli.plan.present.bytes}`);
  assert.equal(await page.getAttribute('#metadata', 'data-delta'), `${cli.delta.kind}:${cli.delta.bytes}`);
  await page.screenshot({ path: join(SHOTS, 'plan.png'), fullPage: true });
  // The selects make the same plan.
  await page.goto(`${serve.url}/#plan`);
  await page.waitForSelector('#want');
  await page.selectOption('#have', 'none');
  await page.selectOption('#want', v2);
  await page.click('#plan-go');
  await page.waitForSelector('#plan');
  assert.equal(await page.getAttribute('#plan', 'data-fetch'), `${family.v2.objects.length}:${bytesOf(family.v2.objects)}`);
  assert.equal(await page.getAttribute('#metadata', 'data-delta'), 'none');
});

test('the update view shows the delta against the full image', async (t) => {
  const share = await api<{ update: { imageBytes: number; delta: { kind: string; bytes: number; treeBytes?: number } | null } }>('/ui/api/share?name=test/app&from=v1&to=v2');
  assert.equal(share.update.imageBytes, family.v2.imageSize);
  assert.ok(share.update.delta && share.update.delta.bytes > 0 && share.update.delta.treeBytes! > 0);
  // Signing v1 (while v2 was tagged) made v2 → v1 too; an image of another name has none.
  const back = await api<{ update: { delta: unknown } }>('/ui/api/share?name=test/app&from=v2&to=v1');
  assert.ok(back.update.delta);
  assert.equal((await api<PlanReply>(`/ui/api/plan?have=${toHex(tree.image)}&want=${toHex(family.v2.image)}`)).delta, null);
  if (!needBrowser(t)) return;
  await page.goto(`${serve.url}/#share?name=test%2Fapp&from=v1&to=v2`);
  await page.waitForSelector('#metadata');
  assert.equal(await page.getAttribute('#metadata', 'data-delta'), `${share.update.delta.kind}:${share.update.delta.bytes}`);
  assert.equal(await page.getAttribute('#metadata', 'data-image-bytes'), String(family.v2.imageSize));
});

test('an image with an OCI config shows it', async (t) => {
  const v = await api<{ configs: { name: string; tag: string; entrypoint: string[]; cmd: string[]; env: string[]; user: string; workingDir: string; labels: Record<string, string>; os: string }[] }>(`/ui/api/config?image=${toHex(tree.image)}`);
  assert.equal(v.configs.length, 1);
  const c = v.configs[0]!;
  assert.deepEqual([c.name, c.tag, c.os], ['test/tree', 'latest', 'linux']);
  assert.deepEqual(c.entrypoint, CONFIG.Entrypoint);
  assert.deepEqual(c.cmd, CONFIG.Cmd);
  assert.deepEqual(c.env, CONFIG.Env);
  assert.equal(c.user, CONFIG.User);
  assert.equal(c.workingDir, CONFIG.WorkingDir);
  assert.deepEqual(c.labels, CONFIG.Labels);
  assert.deepEqual((await api<{ configs: unknown[] }>(`/ui/api/config?image=${toHex(family.v1.image)}`)).configs, []);
  const images = await api<{ images: { name: string; config?: string }[] }>('/ui/api/images');
  assert.match(images.images.find((i) => i.name === 'test/tree')!.config ?? '', /^sha256:[0-9a-f]{64}$/);
  if (!needBrowser(t)) return;
  await page.goto(`${serve.url}/#tree?image=${toHex(tree.image)}&path=%2F`);
  await page.waitForSelector('#config dl');
  assert.equal(await page.textContent('#config dd[data-key="Entrypoint"]'), JSON.stringify(CONFIG.Entrypoint));
  assert.equal(await page.textContent('#config dd[data-key="WorkingDir"]'), '/srv');
  assert.equal(await page.textContent('#config dd[data-key="Env"]'), CONFIG.Env.join('\n'));
  assert.equal(await page.textContent('#config dd[data-key="Labels"]'), `org.example.note=${HOSTILE}`);
  assert.equal(await page.$$eval('#config img', (imgs) => imgs.length), 0);
  assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned), undefined);
  await page.screenshot({ path: join(SHOTS, 'config.png'), fullPage: true });
});

test('statements expiring within 7 days are marked in the image list', async (t) => {
  const v = await api<{ images: { tag: string; statement?: { expired: boolean; expiresSoon: boolean } }[] }>('/ui/api/images');
  assert.equal(v.images.find((i) => i.tag === 'v1')!.statement?.expiresSoon, true);
  assert.equal(v.images.find((i) => i.tag === 'v2')!.statement?.expiresSoon, false);
  if (!needBrowser(t)) return;
  await page.goto(serve.url + '/#images');
  await page.waitForSelector('#images tbody tr');
  assert.equal(await page.getAttribute('#images tr[data-ref="test/app:v1"]', 'data-expiry'), 'soon');
  assert.equal(await page.getAttribute('#images tr[data-ref="test/app:v2"]', 'data-expiry'), 'ok');
  assert.equal(await page.getAttribute('#images tr[data-ref="test/tree:latest"]', 'data-expiry'), '');
  assert.equal(await page.textContent('#images tr[data-ref="test/app:v1"] .expiring'), 'expires within 7 days');
});

test('an expired statement is marked in the image list', async (t) => {
  const dir = join(tmp, 'expired');
  const fam = await makeImageFamily(join(dir, 'store'), { name: 'test/old', files: 4, large: [] });
  const now = Math.floor(Date.now() / 1000);
  await signTag(fam.storeDir, fam.name, 'v1', key.key, { now: now - 10 * 24 * 3600, expiresIn: 24 * 3600, deltas: 0 });
  const s = await startServe(fam.storeDir);
  try {
    const v = await (await fetch(s.url + '/ui/api/images')).json() as { images: { tag: string; statement?: { expired: boolean; expiresSoon: boolean } }[] };
    const st = v.images.find((i) => i.tag === 'v1')!.statement;
    assert.equal(st?.expired, true);
    assert.equal(st?.expiresSoon, false);
    if (!needBrowser(t)) return;
    await page.goto(s.url + '/#images');
    await page.waitForSelector('#images tbody tr');
    assert.equal(await page.getAttribute('#images tr[data-ref="test/old:v1"]', 'data-expiry'), 'expired');
    assert.equal(await page.textContent('#images tr[data-ref="test/old:v1"] .expired'), 'expired');
    assert.equal(await page.getAttribute('#images tr[data-ref="test/old:v2"]', 'data-expiry'), '');
  } finally {
    await s.stop();
    cleanup(dir, fam.root);
  }
});

test('--no-ui serves no page', async () => {
  const s = await startServe(storeDir, ['--no-ui']);
  try {
    assert.equal((await fetch(s.url + '/')).status, 404);
    assert.equal((await fetch(s.url + '/ui/api/images')).status, 404);
    assert.equal((await fetch(s.url + '/v1/tags')).status, 200);
  } finally {
    await s.stop();
  }
});

test('the demo images (the Debian family): listed, /usr/bin equals the dumpfile, the update moves what pull --dry-run reports', { skip: process.getuid?.() !== 0 ? 'the Debian family is built as root' : false, timeout: 300_000 }, async (t) => {
  if (!needBrowser(t)) return;
  const { ensureDebianFamily } = await import('../src/demo/family.js');
  const debian = await ensureDebianFamily();
  const demoStore = join(tmp, 'demo-store');
  for (const tag of ['v1', 'v2']) {
    const imp = await runCli(['--store', demoStore, '--quiet', 'import', `oci:${debian.layout}:${tag}`, `demo:${tag}`], { timeoutMs: 120_000 });
    assert.equal(imp.code, 0, imp.stderr);
    await signTag(demoStore, 'demo', tag, key.key);
  }
  const demo = await startServe(demoStore);
  try {
    await page.goto(demo.url + '/');
    await page.waitForSelector('#images tbody tr');
    const refs = await page.$$eval('#images tbody tr', (rows) => rows.map((r) => r.getAttribute('data-ref')));
    assert.deepEqual(refs.sort(), ['demo:v1', 'demo:v2']);
    await page.screenshot({ path: join(SHOTS, 'demo-images.png'), fullPage: true });

    const images = await (await fetch(`${demo.url}/ui/api/images`)).json() as ImagesReply;
    const v2 = images.images.find((i) => i.tag === 'v2')!.image;
    await page.goto(`${demo.url}/#tree?image=${v2}&path=%2Fusr%2Fbin`);
    await page.waitForSelector('#tree[data-path="/usr/bin"] tbody tr');
    const total = Number(await page.getAttribute('#tree', 'data-total'));
    const dump = await runCli(['--store', demoStore, 'info', 'dump', v2]);
    assert.equal(dump.code, 0, dump.stderr);
    const names = dump.stdout.split('\n').map((l) => l.split(' ')[0]!).filter((p) => /^\/usr\/bin\/[^/]+$/.test(p)).map((p) => p.slice('/usr/bin/'.length));
    assert.equal(total, names.length, 'the page counts the entries of /usr/bin the dumpfile lists');
    const shown = await page.$$eval('#tree tbody tr', (rows) => rows.map((r) => r.getAttribute('data-name')));
    assert.deepEqual(shown, names.slice(0, shown.length), 'the first page shows the dumpfile names, in order');
    assert.ok(shown.includes('jq'));
    await page.screenshot({ path: join(SHOTS, 'demo-usr-bin.png'), fullPage: true });

    // What pull reports for the update: a client holding v1 asks for v2.
    const client = join(tmp, 'demo-client');
    const p1 = await runCli(['pull', `${demo.url}/demo:v1`, '--store', client, '--trust', key.pub, '--quiet']);
    assert.equal(p1.code, 0, p1.stderr);
    const dry = await runCli(['pull', `${demo.url}/demo:v2`, '--store', client, '--trust', key.pub, '--dry-run', '--json']);
    assert.equal(dry.code, 0, dry.stderr);
    const fetchCount = (JSON.parse(dry.stdout) as { plan: { fetch: { count: number } } }).plan.fetch.count;
    await page.goto(`${demo.url}/#share?name=demo&from=v1&to=v2`);
    await page.waitForSelector('#update');
    assert.equal(await page.getAttribute('#update', 'data-added'), String(fetchCount), 'the update adds the objects pull would fetch');
    await page.screenshot({ path: join(SHOTS, 'demo-share.png'), fullPage: true });
    console.log(`# demo: /usr/bin ${names.length} entries; update v1 → v2 adds ${fetchCount} objects (pull --dry-run)`);
  } finally {
    await demo.stop();
  }
});
