/**
 * Image sources, go-containerregistry style: whatever a source is (an OCI layout, a
 * `docker save` archive, a skopeo `dir:` directory), the importer sees the same thing — a
 * config and a list of layers, lowest first, each with a media type, digests and a stream of
 * its bytes. Digests are verified while the bytes stream: a mismatch fails the stream at its
 * end, before the importer can register anything.
 *
 * A plain directory (`dir:PATH` that is not a skopeo directory) is not a layered image; it is
 * imported the way `mkcomposefs DIR` reads a tree (`DirectorySource`).
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { SourceError } from './errors.js';
import type { TransportOptions } from '../client/transport.js';

/** One layer of an image. */
export interface SourceLayer {
  /** Media type as the manifest gives it ('' when the source has none, e.g. docker-archive). */
  mediaType: string;
  /** Digest of the blob as stored (`sha256:…`), verified while streaming; undefined when the
   *  source does not name one. */
  digest?: string;
  /** Size of the blob in bytes, if known (checked while streaming). */
  size?: number;
  /** Digest of the uncompressed tar (config `rootfs.diff_ids`), verified by the importer. */
  diffId?: string;
  /** The blob's bytes. Throws SourceError at the end on a digest or size mismatch. */
  open(): AsyncIterable<Buffer>;
  /** The blob's bytes unchecked, for a caller that verifies `digest` and `size` itself (the
   *  importer does it off the main thread). */
  openRaw?(): AsyncIterable<Buffer>;
}

/** A layered image. */
export interface LayeredSource {
  kind: 'layers';
  /** How the user named it, for messages. */
  name: string;
  /** The image config (OCI/Docker config JSON), if the source has one. */
  config?: ImageConfig;
  /** The config exactly as published (kept and signed with the image: `run` starts it). */
  configBytes?: Buffer;
  /** `sha256:<hex>` of the image manifest the layers came from, where the source has one. */
  manifestDigest?: string;
  /** `sha256:<hex>` of the multi-platform index the manifest was picked from, if any. */
  indexDigest?: string;
  /** Layers, lowest first. */
  layers: SourceLayer[];
  /** Release what the source holds open. */
  close(): Promise<void>;
}

/** A plain directory imported as one tree (mkcomposefs semantics). */
export interface DirectorySource {
  kind: 'directory';
  name: string;
  path: string;
  close(): Promise<void>;
}

/** Anything `importImage` accepts. */
export type ImageSource = LayeredSource | DirectorySource;

/** The parts of an image config the importer looks at. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  rootfs?: { type?: string; diff_ids?: string[] };
  [k: string]: unknown;
}

/** `os/arch[/variant]` of an image config, if it names os and architecture. */
export function configPlatform(config: ImageConfig | undefined): string | undefined {
  if (!config || typeof config.os !== 'string' || typeof config.architecture !== 'string' || !config.os || !config.architecture) return undefined;
  const v = typeof config.variant === 'string' && config.variant ? `/${config.variant}` : '';
  return `${config.os}/${config.architecture}${v}`;
}

/** The SHA-256 digest (`sha256:<hex>`) of bytes. */
export function sha256Digest(bytes: Buffer): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex');
}

/** Options for opening a source. */
export interface SourceOptions {
  /** For multi-platform indexes: `os/arch[/variant]` (default: this machine's, hostPlatform()). */
  platform?: string;
  /** docker:// sources: CAs, --tls-verify, proxies, --insecure-registry, --creds. */
  transport?: TransportOptions;
  /** docker:// sources: plain http to the registry. */
  insecure?: boolean;
}

/** Largest JSON document (index, manifest, config) read from a source. */
export const MAX_JSON = 16 << 20;

const DIGEST_RE = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

/** Split and validate `alg:hex` (only sha256 and sha512, lowercase — so a digest can safely
 *  name a file). */
export function parseDigest(d: unknown, what: string): { alg: 'sha256' | 'sha512'; hex: string } {
  if (typeof d !== 'string' || !DIGEST_RE.test(d)) throw new SourceError('BAD_DIGEST', `${what}: invalid digest ${JSON.stringify(d)?.slice(0, 100)}`);
  const i = d.indexOf(':');
  return { alg: d.slice(0, i) as 'sha256' | 'sha512', hex: d.slice(i + 1) };
}

