/** Which image file a mount command means, and checking it before it is mounted. */
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { fsverityDigestFile, toHex } from '../verity/digest.js';
import { MountError } from './errors.js';

/** An image to mount. */
export interface ResolvedImage {
  /** Image file. */
  path: string;
  /** Its digest when it comes from the store (its name); undefined for a plain file. */
  digest?: Buffer;
  /** What the user named. */
  ref: string;
}

/** The part of Store used here. */
export interface ImageStore {
  resolveImage(ref: string): Promise<Buffer>;
  imagePath(digest: Buffer): string;
}

/** NAME:TAG or digest → the store's image; an existing file path → that file. */
export async function resolveImageRef(store: ImageStore | undefined, ref: string): Promise<ResolvedImage> {
  const looksLikePath = ref.includes('/') || ref.startsWith('.') || !store;
  if (looksLikePath && existsSync(ref) && statSync(ref).isFile()) return { path: resolve(ref), ref };
  if (!store) throw new MountError('NO_IMAGE', `${ref}: no such image file`);
  const digest = await store.resolveImage(ref);
  return { path: store.imagePath(digest), digest, ref };
}

/** Refuse an image whose content no longer has the digest it is stored under. */
export async function checkImageDigest(img: ResolvedImage): Promise<void> {
  if (!img.digest) return;
  const got = await fsverityDigestFile(img.path);
  if (!got.equals(img.digest)) {
    throw new MountError('IMAGE_CORRUPT', `image ${img.path} has digest ${toHex(got)}, not ${toHex(img.digest)}: it was changed (run cfsdist fsck)`);
  }
}
