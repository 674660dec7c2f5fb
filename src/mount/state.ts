/**
 * What a mount left behind, recorded so `cfsdist umount` can remove all of it even when the
 * process that mounted was killed half way: one JSON file per mount point in the run directory,
 * written *before* each step that creates something (a loop device, a staging mount), so the
 * record is never behind the kernel's state.
 *
 *   RUN/mounts/<key>.json     the record (key: SHA-256 of the canonical mount point, 24 hex)
 *   RUN/mounts/<key>.erofs/   staging mount point of the EROFS layer, where one is needed
 *   RUN/mounts/<key>.log      log of a FUSE daemon
 *
 * RUN is $CFSDIST_RUN_DIR, else /run/cfsdist for root (tmpfs: records vanish with the mounts at
 * reboot), else $XDG_RUNTIME_DIR/cfsdist, else <tmpdir>/cfsdist-<uid>.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MountError } from './errors.js';

/** Source name cfsdist's overlay and FUSE mounts show in the mount table. */
export const MOUNT_SOURCE = 'cfsdist';

/** Where records of live mounts are kept (see the file comment). */
export function runDir(): string {
  if (process.env.CFSDIST_RUN_DIR) return process.env.CFSDIST_RUN_DIR;
  const uid = process.getuid?.() ?? 0;
  if (uid === 0) return '/run/cfsdist';
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'cfsdist');
  return join(tmpdir(), `cfsdist-${uid}`);
}

/** The record of one mount. */
export interface MountState {
  version: 1;
  /** `kernel` (EROFS + overlayfs) or `fuse` (userspace daemon). */
  kind: 'kernel' | 'fuse';
  /** `mounting` until the last step succeeded. */
  phase: 'mounting' | 'mounted';
  /** Canonical mount point. */
  mountpoint: string;
  /** What the user asked to mount (NAME:TAG, digest or path). */
  ref: string;
  /** Image file. */
  image: string;
  /** Image fs-verity digest (hex), when known. */
  imageDigest?: string;
  /** Objects directory (overlay data layer / FUSE object source). */
  objects: string;
  /** `<pid>-<starttime>` of the mounting process (kernel) or of the serving daemon (fuse). */
  owner: string;
  /** Staging mount point of the EROFS layer, while it is (or may be) mounted there. */
  staging?: string;
  /** Loop devices attached for the image. */
  loops: string[];
  /** FUSE daemon log file. */
  log?: string;
  /** How the mount was made (API, EROFS backing, layer passing, verity). */
  how?: Record<string, string | boolean>;
  /** ISO time of the record. */
  time: string;
}

/** Key of a mount point: 24 hex of SHA-256 of its canonical path. */
export function stateKey(mountpoint: string): string {
  return createHash('sha256').update(mountpoint).digest('hex').slice(0, 24);
}

/** Directory of the records. */
export function mountsDir(): string {
  return join(runDir(), 'mounts');
}

/** Record file of a mount point. */
export function statePath(mountpoint: string): string {
  return join(mountsDir(), `${stateKey(mountpoint)}.json`);
}

/** Staging directory for the EROFS layer of a mount point. */
export function stagingPath(mountpoint: string): string {
  return join(mountsDir(), `${stateKey(mountpoint)}.erofs`);
}

/** Log file of a FUSE daemon. */
export function logPath(mountpoint: string): string {
  return join(mountsDir(), `${stateKey(mountpoint)}.log`);
}

/** Write (replace) a record atomically. */
export async function writeState(s: MountState): Promise<void> {
  await mkdir(mountsDir(), { recursive: true, mode: 0o700 });
  const path = statePath(s.mountpoint);
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  s.time = new Date().toISOString();
  await writeFile(tmp, JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, path);
}

/** The record of a mount point, or undefined. */
export async function readState(mountpoint: string): Promise<MountState | undefined> {
  const path = statePath(mountpoint);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let s: MountState;
  try {
    s = JSON.parse(text) as MountState;
  } catch (e) {
    throw new MountError('STATE_CORRUPT', `${path}: not a mount record: ${(e as Error).message}`);
  }
  if (s.version !== 1 || s.mountpoint !== mountpoint) throw new MountError('STATE_CORRUPT', `${path}: not a mount record for ${mountpoint}`);
  if (!Array.isArray(s.loops)) s.loops = [];
  return s;
}

/** Remove a record (and its log); absent is fine. */
export async function removeState(mountpoint: string): Promise<void> {
  for (const p of [statePath(mountpoint), logPath(mountpoint)]) {
    await unlink(p).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
}

/** Every record in the run directory (unreadable ones skipped). */
export async function listStates(): Promise<MountState[]> {
  const names = await readdir(mountsDir()).catch(() => [] as string[]);
  const out: MountState[] = [];
  for (const n of names) {
    if (!n.endsWith('.json')) continue;
    try {
      const s = JSON.parse(await readFile(join(mountsDir(), n), 'utf8')) as MountState;
      if (s.version === 1 && typeof s.mountpoint === 'string') out.push(s);
    } catch {
      /* a record being replaced, or garbage: skipped */
    }
  }
  return out;
}
