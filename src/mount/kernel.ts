/**
 * The kernel mount: the composefs image mounted with EROFS, then overlayfs, read-only, with the
 * EROFS mount as the only ordinary lower layer and the store's objects directory as a data-only
 * lower layer, `metacopy=on`, `redirect_dir=on`, and `verity=require` when asked.
 *
 * Listing the tree reads only the image: overlayfs looks a metacopy file's data up in the data
 * layer lazily, on first open, so `ls -lR` and stat never touch an object (a missing object
 * makes the read fail, not the listing).
 *
 * Main path (new mount API, Linux ≥ 6.15): EROFS mounts the image file itself (no loop device)
 * as a detached mount, which is handed to overlayfs by file descriptor (`lowerdir+`), objects as
 * `datadir+`. Only the overlay ever appears in the mount table; unmounting it releases
 * everything. Fallbacks (compat.ts), each taken only when the kernel refuses the newer way:
 * a loop device for the image; the EROFS mount attached at a private staging directory and
 * passed by path (dropped again once overlayfs holds it); `lowerdir=A::B`; mount(8).
 */
import { mkdir, rmdir, stat } from 'node:fs/promises';
import { isAlive, selfId } from '../store/procid.js';
import { MountError } from './errors.js';
import { MountApi, MOUNT_ATTR_RDONLY, SyscallError } from './syscalls.js';
import type { CompatForce } from './compat.js';
import { attachLoop, detachLoop, escapeLowerdir, legacyMount, loopsBackedBy, runUmount } from './compat.js';
import { mountAt, readMountInfo } from './mountinfo.js';
import { MOUNT_SOURCE, readState, removeState, stagingPath, writeState } from './state.js';
import { isCfsdistMount, unmount } from './umount.js';
import type { MountState } from './state.js';

/** What to mount where. */
export interface KernelMountOptions {
  /** The composefs image file. */
  image: string;
  /** Objects directory (STORE/objects). */
  objects: string;
  /** Canonical mount point (an existing directory). */
  mountpoint: string;
  /** Add `verity=require` (only where fs-verity works: without it every read fails). */
  verity: boolean;
  /** What the user named (recorded). */
  ref?: string;
  /** Image digest (hex), recorded. */
  imageDigest?: string;
  /** Take fallbacks even where the newer way works (tests). */
  force?: CompatForce;
  /** A writable overlay for a container (src/run): upper and work directories (empty, on one
   * filesystem, not under the objects directory). The image and the objects stay read-only
   * lower layers; writes go to `upperdir`. Default: a read-only mount. */
  upper?: { upperdir: string; workdir: string };
  /** Test hook, awaited at named steps (`erofs`: EROFS mounted; `overlay`: before the overlay). */
  pause?: (step: string) => Promise<void>;
  /** The mount helper, already starting (a caller starts it before its own checks so the
   * helper's start-up overlaps them). mountKernel owns it from the call on and ends it. */
  mountApi?: Promise<MountApi | undefined>;
}

/** How a kernel mount was made. */
export interface KernelMountInfo {
  /** `fsmount` (new mount API) or `mount(8)`. */
  api: 'fsmount' | 'mount(8)';
  /** `file` (EROFS on the image file) or `loop`. */
  erofs: 'file' | 'loop';
  /** `fd` (detached mount by fd), `lowerdir+` (path options) or `lowerdir` (`A::B`). */
  layers: 'fd' | 'lowerdir+' | 'lowerdir';
  /** Whether a staging mount point was needed on the way. */
  staging: boolean;
  /** Whether `verity=require` is set. */
  verity: boolean;
}

/** Mount an image with EROFS + overlayfs (see the file comment). On failure nothing is left. */
export async function mountKernel(o: KernelMountOptions): Promise<KernelMountInfo> {
  const force = o.force ?? {};
  const early = force.mount8 ? undefined : (o.mountApi ?? MountApi.start());
  early?.catch(() => undefined); // awaited below; a failure before that is not unhandled
  if (force.mount8) void o.mountApi?.then((a) => a?.end(), () => undefined);
  try {
    return await mountWith(o, early);
  } catch (e) {
    // Failed before the helper was taken over: end it here.
    void early?.then((a) => a?.end(), () => undefined);
    throw e;
  }
}

