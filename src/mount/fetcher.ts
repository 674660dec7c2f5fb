/**
 * Lazy pull: where a FUSE mount gets an object that is not in the store yet. An
 * `ObjectFetcher` puts the object into the local objects directory (verified against its
 * digest before it becomes visible, as every add to the store is); the mount then opens it and
 * verifies it again as it reads.
 *
 * Backends: another objects directory or store on a reachable filesystem (`DirectoryFetcher`),
 * and a cfsdist server through the pull client's `HttpRemote` (`RemoteFetcher`, loaded on
 * demand; one request per object, as the files are opened).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { toHex } from '../verity/digest.js';
import type { TransportOptions } from '../client/transport.js';
import { MountError } from './errors.js';

/** Gets one object into the local objects directory; resolves once it is there, verified. */
export interface ObjectFetcher {
  /** Fetch the object with this fs-verity digest (32 bytes) and size (from the image); stop
   * (reject) when `signal` aborts, where the backend can. */
  fetch(digest: Buffer, size: number, signal?: AbortSignal): Promise<void>;
  /** Release connections (optional). */
  close?(): void;
}

/** Default overall deadline of one lazy fetch (`fetchWithDeadline`). */
export const FETCH_DEADLINE_MS = 60_000;

/** A lazy fetch that did not finish within its deadline. */
export class FetchTimeoutError extends MountError {
  constructor(message: string) {
    super('FETCH_TIMEOUT', message);
  }
}

/**
 * Fetch one object through `fetcher`, giving up after `deadlineMs`: the fetch's signal aborts
 * and the promise rejects with FetchTimeoutError then, even if the fetcher ignores the signal
 * (its fetch may still finish in the background; the store verifies whatever it adds). Aborting
 * `signal` ends it early the same way, with the signal's reason.
 */
export function fetchWithDeadline(fetcher: ObjectFetcher, digest: Buffer, size: number, deadlineMs: number, signal?: AbortSignal): Promise<void> {
  const ctl = new AbortController();
  const what = `fetching object ${toHex(digest)}`;
  return new Promise<void>((resolve, reject) => {
    const stop = (e: Error): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      ctl.abort(e);
      reject(e);
    };
    const onAbort = (): void => stop(signal?.reason instanceof Error ? signal.reason : new MountError('FETCH_ABORTED', `${what} was cancelled`));
    const timer = setTimeout(() => stop(new FetchTimeoutError(`${what} took longer than its deadline of ${deadlineMs} ms`)), deadlineMs);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    fetcher.fetch(digest, size, ctl.signal).then(
      () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
      (e: unknown) => stop(e instanceof Error ? e : new Error(String(e))),
    );
  });
}

/** The part of the store's ObjectDir a fetcher writes through. */
export interface ObjectSink {
  /** Add a file's content, rejecting content whose digest is not `expected`. */
  addFile(path: string, opts: { expected?: Buffer }): Promise<unknown>;
  /** Add streamed content, rejecting content whose digest or size is not the expected one. */
  addStream(src: AsyncIterable<Uint8Array>, opts: { expected?: Buffer; size?: number }): Promise<unknown>;
}

/** Copies objects from another objects directory (DIR/xx/<62 hex>) into the store. */
export class DirectoryFetcher implements ObjectFetcher {
  /** Hex digests fetched, in order. */
  readonly fetched: string[] = [];

  constructor(
    readonly sourceDir: string,
    private readonly sink: ObjectSink,
  ) {}

  async fetch(digest: Buffer, _size?: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const hex = toHex(digest);
    const src = join(this.sourceDir, hex.slice(0, 2), hex.slice(2));
    if (!existsSync(src)) throw new MountError('OBJECT_MISSING', `object ${hex} is not in the remote ${this.sourceDir} either`);
    await this.sink.addFile(src, { expected: digest });
    this.fetched.push(hex);
  }
}

/** What the fetcher needs of a remote (the pull client's `Remote`). */
export interface ObjectSource {
  readonly location: string;
  fetchObjects(objects: { digest: Buffer; size: number }[], signal?: AbortSignal): AsyncIterable<{ digest: Buffer; size: number; body: AsyncIterable<Buffer> }>;
  close(): void;
}

/** Fetches single objects from a remote through the pull client, one request each. */
export class RemoteFetcher implements ObjectFetcher {
  /** Hex digests fetched, in order. */
  readonly fetched: string[] = [];

  constructor(
    readonly remote: ObjectSource,
    private readonly sink: ObjectSink,
  ) {}

  async fetch(digest: Buffer, size: number, signal?: AbortSignal): Promise<void> {
    let got = false;
    for await (const o of this.remote.fetchObjects([{ digest, size }], signal)) {
      if (!o.digest.equals(digest)) throw new MountError('REMOTE_PROTOCOL', `${this.remote.location} sent object ${toHex(o.digest)} when asked for ${toHex(digest)}`);
      // The store checks digest and size before the object becomes visible.
      await this.sink.addStream(o.body, { expected: digest, size });
      got = true;
    }
    if (!got) throw new MountError('OBJECT_MISSING', `${this.remote.location} did not send object ${toHex(digest)}`);
    this.fetched.push(toHex(digest));
  }

  close(): void {
    this.remote.close();
  }
}

/**
 * A fetcher for `--remote`: `http(s)://HOST:PORT` is a cfsdist server reached through the pull
 * client (src/client); a directory (a store, or an objects directory) is read directly.
 */
export async function openRemote(remote: string, store: { objects: ObjectSink }, transport?: TransportOptions): Promise<ObjectFetcher> {
  if (/^https?:\/\//.test(remote)) {
    const { HttpRemote } = await import('../client/http-remote.js');
    const { parseRemoteBase } = await import('../client/remote.js');
    return new RemoteFetcher(new HttpRemote(parseRemoteBase(remote), { transport }), store.objects);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//.test(remote) && !remote.startsWith('file://')) {
    throw new MountError('BAD_REMOTE', `--remote ${remote}: only cfsdist servers (http(s)://HOST:PORT) and local stores are supported for lazy pulls`);
  }
  const dir = remote.startsWith('file://') ? remote.slice(7) : remote.startsWith('dir:') ? remote.slice(4) : remote;
  let objects = dir;
  if (existsSync(join(dir, 'objects')) && statSync(join(dir, 'objects')).isDirectory()) objects = join(dir, 'objects');
  if (!existsSync(objects) || !statSync(objects).isDirectory()) throw new MountError('BAD_REMOTE', `--remote ${remote}: not a URL, a store or an objects directory`);
  return new DirectoryFetcher(objects, store.objects);
}
