/**
 * Setup shared by the mount tests: the Debian test image imported as `debian:final` into a
 * fresh store, a store that has its images and tags but no objects, and a clean-up that never
 * deletes through a mount a failed test left behind.
 */
import { cpSync, mkdirSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { openSource } from '../src/oci/source.js';
import { importImage } from '../src/oci/import.js';
import { readMountInfo } from '../src/mount/index.js';
import { debianImage } from './fixtures/oci/debian-image.js';

/** A work directory holding `store/` with debian:final imported. */
export interface DebianStore {
  /** The work directory (canonical path: mount points below it are compared as the kernel shows them). */
  work: string;
  storeDir: string;
  /** The image's unpacked root filesystem (umoci), the oracle the mounts are compared with. */
  rootfs: string;
  /** The imported image file. */
  imagePath: string;
}

/** Import the Debian test image as debian:final into `<new dir>/store`. */
export async function debianStore(prefix: string): Promise<DebianStore> {
  const img = await debianImage();
  const work = realpathSync(mkdtempSync(join(tmpdir(), prefix)));
  const storeDir = join(work, 'store');
  const store = await Store.open(storeDir, { create: true });
  const r = await importImage(await openSource(`oci:${img.layout}:final`), store, { name: 'debian', tag: 'final', sync: false });
  return { work, storeDir, rootfs: img.rootfs, imagePath: store.imagePath(r.image) };
}

/** Remove `work`, unless something is still mounted below it (never delete through a mount). */
export function removeUnlessMounted(work: string | undefined): void {
  if (!work) return;
  if (!readMountInfo().some((m) => m.mountpoint.startsWith(work))) rmSync(work, { recursive: true, force: true });
}

/** A store at `dir` with the images and tags of `storeDir` but no objects. */
export function storeWithoutObjects(storeDir: string, dir: string): string {
  mkdirSync(join(dir, 'objects'), { recursive: true });
  for (const d of ['images', 'tags']) cpSync(join(storeDir, d), join(dir, d), { recursive: true });
  return dir;
}
