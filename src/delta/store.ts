/**
 * Deltas in a store: `STORE/deltas/<base hex>-<target hex>.delta`, written atomically. A server
 * makes them when a tag is signed, from the images of the tag's last few signed versions (and
 * of the name's other tags) to the new one, so a client holding any of them can update by delta.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from '../store/store.js';
import { SignRecords } from '../sign/records.js';
import { parseEnvelope } from '../sign/dsse.js';
import { parseStatementPayload } from '../sign/statement.js';
import { fromHex, toHex } from '../verity/digest.js';
import { computeDelta } from './delta.js';
import { makeZpatch } from './zpatch.js';
import type { DeltaKind } from '../client/remote.js';

/** How many earlier versions of a tag get a delta to the newest one, by default. */
export const DEFAULT_DELTA_BASES = 3;

/** Where the delta from `base` to `target` lives (a tree delta, or with `kind` 'zpatch' the
 * binary one of zpatch.ts, `….zpatch`). */
export function deltaPath(store: Store, base: Buffer, target: Buffer, kind: DeltaKind = 'tree'): string {
  return join(store.dir, 'deltas', `${toHex(base)}-${toHex(target)}.${kind === 'zpatch' ? 'zpatch' : 'delta'}`);
}

/** What `makeDeltas` made. */
export interface DeltaMade {
  base: string;
  target: string;
  bytes: number;
  imageBytes: number;
  /** Size of the zpatch made beside it (where the zstd tool is installed). */
  zpatchBytes?: number;
}

/**
 * Make deltas to `target` from up to `keep` earlier images: those of the previous signed
 * versions of NAME:TAG, then those other tags of NAME point at (still in the store and
 * different from the target). Existing deltas are kept.
 */
export async function makeDeltas(store: Store, name: string, tag: string, target: Buffer, keep = DEFAULT_DELTA_BASES): Promise<DeltaMade[]> {
  const records = new SignRecords(store.dir);
  const versions = await records.historyVersions(name, tag);
  const bases: Buffer[] = [];
  for (const v of versions.reverse()) {
    if (bases.length >= keep) break;
    const file = join(store.dir, 'signatures', ...name.split('/'), `:${tag}.history`, `${v}.dsse`);
    const bytes = await readFile(file).catch(() => undefined);
    if (!bytes) continue;
    try {
      const env = parseEnvelope(bytes, file);
      const s = parseStatementPayload(Buffer.from(env.payload, 'base64'), file);
      const img = fromHex(s.image);
      if (!img.equals(target) && !bases.some((b) => b.equals(img)) && (await store.hasImage(img))) bases.push(img);
    } catch {
      continue; // an unreadable history entry only means one delta fewer
    }
  }
  // Then the images of the name's other tags (a family: demo:v1 for demo:v2), in reverse tag order.
  const others = (await store.listTags()).filter((t) => t.name === name && t.tag !== tag);
  for (const t of others.reverse()) {
    if (bases.length >= keep) break;
    if (!t.image.equals(target) && !bases.some((b) => b.equals(t.image)) && (await store.hasImage(t.image))) bases.push(t.image);
  }
  const made: DeltaMade[] = [];
  if (!bases.length) return made;
  const targetBytes = await readFile(store.imagePath(target));
  await mkdir(join(store.dir, 'deltas'), { recursive: true });
  const put = async (path: string, bytes: Buffer): Promise<void> => {
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, bytes);
    await rename(tmp, path);
  };
  for (const base of bases) {
    const path = deltaPath(store, base, target);
    const zpath = deltaPath(store, base, target, 'zpatch');
    if (existsSync(path)) continue;
    const baseBytes = await readFile(store.imagePath(base));
    const delta = computeDelta(baseBytes, targetBytes);
    if (!delta) continue; // not reproducible from a dumpfile: clients fetch the full image
    const zpatch = makeZpatch(store.imagePath(base), baseBytes.length, targetBytes);
    if (zpatch) await put(zpath, zpatch);
    await put(path, delta);
    made.push({ base: toHex(base), target: toHex(target), bytes: delta.length, imageBytes: targetBytes.length, ...(zpatch ? { zpatchBytes: zpatch.length } : {}) });
  }
  return made;
}
