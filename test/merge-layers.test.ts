import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG, newInode, walk, splitPath, lookup, getXattr, isDir, type Inode,
} from '../src/tree/tree.js';
import { mergeLayers, Merger, OPAQUE_XATTR, type LayerTree } from '../src/merge/merge.js';
import { rng } from './random-tree.js';

// ---- small builders ------------------------------------------------------------------------

function file(content = '', init: Partial<Inode> = {}): Inode {
  return newInode(S_IFREG | 0o644, { size: content.length, content: content ? Buffer.from(content) : undefined, ...init });
}
function dir(init: Partial<Inode> = {}): Inode {
  return newInode(S_IFDIR | 0o755, init);
}
function sym(target: string): Inode {
  return newInode(S_IFLNK | 0o777, { target: Buffer.from(target), size: target.length });
}
function wh(): Inode {
  return newInode(S_IFCHR | 0o666, { rdev: 0 });
}
function opaque(init: Partial<Inode> = {}): Inode {
  return dir({ ...init, xattrs: [{ key: OPAQUE_XATTR, value: Buffer.from('y') }] });
}

/** A layer from path → inode; missing parents are explicit 0755 dirs unless `implicit` lists
 *  them (then they are created and marked implicit). */
function layer(spec: Record<string, Inode>, implicitPaths: string[] = [], rootImplicit = true): LayerTree {
  const root = dir();
  const implicit = new Set<Inode>();
  if (rootImplicit) implicit.add(root);
  const ensure = (comps: Buffer[]): Inode => {
    let cur = root;
    let p = '';
    for (const c of comps) {
      p = p ? p + '/' + c.toString() : c.toString();
      let next = cur.entries!.get(c.toString('latin1'));
      if (!next) {
        next = spec[p] ?? dir();
        cur.entries!.set(c.toString('latin1'), next);
        if (implicitPaths.includes(p)) implicit.add(next);
      }
      cur = next;
    }
    return cur;
  };
  for (const [path, inode] of Object.entries(spec)) {
    if (path === '.') {
      Object.assign(root, { ...inode, entries: root.entries });
      implicit.delete(root);
      continue;
    }
    const comps = splitPath(path);
    const parent = ensure(comps.slice(0, -1));
    const key = comps[comps.length - 1]!.toString('latin1');
    if (!parent.entries!.has(key)) parent.entries!.set(key, inode);
    if (implicitPaths.includes(path)) implicit.add(inode);
  }
  return { root, implicit };
}

/** "path type mode uid mtime [content|target]" lines, and the xattr keys, in walk order. */
function listing(root: Inode): string[] {
  const out: string[] = [];
  for (const [p, n] of walk(root)) {
    const t = isDir(n) ? 'd' : (n.mode & 0o170000) === S_IFLNK ? 'l' : (n.mode & 0o170000) === S_IFCHR ? 'c' : 'f';
    const extra = n.target ? ' ->' + n.target.toString() : n.content ? ' =' + n.content.toString() : '';
    const xs = n.xattrs.length ? ' x:' + n.xattrs.map((x) => x.key.toString() + '=' + x.value.toString()).join(',') : '';
    out.push(`${p.toString()} ${t} ${(n.mode & 0o7777).toString(8)} ${n.uid} ${n.mtimeSec} n${n.nlink}${extra}${xs}`);
  }
  return out;
}

function paths(root: Inode): string[] {
  return [...walk(root)].map(([p]) => p.toString());
}

// ---- tests ---------------------------------------------------------------------------------

test('an upper file replaces the lower one; untouched lower files stay; new files are added', () => {
  const l1 = layer({ 'etc/passwd': file('root'), 'etc/group': file('g'), 'bin/sh': file('sh') });
  const l2 = layer({ 'etc/passwd': file('root2', { mode: S_IFREG | 0o600 }), 'etc/new': file('n') }, ['etc']);
  const m = mergeLayers([l1, l2]);
  assert.deepEqual(paths(m), ['/', '/bin', '/bin/sh', '/etc', '/etc/group', '/etc/new', '/etc/passwd']);
  assert.equal(lookup(m, 'etc/passwd')!.content!.toString(), 'root2');
  assert.equal(lookup(m, 'etc/passwd')!.mode & 0o7777, 0o600);
});

test('a whiteout removes a file, or a directory with everything below; the whiteout itself is hidden', () => {
  const l1 = layer({ 'a/b/c/deep': file('x'), 'a/keep': file('k'), 'f': file('f') });
  const l2 = layer({ 'a/b': wh(), 'f': wh(), 'absent': wh() }, ['a']);
  const m = mergeLayers([l1, l2]);
  assert.deepEqual(paths(m), ['/', '/a', '/a/keep']);
  for (const [, n] of walk(m)) assert.ok(!((n.mode & 0o170000) === S_IFCHR && n.rdev === 0), 'no whiteout in the result');
});