async function mountWith(o: KernelMountOptions, helper: Promise<MountApi | undefined> | undefined): Promise<KernelMountInfo> {
  const st = await stat(o.mountpoint).catch(() => undefined);
  if (!st?.isDirectory()) throw new MountError('BAD_MOUNTPOINT', `mount point ${o.mountpoint} is not a directory`);
  let old = await readState(o.mountpoint);
  if (old && !isBusy(old)) {
    await unmount(o.mountpoint); // a stale record (mounting process killed): clean it up first
    old = undefined;
  }
  if (old) throw new MountError('ALREADY_MOUNTED', `${o.mountpoint} already has a cfsdist mount (${old.ref}); run cfsdist umount ${o.mountpoint} first`);
  const state: MountState = {
    version: 1,
    kind: 'kernel',
    phase: 'mounting',
    mountpoint: o.mountpoint,
    ref: o.ref ?? o.image,
    image: o.image,
    imageDigest: o.imageDigest,
    objects: o.objects,
    owner: selfId(),
    loops: [],
    time: '',
  };
  await writeState(state);
  const force = o.force ?? {};
  const before = mountAt(o.mountpoint)?.id;
  let api: MountApi | undefined;
  try {
    api = await helper;
    const info = api ? await viaFsmount(api, o, state, force) : await viaMount8(o, state, force);
    state.phase = 'mounted';
    state.how = { ...info };
    await writeState(state);
    return info;
  } catch (e) {
    await api?.end();
    api = undefined;
    // A failure after the overlay was attached (recording it) takes the overlay down too.
    const now = mountAt(o.mountpoint);
    if (now && now.id !== before && isCfsdistMount(now)) await runUmount(o.mountpoint, true);
    await undoPartial(state);
    throw e;
  } finally {
    await api?.end();
  }
}

async function viaFsmount(api: MountApi, o: KernelMountOptions, state: MountState, force: CompatForce): Promise<KernelMountInfo> {
  // 1. EROFS on the image file, else on a loop device.
  let erofs: 'file' | 'loop' = 'file';
  let ctx = await api.fsopen('erofs');
  await api.setFlag(ctx, 'ro');
  let fileError: unknown;
  if (!force.loop) {
    try {
      await api.setString(ctx, 'source', o.image);
      await api.create(ctx, `erofs on ${o.image}`);
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
      fileError = e;
    }
  }
  let loop: string | undefined;
  if (force.loop || fileError) {
    await api.close(ctx);
    erofs = 'loop';
    loop = await recordLoop(state, o.image);
    ctx = await api.fsopen('erofs');
    await api.setFlag(ctx, 'ro');
    await api.setString(ctx, 'source', loop);
    try {
      await api.create(ctx, `erofs on ${loop} (${o.image})`);
    } catch (e) {
      throw new MountError('EROFS_FAILED', `cannot mount ${o.image} with erofs: ${fileError ? `${(fileError as Error).message}; ` : ''}${(e as Error).message}`);
    }
  }
  const emnt = await api.fsmount(ctx, MOUNT_ATTR_RDONLY, 'erofs');
  await api.close(ctx);
  // The superblock holds the device now: let it detach itself when the last user goes.
  if (loop) await detachLoop(loop);
  await o.pause?.('erofs');

  // 2. overlayfs: EROFS as the lower layer, objects as a data-only lower layer.
  const ov = await api.fsopen('overlay');
  await api.setString(ov, 'source', MOUNT_SOURCE);
  await api.setString(ov, 'metacopy', 'on');
  await api.setString(ov, 'redirect_dir', 'on');
  if (o.verity) {
    await api.setString(ov, 'verity', 'require').catch((e: unknown) => {
      throw new MountError('VERITY_UNSUPPORTED', `this kernel's overlayfs has no verity= option (${(e as Error).message}); mount with --no-verity or --fuse`);
    });
  }
  if (o.upper) {
    await api.setString(ov, 'upperdir', o.upper.upperdir);
    await api.setString(ov, 'workdir', o.upper.workdir);
  } else {
    await api.setFlag(ov, 'ro');
  }
  let layers: KernelMountInfo['layers'] | undefined;
  let staging = false;
  if (!force.staging && !force.lowerdir) {
    try {
      await api.setFd(ov, 'lowerdir+', emnt);
      layers = 'fd';
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
    }
  }
  let stagingDir: string | undefined;
  if (!layers) {
    // Older kernels take no detached mount as a layer: attach it at a private directory.
    stagingDir = await recordStaging(state);
    await api.moveMount(emnt, stagingDir);
    staging = true;
    if (!force.lowerdir) {
      try {
        await api.setString(ov, 'lowerdir+', stagingDir);
        layers = 'lowerdir+';
      } catch (e) {
        if (!(e instanceof SyscallError)) throw e;
      }
    }
    if (!layers) {
      await api.setString(ov, 'lowerdir', `${escapeLowerdir(stagingDir)}::${escapeLowerdir(o.objects)}`);
      layers = 'lowerdir';
    }
  }
  if (layers !== 'lowerdir') await api.setString(ov, 'datadir+', o.objects);
  await o.pause?.('overlay');
  try {
    await api.create(ov, 'overlay');
  } catch (e) {
    throw new MountError('OVERLAY_FAILED', `cannot mount the overlay for ${o.image} at ${o.mountpoint}: ${(e as Error).message}`);
  }
  const omnt = await api.fsmount(ov, o.upper ? 0 : MOUNT_ATTR_RDONLY, 'overlay');
  await api.moveMount(omnt, o.mountpoint);
  await api.close(omnt);
  await api.close(emnt);
  // overlayfs keeps a private clone of its layers: the staging mount can go.
  if (stagingDir) await dropStaging(state, stagingDir);
  return { api: 'fsmount', erofs, layers, staging, verity: o.verity };
}