/** Pass bytes through, checking their digest and size at the end. */
export async function* verified(src: AsyncIterable<Uint8Array>, opts: { digest?: string; size?: number; what: string }): AsyncGenerator<Buffer> {
  const d = opts.digest ? parseDigest(opts.digest, opts.what) : undefined;
  const h = d ? createHash(d.alg) : undefined;
  let n = 0;
  for await (const c of src) {
    const b = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.length);
    h?.update(b);
    n += b.length;
    if (opts.size !== undefined && n > opts.size) throw new SourceError('SIZE_MISMATCH', `${opts.what}: more than the ${opts.size} bytes its descriptor gives`);
    yield b;
  }
  if (opts.size !== undefined && n !== opts.size) throw new SourceError('SIZE_MISMATCH', `${opts.what}: ${n} bytes, descriptor says ${opts.size}`);
  if (d && h!.digest('hex') !== d.hex) throw new SourceError('DIGEST_MISMATCH', `${opts.what}: content does not match digest ${opts.digest}`);
}

/** Parse JSON bytes from a source, with a useful error. */
export function parseJson<T>(data: Buffer, what: string): T {
  try {
    return JSON.parse(data.toString('utf8')) as T;
  } catch (err) {
    throw new SourceError('BAD_JSON', `${what}: invalid JSON (${(err as Error).message})`);
  }
}

/** Parse `os/arch[/variant]`. */
export function parsePlatform(p: string): { os: string; architecture: string; variant?: string } {
  const parts = p.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => x === '')) throw new SourceError('BAD_PLATFORM', `invalid platform ${JSON.stringify(p)} (expected os/arch[/variant])`);
  return { os: parts[0]!, architecture: parts[1]!, variant: parts[2] };
}

/** Split `PATH[:REF]`. PATH and REF may both contain ':' (`dir:a:b`, `:sha256:…`,
 *  `:host/app:1.0`): the longest prefix that exists on disk is the path; if none does, the
 *  first ':' separates them. */
export function splitPathRef(spec: string): { path: string; ref?: string } {
  if (existsSync(spec)) return { path: spec };
  for (let i = spec.lastIndexOf(':'); i > 0; i = spec.lastIndexOf(':', i - 1)) {
    if (existsSync(spec.slice(0, i))) return { path: spec.slice(0, i), ref: spec.slice(i + 1) || undefined };
  }
  const i = spec.indexOf(':');
  if (i <= 0) return { path: spec };
  return { path: spec.slice(0, i), ref: spec.slice(i + 1) || undefined };
}

/** Open `oci:DIR[:REF]`, `docker-archive:FILE[:REF]`, `dir:PATH` or `docker://HOST[:PORT]/REPO:TAG`. */
export async function openSource(spec: string, opts: SourceOptions = {}): Promise<ImageSource> {
  const m = /^([a-z-]+):(.*)$/.exec(spec);
  if (!m || !m[2]) throw new SourceError('BAD_SOURCE', `invalid source ${JSON.stringify(spec)}: expected oci:DIR[:REF], docker-archive:FILE[:REF] or dir:PATH`);
  const [, transport, rest] = m;
  switch (transport) {
    case 'oci': {
      const { openOciLayout } = await import('./oci-layout.js');
      const { path, ref } = splitPathRef(rest!);
      return openOciLayout(path, ref, opts);
    }
    case 'docker-archive': {
      const { openDockerArchive } = await import('./docker-archive.js');
      const { path, ref } = splitPathRef(rest!);
      return openDockerArchive(path, ref);
    }
    case 'dir': {
      const { openDirSource } = await import('./dir-source.js');
      return openDirSource(rest!, opts);
    }
    case 'docker': {
      // docker://HOST[:PORT]/REPO:TAG — an ordinary image in an OCI registry (src/registry).
      const { parseRegistryRef } = await import('../registry/ref.js');
      const { openRegistryImage } = await import('../registry/source.js');
      return openRegistryImage(parseRegistryRef(spec, { insecure: opts.insecure, transport: opts.transport }), { platform: opts.platform, transport: opts.transport });
    }
    default:
      throw new SourceError('BAD_SOURCE', `unknown source transport ${JSON.stringify(transport)}: expected oci:, docker-archive:, dir: or docker://`);
  }
}

/** Fail unless `path` is an existing directory. */
export function requireDir(path: string, what: string): void {
  let ok = false;
  try {
    ok = statSync(path).isDirectory();
  } catch {
    ok = false;
  }
  if (!ok) throw new SourceError('SOURCE_MISSING', `${what}: ${path} is not a directory`);
}

/** The OCI architecture name of this machine (Node's process.arch in OCI's spelling). */
export function hostArchitecture(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', loong64: 'loong64' };
  return map[process.arch] ?? process.arch;
}

/** The platform picked from multi-platform images by default: `linux/<this machine's arch>`. */
export function hostPlatform(): string {
  return `linux/${hostArchitecture()}`;
}