test('an opaque directory hides what lower layers had inside it, keeps its own entries, and loses the marker', () => {
  const l1 = layer({ 'd': dir({ mode: S_IFDIR | 0o700, uid: 5 }), 'd/old': file('o'), 'd/sub/x': file('x'), 'other': file() });
  const l2 = layer({ 'd': opaque({ mtimeSec: 99 }), 'd/new': file('n') });
  const m = mergeLayers([l1, l2]);
  assert.deepEqual(paths(m), ['/', '/d', '/d/new', '/other']);
  const d = lookup(m, 'd')!;
  assert.equal(d.mtimeSec, 99);
  assert.equal(d.uid, 0);
  assert.equal(d.mode & 0o7777, 0o755);
  assert.equal(getXattr(d, OPAQUE_XATTR), undefined);
  // An implicit opaque directory keeps the lower metadata but still hides the lower entries.
  const l3 = layer({ 'd': opaque(), 'd/newer': file() }, ['d']);
  const m2 = mergeLayers([l1, l3]);
  assert.deepEqual(paths(m2), ['/', '/d', '/d/newer', '/other']);
  assert.equal(lookup(m2, 'd')!.uid, 5);
  assert.equal(lookup(m2, 'd')!.mode & 0o7777, 0o700);
});

test('a file replaces a directory, and a directory replaces a file or symlink', () => {
  const l1 = layer({ 'x/inner': file('i'), 'y': file('y'), 'z': sym('/target') });
  const l2 = layer({ 'x': file('now a file'), 'y': dir({ mtimeSec: 7 }), 'y/child': file('c'), 'z': dir() });
  const m = mergeLayers([l1, l2]);
  assert.deepEqual(listing(m).map((s) => s.split(' ').slice(0, 2).join(' ')), ['/ d', '/x f', '/y d', '/y/child f', '/z d']);
  assert.equal(lookup(m, 'y')!.mtimeSec, 7);
});

test('directory metadata comes from the uppermost layer that lists the directory', () => {
  const l1 = layer({ '.': dir({ mtimeSec: 1 }), 'usr': dir({ mtimeSec: 1, uid: 1 }), 'usr/f': file() }, [], false);
  const l2 = layer({ 'usr': dir({ mtimeSec: 2, uid: 2, xattrs: [{ key: Buffer.from('user.v'), value: Buffer.from('2') }] }) });
  const l3 = layer({ 'usr/g': file() }, ['usr']); // implicit: does not change metadata
  const m = mergeLayers([l1, l2, l3]);
  const usr = lookup(m, 'usr')!;
  assert.deepEqual([usr.mtimeSec, usr.uid, getXattr(usr, 'user.v')?.toString()], [2, 2, '2']);
  assert.deepEqual(paths(m), ['/', '/usr', '/usr/f', '/usr/g']);
  assert.equal(m.mtimeSec, 1, 'root metadata from the layer that listed ./');
});

test('implicit directories appear only when something real is inside, and never hide a lower file', () => {
  const l1 = layer({ 'file': file('f') });
  const l2 = layer({ 'file/gone': wh(), 'nodir/gone': wh(), 'made/new': file('n', { mtimeSec: 5 }) }, ['file', 'nodir', 'made']);
  const m = mergeLayers([l1, l2]);
  assert.deepEqual(paths(m), ['/', '/file', '/made', '/made/new']);
  assert.equal(lookup(m, 'file')!.content!.toString(), 'f');
});

test('hardlinks stay one inode with correct link counts, across whiteouts and layers', () => {
  const shared = file('data', { nlink: 3 });
  const l1 = layer({ 'a': shared, 'b': shared, 'c': shared, 'solo': file('s') });
  const l2 = layer({ 'b': wh() });
  const m = mergeLayers([l1, l2]);
  assert.equal(lookup(m, 'a'), lookup(m, 'c'));
  assert.equal(lookup(m, 'a')!.nlink, 2);
  assert.equal(lookup(m, 'solo')!.nlink, 1);
  // A later layer linking to an inode of the merged tree (Merger.tree as the lower view).
  const merger = new Merger();
  merger.apply(l1);
  const lowerInode = lookup(merger.tree, 'solo')!;
  merger.apply(layer({ 'solo2': lowerInode }));
  const r = merger.finish();
  assert.equal(lookup(r, 'solo2'), lookup(r, 'solo'));
  assert.equal(lookup(r, 'solo')!.nlink, 2);
  // Replacing one name gives the other its own count back.
  const m3 = mergeLayers([l1, layer({ 'a': file('new') })]);
  assert.notEqual(lookup(m3, 'a'), lookup(m3, 'b'));
  assert.equal(lookup(m3, 'b')!.nlink, 2);
  assert.equal(lookup(m3, 'a')!.nlink, 1);
});

test('directories get nlink 2 + subdirectories; the root is opaque-able', () => {
  const l1 = layer({ 'a/b/c': file(), 'a/d/': dir(), 'x': file() });
  const m = mergeLayers([l1]);
  assert.equal(m.nlink, 3);
  assert.equal(lookup(m, 'a')!.nlink, 4);
  const l2 = layer({ '.': opaque({ mtimeSec: 3 }), 'only': file() }, [], false);
  const m2 = mergeLayers([l1, l2]);
  assert.deepEqual(paths(m2), ['/', '/only']);
  assert.equal(getXattr(m2, OPAQUE_XATTR), undefined);
});

