/** Image object lists ("sidecars", STORE/images/<hex>.objects): one object digest per line. */
import { isHexDigest, toHex } from '../verity/digest.js';
import { StoreError } from './errors.js';

/** Suffix of an image's object-list sidecar. */
export const SIDECAR_SUFFIX = '.objects';

/** Sidecar text for a list of object digests: sorted unique hex lines. */
export function sidecarText(objects: Buffer[]): string {
  const hexes = [...new Set(objects.map((d) => toHex(d)))].sort();
  return hexes.length ? hexes.join('\n') + '\n' : '';
}

/** Parse sidecar text; `where` names the file in errors. */
export function parseSidecar(text: string, where: string): Buffer[] {
  const out: Buffer[] = [];
  const lines = text.split('\n');
  lines.forEach((l, i) => {
    if (l === '' && i === lines.length - 1) return;
    if (!isHexDigest(l)) throw new StoreError('SIDECAR_CORRUPT', `${where}:${i + 1}: not an object digest: ${JSON.stringify(l.slice(0, 80))}`);
    out.push(Buffer.from(l, 'hex'));
  });
  return out;
}
