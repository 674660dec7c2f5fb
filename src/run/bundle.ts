/**
 * `cfsdist bundle IMAGE DIR`: an OCI runtime bundle for other tooling, as `umoci unpack`
 * makes one — DIR/config.json from the image config, DIR/rootfs the image mounted with a
 * writable layer (kept in STORE/containers/ID/). It lives until `cfsdist umount DIR/rootfs`;
 * a rootfs unmounted some other way leaves a stale container the next run/gc removes.
 */
import { mkdir, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Store } from '../store/store.js';
import { RunError } from './errors.js';
import { buildSpec, createContainer, mountRootfs, writeRecord } from './container.js';
import type { MountedRootfs, ProcessOptions } from './container.js';

/** Options of makeBundle. */
export interface BundleOptions extends ProcessOptions {
  ref: string;
  dir: string;
  verity?: boolean;
}

/** What makeBundle made. */
export interface BundleResult {
  id: string;
  dir: string;
  rootfs: string;
  config: string;
  mode: 'kernel' | 'fuse';
  verity: boolean;
}

/** Write DIR/config.json and mount DIR/rootfs (see the file comment). */
export async function makeBundle(store: Store, o: BundleOptions): Promise<BundleResult> {
  const { canonicalMountpoint, kernelMountUnavailable } = await import('../mount/index.js');
  const why = kernelMountUnavailable();
  if (why) throw new RunError('NO_KERNEL_MOUNT', `bundle needs the kernel mount (a FUSE rootfs would need this process to stay): ${why}`);
  const dir = resolve(o.dir);
  await mkdir(dir, { recursive: true });
  const present = await readdir(dir);
  if (present.length > 0) throw new RunError('BUNDLE_NOT_EMPTY', `${dir} is not empty (${present.slice(0, 3).join(', ')}${present.length > 3 ? ', …' : ''})`);
  await mkdir(join(dir, 'rootfs'));
  const rootfs = canonicalMountpoint(join(dir, 'rootfs'));
  const { record, image } = await createContainer(store, { ref: o.ref, kind: 'bundle', rootfs }).catch(async (e: unknown) => {
    await rmdir(join(dir, 'rootfs')).catch(() => undefined);
    throw e;
  });
  let mounted: MountedRootfs | undefined;
  try {
    mounted = await mountRootfs(store, record, image, { fuse: false, verity: o.verity });
    const { spec } = await buildSpec(record, image, { ...o, rootPath: 'rootfs' });
    const config = join(dir, 'config.json');
    await writeFile(config, JSON.stringify(spec, null, 2) + '\n');
    record.phase = 'running';
    await writeRecord(store, record);
    return { id: record.id, dir, rootfs, config, mode: mounted.mode, verity: mounted.verity };
  } catch (e) {
    const { removeContainer } = await import('./cleanup.js');
    await mounted?.release().catch(() => undefined);
    await removeContainer(store, record.id).catch(() => undefined);
    await rm(join(dir, 'config.json'), { force: true });
    await rmdir(join(dir, 'rootfs')).catch(() => undefined);
    throw e;
  }
}
