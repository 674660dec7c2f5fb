/**
 * `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` as an import source: an ordinary container image
 * (OCI or Docker schema 2; a multi-platform index is resolved with `platform`, default
 * linux/<this machine's arch>) read straight from a registry. Manifests and the config are checked against
 * their digests before use, layer blobs while they stream (as the other sources do).
 */
import { hostPlatform, parsePlatform, verified } from '../oci/source.js';
import type { ImageConfig, LayeredSource, SourceLayer, SourceOptions } from '../oci/source.js';
import { pickPlatform } from '../oci/oci-layout.js';
import { compressionOfMediaType } from '../oci/decompress.js';
import { SourceError } from '../oci/errors.js';
import { MANIFEST_TYPES, RegistryClient } from './client.js';
import type { Descriptor, FetchedManifest, RegistryClientOptions } from './client.js';
import { RegistryError } from './errors.js';
import type { RegistryRef } from './ref.js';

const INDEX_TYPES = new Set(['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json']);

/** A registry image as an import source; `client` stays open until close(). */
export async function openRegistryImage(ref: RegistryRef, opts: SourceOptions & RegistryClientOptions = {}): Promise<LayeredSource & { client: RegistryClient }> {
  const name = `docker://${ref.host}/${ref.repo}${ref.digest ? `@${ref.digest}` : `:${ref.tag ?? 'latest'}`}`;
  const client = new RegistryClient(ref.origin, opts);
  try {
    const platform = parsePlatform(opts.platform ?? hostPlatform());
    let m: FetchedManifest | undefined = await client.getManifest(ref.repo, ref.digest ?? ref.tag ?? 'latest', MANIFEST_TYPES);
    if (!m) throw new RegistryError('NOT_FOUND', `${name}: no such image in the registry`);
    let indexDigest: string | undefined;
    for (let depth = 0; depth < 8 && m && (INDEX_TYPES.has(m.mediaType) || (Array.isArray(m.json.manifests) && !m.json.layers)); depth++) {
      if (depth === 0 && m.digest.startsWith('sha256:')) indexDigest = m.digest;
      const d = pickPlatform((m.json.manifests as Descriptor[]) ?? [], platform, `${name} (${m.digest})`);
      m = await client.getManifest(ref.repo, d.digest, MANIFEST_TYPES);
      if (!m) throw new RegistryError('NOT_FOUND', `${name}: manifest ${d.digest} named by the index is missing`);
    }
    const j = m!.json as { config?: Descriptor; layers?: Descriptor[]; artifactType?: string };
    if (j.artifactType === 'application/vnd.cfsdist.image.v1') throw new SourceError('UNSUPPORTED_SOURCE', `${name} is a cfsdist image, not a container image: use cfsdist pull ${name}`);
    if (!j.config || !Array.isArray(j.layers)) throw new SourceError('BAD_MANIFEST', `${name}: manifest ${m!.digest} has no config or layers`);
    const configBytes = await client.readBlob(ref.repo, j.config.digest, 16 << 20);
    let config: ImageConfig;
    try {
      config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
    } catch {
      throw new SourceError('BAD_JSON', `${name}: config ${j.config.digest} is not JSON`);
    }
    const diffIds = config.rootfs?.diff_ids;
    if (diffIds && diffIds.length !== j.layers.length) throw new SourceError('BAD_CONFIG', `${name}: config lists ${diffIds.length} diff_ids for ${j.layers.length} layers`);
    const layers: SourceLayer[] = j.layers.map((l, i) => {
      const what = `${name}: layer ${i + 1} (${l.digest})`;
      if (typeof l.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(l.digest)) throw new SourceError('BAD_DIGEST', `${what}: invalid digest`);
      if (l.mediaType && compressionOfMediaType(l.mediaType) === undefined) throw new SourceError('UNSUPPORTED_LAYER', `${what}: unsupported layer media type ${l.mediaType}`);
      const raw = async function* (): AsyncGenerator<Buffer> {
        const r = await client.getBlob(ref.repo, l.digest);
        yield* r.body({ exact: l.size, what });
      };
      return { mediaType: l.mediaType ?? '', digest: l.digest, size: l.size, diffId: diffIds?.[i], open: () => verified(raw(), { digest: l.digest, size: l.size, what }), openRaw: raw };
    });
    return { kind: 'layers', name, config, configBytes, manifestDigest: m!.digest.startsWith('sha256:') ? m!.digest : undefined, indexDigest, layers, client, close: async () => client.close() };
  } catch (err) {
    client.close();
    throw err;
  }
}
