/**
 * `oci:DIR[:REF]` — an OCI image layout (image-spec image-layout.md): `oci-layout`,
 * `index.json`, `blobs/<alg>/<hex>`. REF is an `org.opencontainers.image.ref.name` annotation
 * or a manifest digest; without REF the index must hold exactly one image. A multi-platform
 * index (nested or not) is resolved with `platform` (default this machine's, linux/<arch>). Every JSON blob is
 * checked against its digest before it is used; layer blobs while they stream.
 */
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SourceError } from './errors.js';
import { compressionOfMediaType } from './decompress.js';
import {
  MAX_JSON, hostPlatform, parseDigest, parseJson, parsePlatform, requireDir, sha256Digest, verified,
  type ImageConfig, type LayeredSource, type SourceLayer, type SourceOptions,
} from './source.js';
import { createHash } from 'node:crypto';

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType?: string;
  digest: string;
  size?: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
  urls?: string[];
}

interface IndexJson {
  schemaVersion?: number;
  mediaType?: string;
  manifests?: Descriptor[];
}

interface ManifestJson {
  schemaVersion?: number;
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
}

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);
const REF_NAME = 'org.opencontainers.image.ref.name';

/** Open an OCI layout directory as a layered source. */
export async function openOciLayout(dir: string, ref: string | undefined, opts: SourceOptions = {}): Promise<LayeredSource> {
  const name = `oci:${dir}${ref ? ':' + ref : ''}`;
  requireDir(dir, name);
  const layoutFile = join(dir, 'oci-layout');
  let layout: { imageLayoutVersion?: string };
  try {
    layout = parseJson(readFileSync(layoutFile), layoutFile);
  } catch (err) {
    if (err instanceof SourceError) throw err;
    throw new SourceError('NOT_OCI_LAYOUT', `${name}: ${dir} is not an OCI image layout (no oci-layout file)`);
  }
  if (typeof layout.imageLayoutVersion !== 'string' || !layout.imageLayoutVersion.startsWith('1.')) {
    throw new SourceError('NOT_OCI_LAYOUT', `${layoutFile}: unsupported imageLayoutVersion ${JSON.stringify(layout.imageLayoutVersion)}`);
  }
  const indexFile = join(dir, 'index.json');
  let index: IndexJson;
  try {
    index = parseJson(readFileSync(indexFile), indexFile);
  } catch (err) {
    if (err instanceof SourceError) throw err;
    throw new SourceError('NOT_OCI_LAYOUT', `${name}: cannot read ${indexFile}: ${(err as Error).message}`);
  }
  const entries = Array.isArray(index.manifests) ? index.manifests : [];
  let desc: Descriptor | undefined;
  if (ref) {
    desc = /^sha(256|512):/.test(ref) ? entries.find((d) => d.digest === ref) : entries.find((d) => d.annotations?.[REF_NAME] === ref);
    if (!desc) {
      const names = entries.map((d) => d.annotations?.[REF_NAME]).filter((x): x is string => !!x);
      throw new SourceError('REF_NOT_FOUND', `${name}: no image named ${JSON.stringify(ref)} in ${indexFile} (has: ${names.join(', ') || 'no named images'})`);
    }
  } else if (entries.length === 1) {
    desc = entries[0];
  } else {
    const names = entries.map((d) => d.annotations?.[REF_NAME] ?? d.digest);
    throw new SourceError(entries.length ? 'REF_REQUIRED' : 'REF_NOT_FOUND', `${name}: ${entries.length} images in ${indexFile}; name one as oci:${dir}:REF (${names.join(', ')})`);
  }
  const platform = parsePlatform(opts.platform ?? hostPlatform());
  const blobs = new LayoutBlobs(dir, name);

  // Resolve nested indexes down to one image manifest.
  let manifest: ManifestJson | undefined;
  let manifestDigest: string | undefined;
  for (let depth = 0; depth < 8 && !manifest; depth++) {
    const bytes = blobs.readBytes(desc!, 'manifest');
    const doc = parseJson<ManifestJson>(bytes, `${name}: manifest ${desc!.digest}`);
    manifestDigest = sha256Digest(bytes);
    const isIndex = INDEX_TYPES.has(desc!.mediaType ?? '') || INDEX_TYPES.has(doc.mediaType ?? '') || (Array.isArray(doc.manifests) && !doc.layers);
    if (!isIndex) {
      manifest = doc;
      break;
    }
    desc = pickPlatform(doc.manifests ?? [], platform, `${name} (${desc!.digest})`);
  }
  if (!manifest) throw new SourceError('BAD_MANIFEST', `${name}: indexes nested too deeply`);
  if (!manifest.config || !Array.isArray(manifest.layers)) throw new SourceError('BAD_MANIFEST', `${name}: manifest ${desc!.digest} has no config or layers`);
  const configBytes = blobs.readBytes(manifest.config, 'config');
  const config = parseJson<ImageConfig>(configBytes, `${name}: config ${manifest.config.digest}`);
  const diffIds = config.rootfs?.diff_ids;
  if (diffIds && diffIds.length !== manifest.layers.length) {
    throw new SourceError('BAD_CONFIG', `${name}: config lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers`);
  }
  const layers: SourceLayer[] = manifest.layers.map((l, i) => blobs.layer(l, diffIds?.[i], i));
  return { kind: 'layers', name, config, configBytes, manifestDigest, layers, close: async () => undefined };
}

