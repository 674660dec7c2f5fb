/**
 * Paths inside a container's mounted root filesystem, resolved as the container would see
 * them: symbolic links are followed relative to the root (an absolute link `/x` means ROOT/x,
 * `..` never climbs above ROOT), so an image cannot make cfsdist read or create anything
 * outside its own tree (e.g. `/etc/passwd -> /host/file`, or a WorkingDir through `../../`).
 */
import { lstat, mkdir, readFile, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { RunError } from './errors.js';

const MAX_LINKS = 40;

/**
 * Resolve `path` (absolute, container view) under `root`. Returns the host path of the last
 * component (which need not exist). With `create`, missing directories are made (mode 0755)
 * on the way, the last one included.
 */
export async function resolveInRoot(root: string, path: string, opts: { create?: boolean } = {}): Promise<string> {
  let pending = posix.normalize(path).split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const c = pending.shift()!;
    if (c === '..') {
      done.pop();
      continue;
    }
    const host = join(root, ...done, c);
    const st = await lstat(host).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    if (st?.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new RunError('ROOTFS_LOOP', `${path}: too many symbolic links in the image`);
      const target = await readlink(host);
      const rest = target.split('/').filter((x) => x !== '' && x !== '.');
      if (target.startsWith('/')) done.length = 0;
      pending = [...rest, ...pending];
      continue;
    }
    if (!st) {
      if (!opts.create) return join(root, ...done, c, ...pending);
      await mkdir(host, { mode: 0o755 });
    } else if (!st.isDirectory() && pending.length > 0) {
      throw new RunError('ROOTFS_NOT_DIR', `${path}: /${[...done, c].join('/')} in the image is not a directory`);
    }
    done.push(c);
  }
  return join(root, ...done);
}

/** Read a text file of the image (container path) through the root; undefined if absent. */
export async function readInRoot(root: string, path: string, maxBytes = 4 << 20): Promise<string | undefined> {
  const host = await resolveInRoot(root, path);
  const st = await lstat(host).catch(() => undefined);
  if (!st?.isFile()) return undefined;
  if (st.size > maxBytes) throw new RunError('ROOTFS_FILE_TOO_BIG', `${path} in the image is ${st.size} bytes (more than ${maxBytes})`);
  return readFile(host, 'utf8');
}
