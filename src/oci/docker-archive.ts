/**
 * `docker-archive:FILE[:REF]` — what `docker save` and `skopeo copy … docker-archive:` write:
 * a tar holding `manifest.json` (`[{Config, RepoTags, Layers}]`), the config JSON and one tar
 * per layer (older docker: `<id>/layer.tar`, possibly symlinks or hardlinks between identical
 * layers; newer: `blobs/sha256/<hex>`).
 *
 * The archive is read twice and never held in memory: one pass indexes member offsets (and
 * reads manifest.json), then each layer is streamed straight from its byte range of FILE.
 * Layers are verified against the config's diff_ids (by the importer) and, where the member
 * is named by its digest (`blobs/sha256/<hex>`), against that digest too.
 */
import { createReadStream, statSync, openSync, readSync, closeSync } from 'node:fs';
import { posix } from 'node:path';
import { SourceError } from './errors.js';
import { readBody, readTar, type TarEntry } from './tar.js';
import { MAX_JSON, parseDigest, parseJson, verified, type ImageConfig, type LayeredSource, type SourceLayer } from './source.js';
import { CfsError } from '../errors.js';

interface Member {
  type: TarEntry['type'];
  dataOffset: number;
  size: number;
  linkpath: string;
}

interface ArchiveManifest {
  Config?: string;
  RepoTags?: string[] | null;
  Layers?: string[];
  LayerSources?: Record<string, { mediaType?: string; size?: number; digest?: string }>;
}

/** Open a docker-archive tar as a layered source. */
export async function openDockerArchive(file: string, ref?: string): Promise<LayeredSource> {
  const name = `docker-archive:${file}${ref ? ':' + ref : ''}`;
  let isFile = false;
  try {
    isFile = statSync(file).isFile();
  } catch {
    isFile = false;
  }
  if (!isFile) throw new SourceError('SOURCE_MISSING', `${name}: ${file} is not a file`);

  const members = new Map<string, Member>();
  let manifestBytes: Buffer | undefined;
  try {
    for await (const e of readTar(createReadStream(file, { highWaterMark: 1 << 20 }), { name: file })) {
      const p = norm(e.path.toString('utf8'));
      members.set(p, { type: e.type, dataOffset: e.dataOffset, size: e.size, linkpath: e.linkpath.toString('utf8') });
      if (p === 'manifest.json' && e.type === 'file') {
        if (e.size > MAX_JSON) throw new SourceError('BLOB_TOO_LARGE', `${name}: manifest.json is ${e.size} bytes`);
        manifestBytes = await readBody(e, MAX_JSON);
      }
    }
  } catch (err) {
    if (err instanceof CfsError) throw err;
    throw new SourceError('SOURCE_UNREADABLE', `${name}: ${(err as Error).message}`, { cause: err });
  }
  if (!manifestBytes) throw new SourceError('NOT_DOCKER_ARCHIVE', `${name}: no manifest.json in ${file} (not a docker save archive)`);
  const list = parseJson<ArchiveManifest[]>(manifestBytes, `${name}: manifest.json`);
  if (!Array.isArray(list) || list.length === 0) throw new SourceError('BAD_MANIFEST', `${name}: manifest.json lists no image`);
  let m: ArchiveManifest | undefined;
  if (ref) {
    const want = ref.includes(':') ? [ref] : [ref, `${ref}:latest`];
    m = list.find((x) => (x.RepoTags ?? []).some((t) => want.includes(t) || want.some((w) => t.endsWith('/' + w))));
    if (!m) throw new SourceError('REF_NOT_FOUND', `${name}: no image tagged ${ref} (has: ${list.flatMap((x) => x.RepoTags ?? []).join(', ') || 'untagged images'})`);
  } else if (list.length === 1) {
    m = list[0];
  } else {
    throw new SourceError('REF_REQUIRED', `${name}: ${list.length} images in the archive; name one as docker-archive:${file}:REF (${list.flatMap((x) => x.RepoTags ?? []).join(', ')})`);
  }
  if (typeof m!.Config !== 'string' || !Array.isArray(m!.Layers)) throw new SourceError('BAD_MANIFEST', `${name}: manifest.json entry has no Config or Layers`);

  const resolve = (p: string, what: string): Member => {
    let cur = norm(p);
    for (let hops = 0; hops < 16; hops++) {
      const mem = members.get(cur);
      if (!mem) break;
      if (mem.type === 'file') return mem;
      if (mem.type === 'symlink') cur = norm(posix.join(posix.dirname(cur), mem.linkpath));
      else if (mem.type === 'link') cur = norm(mem.linkpath);
      else break;
    }
    throw new SourceError('BLOB_MISSING', `${name}: ${what} ${p} is not in the archive`);
  };

  const cfgMember = resolve(m!.Config!, 'config');
  if (cfgMember.size > MAX_JSON) throw new SourceError('BLOB_TOO_LARGE', `${name}: config is ${cfgMember.size} bytes`);
  const cfgBytes = readRange(file, cfgMember.dataOffset, cfgMember.size);
  const cfgDigest = digestFromName(m!.Config!);
  if (cfgDigest) {
    const { createHash } = await import('node:crypto');
    const { alg, hex } = parseDigest(cfgDigest, 'config');
    if (createHash(alg).update(cfgBytes).digest('hex') !== hex) throw new SourceError('DIGEST_MISMATCH', `${name}: config ${m!.Config} does not match its digest`);
  }
  const config = parseJson<ImageConfig>(cfgBytes, `${name}: config ${m!.Config}`);
  const diffIds = config.rootfs?.diff_ids;
  if (diffIds && diffIds.length !== m!.Layers!.length) throw new SourceError('BAD_CONFIG', `${name}: config lists ${diffIds.length} diff_ids for ${m!.Layers!.length} layers`);

  const layers: SourceLayer[] = m!.Layers!.map((lp, i) => {
    const mem = resolve(lp, `layer ${i + 1}`);
    const digest = digestFromName(lp);
    const what = `${name}: layer ${i + 1} (${lp})`;
    const diffId = diffIds?.[i];
    if (diffId !== undefined) parseDigest(diffId, `${what} diff_id`);
    const src = m!.LayerSources && digest ? m!.LayerSources[digest] : undefined;
    const raw = (): AsyncIterable<Buffer> => (mem.size === 0 ? emptyStream() : createReadStream(file, { start: mem.dataOffset, end: mem.dataOffset + mem.size - 1, highWaterMark: 1 << 20 }));
    return {
      mediaType: src?.mediaType ?? '',
      digest,
      size: mem.size,
      diffId,
      open: () => verified(raw(), { digest, size: mem.size, what }),
      openRaw: raw,
    };
  });
  // A docker archive has no image manifest of its own (manifest.json is docker's index).
  return { kind: 'layers', name, config, configBytes: cfgBytes, layers, close: async () => undefined };
}

async function* emptyStream(): AsyncGenerator<Buffer> {}

function norm(p: string): string {
  const n = posix.normalize('/' + p).slice(1);
  return n.endsWith('/') ? n.slice(0, -1) : n;
}

/** `blobs/sha256/<hex>` or `<hex>.tar.gz`-style names carry their digest; others do not. */
function digestFromName(p: string): string | undefined {
  const m = /(?:^|\/)blobs\/(sha256|sha512)\/([0-9a-f]{64,128})$/.exec(norm(p));
  return m ? `${m[1]}:${m[2]}` : undefined;
}

function readRange(file: string, start: number, size: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const n = readSync(fd, buf, off, size - off, start + off);
      if (n === 0) throw new SourceError('SOURCE_UNREADABLE', `${file}: truncated at ${start + off}`);
      off += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}
