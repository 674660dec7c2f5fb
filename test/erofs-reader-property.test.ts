/**
 * Property: random trees (every file type, hardlinks, whiteouts, binary and overlay xattrs, long
 * names, deep paths, big directories) survive writer → reader unchanged, through both the
 * materialised Tree and the lazy API.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REFERENCE_BIN } from './helpers.js';
import { ErofsImage } from '../src/erofs/reader.js';
import { writeImage } from '../src/erofs/writer.js';
import { formatDumpfile } from '../src/dumpfile/writer.js';
import { S_IFCHR, S_IFDIR, S_IFMT, S_IFREG, S_IFLNK, walk, type Inode } from '../src/tree/tree.js';
import { randomTree } from './random-tree.js';

/** A comparable description of every path of a tree (hardlinks as the index of the first path). */
export function describe(root: Inode): string[] {
  const first = new Map<Inode, number>();
  const out: string[] = [];
  let i = 0;
  for (const [path, n] of walk(root)) {
    const type = n.mode & S_IFMT;
    const f: Record<string, unknown> = { mode: n.mode.toString(8), uid: n.uid, gid: n.gid, rdev: n.rdev, mtime: `${n.mtimeSec}.${n.mtimeNsec}` };
    if (type !== S_IFDIR) {
      f.nlink = n.nlink;
      f.size = n.size;
    }
    if (n.target) f.target = n.target.toString('hex');
    if (type === S_IFREG) {
      if (n.content && n.content.length > 0) f.content = n.content.toString('hex');
      if (n.payload && n.payload.length > 0) f.payload = n.payload.toString('hex');
      if (n.digest) f.digest = n.digest.toString('hex');
    }
    f.xattrs = n.xattrs.map((x) => `${x.key.toString('hex')}=${x.value.toString('hex')}`).sort();
    const at = first.get(n);
    if (at !== undefined && type !== S_IFDIR) f.linkOf = at;
    else first.set(n, i);
    out.push(`${path.toString('hex')} ${JSON.stringify(f)}`);
    i++;
  }
  return out;
}

function isWhiteout(n: Inode): boolean {
  return (n.mode & S_IFMT) === S_IFCHR && n.rdev === 0;
}

/**
 * What the reader must return for `root` written as composefs `version`: the input, except what
 * the format itself defines (empty files carry no payload/digest, directories holding whiteouts
 * get opaque=x in v1). Returns a described copy; the input is not modified.
 */
function expected(root: Inode, version: number): string[] {
  const copies = new Map<Inode, Inode>();
  const copy = (n: Inode): Inode => {
    let c = copies.get(n);
    if (c) return c;
    c = { ...n, xattrs: n.xattrs.map((x) => ({ ...x })) };
    if ((n.mode & S_IFMT) === S_IFREG && n.size === 0) {
      delete c.payload;
      delete c.digest;
      delete c.content;
    }
    copies.set(n, c);
    if (n.entries) {
      c.entries = new Map();
      let hasWhiteout = false;
      for (const [k, v] of n.entries) {
        c.entries.set(k, copy(v));
        if (isWhiteout(v)) hasWhiteout = true;
      }
      if (hasWhiteout && version >= 1) {
        for (const [k, v] of [['trusted.overlay.opaque', 'x'], ['user.overlay.opaque', 'x']] as const) {
          const at = c.xattrs.findIndex((x) => x.key.equals(Buffer.from(k)));
          if (at >= 0) c.xattrs[at] = { key: Buffer.from(k), value: Buffer.from(v) };
          else c.xattrs.push({ key: Buffer.from(k), value: Buffer.from(v) });
        }
      }
    }
    return c;
  };
  return describe(copy(root));
}

function anyWhiteout(root: Inode): boolean {
  for (const [, n] of walk(root)) if (isWhiteout(n)) return true;
  return false;
}

