/**
 * Where signing and trust data live in a store (directories of their own beside the store's
 * objects/, images/, tags/; every file written atomically: STORE/tmp/, fsync, rename):
 *
 *   STORE/signatures/<NAME>/:<TAG>.dsse        the current signed statement of NAME:TAG (DSSE
 *                                               JSON): written by `sign` and by a successful
 *                                               `pull`; what `serve` serves and `push` sends
 *   STORE/signatures/<NAME>/:<TAG>.history/<VERSION>.dsse
 *                                               every statement ever written for the tag
 *   STORE/signatures/<NAME>/:<TAG>.accepted    JSON {version, image, keyid, remote, at}: the
 *                                               last statement a pull accepted for NAME:TAG —
 *                                               the rollback floor (never lowered)
 *   STORE/fsverity-signatures/<IMAGE HEX>.p7s  kernel fs-verity builtin signature (DER PKCS#7)
 *                                               of an image, when one was made or pulled
 *   STORE/trust/*.pub                           public keys trusted by default by `pull` and
 *                                               `verify` (in addition to --trust files)
 *
 * NAME may contain `/` (nested directories); the `:` prefix keeps tag files apart from NAME
 * components, as in STORE/tags/.
 */
import { mkdir, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { writeTemp, fsyncDir } from '../store/atomic.js';
import { FSVERITY_SIGNATURES_DIR, checkName, checkTag } from '../store/names.js';
import { toHex } from '../verity/digest.js';
import type { AcceptedVersion } from './statement.js';
import type { ImageMeta, Store } from '../store/store.js';

/** The last accepted statement of a tag, as recorded. */
export interface AcceptedRecord extends AcceptedVersion {
  keyid: string;
  remote: string;
  /** RFC 3339 time of acceptance. */
  at: string;
}

async function readOptional(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** Signing and trust records of one store directory (layout in the file comment). */
export class SignRecords {
  /** The store directory. */
  readonly storeDir: string;
  /** STORE/signatures. */
  readonly signaturesDir: string;
  /** STORE/fsverity-signatures. */
  readonly fsveritySigDir: string;
  /** STORE/trust. */
  readonly trustDir: string;
  private tmpDir: string;

  constructor(storeDir: string) {
    this.storeDir = storeDir;
    this.signaturesDir = join(storeDir, 'signatures');
    this.fsveritySigDir = join(storeDir, FSVERITY_SIGNATURES_DIR);
    this.trustDir = join(storeDir, 'trust');
    this.tmpDir = join(storeDir, 'tmp');
  }

  private base(name: string, tag: string): string {
    checkName(name);
    checkTag(tag);
    return join(this.signaturesDir, name, ':' + tag);
  }

  /** Path of the current statement of NAME:TAG. */
  statementPath(name: string, tag: string): string {
    return this.base(name, tag) + '.dsse';
  }

  /** The current statement of NAME:TAG (envelope bytes), or undefined. */
  async readStatement(name: string, tag: string): Promise<Buffer | undefined> {
    return readOptional(this.statementPath(name, tag));
  }

  /** Make `bytes` the current statement of NAME:TAG and add it to the history. */
  async writeStatement(name: string, tag: string, version: number, bytes: Buffer): Promise<void> {
    await this.writeStatementVersion(name, tag, version, bytes);
    await this.writeCurrentStatement(name, tag, bytes);
  }

  /** Make `bytes` (already in the history) the current statement of NAME:TAG. */
  async writeCurrentStatement(name: string, tag: string, bytes: Buffer): Promise<void> {
    await this.writeAtomic(this.statementPath(name, tag), bytes);
  }

  /** Add `bytes` to the history of NAME:TAG as `version` (not made current). */
  async writeStatementVersion(name: string, tag: string, version: number, bytes: Buffer): Promise<void> {
    await this.writeAtomic(this.statementVersionPath(name, tag, version), bytes);
  }

  /** Path of statement `version` of NAME:TAG in the history. */
  statementVersionPath(name: string, tag: string, version: number): string {
    return join(this.base(name, tag) + '.history', `${version}.dsse`);
  }

  /** Statement `version` of NAME:TAG from the history, or undefined. */
  async readStatementVersion(name: string, tag: string, version: number): Promise<Buffer | undefined> {
    return readOptional(this.statementVersionPath(name, tag, version));
  }

  /** Versions in the history of NAME:TAG, ascending. */
  async historyVersions(name: string, tag: string): Promise<number[]> {
    const names = await readdir(this.base(name, tag) + '.history').catch(() => [] as string[]);
    return names
      .map((n) => /^(\d+)\.dsse$/.exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
  }

  /** The rollback floor of NAME:TAG, or undefined if no pull accepted a statement for it. */
  async readAccepted(name: string, tag: string): Promise<AcceptedRecord | undefined> {
    const path = this.base(name, tag) + '.accepted';
    const b = await readOptional(path);
    if (!b) return undefined;
    const v = JSON.parse(b.toString('utf8')) as AcceptedRecord;
    if (!Number.isSafeInteger(v.version) || typeof v.image !== 'string') throw new Error(`${path}: not an accepted-version record`);
    return v;
  }

  /** Record `rec` as the last accepted statement of NAME:TAG (never lowers the version). */
  async writeAccepted(name: string, tag: string, rec: AcceptedRecord): Promise<void> {
    const prev = await this.readAccepted(name, tag);
    if (prev && prev.version > rec.version) return;
    await this.writeAtomic(this.base(name, tag) + '.accepted', Buffer.from(JSON.stringify(rec) + '\n'));
  }

  /** Path of an image's kernel fs-verity signature. */
  fsveritySigPath(image: Buffer): string {
    return join(this.fsveritySigDir, toHex(image) + '.p7s');
  }

  /** An image's kernel fs-verity signature, or undefined. */
  async readFsveritySig(image: Buffer): Promise<Buffer | undefined> {
    return readOptional(this.fsveritySigPath(image));
  }

  /** Store an image's kernel fs-verity signature. */
  async writeFsveritySig(image: Buffer, der: Buffer): Promise<void> {
    await this.writeAtomic(this.fsveritySigPath(image), der);
  }

  /** Write a small file atomically (STORE/tmp, fsync, rename, fsync the directory). */
  private async writeAtomic(path: string, bytes: Buffer): Promise<void> {
    const dir = path.slice(0, path.lastIndexOf('/'));
    await mkdir(dir, { recursive: true });
    const tmp = await writeTemp(this.tmpDir, bytes, { what: path });
    try {
      await rename(tmp.path, path);
    } catch (err) {
      await unlink(tmp.path).catch(() => undefined);
      throw err;
    }
    await fsyncDir(dir);
  }
}

/**
 * Point NAME:TAG at `image` together with its signed statement `bytes` (version `version`):
 * the statement goes into the history first, then the tag file is replaced — naming the image
 * and the statement's version, the one commit point — and last the current-statement file. A
 * crash before the tag is written leaves the old tag with its old statement; after it, the tag
 * names the new statement, which is already on disk. Readers that need the pair take the
 * statement the tag names (`tagStatement`).
 */
export async function commitStatement(store: Store, records: SignRecords, name: string, tag: string, image: Buffer, meta: ImageMeta, version: number, bytes: Buffer): Promise<void> {
  await records.writeStatementVersion(name, tag, version, bytes);
  await store.setTag(name, tag, image, { ...meta, statement: version });
  await records.writeCurrentStatement(name, tag, bytes);
}

/** The statement of NAME:TAG that goes with the tag's image: the version the tag names, else
 * (tags written before tags named their statement) the current one. */
export async function tagStatement(store: Store, records: SignRecords, name: string, tag: string): Promise<Buffer | undefined> {
  return readOptional(await tagStatementPath(store, records, name, tag));
}

/** Path of the file tagStatement reads. */
export async function tagStatementPath(store: Store, records: SignRecords, name: string, tag: string): Promise<string> {
  const version = (await store.getTagRecord(name, tag))?.meta.statement;
  return version !== undefined ? records.statementVersionPath(name, tag, version) : records.statementPath(name, tag);
}
