/** Evolving a tree into its next version, for delta tests and benchmarks. */
import { type Inode, S_IFREG, newInode, walk } from '../src/tree/tree.js';
import { Rng } from '../test/random-tree.js';

/** A version of `root` with `changed` files given new content, `added` new files, `removed` files gone. */
export function evolve(root: Inode, seed: number, fractions: { changed: number; added: number; removed: number }): void {
  const rng = new Rng(seed);
  const files: [Inode, string, Inode][] = [];
  for (const [path, inode, parent] of walk(root)) {
    if (parent && (inode.mode & 0o170000) === S_IFREG && inode.digest) files.push([parent, path.toString('latin1').split('/').pop()!, inode]);
  }
  const total = files.length;
  const pick = (n: number) => Array.from({ length: n }, () => files.splice(rng.int(0, files.length - 1), 1)[0]!);
  for (const [, , inode] of pick(Math.round(total * fractions.changed))) {
    const d = Buffer.from(Array.from({ length: 32 }, () => rng.int(0, 255)));
    inode.digest = d;
    inode.payload = Buffer.from(`${d.toString('hex').slice(0, 2)}/${d.toString('hex').slice(2)}`);
    inode.size += rng.int(1, 5000);
    inode.mtimeSec += rng.int(1, 1_000_000);
  }
  for (const [parent, name] of pick(Math.round(total * fractions.removed))) parent.entries!.delete(name);
  const dirs = [...walk(root)].filter(([, n]) => n.entries).map(([, n]) => n);
  for (let i = 0; i < Math.round(total * fractions.added); i++) {
    const d = Buffer.from(Array.from({ length: 32 }, () => rng.int(0, 255)));
    const f = newInode(S_IFREG | 0o644, { size: rng.int(100, 100_000), mtimeSec: 1_750_000_000 + i, digest: d });
    f.payload = Buffer.from(`${d.toString('hex').slice(0, 2)}/${d.toString('hex').slice(2)}`);
    dirs[rng.int(0, dirs.length - 1)]!.entries!.set(`added-${i}.bin`, f);
  }
}