async function viaMount8(o: KernelMountOptions, state: MountState, force: CompatForce): Promise<KernelMountInfo> {
  const stagingDir = await recordStaging(state);
  let erofs: 'file' | 'loop' = 'file';
  let source = o.image;
  if (force.loop) {
    source = await recordLoop(state, o.image);
    erofs = 'loop';
  }
  // mount(8) attaches a regular file to an auto-clearing loop device itself.
  await legacyMount('erofs', source, stagingDir, ['ro']);
  const m = mountAt(stagingDir);
  if (m?.source.startsWith('/dev/loop')) {
    erofs = 'loop';
    if (!state.loops.includes(m.source)) {
      state.loops.push(m.source);
      await writeState(state);
    }
  }
  if (force.loop) await detachLoop(source);
  await o.pause?.('erofs');
  const rw = o.upper ? [`upperdir=${o.upper.upperdir}`, `workdir=${o.upper.workdir}`] : ['ro'];
  const base = [...rw, 'metacopy=on', 'redirect_dir=on', ...(o.verity ? ['verity=require'] : [])];
  let layers: KernelMountInfo['layers'] = 'lowerdir+';
  await o.pause?.('overlay');
  try {
    if (force.lowerdir) throw new MountError('FORCED', 'lowerdir forced');
    await legacyMount('overlay', MOUNT_SOURCE, o.mountpoint, [...base, `lowerdir+=${stagingDir}`, `datadir+=${o.objects}`]);
  } catch (e) {
    if (!(e instanceof MountError)) throw e;
    layers = 'lowerdir';
    await legacyMount('overlay', MOUNT_SOURCE, o.mountpoint, [...base, `lowerdir=${escapeLowerdir(stagingDir)}::${escapeLowerdir(o.objects)}`]).catch((e2: unknown) => {
      throw new MountError('OVERLAY_FAILED', `cannot mount the overlay for ${o.image} at ${o.mountpoint}: ${(e2 as Error).message}`);
    });
  }
  await dropStaging(state, stagingDir);
  return { api: 'mount(8)', erofs, layers, staging: true, verity: o.verity };
}

/** Attach a loop device, recording it before anything else can fail. */
async function recordLoop(state: MountState, image: string): Promise<string> {
  const dev = await attachLoop(image);
  state.loops.push(dev);
  await writeState(state);
  return dev;
}

/** Create and record the staging directory. */
async function recordStaging(state: MountState): Promise<string> {
  const dir = stagingPath(state.mountpoint);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  state.staging = dir;
  await writeState(state);
  return dir;
}

/** Unmount and remove the staging directory once overlayfs holds its own clone. */
async function dropStaging(state: MountState, dir: string): Promise<void> {
  const err = await runUmount(dir);
  if (err && mountAt(dir)) {
    // Not fatal for the mount; umount will retry from the record.
    process.emitWarning(`cfsdist: could not unmount the staging mount ${dir}: ${err}`);
    return;
  }
  await rmdir(dir).catch(() => undefined);
  delete state.staging;
  await writeState(state);
}

/** Remove whatever a failed mount created (staging mount, loop devices, record). */
async function undoPartial(state: MountState): Promise<void> {
  if (state.staging) {
    if (mountAt(state.staging, readMountInfo())) await runUmount(state.staging, true);
    await rmdir(state.staging).catch(() => undefined);
  }
  const ours = new Set(await loopsBackedBy(state.image));
  for (const l of state.loops) if (ours.has(l)) await detachLoop(l);
  await removeState(state.mountpoint);
}

/** A record that stands for a live mount, or a mount in progress by a live process. */
function isBusy(s: MountState): boolean {
  if (mountAt(s.mountpoint)) return true;
  return s.phase === 'mounting' && isAlive(s.owner);
}