test('inputs are not modified, and results share no inode with the inputs', () => {
  const l1 = layer({ 'd/f': file('1'), 'd/g': file('2'), 'h': file('3') });
  const l2 = layer({ 'd/f': wh(), 'd': opaque(), 'h': file('4') });
  const before = [listing(l1.root), listing(l2.root)];
  const m = mergeLayers([l1, l2]);
  assert.deepEqual([listing(l1.root), listing(l2.root)], before);
  const inputs = new Set([...walk(l1.root), ...walk(l2.root)].map(([, n]) => n));
  for (const [, n] of walk(m)) assert.ok(!inputs.has(n));
});

test('delete then re-add across three layers', () => {
  const m = mergeLayers([
    layer({ 'app/v1/bin': file('1') }),
    layer({ 'app': wh() }),
    layer({ 'app/v2/bin': file('2') }, ['app']),
  ]);
  assert.deepEqual(paths(m), ['/', '/app', '/app/v2', '/app/v2/bin']);
});

// ---- randomised cross-check against a naive path-set model ----------------------------------


type Op = { path: string; kind: 'file' | 'dir' | 'wh' | 'opq'; stamp: number };

/** Naive model: a map path → "kind:stamp", layers applied as the image spec words it. */
function naive(layers: Op[][]): string[] {
  const state = new Map<string, string>([['', 'dir:0']]);
  const under = (p: string, q: string) => q.startsWith(p + '/');
  for (const ops of layers) {
    // Removals of this layer apply to the lower state first ("regardless of ordering").
    for (const op of ops) {
      if (op.kind === 'wh') for (const k of [...state.keys()]) if (k === op.path || under(op.path, k)) state.delete(k);
      if (op.kind === 'opq') for (const k of [...state.keys()]) if (under(op.path, k)) state.delete(k);
    }
    for (const op of ops) {
      if (op.kind === 'wh') continue;
      const prev = state.get(op.path);
      if (op.kind === 'opq' || op.kind === 'dir') {
        if (!prev?.startsWith('dir') ) for (const k of [...state.keys()]) if (under(op.path, k)) state.delete(k);
        state.set(op.path, `dir:${op.stamp}`);
      } else {
        for (const k of [...state.keys()]) if (under(op.path, k)) state.delete(k);
        state.set(op.path, `file:${op.stamp}`);
      }
    }
  }
  return [...state.entries()].map(([k, v]) => `/${k} ${v}`).sort();
}

test('random layer stacks merge exactly like the naive model of the image spec', () => {
  const rand = rng(7);
  const names = ['a', 'b', 'c'];
  for (let round = 0; round < 400; round++) {
    const layers: Op[][] = [];
    const nLayers = 1 + Math.floor(rand() * 4);
    let stamp = 1;
    for (let li = 0; li < nLayers; li++) {
      // Build a consistent layer: every parent is an explicit dir of this layer.
      const ops = new Map<string, Op>();
      const nOps = 1 + Math.floor(rand() * 6);
      for (let k = 0; k < nOps; k++) {
        const depth = 1 + Math.floor(rand() * 3);
        const comps = Array.from({ length: depth }, () => names[Math.floor(rand() * names.length)]!);
        const path = comps.join('/');
        let ok = true;
        for (let d = 1; d < depth; d++) {
          const pp = comps.slice(0, d).join('/');
          const ex = ops.get(pp);
          if (ex && ex.kind !== 'dir' && ex.kind !== 'opq') ok = false;
        }
        if (!ok || ops.has(path)) continue;
        for (let d = 1; d < depth; d++) {
          const pp = comps.slice(0, d).join('/');
          if (!ops.has(pp)) ops.set(pp, { path: pp, kind: 'dir', stamp: stamp++ });
        }
        const r = rand();
        const kind = r < 0.4 ? 'file' : r < 0.65 ? 'dir' : r < 0.9 ? 'wh' : 'opq';
        if ((kind === 'wh') && [...ops.keys()].some((q) => q.startsWith(path + '/'))) continue;
        ops.set(path, { path, kind, stamp: stamp++ });
      }
      layers.push([...ops.values()]);
    }
    const trees = layers.map((ops) => {
      const spec: Record<string, Inode> = {};
      for (const op of ops) {
        spec[op.path] = op.kind === 'file' ? file('', { mtimeSec: op.stamp }) : op.kind === 'dir' ? dir({ mtimeSec: op.stamp }) : op.kind === 'opq' ? opaque({ mtimeSec: op.stamp }) : wh();
      }
      return layer(spec);
    });
    const got = [...walk(mergeLayers(trees))].map(([p, n]) => `${p.toString()} ${isDir(n) ? 'dir' : 'file'}:${p.length === 1 ? 0 : n.mtimeSec}`).sort();
    const want = naive(layers).map((s) => s.replace(/^\/ /, '/ '));
    assert.deepEqual(got, want, `round ${round}: ${JSON.stringify(layers)}`);
  }
});
