/**
 * Remotes: where images come from and go to. The pull and push pipelines see only these
 * interfaces, so another transport (an OCI registry, `docker://`) plugs in beside the cfsdist
 * HTTP server (http-remote.ts) without touching them.
 */
import type { ObjectRef } from '../sign/image-facts.js';
import { parseRef } from '../store/names.js';
import { PullError } from './errors.js';
import type { PackedOrStream } from './unpack.js';

/** One object arriving from a remote; `body` yields exactly `size` bytes and must be consumed
 * (or destroyed) before the next object is asked for. Its digest is NOT verified yet. */
export interface FetchedObject {
  digest: Buffer;
  size: number;
  body: AsyncIterable<Buffer> & { destroy?(): void };
}

/** Kinds of metadata delta: the tree delta (src/delta/delta.ts) and the zstd binary patch
 * (src/delta/zpatch.ts). */
export type DeltaKind = 'tree' | 'zpatch';

/** Byte counters of a transport. */
export interface WireStats {
  /** Bytes received (headers included where known). */
  received: number;
  /** Bytes sent. */
  sent: number;
  /** Requests made. */
  requests: number;
}

/** A source of signed images. */
export interface Remote {
  /** Printable location, e.g. http://127.0.0.1:8780 (recorded with accepted statements). */
  readonly location: string;
  /** The signed statement of NAME:TAG (envelope bytes), or undefined if there is none. */
  getStatement(name: string, tag: string): Promise<Buffer | undefined>;
  /**
   * Several candidate statements for NAME:TAG, newest first, where the remote can have more
   * than one (an OCI registry tag naming an ordinary image with cfsdist images attached as
   * referrers). `manifest`: the ordinary image manifest they must be signed for; `found`:
   * what the candidate is, for messages. The pull verifies them in order, takes the first
   * that verifies and calls selectStatement with its index; getStatement is then unused.
   */
  getStatements?(name: string, tag: string): Promise<{ envelope: Buffer; manifest?: string; found: string }[]>;
  /** Use candidate `i` of getStatements for the rest of the pull. */
  selectStatement?(i: number): void;
  /** The image's bytes: exactly `size` of them, else a TransportError. Not verified. */
  getImage(digest: Buffer, size: number, signal?: AbortSignal): AsyncIterable<Buffer>;
  /** The kernel fs-verity signature of an image, if the remote has one. */
  getFsveritySignature(digest: Buffer): Promise<Buffer | undefined>;
  /** The image config `digest` (`sha256:<hex>`) whose signed size is `size`: at most `size`
   * bytes are accepted (a TransportError beyond), undefined if the remote has none. Not
   * verified: the pull checks it against the statement. */
  getConfig(digest: string, size: number): Promise<Buffer | undefined>;
  /** A metadata delta of `kind` (default 'tree') from image `base` to image `target`
   * (src/delta), if the remote has one; at most `maxBytes`. Not trusted: the client checks what
   * it rebuilds against the statement. */
  getDelta?(base: Buffer, target: Buffer, maxBytes: number, kind?: DeltaKind): Promise<Buffer | undefined>;
  /** For each digest, whether the remote has that object (one round trip per 256 Ki digests). */
  has(digests: Buffer[]): Promise<boolean[]>;
  /** A hint, given while the image is being fetched, that objects of the statement's image will
   * probably be fetched next: the remote may start loading what it needs to place them. */
  prepareFetch?(expect?: { objects: number }): void;
  /** The objects, in any order, each exactly its size; every one of them, or an error. */
  fetchObjects(objects: ObjectRef[], signal?: AbortSignal): AsyncIterable<FetchedObject>;
  /** The same objects as compressed units as received (unpack.ts), so that the pull can
   * decompress, verify and write them on worker threads; objects too large to hold whole come
   * as streams. Optional: without it the pull uses fetchObjects. */
  fetchPacked?(objects: ObjectRef[], signal?: AbortSignal): AsyncIterable<PackedOrStream>;
  /** Bytes moved so far. */
  stats(): WireStats;
  /** Release connections. */
  close(): void;
}

/** An object to send: its digest, size, and a way to read it. */
export interface OutgoingObject {
  digest: Buffer;
  size: number;
  open(): Promise<AsyncIterable<Buffer> | Iterable<Buffer>>;
}

/** A destination of pushes. */
export interface PushTarget extends Remote {
  /** Upload objects (the remote verifies each); returns how many were new. */
  putObjects(objects: OutgoingObject[], signal?: AbortSignal): Promise<{ added: number; existed: number }>;
  /** Upload an image (the remote verifies it and that its objects are present). */
  putImage(digest: Buffer, path: string): Promise<void>;
  /** Upload a kernel fs-verity signature of an image. */
  putFsveritySignature(digest: Buffer, der: Buffer): Promise<void>;
  /** Upload an image config (the remote checks its digest), before the statement naming it. */
  putConfig(digest: string, bytes: Buffer): Promise<void>;
  /** Upload a metadata delta from image `base` to image `target` (before the statement that
   * names `target`), where the remote can carry deltas. */
  putDelta?(base: Buffer, target: Buffer, delta: Buffer, kind?: DeltaKind): Promise<void>;
  /** Upload a statement; this moves the remote's tag. */
  putStatement(name: string, tag: string, envelope: Buffer): Promise<void>;
}

/** A parsed `REMOTE/NAME[:TAG]` reference. */
export interface RemoteRef {
  /** scheme://host[:port] (no path). */
  base: string;
  name: string;
  tag: string;
}

/** Parse `http://HOST:PORT/NAME[:TAG]` (tag defaults to latest). */
export function parseRemoteRef(ref: string): RemoteRef {
  const m = /^(https?:\/\/[^/]+)\/(.+)$/.exec(ref);
  if (!m) {
    if (/^docker:\/\//.test(ref)) throw new PullError('BAD_REMOTE', `${ref}: a registry reference, not a cfsdist server's (open it with src/registry's openRegistryRemote)`);
    throw new PullError('BAD_REMOTE', `${JSON.stringify(ref)} is not a remote image reference (expected http://HOST:PORT/NAME:TAG)`);
  }
  const { name, tag } = parseRef(m[2]!);
  return { base: m[1]!, name, tag };
}

/** Parse a push destination `http://HOST:PORT` (a trailing slash is allowed). */
export function parseRemoteBase(url: string): string {
  const m = /^(https?:\/\/[^/]+)\/?$/.exec(url);
  if (!m) throw new PullError('BAD_REMOTE', `${JSON.stringify(url)} is not a cfsdist server URL (expected http://HOST:PORT)`);
  return m[1]!;
}