/** Choose a manifest from an index by platform; attestation entries are skipped. */
export function pickPlatform(list: Descriptor[], want: { os: string; architecture: string; variant?: string }, what: string): Descriptor {
  const candidates = list.filter((d) => d.platform && d.platform.os === want.os && d.platform.architecture === want.architecture && (!want.variant || d.platform.variant === want.variant));
  if (candidates.length > 0) return candidates[0]!;
  if (list.length === 1 && !list[0]!.platform) return list[0]!;
  const have = list.map((d) => d.platform ? [d.platform.os, d.platform.architecture, d.platform.variant].filter(Boolean).join('/') : '?').join(', ');
  throw new SourceError('PLATFORM_NOT_FOUND', `${what}: no manifest for ${[want.os, want.architecture, want.variant].filter(Boolean).join('/')} (has: ${have})`);
}

/** Blob access in a layout directory. */
class LayoutBlobs {
  constructor(private readonly dir: string, private readonly name: string) {}

  path(desc: Descriptor, what: string): string {
    const { alg, hex } = parseDigest(desc?.digest, `${this.name}: ${what}`);
    return join(this.dir, 'blobs', alg, hex);
  }

  readJson<T>(desc: Descriptor, what: string): T {
    return parseJson<T>(this.readBytes(desc, what), `${this.name}: ${what} ${desc.digest}`);
  }

  /** A small blob's bytes, checked against the descriptor. */
  readBytes(desc: Descriptor, what: string): Buffer {
    const p = this.path(desc, what);
    let st;
    try {
      st = statSync(p);
    } catch {
      throw new SourceError('BLOB_MISSING', `${this.name}: ${what} blob ${desc.digest} is missing (${p})`);
    }
    if (st.size > MAX_JSON) throw new SourceError('BLOB_TOO_LARGE', `${this.name}: ${what} blob ${desc.digest} is ${st.size} bytes`);
    const data = readFileSync(p);
    const { alg, hex } = parseDigest(desc.digest, what);
    if (createHash(alg).update(data).digest('hex') !== hex) throw new SourceError('DIGEST_MISMATCH', `${this.name}: ${what} blob ${p} does not match its digest ${desc.digest}`);
    if (desc.size !== undefined && desc.size !== data.length) throw new SourceError('SIZE_MISMATCH', `${this.name}: ${what} blob ${desc.digest} is ${data.length} bytes, descriptor says ${desc.size}`);
    return data;
  }

  layer(desc: Descriptor, diffId: string | undefined, i: number): SourceLayer {
    const what = `${this.name}: layer ${i + 1} (${desc?.digest})`;
    const mediaType = desc.mediaType ?? '';
    if (mediaType && compressionOfMediaType(mediaType) === undefined) {
      throw new SourceError('UNSUPPORTED_LAYER', `${what}: unsupported layer media type ${mediaType}`);
    }
    const p = this.path(desc, `layer ${i + 1}`);
    let size: number;
    try {
      size = statSync(p).size;
    } catch {
      throw new SourceError('BLOB_MISSING', `${what}: blob is missing (${p})`);
    }
    if (desc.size !== undefined && desc.size !== size) throw new SourceError('SIZE_MISMATCH', `${what}: blob is ${size} bytes, descriptor says ${desc.size}`);
    if (diffId !== undefined) parseDigest(diffId, `${what} diff_id`);
    return {
      mediaType,
      digest: desc.digest,
      size,
      diffId,
      open: () => verified(createReadStream(p, { highWaterMark: 1 << 20 }), { digest: desc.digest, size, what }),
      openRaw: () => createReadStream(p, { highWaterMark: 1 << 20 }),
    };
  }
}
