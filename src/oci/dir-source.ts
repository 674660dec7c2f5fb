/**
 * `dir:PATH` — two things carry that name, told apart by content:
 *
 * - a skopeo `dir:` directory (`version` says "Directory Transport Version", `manifest.json`,
 *   blobs named by their hex digest): read as a layered image, like an OCI layout;
 * - any other directory: a root filesystem, imported as one tree the way `mkcomposefs DIR`
 *   reads it (a `DirectorySource`).
 */
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { SourceError } from './errors.js';
import { compressionOfMediaType } from './decompress.js';
import { pickPlatform, type Descriptor } from './oci-layout.js';
import {
  MAX_JSON, hostPlatform, parseDigest, parseJson, parsePlatform, requireDir, sha256Digest, verified,
  type DirectorySource, type ImageConfig, type LayeredSource, type SourceLayer, type SourceOptions,
} from './source.js';

interface ManifestJson {
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
}

/** Open `dir:PATH`. */
export async function openDirSource(path: string, opts: SourceOptions = {}): Promise<LayeredSource | DirectorySource> {
  const name = `dir:${path}`;
  requireDir(path, name);
  const version = join(path, 'version');
  if (existsSync(version) && existsSync(join(path, 'manifest.json')) && readFileSync(version, 'latin1').startsWith('Directory Transport Version')) {
    return openSkopeoDir(path, name, opts);
  }
  return { kind: 'directory', name, path, close: async () => undefined };
}

function readBlob(path: string, name: string, desc: Descriptor, what: string): Buffer {
  const { alg, hex } = parseDigest(desc?.digest, `${name}: ${what}`);
  const p = join(path, hex);
  let size: number;
  try {
    size = statSync(p).size;
  } catch {
    throw new SourceError('BLOB_MISSING', `${name}: ${what} blob ${desc.digest} is missing (${p})`);
  }
  if (size > MAX_JSON) throw new SourceError('BLOB_TOO_LARGE', `${name}: ${what} blob is ${size} bytes`);
  const data = readFileSync(p);
  if (createHash(alg).update(data).digest('hex') !== hex) throw new SourceError('DIGEST_MISMATCH', `${name}: ${what} blob ${p} does not match its digest`);
  return data;
}

function openSkopeoDir(path: string, name: string, opts: SourceOptions): LayeredSource {
  const mfile = join(path, 'manifest.json');
  if (statSync(mfile).size > MAX_JSON) throw new SourceError('BLOB_TOO_LARGE', `${mfile} is too large`);
  let manifestBytes = readFileSync(mfile);
  let manifest = parseJson<ManifestJson>(manifestBytes, mfile);
  if (Array.isArray(manifest.manifests) && !manifest.layers) {
    // `skopeo copy --all`: a list, with each instance in <hex>.manifest.json.
    const d = pickPlatform(manifest.manifests, parsePlatform(opts.platform ?? hostPlatform()), name);
    const { alg, hex } = parseDigest(d.digest, `${name}: manifest`);
    const p = join(path, `${hex}.manifest.json`);
    if (!existsSync(p)) throw new SourceError('BLOB_MISSING', `${name}: manifest ${d.digest} is missing (${p})`);
    const data = readFileSync(p);
    if (createHash(alg).update(data).digest('hex') !== hex) throw new SourceError('DIGEST_MISMATCH', `${name}: ${p} does not match its digest`);
    manifest = parseJson<ManifestJson>(data, p);
    manifestBytes = data;
  }
  if (!manifest.config || !Array.isArray(manifest.layers)) throw new SourceError('BAD_MANIFEST', `${mfile}: no config or layers`);
  const configBytes = readBlob(path, name, manifest.config, 'config');
  const config = parseJson<ImageConfig>(configBytes, `${name}: config`);
  const diffIds = config.rootfs?.diff_ids;
  if (diffIds && diffIds.length !== manifest.layers.length) throw new SourceError('BAD_CONFIG', `${name}: config lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers`);
  const layers: SourceLayer[] = manifest.layers.map((l, i) => {
    const what = `${name}: layer ${i + 1} (${l?.digest})`;
    const mediaType = l.mediaType ?? '';
    if (mediaType && compressionOfMediaType(mediaType) === undefined) throw new SourceError('UNSUPPORTED_LAYER', `${what}: unsupported layer media type ${mediaType}`);
    const { hex } = parseDigest(l.digest, what);
    const p = join(path, hex);
    let size: number;
    try {
      size = statSync(p).size;
    } catch {
      throw new SourceError('BLOB_MISSING', `${what}: blob is missing (${p})`);
    }
    if (l.size !== undefined && l.size !== size) throw new SourceError('SIZE_MISMATCH', `${what}: blob is ${size} bytes, descriptor says ${l.size}`);
    const diffId = diffIds?.[i];
    if (diffId !== undefined) parseDigest(diffId, `${what} diff_id`);
    return {
      mediaType, digest: l.digest, size, diffId,
      open: () => verified(createReadStream(p, { highWaterMark: 1 << 20 }), { digest: l.digest, size, what }),
      openRaw: () => createReadStream(p, { highWaterMark: 1 << 20 }),
    };
  });
  return { kind: 'layers', name, config, configBytes, manifestDigest: sha256Digest(manifestBytes), layers, close: async () => undefined };
}
