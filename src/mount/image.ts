/** Which image file a mount command means, and checking it before it is mounted. */
import { existsSync, readFileSync, statSync } from 'node:fs';
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

/** The part of Store a kernel-verified image check uses. */
export interface VerityImageStore {
  enableImageVerity(path: string, digest: Buffer): Promise<{ enabled: boolean; signed: boolean; refused?: string }>;
  kernelSignatureVerdict(digest: Buffer): Promise<string | undefined>;
}

/** How an image was checked before a mount. */
export interface ImageCheck {
  /** 'kernel': fs-verity is on for the image file and the kernel's measurement equals its
   * digest; 'userspace': the file was hashed; 'none': a plain file (no expected digest). */
  by: 'kernel' | 'userspace' | 'none';
  /** The image file carries a builtin signature the kernel accepted. */
  signed: boolean;
}

/** Whether the kernel requires every fs-verity file to carry a valid builtin signature
 * (`fs.verity.require_signatures`). */
export function kernelRequiresSignatures(): boolean {
  try {
    return readFileSync('/proc/sys/fs/verity/require_signatures', 'latin1').trim() === '1';
  } catch {
    return false;
  }
}

/**
 * Check an image before a kernel mount. Where fs-verity works (`verity`) the image file gets
 * fs-verity — with the store's builtin signature when it has one — and the kernel's
 * measurement is compared with the digest (no hashing here). `requireSignature` (implied by
 * the kernel's `fs.verity.require_signatures=1`) refuses an image file that does not carry a
 * builtin signature: the kernel verifies such a signature against its `.fs-verity` keyring
 * when fs-verity is enabled and refuses one it cannot verify, so what is mounted is what a
 * trusted key signed — and the refusal names the kernel's reason. Otherwise the file is hashed.
 */
export async function checkImage(img: ResolvedImage, store: VerityImageStore | undefined, opts: { verity: boolean; requireSignature?: boolean }): Promise<ImageCheck> {
  const require = Boolean(opts.requireSignature) || kernelRequiresSignatures();
  if (!img.digest || !store) {
    if (require) throw new MountError('SIGNATURE_REQUIRED', `${img.path}: a plain image file has no fs-verity signature; pull it into a store and mount NAME:TAG`);
    return { by: 'none', signed: false };
  }
  if (opts.verity || require) {
    const { measureFiles, hasBuiltinSignature } = await import('../store/verity-enable.js');
    let measured = (await measureFiles([img.path]))[0];
    let refused: string | undefined;
    if (measured === null) {
      const r = await store.enableImageVerity(img.path, img.digest);
      refused = r.refused;
      if (r.enabled) measured = (await measureFiles([img.path]))[0];
    }
    if (measured !== null && measured !== toHex(img.digest)) {
      throw new MountError('IMAGE_CORRUPT', `image ${img.path}: the kernel measures fs-verity digest ${measured}, not ${toHex(img.digest)}: it was changed (run cfsdist fsck)`);
    }
    const signed = measured !== null && (await hasBuiltinSignature(img.path));
    if (require && !signed) {
      const why = refused ? `the kernel refused its fs-verity signature: ${refused.replace(/^fsverity enable: /, '')}` : measured === null ? 'fs-verity cannot be enabled on it' : await store.kernelSignatureVerdict(img.digest);
      throw new MountError(
        'SIGNATURE_REFUSED',
        `image ${img.ref} (${toHex(img.digest)}) is not a kernel-verified signed image: ${why ?? 'its file got fs-verity without the signature (pull it again)'}` +
          ` (${opts.requireSignature ? '--require-signature' : 'fs.verity.require_signatures=1'})`,
      );
    }
    if (measured !== null) return { by: 'kernel', signed };
  }
  await checkImageDigest(img);
  return { by: 'userspace', signed: false };
}
