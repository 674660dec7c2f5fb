/**
 * A seeded random Tree generator for property tests: every file type, hardlinks, whiteouts,
 * xattrs (binary values, shared pairs, overlay keys, >128 shared on one inode), awkward names
 * (255 bytes, non-UTF-8, sorting before `.`), deep paths and big directories. The trees stay
 * inside what a composefs dumpfile can express, so writer → reader must give them back.
 */
import {
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFREG,
  S_IFSOCK,
  type Inode,
  type Xattr,
} from '../src/tree/tree.js';

/** A small deterministic PRNG (mulberry32). */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }
  /** One element of a non-empty array. */
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  /** `n` random bytes, each in [lo, hi] and not in `avoid`. */
  bytes(n: number, lo = 0, hi = 255, avoid: readonly number[] = []): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) {
      let c: number;
      do c = this.int(lo, hi);
      while (avoid.includes(c));
      b[i] = c;
    }
    return b;
  }
}

/** The same generator as a function returning uniform numbers in [0, 1). */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** What `randomTree` generates. */
export interface RandomTreeOptions {
  /** Entries placed at random (default 150). */
  entries?: number;
  /** Deepest random directory level (default 5). */
  maxDepth?: number;
  /** Add one directory with this many entries (default 0). */
  bigDir?: number;
  /** Add one chain of directories this deep (default 0). */
  deepPath?: number;
  /** Hardlinks to existing non-directories (default true). */
  hardlinks?: boolean;
  /** Whiteouts (chr 0/0) (default true). */
  whiteouts?: boolean;
  /** trusted.overlay.* / user.overlay.* keys that survive the round trip (default true). */
  overlayXattrs?: boolean;
  /** Two inodes sharing more than 128 xattr pairs (default true). */
  manyShared?: boolean;
}

const NAME_CHARS = Buffer.from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+@#~=, ');
/** Keys a composefs round trip does not give back (composefs' own whiteout markers). */
const UNSAFE_KEYS = new Set(['trusted.overlay.whiteout', 'trusted.overlay.whiteouts', 'user.overlay.whiteout', 'user.overlay.whiteouts']);
const XATTR_LIMIT = 32767 - 12;

function nameBytes(rng: Rng): Buffer {
  const r = rng.next();
  if (r < 0.6) {
    const n = rng.int(1, 16);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = NAME_CHARS[rng.int(0, NAME_CHARS.length - 1)]!;
    return b;
  }
  if (r < 0.75) return rng.bytes(rng.int(1, 24), 1, 255, [0x2f]);
  if (r < 0.8) return rng.bytes(255, 0x61, 0x7a);
  if (r < 0.85) return Buffer.concat([Buffer.from(rng.pick(['-', '#', ' ', '!', '\t', '\x01'])), rng.bytes(rng.int(0, 6), 0x61, 0x7a)]);
  if (r < 0.9) return Buffer.from(rng.int(0, 255).toString(16).padStart(2, '0'));
  return rng.bytes(rng.int(1, 80), 0x20, 0x7e, [0x2f]);
}

function validName(n: Buffer): boolean {
  if (n.length === 0 || n.length > 255 || n.includes(0) || n.includes(0x2f)) return false;
  const s = n.toString('latin1');
  return s !== '.' && s !== '..';
}

function randomKey(rng: Rng, overlay: boolean): Buffer {
  const r = rng.next();
  if (r < 0.35) return Buffer.concat([Buffer.from('user.'), rng.bytes(rng.int(0, 20), 0x21, 0x7e)]);
  if (r < 0.45) return Buffer.from('security.selinux');
  if (r < 0.55) return Buffer.concat([Buffer.from('trusted.'), rng.bytes(rng.int(1, 12), 0x61, 0x7a)]);
  if (r < 0.6) return Buffer.from(rng.pick(['system.posix_acl_access', 'system.posix_acl_default', 'security.ima', 'lustre.x', 'other.ns']));
  if (r < 0.65) return Buffer.concat([Buffer.from('user.'), rng.bytes(rng.int(1, 30), 1, 255)]);
  if (overlay && r < 0.85) {
    return Buffer.from(
      rng.pick([
        'trusted.overlay.foo',
        'trusted.overlay.overlay.bar',
        'trusted.overlay.metacopy',
        'trusted.overlay.redirect',
        'trusted.overlay.opaque',
        'trusted.overlay.',
        'trusted.overlayfoo',
        'user.overlay.origin',
        'user.overlay.opaque',
        'trusted.overlay.overlay.whiteout',
      ]),
    );
  }
  return Buffer.concat([Buffer.from('user.k'), Buffer.from(String(rng.int(0, 50)))]);
}

