/**
 * Removing containers, also those a killed `cfsdist run` left behind: the runtime's state, the
 * rootfs overlay, the FUSE or EROFS mounts under it (with their loop devices and records), and
 * the directory. Used by `run` itself on exit, by the next `run`, and by `gc` and
 * `fsck --repair` (store/maintenance.ts), which also ask which images running containers use.
 */
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Store } from '../store/store.js';
import { RunError } from './errors.js';
import { containerDir, deleteRuntimeState, listContainerIds, markExited, ownerGone, readRecord, unmountPlain } from './container.js';
import type { ContainerRecord } from './container.js';

/** A directory without a record is a `run` killed between mkdir and its first write. */
const ORPHAN_GRACE_MS = 60_000;

async function isMounted(path: string): Promise<boolean> {
  const { mountAt } = await import('../mount/mountinfo.js');
  return mountAt(path) !== undefined;
}

async function isStale(store: Store, id: string, rec: ContainerRecord | undefined): Promise<boolean> {
  if (!rec) {
    const st = await stat(containerDir(store, id)).catch(() => undefined);
    return st !== undefined && Date.now() - st.mtimeMs > ORPHAN_GRACE_MS;
  }
  if (rec.kind === 'run') return rec.phase !== 'exited' && ownerGone(rec);
  // A bundle lives while its rootfs is mounted (or while its creator is still mounting it).
  if (rec.phase === 'creating') return ownerGone(rec);
  return !(await isMounted(rec.rootfs));
}

/** IDs of containers whose owner is gone (see the file comment). */
export async function staleContainers(store: Store): Promise<string[]> {
  const out: string[] = [];
  for (const id of await listContainerIds(store)) {
    if (await isStale(store, id, await readRecord(store, id))) out.push(id);
  }
  return out;
}

/** Images (hex) and configs the existing containers use: gc roots. */
export async function liveContainers(store: Store): Promise<{ id: string; image: string; config?: string }[]> {
  const out: { id: string; image: string; config?: string }[] = [];
  for (const id of await listContainerIds(store)) {
    const rec = await readRecord(store, id);
    if (rec) out.push({ id, image: rec.image, config: rec.config });
  }
  return out;
}

/** Unmount a cfsdist mount point with its record (kernel or FUSE); plain umount otherwise. */
async function unmountRecorded(path: string): Promise<void> {
  const m = await import('../mount/index.js');
  const { readState } = await import('../mount/state.js');
  if (await readState(path)) {
    await m.unmount(path, { lazy: true, daemonTimeoutMs: 2000 });
    return;
  }
  await unmountPlain(path);
}

/** Remove container `id`: runtime state, mounts, then its directory — or, with `keepDir`
 * (default: for a named `run` without --rm), only what runs (the upper layer and record stay,
 * marked exited). Refuses to delete a directory
 * that still has a mount under it. */
export async function removeContainer(store: Store, id: string, o: { keepDir?: boolean; record?: ContainerRecord } = {}): Promise<void> {
  const dir = containerDir(store, id);
  const rec = o.record ?? (await readRecord(store, id));
  if (rec) {
    await deleteRuntimeState(rec);
    await unmountRecorded(rec.rootfs);
  }
  await unmountRecorded(join(dir, 'lower'));
  const { readMountInfo } = await import('../mount/mountinfo.js');
  const left = readMountInfo().filter((e) => e.mountpoint === dir || e.mountpoint.startsWith(dir + '/') || (rec && e.mountpoint === rec.rootfs));
  if (left.length) throw new RunError('CONTAINER_BUSY', `container ${id}: ${left.map((e) => e.mountpoint).join(', ')} still mounted; not removing ${dir}`);
  const keep = o.keepDir ?? (rec?.kind === 'run' && rec.keep);
  if (keep && rec) {
    await rm(join(dir, 'runtime'), { recursive: true, force: true });
    await markExited(store, rec);
    return;
  }
  await rm(dir, { recursive: true, force: true });
}

/** Remove every stale container (killed runs, unmounted bundles); kept ones stay, exited. */
export async function removeStaleContainers(store: Store, log?: (line: string) => void): Promise<string[]> {
  const done: string[] = [];
  for (const id of await staleContainers(store)) {
    const rec = await readRecord(store, id);
    try {
      await removeContainer(store, id, { record: rec });
      done.push(id);
    } catch (e) {
      log?.(`cfsdist: cannot clean up container ${id}: ${(e as Error).message}`);
    }
  }
  return done;
}

/** The bundle container whose rootfs is `rootfs` (canonical), if any. */
export async function bundleAt(store: Store, rootfs: string): Promise<ContainerRecord | undefined> {
  for (const id of await listContainerIds(store)) {
    const rec = await readRecord(store, id);
    if (rec?.kind === 'bundle' && rec.rootfs === rootfs) return rec;
  }
  return undefined;
}
