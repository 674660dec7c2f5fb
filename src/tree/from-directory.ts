/**
 * A real directory → Tree (what `mkcomposefs DIR` reads).
 *
 * - Every file type; hardlinks (same dev+ino) become one shared Inode — unlike C mkcomposefs,
 *   which writes each link as a separate inode, so a mount shows the source's link groups.
 * - Regular files of at most 64 bytes (`inlineMax`) are inlined (C mkcomposefs's rule for
 *   directories);
 *   larger ones get their fs-verity digest and payload `xx/<62 hex>`, and with a digest store
 *   are copied into it.
 * - Xattrs (all namespaces, binary values) come from one `getfattr -R` process over the whole
 *   tree (Debian `attr`), since Node has no xattr API.
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { CfsError } from '../errors.js';
import { type Inode, type Xattr, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, newInode } from './tree.js';

/** Files up to this size are stored inline in the image. */
export const INLINE_MAX = 64;

/** Options for `readDirectory`. */
export interface ReadDirectoryOptions {
  /** Objects dir (DIR/xx/…) to copy regular files into. */
  digestStore?: string;
  /** Read xattrs (default true). */
  xattrs?: boolean;
  /** Regular files of at most this many bytes are inlined (default INLINE_MAX). */
  inlineMax?: number;
}

/** A directory that cannot be read. */
export class DirectoryReadError extends CfsError {}

const BILLION = 1_000_000_000n;

/** Read the directory tree at `root`. */
export async function readDirectory(root: string, opts: ReadDirectoryOptions = {}): Promise<Inode> {
  const rootBuf = Buffer.from(root);
  let st: BigIntStats;
  try {
    st = await lstat(rootBuf, { bigint: true });
  } catch (e) {
    throw new DirectoryReadError('IO', `cannot read directory ${root}: ${(e as Error).message}`);
  }
  if (!st.isDirectory()) throw new DirectoryReadError('NOT_A_DIRECTORY', `${root} is not a directory`);
  const inlineMax = opts.inlineMax ?? INLINE_MAX;
  const xattrs = opts.xattrs === false ? new Map<string, Xattr[]>() : await readAllXattrs(root);
  const byIno = new Map<string, Inode>();
  const external: { inode: Inode; path: Buffer }[] = [];

  const rootInode = fromStat(st);
  rootInode.xattrs = xattrs.get('') ?? [];
  const queue: [Buffer, Inode, string][] = [[rootBuf, rootInode, '']];
  while (queue.length) {
    const [dirPath, dir, rel] = queue.shift()!;
    let names: Buffer[];
    try {
      names = (await readdir(dirPath, { encoding: 'buffer' })) as Buffer[];
    } catch (e) {
      throw new DirectoryReadError('IO', `cannot list ${dirPath.toString()}: ${(e as Error).message}`);
    }
    const stats = await Promise.all(
      names.map(async (name) => {
        const p = Buffer.concat([dirPath, Buffer.from('/'), name]);
        try {
          return { name, p, st: await lstat(p, { bigint: true }) };
        } catch (e) {
          throw new DirectoryReadError('IO', `cannot stat ${p.toString()}: ${(e as Error).message}`);
        }
      }),
    );
    for (const { name, p, st: cst } of stats) {
      const key = name.toString('latin1');
      const childRel = rel + '/' + key;
      const inoKey = `${cst.dev}:${cst.ino}`;
      if (!cst.isDirectory() && cst.nlink > 1n) {
        const seen = byIno.get(inoKey);
        if (seen) {
          dir.entries!.set(key, seen);
          continue;
        }
      }
      const inode = fromStat(cst);
      inode.xattrs = xattrs.get(childRel) ?? [];
      if (!cst.isDirectory() && cst.nlink > 1n) byIno.set(inoKey, inode);
      const type = inode.mode & S_IFMT;
      if (type === S_IFDIR) {
        queue.push([p, inode, childRel]);
      } else if (type === S_IFLNK) {
        inode.target = (await readlink(p, { encoding: 'buffer' })) as Buffer;
        inode.size = inode.target.length;
      } else if (type === S_IFREG && inode.size > 0) {
        if (inode.size <= inlineMax) {
          const content = await readFile(p);
          if (content.length !== inode.size) throw new DirectoryReadError('IO', `${p.toString()} changed while being read`);
          inode.content = content;
        } else {
          external.push({ inode, path: p });
        }
      }
      dir.entries!.set(key, inode);
    }
  }
  await digestExternal(external, opts.digestStore);
  return rootInode;
}

