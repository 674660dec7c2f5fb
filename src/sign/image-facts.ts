/**
 * What a composefs image needs from a store: the objects its regular files point at, each with
 * the fs-verity digest that names and verifies it and its size — read from the image itself
 * (trusted once the image's own digest has been checked against a signed statement).
 *
 * Every external file must carry a digest (trusted.overlay.metacopy) and point at the object
 * path of that digest (trusted.overlay.redirect = xx/<62 hex>): an image that redirects a file
 * elsewhere, or names one digest with two sizes, is refused — its objects could not be
 * verified or placed.
 */
import { S_IFMT, S_IFREG } from '../tree/tree.js';
import type { Inode } from '../tree/tree.js';
import { objectPathFor, toHex } from '../verity/digest.js';
import { SignError } from './errors.js';

/** One object an image needs. */
export interface ObjectRef {
  digest: Buffer;
  size: number;
}

/** The objects of an image and their totals. */
export interface ImageFacts {
  /** Unique objects, sorted by digest. */
  objects: ObjectRef[];
  /** objects.length. */
  count: number;
  /** Sum of the objects' sizes. */
  totalSize: number;
}

/** The objects a parsed image tree needs (see the file comment). `where` names the image. */
export function factsOfTree(root: Inode, where: string): ImageFacts {
  const byHex = new Map<string, ObjectRef>();
  const seen = new Set<Inode>();
  const dirs: Inode[] = [root];
  while (dirs.length > 0) {
    const dir = dirs.pop()!;
    for (const child of dir.entries!.values()) {
      if (child.entries) {
        dirs.push(child);
        continue;
      }
      if ((child.mode & S_IFMT) !== S_IFREG || seen.has(child)) continue;
      seen.add(child);
      if (!child.payload || child.payload.length === 0) continue;
      if (!child.digest) throw new SignError('IMAGE_UNVERIFIABLE', `${where}: file backed by ${child.payload.toString('latin1')} has no fs-verity digest; its content could not be verified`);
      const hex = toHex(child.digest);
      if (child.payload.toString('latin1') !== objectPathFor(child.digest)) {
        throw new SignError('IMAGE_UNVERIFIABLE', `${where}: file with digest ${hex} redirects to ${JSON.stringify(child.payload.toString('latin1'))}, not to its object path ${objectPathFor(child.digest)}`);
      }
      const prev = byHex.get(hex);
      if (prev) {
        if (prev.size !== child.size) throw new SignError('IMAGE_UNVERIFIABLE', `${where}: object ${hex} appears with two sizes (${prev.size} and ${child.size})`);
        continue;
      }
      byHex.set(hex, { digest: Buffer.from(child.digest), size: child.size });
    }
  }
  const objects = [...byHex.keys()].sort().map((k) => byHex.get(k)!);
  let totalSize = 0;
  for (const o of objects) totalSize += o.size;
  return { objects, count: objects.length, totalSize };
}

/** The objects an image (bytes) needs. Throws ErofsError for a malformed image. */
export async function imageFacts(image: Buffer, where: string): Promise<ImageFacts> {
  const { readImage } = await import('../erofs/reader.js');
  return factsOfTree(readImage(image, where), where);
}
