/**
 * Oracle tests on real data: a 3-layer image built from Debian content with umoci and skopeo
 * (test/fixtures/oci/debian-image.ts), imported by cfsdist, compared with `umoci unpack` of
 * the same image — the reference layer applier — and with `cfsdist mkcomposefs` of that
 * unpacked rootfs.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, firstPaths, walk, lookup, getXattr, type Inode } from '../src/tree/tree.js';
import { readDirectory } from '../src/tree/from-directory.js';
import { Store } from '../src/store/store.js';
import { openSource } from '../src/oci/source.js';
import { importImage, readSourceTree } from '../src/oci/import.js';
import { INLINE_MAX } from '../src/oci/layer.js';
import { fsverityDigestFile, toHex } from '../src/verity/digest.js';
import { debianImage, debianImageUnavailable, type DebianImage } from './fixtures/oci/debian-image.js';
import { HashingSink } from './fixtures/oci/memory-sink.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const skip = debianImageUnavailable();

let img: DebianImage;
let work: string;
let store: Store;
let imported: { image: Buffer; objects: number; objectsNew: number };

before(async () => {
  if (skip) return;
  img = await debianImage();
  work = mkdtempSync(join(tmpdir(), 'cfsdist-oracle-'));
  store = await Store.open(join(work, 'store'), { create: true });
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** One line per path with every property the comparison covers. */
function describe(root: Inode): Map<string, string> {
  const first = firstPaths(root);
  const out = new Map<string, string>();
  for (const [p, n] of walk(root)) {
    const type = n.mode & S_IFMT;
    const fields: string[] = [`mode=${n.mode.toString(8)}`, `uid=${n.uid}`, `gid=${n.gid}`, `mtime=${n.mtimeSec}.${String(n.mtimeNsec).padStart(9, '0')}`];
    if (type !== S_IFDIR) fields.push(`nlink=${n.nlink}`, `group=${first.get(n)!.toString('latin1')}`);
    if (type === S_IFREG) fields.push(`size=${n.size}`, n.content ? `content=${n.content.toString('hex')}` : n.size ? `digest=${toHex(n.digest!)}` : 'empty');
    if (type === S_IFLNK) fields.push(`target=${n.target!.toString('latin1')}`);
    if (type === S_IFCHR || type === S_IFBLK) fields.push(`rdev=${n.rdev}`);
    const xs = [...n.xattrs].sort((a, b) => Buffer.compare(a.key, b.key)).map((x) => `${x.key.toString('latin1')}=${x.value.toString('hex')}`);
    if (xs.length) fields.push(`xattrs=${xs.join(',')}`);
    out.set(p.toString('latin1'), fields.join(' '));
  }
  return out;
}

function diffTrees(got: Inode, want: Inode): string[] {
  const a = describe(got);
  const b = describe(want);
  const diffs: string[] = [];
  for (const [p, d] of b) {
    const g = a.get(p);
    if (g === undefined) diffs.push(`missing ${p}: ${d}`);
    else if (g !== d) diffs.push(`differs ${p}:\n   got  ${g}\n   want ${d}`);
  }
  for (const p of a.keys()) if (!b.has(p)) diffs.push(`extra ${p}: ${a.get(p)}`);
  return diffs;
}

