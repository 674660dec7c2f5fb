/**
 * /proc/self/mountinfo: which mounts exist, where, of what type and from what source. Used to
 * check a mount went live, to find what `umount` has to remove, and by tests.
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { realpathSync } from 'node:fs';

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  id: number;
  parent: number;
  /** `major:minor` of the mounted filesystem. */
  dev: string;
  /** Root of the mount inside its filesystem. */
  root: string;
  /** Mount point (unescaped). */
  mountpoint: string;
  /** Per-mount options (ro, nosuid, …). */
  options: string;
  /** Filesystem type, e.g. `erofs`, `overlay`, `fuse.cfsdist`. */
  fstype: string;
  /** Mount source (unescaped), e.g. an image path, `/dev/loop0`, `cfsdist`. */
  source: string;
  /** Superblock options. */
  superOptions: string;
}

/** Undo mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, …). */
export function unescapeField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parse mountinfo text. */
export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0 || f.length < sep + 4) continue;
    out.push({
      id: Number(f[0]),
      parent: Number(f[1]),
      dev: f[2]!,
      root: unescapeField(f[3]!),
      mountpoint: unescapeField(f[4]!),
      options: f[5]!,
      fstype: f[sep + 1]!,
      source: unescapeField(f[sep + 2]!),
      superOptions: f[sep + 3]!,
    });
  }
  return out;
}

/** The mounts of this process's mount namespace (latin1, so any byte survives). */
export function readMountInfo(): MountEntry[] {
  return parseMountInfo(readFileSync('/proc/self/mountinfo', 'latin1'));
}

/** The topmost mount at exactly `path` (an absolute, canonical path), or undefined. */
export function mountAt(path: string, entries: MountEntry[] = readMountInfo()): MountEntry | undefined {
  let found: MountEntry | undefined;
  for (const e of entries) if (e.mountpoint === path) found = e;
  return found;
}

/**
 * Canonical absolute form of a mount point without touching the mount point itself (a dead FUSE
 * mount fails every stat with ENOTCONN): the parent is resolved, the last component kept.
 */
export function canonicalMountpoint(path: string): string {
  const abs = resolve(path);
  if (abs === '/') return abs;
  let parent = dirname(abs);
  try {
    parent = realpathSync(parent);
  } catch {
    /* parent missing: keep the lexical path; the caller reports what is wrong */
  }
  return parent === '/' ? `/${basename(abs)}` : `${parent}/${basename(abs)}`;
}

/** Wait until a mount at `path` is present (or absent, with `present: false`); false on timeout. */
export async function waitForMount(path: string, opts: { present?: boolean; timeoutMs?: number; intervalMs?: number } = {}): Promise<boolean> {
  const want = opts.present ?? true;
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    if ((mountAt(path) !== undefined) === want) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 20));
  }
}