/** Check the lazy API against the materialised tree for every path. */
function checkLazy(img: ErofsImage, tree: Inode): void {
  for (const [path, n] of walk(tree)) {
    const nid = img.lookup(path);
    assert.ok(nid !== undefined, `lookup ${path.toString('latin1')}`);
    const st = img.stat(nid);
    assert.equal(st.mode, n.mode, `mode of ${path.toString('latin1')}`);
    assert.equal(st.size, n.size);
    assert.equal(st.uid, n.uid);
    assert.equal(st.rdev, n.rdev);
    assert.equal(st.mtimeSec, n.mtimeSec);
    assert.deepEqual(st.xattrs.map((x) => x.key.toString('hex') + '=' + x.value.toString('hex')), n.xattrs.map((x) => x.key.toString('hex') + '=' + x.value.toString('hex')));
    assert.equal(st.payload?.toString('hex'), n.payload?.toString('hex'));
    assert.equal(st.digest?.toString('hex'), n.digest?.toString('hex'));
    const type = n.mode & S_IFMT;
    if (type === S_IFLNK) assert.ok(img.readlink(nid).equals(n.target!));
    if (type === S_IFREG && n.content) assert.ok(img.readData(nid).equals(n.content));
    if (type === S_IFDIR) {
      const names = img.readdir(nid).map((e) => e.name.toString('latin1'));
      assert.deepEqual(names, [...n.entries!.keys()].sort());
    }
  }
}

const CASES: { name: string; seeds: number; opts: Parameters<typeof randomTree>[1] }[] = [
  { name: 'small mixed trees', seeds: 60, opts: { entries: 60 } },
  { name: 'medium trees', seeds: 12, opts: { entries: 400, maxDepth: 8 } },
  { name: 'no whiteouts (v0 images)', seeds: 10, opts: { entries: 150, whiteouts: false } },
  { name: 'big directories', seeds: 3, opts: { entries: 50, bigDir: 3000 } },
  { name: 'deep paths', seeds: 3, opts: { entries: 50, deepPath: 300 } },
];

for (const c of CASES) {
  test(`random trees survive writer → reader unchanged: ${c.name}`, () => {
    for (let seed = 1; seed <= c.seeds; seed++) {
      const tree = randomTree(seed * 7919 + c.name.length, c.opts);
      const image = writeImage(tree);
      const img = ErofsImage.fromBuffer(image, `seed ${seed}`);
      const version = anyWhiteout(tree) ? 1 : 0;
      assert.equal(img.info.composefsVersion, version, `seed ${seed}: composefs version`);
      const back = img.toTree();
      assert.deepEqual(describe(back), expected(tree, version), `seed ${seed}: tree differs after writer → reader`);
      // The reader's tree is itself a fixpoint: writing it again gives the same image.
      assert.ok(writeImage(back).equals(image), `seed ${seed}: rewriting the read tree changed the image`);
      if (seed <= 3) checkLazy(img, back);
    }
  });
}

const MK = join(REFERENCE_BIN, 'mkcomposefs');

test('random trees written by C mkcomposefs (from their dumpfile) read back unchanged', { skip: existsSync(MK) ? false : `no reference mkcomposefs in ${REFERENCE_BIN}` }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-reader-prop-'));
  try {
    for (let seed = 1; seed <= 15; seed++) {
      const tree = randomTree(seed * 104729, { entries: 80 });
      const dump = join(dir, 'tree.dump');
      const out = join(dir, 'tree.cfs');
      writeFileSync(dump, formatDumpfile(tree));
      const r = spawnSync(MK, ['--from-file', dump, out]);
      assert.equal(r.status, 0, `seed ${seed}: mkcomposefs failed: ${r.stderr}`);
      const img = ErofsImage.fromBuffer(readFileSync(out), `C image, seed ${seed}`);
      const version = anyWhiteout(tree) ? 1 : 0;
      assert.equal(img.info.composefsVersion, version);
      assert.deepEqual(describe(img.toTree()), expected(tree, version), `seed ${seed}: the C-written image reads back differently`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