function fromStat(st: BigIntStats): Inode {
  const mode = Number(st.mode);
  const type = mode & S_IFMT;
  const isDev = st.isCharacterDevice() || st.isBlockDevice();
  return newInode(mode, {
    nlink: Number(st.nlink),
    uid: Number(st.uid),
    gid: Number(st.gid),
    rdev: isDev ? Number(st.rdev & 0xffffffffn) : 0,
    mtimeSec: Number(st.mtimeNs / BILLION),
    mtimeNsec: Number(st.mtimeNs % BILLION),
    size: type === S_IFREG ? Number(st.size) : 0,
  });
}

async function digestExternal(files: { inode: Inode; path: Buffer }[], digestStore: string | undefined): Promise<void> {
  if (files.length === 0) return;
  const { objectPathFor, FsVerityHasher } = await import('../verity/digest.js');
  const setDigest = (f: { inode: Inode; path: Buffer }, digest: Buffer, size: number) => {
    if (size !== f.inode.size) throw new DirectoryReadError('IO', `${f.path.toString()} changed while being read`);
    f.inode.digest = digest;
    f.inode.payload = Buffer.from(objectPathFor(digest));
  };
  // Paths are bytes; fs accepts them as Buffers, so names that are not UTF-8 work too.
  if (digestStore) {
    const { ObjectDir } = await import('../store/store.js');
    const objects = new ObjectDir(digestStore);
    let next = 0;
    const worker = async () => {
      while (next < files.length) {
        const f = files[next++]!;
        const r = await objects.addStream(createReadStream(f.path), { size: f.inode.size });
        setDigest(f, r.digest, r.size);
      }
    };
    await Promise.all(Array.from({ length: 4 }, worker));
    return;
  }
  const utf8 = files.filter((f) => Buffer.from(f.path.toString()).equals(f.path));
  const other = files.filter((f) => !Buffer.from(f.path.toString()).equals(f.path));
  const { digestFiles } = await import('../verity/parallel.js');
  const digests = await digestFiles(utf8.map((f) => f.path.toString()));
  utf8.forEach((f, i) => setDigest(f, digests[i]!, f.inode.size));
  for (const f of other) {
    const h = new FsVerityHasher();
    for await (const chunk of createReadStream(f.path)) h.update(chunk as Buffer);
    setDigest(f, h.digest(), h.size);
  }
}

/** All xattrs below `root`, keyed by relative path (latin1, '' = root, '/a/b'). */
async function readAllXattrs(root: string): Promise<Map<string, Xattr[]>> {
  const out = new Map<string, Xattr[]>();
  const child = spawn('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', stripSlashes(root)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const chunks: Buffer[] = [];
  const errs: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => chunks.push(c));
  child.stderr.on('data', (c: Buffer) => errs.push(c));
  const code = await new Promise<number>((res, rej) => {
    child.on('error', (e: NodeJS.ErrnoException) =>
      rej(new DirectoryReadError('TOOL_MISSING', e.code === 'ENOENT' ? 'getfattr not found: install the Debian package "attr" to read xattrs' : e.message)),
    );
    child.on('close', (c) => res(c ?? 1));
  });
  if (code !== 0) throw new DirectoryReadError('IO', `getfattr failed on ${root}: ${Buffer.concat(errs).toString().trim()}`);
  const text = Buffer.concat(chunks).toString('latin1');
  const rootEsc = Buffer.from(stripSlashes(root)).toString('latin1');
  let cur: Xattr[] | undefined;
  for (const line of text.split('\n')) {
    if (line.startsWith('# file: ')) {
      const p = unescapeGetfattr(line.slice(8));
      let rel = p.startsWith(rootEsc) ? p.slice(rootEsc.length) : p;
      if (rel === '/') rel = '';
      cur = [];
      out.set(rel, cur);
    } else if (line.length && cur) {
      const eq = line.indexOf('=');
      if (eq < 0) continue;
      const key = Buffer.from(unescapeGetfattr(line.slice(0, eq)), 'latin1');
      const v = line.slice(eq + 1);
      if (!v.startsWith('0x')) throw new DirectoryReadError('IO', `unexpected getfattr value for ${key.toString()}`);
      cur.push({ key, value: Buffer.from(v.slice(2), 'hex') });
    }
  }
  return out;
}

function stripSlashes(p: string): string {
  const s = p.replace(/\/+$/, '');
  return s === '' ? '/' : s;
}

/** getfattr writes `\NNN` octal escapes for special bytes; the result is a latin1 string. */
function unescapeGetfattr(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}
