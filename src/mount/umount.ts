/**
 * `cfsdist umount`: remove a mount and everything it brought — the overlay or FUSE mount, a
 * staging EROFS mount, loop devices, the FUSE daemon, the record — also when the mounting
 * process was killed half way (the record says what may exist; the mount table and the loop
 * list say what does).
 */
import { readFileSync } from 'node:fs';
import { rmdir } from 'node:fs/promises';
import { isAlive } from '../store/procid.js';
import { MountError } from './errors.js';
import { detachLoop, listLoops, runUmount } from './compat.js';
import { mountAt, readMountInfo } from './mountinfo.js';
import type { MountEntry } from './mountinfo.js';
import { MOUNT_SOURCE, readState, removeState } from './state.js';
import type { MountState } from './state.js';

/** What `unmount` did. */
export interface UnmountReport {
  mountpoint: string;
  /** Paths unmounted (the mount point, a staging mount). */
  unmounted: string[];
  /** Loop devices detached. */
  loops: string[];
  /** A FUSE daemon that had to be signalled (it did not exit on its own). */
  killed?: number;
  /** A record was found and removed. */
  record: boolean;
}

/** Options of `unmount`. */
export interface UnmountOptions {
  /** Detach a busy mount lazily (umount -l). */
  lazy?: boolean;
  /** How long to wait for a FUSE daemon to exit (default 5 s). */
  daemonTimeoutMs?: number;
}

/** Is this mount-table entry one cfsdist made? */
export function isCfsdistMount(e: MountEntry): boolean {
  return e.source === MOUNT_SOURCE && (e.fstype === 'overlay' || e.fstype === `fuse.${MOUNT_SOURCE}`);
}

/** Unmount `mountpoint` (canonical) and clean up after it (see the file comment). */
export async function unmount(mountpoint: string, opts: UnmountOptions = {}): Promise<UnmountReport> {
  const state = await readState(mountpoint);
  const report: UnmountReport = { mountpoint, unmounted: [], loops: [], record: state !== undefined };
  const top = mountAt(mountpoint);
  if (!state) {
    if (!top) throw new MountError('NOT_MOUNTED', `${mountpoint} is not mounted`);
    if (!isCfsdistMount(top)) throw new MountError('NOT_CFSDIST', `${mountpoint} is a ${top.fstype} mount of ${top.source}, not a cfsdist mount`);
  } else if (state.phase === 'mounting' && state.kind === 'kernel' && isAlive(state.owner)) {
    throw new MountError('MOUNT_IN_PROGRESS', `${mountpoint} is being mounted by process ${state.owner.split('-')[0]}`);
  }
  const ours = readMountInfo().some((m) => m.mountpoint === mountpoint && isCfsdistMount(m));
  if (top && ours) {
    // Only the mount cfsdist put there; something mounted on top of it is the user's to remove.
    if (!isCfsdistMount(top)) {
      throw new MountError('BUSY', `${mountpoint}: a ${top.fstype} mount of ${top.source} sits on top of the cfsdist mount; unmount it first`);
    }
    const err = await runUmount(mountpoint, opts.lazy);
    if (err && mountAt(mountpoint)) {
      throw new MountError('UMOUNT_FAILED', `umount ${mountpoint}: ${err}${opts.lazy ? '' : ' (use --lazy to detach it anyway)'}`);
    }
    report.unmounted.push(mountpoint);
  }
  if (!state) return report;
  if (state.kind === 'fuse') report.killed = await stopDaemon(state, opts.daemonTimeoutMs ?? 5000);
  if (state.staging) {
    if (mountAt(state.staging, readMountInfo())) {
      // A killed mount's helper may still hold the staging mount open for a moment: retry,
      // then detach it lazily (nothing else uses this private directory).
      let err: string | undefined;
      for (let i = 0; i < 25 && mountAt(state.staging); i++) {
        err = await runUmount(state.staging, opts.lazy || i === 24);
        if (err) await new Promise((r) => setTimeout(r, 40));
      }
      if (err && mountAt(state.staging)) throw new MountError('UMOUNT_FAILED', `umount ${state.staging}: ${err}`);
      report.unmounted.push(state.staging);
    }
    await rmdir(state.staging).catch(() => undefined);
  }
  report.loops = await releaseLoops(state);
  await removeState(mountpoint);
  return report;
}

/** Detach the record's loop devices that still serve its image (a device number may have been
 * reused for another file since; those are left alone). Waits briefly for auto-clearing ones. */
async function releaseLoops(state: MountState): Promise<string[]> {
  if (state.loops.length === 0) return [];
  const mine = (l: { name: string; backFile: string }): boolean => state.loops.includes(l.name) && l.backFile === state.image;
  const done: string[] = [];
  for (let i = 0; i < 50; i++) {
    const left = (await listLoops()).filter(mine);
    if (left.length === 0) return done;
    // Auto-clearing devices go by themselves once the filesystem on them is gone.
    if (i >= 5 || left.some((l) => !l.autoclear)) {
      for (const l of left) {
        if (!(await detachLoop(l.name))) done.push(l.name);
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const left = (await listLoops()).filter(mine).map((l) => l.name);
  if (left.length) throw new MountError('LOOP_BUSY', `loop device(s) ${left.join(', ')} for ${state.image} are still in use`);
  return done;
}

/** Alive and not a zombie (an exited daemon may wait a while for init to reap it). */
function running(owner: string): boolean {
  if (!isAlive(owner)) return false;
  try {
    const st = readFileSync(`/proc/${owner.split('-')[0]}/stat`, 'latin1');
    const s = st[st.lastIndexOf(')') + 2];
    return s !== 'Z' && s !== 'X';
  } catch {
    return false;
  }
}

/** Wait for a FUSE daemon to exit after its mount went; signal it if it does not. */
async function stopDaemon(state: MountState, timeoutMs: number): Promise<number | undefined> {
  const pid = Number(state.owner.split('-')[0]);
  const wait = async (ms: number): Promise<boolean> => {
    const end = Date.now() + ms;
    while (running(state.owner)) {
      if (Date.now() >= end) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  };
  if (await wait(timeoutMs)) return undefined;
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    try {
      process.kill(pid, sig);
    } catch {
      return undefined;
    }
    if (await wait(2000)) return pid;
  }
  throw new MountError('DAEMON_STUCK', `the FUSE daemon of ${state.mountpoint} (pid ${pid}) does not exit`);
}
