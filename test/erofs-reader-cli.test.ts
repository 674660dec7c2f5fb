/**
 * `cfsdist info ls|dump|objects|missing-objects|measure`: output compatible with C
 * `composefs-info`, IMAGE given as a file or as NAME:TAG / digest in a store, --json, and
 * hostile or missing images fail with exit 1 and a message naming the image.
 */
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { writeImage } from '../src/erofs/writer.js';
import { fsverityDigest } from '../src/verity/digest.js';
import { newInode, S_IFDIR, S_IFREG } from '../src/tree/tree.js';
import { CLI, REFERENCE_BIN, REPO, VECTORS, referenceMissing, toolMissing, vectorsMissing } from './helpers.js';

const skip = vectorsMissing();
const INFO = join(REFERENCE_BIN, 'composefs-info');

function cfsdist(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, CFSDIST_STORE: '/nonexistent-store', ...env }, maxBuffer: 1 << 28 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** C composefs-info's output; undefined (and the test marked skipped, visibly) when the
 * reference binaries are absent. A failing reference run is a test failure. */
function refInfo(t: TestContext, args: string[]): Buffer | undefined {
  if (!existsSync(INFO)) {
    referenceMissing(t, `no reference composefs-info in ${REFERENCE_BIN}: the comparison with it is left out`);
    return undefined;
  }
  const r = spawnSync(INFO, args, { maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, `composefs-info ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** `fsverity digest` of files (the Debian tool, as an oracle independent of our hashing). */
function toolDigests(t: TestContext, paths: string[]): string[] | undefined {
  const r = spawnSync('fsverity', ['digest', '--compact', ...paths], { encoding: 'utf8' });
  if (r.error || r.status === null) {
    toolMissing(t, 'fsverity (Debian package fsverity) not installed');
    return undefined;
  }
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n');
}

const golden = (name: string): string => join(VECTORS, 'extra', 'golden', name);

test('info ls and info dump print the stored composefs-info outputs byte for byte', { skip }, () => {
  for (const name of ['hardlinks.dump.cfs', 'escapes.dump.cfs', 'whiteouts-overlay.dump.cfs']) {
    for (const cmd of ['ls', 'dump']) {
      const r = cfsdist(['info', cmd, golden(name)]);
      assert.equal(r.status, 0, r.stderr);
      assert.ok(r.stdout.equals(readFileSync(join(VECTORS, 'extra', 'info', `${name}.info-${cmd}.txt`))), `${cmd} ${name}`);
    }
  }
  // several images: outputs one after the other, as composefs-info does
  const two = cfsdist(['info', 'ls', golden('hardlinks.dump.cfs'), golden('escapes.dump.cfs')]);
  assert.ok(two.stdout.equals(Buffer.concat([readFileSync(join(VECTORS, 'extra', 'info', 'hardlinks.dump.cfs.info-ls.txt')), readFileSync(join(VECTORS, 'extra', 'info', 'escapes.dump.cfs.info-ls.txt'))])));
});

test('info objects lists backing objects sorted and unique, over several images, like composefs-info', { skip }, (t) => {
  const images = [golden('hardlinks.dump.cfs'), join(VECTORS, 'upstream', 'golden', 'special.dump.cfs'), golden('hardlinks.dump.cfs')];
  const r = cfsdist(['info', 'objects', ...images]);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.toString('latin1').split('\n').slice(0, -1);
  assert.deepEqual(lines, [...new Set(lines)].sort());
  assert.ok(lines.includes('ab/e7e2f59b128bdb0aa60f56f5211efefdf83b92994b8f4a5d2e18126a0a14de'));
  const ref = refInfo(t, ['objects', ...images]);
  if (ref) assert.ok(r.stdout.equals(ref), 'differs from composefs-info objects');
  const j = cfsdist(['info', 'objects', '--json', ...images]);
  assert.deepEqual(JSON.parse(j.stdout.toString()), lines);
});

test('info missing-objects against --basedir and against a store; IMAGE as NAME:TAG and digest', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-info-cli-'));
  try {
    const store = await Store.open(join(dir, 'store'), { create: true, enableVerity: false, fsync: false });
    const have = Buffer.from('present object\n'.repeat(100));
    const lack = Buffer.from('missing object\n'.repeat(100));
    const { digest: d1 } = await store.objects.addBuffer(have);
    const d2 = fsverityDigest(lack);
    const root = newInode(S_IFDIR | 0o755);
    for (const [name, data, d] of [['have', have, d1], ['lack', lack, d2]] as const) {
      const hex = d.toString('hex');
      root.entries!.set(name, newInode(S_IFREG | 0o644, { size: data.length, digest: d, payload: Buffer.from(`${hex.slice(0, 2)}/${hex.slice(2)}`) }));
    }
    const imgPath = join(dir, 'img.cfs');
    writeFileSync(imgPath, writeImage(root));
    const lackPath = `${d2.toString('hex').slice(0, 2)}/${d2.toString('hex').slice(2)}`;

    const r = cfsdist(['info', 'missing-objects', imgPath, '--store', store.dir]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.toString(), `${lackPath}\n`);
    const j = cfsdist(['--json', 'info', 'missing-objects', imgPath], { CFSDIST_STORE: store.dir });
    assert.deepEqual(JSON.parse(j.stdout.toString()), { needed: 2, missing: [lackPath] });

    const basedir = join(dir, 'objects-only');
    mkdirSync(join(basedir, d2.toString('hex').slice(0, 2)), { recursive: true });
    writeFileSync(join(basedir, lackPath), lack);
    const b = cfsdist(['info', 'missing-objects', '--basedir', basedir, imgPath]);
    assert.equal(b.status, 0, b.stderr);
    assert.equal(b.stdout.toString(), `${d1.toString('hex').slice(0, 2)}/${d1.toString('hex').slice(2)}\n`);
    const ref = existsSync(INFO) ? spawnSync(INFO, [`--basedir=${basedir}`, 'missing-objects', imgPath]) : undefined;
    if (ref && ref.status === 0) assert.ok(b.stdout.equals(ref.stdout), 'differs from composefs-info missing-objects');

    // the image in the store, by tag and by digest
    const imageDigest = await store.addImage(imgPath, [d1, d2]);
    await store.setTag('demo', 'v1', imageDigest);
    const byTag = cfsdist(['info', 'dump', 'demo:v1', '--store', store.dir]);
    assert.equal(byTag.status, 0, byTag.stderr);
    assert.ok(byTag.stdout.equals(cfsdist(['info', 'dump', imgPath]).stdout));
    const byDigest = cfsdist(['info', 'ls', imageDigest.toString('hex'), '--store', store.dir]);
    assert.equal(byDigest.status, 0, byDigest.stderr);
    assert.equal(byDigest.stdout.toString(), `/have\t@ ${d1.toString('hex').slice(0, 2)}/${d1.toString('hex').slice(2)}\n/lack\t@ ${lackPath}\n`);
    const m = cfsdist(['info', 'measure', 'demo:v1', '--store', store.dir]);
    assert.equal(m.stdout.toString(), imageDigest.toString('hex') + '\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('info measure prints the fs-verity digest of each image', { skip }, (t) => {
  const images = [golden('hardlinks.dump.cfs'), golden('escapes.dump.cfs')];
  const r = cfsdist(['info', 'measure', ...images]);
  assert.equal(r.status, 0, r.stderr);
  const got = r.stdout.toString().trim().split('\n');
  assert.equal(got.length, 2);
  assert.notEqual(got[0], got[1]);
  // Expected values from tools that are not the code under test.
  const tool = toolDigests(t, images);
  if (tool) assert.deepEqual(got, tool.map((l) => l.replace(/^sha256:/, '').split(' ')[0]));
  for (const [i, p] of images.entries()) {
    const ref = refInfo(t, ['measure-file', p]);
    if (ref) assert.equal(ref.toString().trim(), got[i]);
  }
  const want = got.map((d) => `${d}\n`).join('');
  const j = JSON.parse(cfsdist(['info', 'measure', '--json', images[0]!]).stdout.toString()) as { image: string; digest: string }[];
  assert.equal(j[0]!.digest, want.split('\n')[0]);
});

test('info ls --json describes each path', { skip }, () => {
  const r = cfsdist(['info', 'ls', '--json', golden('hardlinks.dump.cfs')]);
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout.toString()) as Record<string, string>[];
  const by = new Map(rows.map((x) => [x.path, x]));
  assert.equal(by.get('/a')!.type, 'dir');
  assert.equal(by.get('/sym')!.target, 'target');
  assert.equal(by.get('/ext')!.object, 'ab/e7e2f59b128bdb0aa60f56f5211efefdf83b92994b8f4a5d2e18126a0a14de');
  assert.equal(by.get('/a/link2')!.linkTo, '/a/link1');
});

test('a hostile or missing image fails with exit 1 and names the image', { skip }, () => {
  const hostile = join(REPO, 'test', 'corpus', 'erofs', 'dirent-points-to-root.DIR_CYCLE.cfs');
  for (const cmd of ['ls', 'dump', 'objects']) {
    const r = cfsdist(['info', cmd, hostile]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^cfsdist: .*dirent-points-to-root\.DIR_CYCLE\.cfs: nid \d+: directory nid \d+ is reached a second time/);
  }
  const missing = cfsdist(['info', 'dump', '/nonexistent/image.cfs']);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /\/nonexistent\/image\.cfs: no such image file/);
});
