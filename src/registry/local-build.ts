/**
 * Pulling an ordinary image nobody converted: its layers are fetched (each verified by its
 * sha256 digest, as any import from a registry) and the merged composefs image is built here —
 * the same bytes a server-side `import` of that image makes. No cfsdist signature covers the
 * result, so the tag records where it came from, pinned to the manifest digest
 * (`unsigned-from docker://HOST/REPO@sha256:…`), and `inspect`, `mount` and `run` say so.
 */
import type { Store } from '../store/store.js';
import type { ImportResult } from '../oci/import.js';
import { parseRegistryRef } from './ref.js';
import type { TransportOptions } from '../client/transport.js';

/** What buildUnsigned did. */
export interface UnsignedBuild {
  name: string;
  tag: string;
  image: string;
  manifest: string | null;
  /** The pinned reference recorded with the tag. */
  unsignedFrom: string;
  imported: Pick<ImportResult, 'layers' | 'entries' | 'objects' | 'objectsNew' | 'imageSize' | 'seconds'>;
  /** Bytes received from the registry (headers included). */
  received: number;
  /** Sum of the compressed layer sizes the manifest declares. */
  layerBytes: number;
}

/** Local name of a registry reference: REPO, and the tag (a digest reference: sha256-<hex>). */
export function localNameOf(ref: string): { name: string; tag: string } {
  const r = parseRegistryRef(ref);
  return { name: r.repo, tag: r.digest ? `sha256-${r.digest.slice(7)}` : (r.tag ?? 'latest') };
}

/** Build `ref` here (see the file comment); `transport`: the command's network options. */
export async function buildUnsigned(ref: string, store: Store, opts: { platform?: string; transport?: TransportOptions } = {}): Promise<UnsignedBuild> {
  const r = parseRegistryRef(ref);
  const { name, tag } = localNameOf(ref);
  const { openSource } = await import('../oci/source.js');
  const { importImage } = await import('../oci/import.js');
  const source = await openSource(ref, { platform: opts.platform, transport: opts.transport });
  const imp = await importImage(source, store, { name, tag });
  const pinned = `docker://${r.host}/${r.repo}@${imp.manifest ?? r.digest}`;
  const rec = await store.getTagRecord(name, tag);
  if (rec) await store.setTag(name, tag, rec.image, { ...rec.meta, unsignedFrom: pinned });
  const client = (source as { client?: { stats(): { received: number } } }).client;
  const layers = source.kind === 'layers' ? source.layers : [];
  return {
    name,
    tag,
    image: imp.image.toString('hex'),
    manifest: imp.manifest ?? null,
    unsignedFrom: pinned,
    imported: { layers: imp.layers, entries: imp.entries, objects: imp.objects, objectsNew: imp.objectsNew, imageSize: imp.imageSize, seconds: imp.seconds },
    received: client?.stats().received ?? 0,
    layerBytes: layers.reduce((n, l) => n + ((l as { size?: number }).size ?? 0), 0),
  };
}
