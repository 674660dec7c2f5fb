/**
 * Signing and verifying the images of a local store: `sign NAME:TAG` states what the tag points
 * at now; `verify NAME:TAG` checks the stored statement against trusted keys and against the
 * local image (digest, size, object count and total size).
 */
import { readFile } from 'node:fs/promises';
import type { Store } from '../store/store.js';
import type { DeltaMade } from '../delta/store.js';
import { fromHex, toHex } from '../verity/digest.js';
import { SignError } from './errors.js';
import { imageFacts } from './image-facts.js';
import type { PrivateKeyEntry, PublicKeyEntry } from './keys.js';
import { SignRecords, commitStatement } from './records.js';
import { DEFAULT_EXPIRY_SECONDS, parseStatementPayload, signStatement, verifyStatement } from './statement.js';
import { parseEnvelope } from './dsse.js';
import type { ImageStatement, VerifiedStatement } from './statement.js';
import { signFsverityDigest } from './fsverity-sig.js';
import type { FsveritySigner } from './fsverity-sig.js';

/** Options of signImage. */
export interface SignImageOptions {
  /** Validity in seconds (default 30 days). */
  expiresIn?: number;
  /** Explicit version (must exceed every version known for the tag); default: next one. */
  version?: number;
  /** Seconds since the epoch (default now). */
  now?: number;
  /** Also make the kernel fs-verity builtin signature of the image. */
  fsverity?: FsveritySigner;
  /** Make metadata deltas to the image from this many earlier images of the name (default 3, 0 = none). */
  deltas?: number;
}

/** Result of signImage. */
export interface SignImageResult {
  statement: ImageStatement;
  envelope: Buffer;
  statementPath: string;
  keyid: string;
  /** Path of the PKCS#7 signature, when one was made. */
  fsveritySigPath?: string;
  /** Metadata deltas made to the image (src/delta). */
  deltas: DeltaMade[];
}

/** The highest statement version known locally for NAME:TAG (current, history, accepted), 0 if none. */
export async function highestVersion(records: SignRecords, name: string, tag: string): Promise<number> {
  let v = 0;
  const cur = await records.readStatement(name, tag);
  if (cur) {
    try {
      v = parseStatementPayload(Buffer.from(parseEnvelope(cur, 'statement').payload, 'base64'), 'statement').version;
    } catch {
      /* unreadable current statement: history and the accepted record still count */
    }
  }
  const hist = await records.historyVersions(name, tag);
  if (hist.length > 0) v = Math.max(v, hist[hist.length - 1]!);
  const acc = await records.readAccepted(name, tag);
  if (acc) v = Math.max(v, acc.version);
  return v;
}

/** Sign what NAME:TAG points at in `store` with `key`; stores and returns the statement. */
export async function signImage(store: Store, name: string, tag: string, key: PrivateKeyEntry, opts: SignImageOptions = {}): Promise<SignImageResult> {
  const rec = await store.getTagRecord(name, tag);
  if (!rec) throw new SignError('TAG_MISSING', `cannot sign ${name}:${tag}: no such tag in the store ${store.dir}`);
  const image = rec.image;
  // The config is signed with the image: its digest and size (the bytes must be here, intact).
  const configBytes = rec.meta.config ? await store.readConfig(rec.meta.config) : undefined;
  const bytes = await readFile(store.imagePath(image));
  const facts = await imageFacts(bytes, `image ${toHex(image)}`);
  const records = new SignRecords(store.dir);
  const floor = await highestVersion(records, name, tag);
  let version = floor + 1;
  if (opts.version !== undefined) {
    if (!Number.isSafeInteger(opts.version) || opts.version <= floor) throw new SignError('ROLLBACK', `cannot sign ${name}:${tag} as version ${opts.version}: version ${floor} already exists (versions only grow)`);
    version = opts.version;
  }
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  const statement: ImageStatement = {
    name,
    tag,
    image: toHex(image),
    imageSize: bytes.length,
    objectCount: facts.count,
    objectSize: facts.totalSize,
    created: now,
    expires: now + (opts.expiresIn ?? DEFAULT_EXPIRY_SECONDS),
    version,
    ...(configBytes ? { config: { digest: rec.meta.config!, size: configBytes.length } } : {}),
    ...(rec.meta.manifest ? { manifest: rec.meta.manifest } : {}),
    ...(rec.meta.platform ? { platform: rec.meta.platform } : {}),
  };
  const envelope = signStatement(statement, [key]);
  await commitStatement(store, records, name, tag, image, rec.meta, version, envelope);
  const out: SignImageResult = { statement, envelope, statementPath: records.statementPath(name, tag), keyid: key.keyid, deltas: [] };
  if (opts.fsverity) {
    await records.writeFsveritySig(image, signFsverityDigest(image, opts.fsverity));
    out.fsveritySigPath = records.fsveritySigPath(image);
  }
  // Deltas from earlier images, so clients holding one can update by a few KB of metadata.
  const { makeDeltas, DEFAULT_DELTA_BASES } = await import('../delta/store.js');
  out.deltas = await makeDeltas(store, name, tag, image, opts.deltas ?? DEFAULT_DELTA_BASES);
  return out;
}

