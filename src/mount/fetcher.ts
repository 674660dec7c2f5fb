/**
 * Lazy pull: where a FUSE mount gets an object that is not in the store yet. An
 * `ObjectFetcher` puts the object into the local objects directory (verified against its
 * digest before it becomes visible, as every add to the store is); the mount then opens it and
 * verifies it again as it reads.
 *
 * Backends: another objects directory or store on a reachable filesystem (`DirectoryFetcher`),
 * and a cfsdist server or registry through the pull client (`src/client`), loaded on demand.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { toHex } from '../verity/digest.js';
import { MountError } from './errors.js';

/** Gets one object into the local objects directory; resolves once it is there, verified. */
export interface ObjectFetcher {
  /** Fetch the object with this fs-verity digest (32 bytes). */
  fetch(digest: Buffer): Promise<void>;
}

/** The part of the store's ObjectDir a fetcher writes through. */
export interface ObjectSink {
  /** Add a file's content, rejecting content whose digest is not `expected`. */
  addFile(path: string, opts: { expected?: Buffer }): Promise<unknown>;
}

/** Copies objects from another objects directory (DIR/xx/<62 hex>) into the store. */
export class DirectoryFetcher implements ObjectFetcher {
  /** Hex digests fetched, in order. */
  readonly fetched: string[] = [];

  constructor(
    readonly sourceDir: string,
    private readonly sink: ObjectSink,
  ) {}

  async fetch(digest: Buffer): Promise<void> {
    const hex = toHex(digest);
    const src = join(this.sourceDir, hex.slice(0, 2), hex.slice(2));
    if (!existsSync(src)) throw new MountError('OBJECT_MISSING', `object ${hex} is not in the remote ${this.sourceDir} either`);
    await this.sink.addFile(src, { expected: digest });
    this.fetched.push(hex);
  }
}

/** Signature the pull client module is expected to export for lazy pulls. */
export type CreateObjectFetcher = (remote: string, opts: { store: unknown }) => ObjectFetcher | Promise<ObjectFetcher>;

/**
 * A fetcher for `--remote`: a directory (a store, or an objects directory) is read directly;
 * `http(s)://…` and `docker://…` go through the pull client, which must export
 * `createObjectFetcher(remote, { store })` from `src/client/index.ts`.
 */
export async function openRemote(remote: string, store: { objects: ObjectSink }): Promise<ObjectFetcher> {
  if (/^(https?|docker):\/\//.test(remote)) {
    const modPath = '../client/index.js';
    let mod: { createObjectFetcher?: CreateObjectFetcher };
    try {
      mod = (await import(modPath)) as { createObjectFetcher?: CreateObjectFetcher };
    } catch (e) {
      throw new MountError('NO_PULL_CLIENT', `lazy pull from ${remote} needs the pull client (src/client), which could not be loaded: ${(e as Error).message}`);
    }
    if (typeof mod.createObjectFetcher !== 'function') {
      throw new MountError('NO_PULL_CLIENT', `lazy pull from ${remote}: the pull client does not export createObjectFetcher(remote, { store })`);
    }
    return await mod.createObjectFetcher(remote, { store });
  }
  const dir = remote.startsWith('file://') ? remote.slice(7) : remote.startsWith('dir:') ? remote.slice(4) : remote;
  let objects = dir;
  if (existsSync(join(dir, 'objects')) && statSync(join(dir, 'objects')).isDirectory()) objects = join(dir, 'objects');
  if (!existsSync(objects) || !statSync(objects).isDirectory()) throw new MountError('BAD_REMOTE', `--remote ${remote}: not a URL, a store or an objects directory`);
  return new DirectoryFetcher(objects, store.objects);
}