function randomValue(rng: Rng): Buffer {
  const r = rng.next();
  if (r < 0.2) return Buffer.alloc(0);
  if (r < 0.6) return rng.bytes(rng.int(1, 16), 0x21, 0x7e);
  if (r < 0.9) return rng.bytes(rng.int(1, 64));
  return rng.bytes(rng.int(200, 3000));
}

function xattrCost(xs: Xattr[]): number {
  let n = 0;
  for (const x of xs) n += 7 + x.key.length + x.value.length;
  return n;
}

function addXattr(inode: Inode, key: Buffer, value: Buffer): void {
  if (UNSAFE_KEYS.has(key.toString('latin1'))) return;
  if (key.length === 0 || key.length > 255 || key.includes(0)) return;
  if (xattrCost(inode.xattrs) + 7 + key.length + value.length > XATTR_LIMIT) return;
  const at = inode.xattrs.findIndex((x) => x.key.equals(key));
  if (at >= 0) inode.xattrs[at] = { key, value };
  else inode.xattrs.push({ key, value });
}

/**
 * A random tree for `seed`. Same seed and options, same tree. Directory size and nlink are left
 * 0/2 (writers compute them); other fields are what a dumpfile could say.
 */
export function randomTree(seed: number, opts: RandomTreeOptions = {}): Inode {
  const rng = new Rng(seed);
  const entries = opts.entries ?? 150;
  const maxDepth = opts.maxDepth ?? 5;
  const baseTime = 1_700_000_000;
  const sharedPool: Xattr[] = [];
  for (let i = 0; i < 12; i++) sharedPool.push({ key: randomKey(rng, opts.overlayXattrs ?? true), value: randomValue(rng) });

  const common = (mode: number): Inode => {
    const inode: Inode = {
      mode,
      nlink: rng.chance(0.05) ? rng.int(65536, 2 ** 32 - 1) : rng.int(1, 4),
      uid: rng.chance(0.1) ? rng.int(0, 2 ** 32 - 1) : rng.pick([0, 0, 1000]),
      gid: rng.chance(0.1) ? rng.int(0, 2 ** 32 - 1) : rng.pick([0, 0, 1000]),
      rdev: 0,
      mtimeSec: rng.chance(0.2) ? rng.int(0, 2 ** 34) : baseTime,
      mtimeNsec: rng.chance(0.2) ? rng.int(0, 999_999_999) : 0,
      size: 0,
      xattrs: [],
    };
    if (rng.chance(0.35)) {
      const n = rng.int(1, 5);
      for (let i = 0; i < n; i++) {
        if (rng.chance(0.5)) {
          const x = rng.pick(sharedPool);
          addXattr(inode, x.key, x.value);
        } else {
          addXattr(inode, randomKey(rng, opts.overlayXattrs ?? true), randomValue(rng));
        }
      }
    }
    return inode;
  };
  const perm = (): number => (rng.chance(0.1) ? rng.int(0, 0o7777) : rng.pick([0o644, 0o755, 0o600, 0o4755, 0o1777]));

  const newDir = (): Inode => {
    const d = common(S_IFDIR | perm());
    d.nlink = 2;
    d.entries = new Map();
    return d;
  };

  const root = newDir();
  const dirs: { inode: Inode; depth: number }[] = [{ inode: root, depth: 0 }];
  const leaves: Inode[] = [];

  const place = (dir: Inode, child: Inode): boolean => {
    for (let tries = 0; tries < 8; tries++) {
      const name = nameBytes(rng);
      if (!validName(name)) continue;
      const key = name.toString('latin1');
      if (dir.entries!.has(key)) continue;
      dir.entries!.set(key, child);
      return true;
    }
    return false;
  };

  const makeLeaf = (kind: number): Inode => {
    switch (kind) {
      case 0: {
        // inline regular file
        const size = rng.chance(0.1) ? rng.pick([64, 65, 2047, 2048, 2049, 4095, 4096, 4097, 5000]) : rng.int(1, 300);
        const f = common(S_IFREG | perm());
        f.size = size;
        f.content = rng.bytes(size);
        return f;
      }
      case 1: {
        // external regular file
        const f = common(S_IFREG | perm());
        f.size = rng.chance(0.2) ? rng.int(2 ** 32 - 2, 2 ** 40) : rng.int(1, 10_000_000);
        const r = rng.next();
        if (r < 0.7) {
          f.digest = rng.bytes(32);
          if (rng.chance(0.9)) f.payload = Buffer.from(f.digest.toString('hex').replace(/^(..)/, '$1/'));
        } else if (r < 0.85) {
          f.payload = rng.bytes(rng.int(1, 40), 1, 255);
        } else if (r < 0.9) {
          f.payload = Buffer.from('/abs/' + rng.int(0, 99));
        }
        return f;
      }
      case 2:
        return common(S_IFREG | perm());
      case 3: {
        const l = common(S_IFLNK | 0o777);
        const n = rng.chance(0.05) ? rng.int(3000, 4095) : rng.int(1, 60);
        l.target = rng.chance(0.5) ? rng.bytes(n, 0x20, 0x7e) : rng.bytes(n, 1, 255);
        l.size = n;
        return l;
      }
      case 4: {
        const c = common(S_IFCHR | perm());
        c.rdev = rng.int(1, 2 ** 32 - 1);
        return c;
      }
      case 5: {
        const b = common(S_IFBLK | perm());
        b.rdev = rng.int(0, 2 ** 32 - 1);
        return b;
      }
      case 6:
        return common(S_IFIFO | perm());
      case 7:
        return common(S_IFSOCK | perm());
      default: {
        // whiteout
        const w = common(S_IFCHR | perm());
        w.rdev = 0;
        return w;
      }
    }
  };

  const weights: [number, number][] = [
    [0, 18], // inline
    [1, 18], // external
    [2, 5], // empty
    [10, 15], // directory
    [3, 10], // symlink
    [4, 4],
    [5, 3],
    [6, 3],
    [7, 3],
    [8, opts.whiteouts === false ? 0 : 3],
    [11, opts.hardlinks === false ? 0 : 10], // hardlink
  ];
  const total = weights.reduce((a, w) => a + w[1], 0);
  const chooseKind = (): number => {
    let r = rng.next() * total;
    for (const [k, w] of weights) {
      if (r < w) return k;
      r -= w;
    }
    return 0;
  };

  for (let i = 0; i < entries; i++) {
    const parent = rng.pick(dirs);
    const kind = chooseKind();
    if (kind === 10) {
      if (parent.depth >= maxDepth) continue;
      const d = newDir();
      if (place(parent.inode, d)) dirs.push({ inode: d, depth: parent.depth + 1 });
    } else if (kind === 11) {
      const linkable = leaves.filter((l) => !((l.mode & 0o170000) === S_IFCHR && l.rdev === 0));
      if (linkable.length > 0) place(parent.inode, rng.pick(linkable));
    } else {
      const leaf = makeLeaf(kind);
      if (place(parent.inode, leaf)) leaves.push(leaf);
    }
  }

  if (opts.bigDir && opts.bigDir > 0) {
    const big = newDir();
    root.entries!.set('big-directory', big);
    for (let i = 0; i < opts.bigDir; i++) {
      const f = makeLeaf(rng.pick([0, 1, 2, 2, 3]));
      big.entries!.set(`entry-${i.toString().padStart(6, '0')}-${'x'.repeat(rng.int(0, 40))}`, f);
    }
  }

  if (opts.deepPath && opts.deepPath > 0) {
    let cur = root;
    for (let i = 0; i < opts.deepPath; i++) {
      const d = newDir();
      cur.entries!.set(`d${i}`, d);
      cur = d;
    }
    cur.entries!.set('bottom', makeLeaf(0));
  }

  if (opts.manyShared ?? true) {
    const a = common(S_IFREG | 0o644);
    const b = common(S_IFREG | 0o644);
    a.xattrs = [];
    b.xattrs = [];
    for (let i = 0; i < 140; i++) {
      const x = { key: Buffer.from(`user.m${i.toString().padStart(3, '0')}`), value: Buffer.from(`v${i}`) };
      a.xattrs.push(x);
      b.xattrs.push({ key: x.key, value: x.value });
    }
    root.entries!.set('many-shared-a', a);
    root.entries!.set('many-shared-b', b);
  }
  return root;
}