/** Result of verifyImage. */
export interface VerifyImageResult extends VerifiedStatement {
  /** True if the local tag points at the stated image. */
  tagMatches: boolean;
}

/**
 * Verify the stored statement of NAME:TAG: signature by a trusted key, subject, validity, and
 * that the local image is the one stated (digest, size, objects). Throws SignError
 * (IMAGE_MISMATCH when the local data differs from the statement).
 */
export async function verifyImage(store: Store, name: string, tag: string, trusted: PublicKeyEntry[], opts: { now?: number } = {}): Promise<VerifyImageResult> {
  const records = new SignRecords(store.dir);
  const bytes = await records.readStatement(name, tag);
  if (!bytes) throw new SignError('UNSIGNED', `${name}:${tag} has no signed statement in ${store.dir} (${records.statementPath(name, tag)})`);
  const v = verifyStatement(bytes, { trusted, name, tag, now: opts.now }, records.statementPath(name, tag));
  const s = v.statement;
  const image = fromHex(s.image);
  const where = `image ${s.image}`;
  if (!(await store.hasImage(image))) throw new SignError('IMAGE_MISMATCH', `${name}:${tag}: the stated ${where} is not in the store`);
  const data = await readFile(store.imagePath(image));
  const { fsverityDigest } = await import('../verity/digest.js');
  const got = fsverityDigest(data);
  if (!got.equals(image)) throw new SignError('IMAGE_MISMATCH', `${where}: the stored file has digest ${toHex(got)} (corrupt)`);
  if (data.length !== s.imageSize) throw new SignError('IMAGE_MISMATCH', `${where}: ${data.length} bytes, statement says ${s.imageSize}`);
  const facts = await imageFacts(data, where);
  if (facts.count !== s.objectCount || facts.totalSize !== s.objectSize) {
    throw new SignError('IMAGE_MISMATCH', `${where}: needs ${facts.count} objects of ${facts.totalSize} bytes, statement says ${s.objectCount} of ${s.objectSize}`);
  }
  if (s.config) {
    let cfg: Buffer;
    try {
      cfg = await store.readConfig(s.config.digest);
    } catch (err) {
      throw new SignError('IMAGE_MISMATCH', `${name}:${tag}: the stated config ${s.config.digest}: ${(err as Error).message}`);
    }
    if (cfg.length !== s.config.size) throw new SignError('IMAGE_MISMATCH', `${name}:${tag}: config ${s.config.digest} is ${cfg.length} bytes, statement says ${s.config.size}`);
  }
  const tagged = await store.getTagRecord(name, tag);
  const tagMatches = Boolean(tagged && tagged.image.equals(image) && (tagged.meta.config ?? null) === (s.config?.digest ?? tagged.meta.config ?? null));
  return { ...v, tagMatches };
}