test('the merged tree of the 3-layer Debian image equals umoci unpack: types, modes, owners, mtimes, xattrs, targets, hardlinks, contents', { skip }, async () => {
  const src = await openSource(`oci:${img.layout}:final`);
  const { tree, stats } = await readSourceTree(src, new HashingSink());
  const want = await readDirectory(img.rootfs, { inlineMax: INLINE_MAX });
  const diffs = diffTrees(tree, want);
  assert.deepEqual(diffs.slice(0, 20), [], `${diffs.length} differences`);
  assert.ok(describe(want).size > 6000, 'a real rootfs');
  assert.ok(stats.whiteouts >= 3 && stats.opaques === 1, `layer 2/3 whiteouts seen (${stats.whiteouts}, ${stats.opaques})`);
  // The interesting cases are really there (so the equality above covers them).
  assert.equal(lookup(tree, 'etc/issue.net'), undefined);
  assert.equal(lookup(tree, 'etc/hostname'), undefined);
  assert.equal(lookup(tree, 'usr/share/doc/apt'), undefined);
  assert.deepEqual([...lookup(tree, 'usr/share/doc')!.entries!.keys()], ['README']);
  assert.equal(lookup(tree, 'etc/cron.daily')!.mode & S_IFMT, S_IFREG);
  assert.equal(lookup(tree, 'etc/motd')!.mode & S_IFMT, S_IFDIR);
  assert.equal(lookup(tree, 'usr/bin/dpkg-hardlink'), lookup(tree, 'usr/bin/dpkg'));
  assert.ok(lookup(tree, 'usr/bin/through-symlink'));
  assert.equal(lookup(tree, 'var/mail')!.target!.toString(), 'spool/mail');
  assert.equal(lookup(tree, 'opt/frac')!.mtimeNsec, 123456789);
  assert.deepEqual(getXattr(lookup(tree, 'opt/libarchive')!, 'user.la'), Buffer.from([0, 1, 2, 255, 10]));
  assert.deepEqual(getXattr(lookup(tree, 'opt/app/binxattr')!, 'user.bin'), Buffer.from('00ff0a3d0000', 'hex'));
  assert.ok(getXattr(lookup(tree, 'opt/app/bin')!, 'security.capability'));
  assert.equal(lookup(tree, 'opt/app/h1'), lookup(tree, 'opt/app/sub/h3'));
  assert.equal(lookup(tree, 'opt/app/h1')!.nlink, 3);
  assert.equal(lookup(tree, 'etc/apt')!.mode & 0o7777, 0o700);
});

test('cfsdist import registers the image; cfsdist mkcomposefs of the umoci-unpacked rootfs gives the same bytes', { skip }, async () => {
  const src = await openSource(`oci:${img.layout}:final`);
  const r = await importImage(src, store, { name: 'debian', tag: 'final', sync: false });
  imported = r;
  assert.deepEqual(await store.getTag('debian', 'final'), r.image);
  assert.equal(r.layers, 3);
  assert.ok(r.objects > 1000 && r.objectsNew > 1000, `objects written: ${r.objects}`);
  const ours = readFileSync(store.imagePath(r.image));
  const out = join(work, 'mkcomposefs.img');
  execFileSync(process.execPath, [join(REPO, 'bin', 'cfsdist'), 'mkcomposefs', '--inline-max', String(INLINE_MAX), img.rootfs, out], { stdio: ['ignore', 'ignore', 'pipe'] });
  const theirs = readFileSync(out);
  assert.equal(ours.length, theirs.length, 'image sizes');
  assert.ok(ours.equals(theirs), 'image bytes identical');
  // Every object the image names is in the store under its fs-verity digest.
  const objs = await store.imageObjects(r.image);
  assert.equal(objs.length, r.objects);
  for (const d of objs.filter((_, i) => i % 97 === 0)) assert.deepEqual(await fsverityDigestFile(store.objects.path(d)), d);
});

test('zstd layers, docker-archive, skopeo dir: and a plain directory import to the very same image, writing no new objects', { skip }, async () => {
  assert.ok(imported, 'runs after the oci import');
  for (const spec of [`oci:${img.zstdLayout}:final`, `docker-archive:${img.dockerArchive}`, `dir:${img.skopeoDir}`, `dir:${img.rootfs}`]) {
    const r = await importImage(await openSource(spec), store, { name: 'debian', tag: 'other', sync: false });
    assert.equal(toHex(r.image), toHex(imported.image), spec);
    assert.equal(r.objectsNew, 0, `${spec}: everything deduplicated`);
    assert.ok(r.objectsExisting >= imported.objects, spec);
  }
});
