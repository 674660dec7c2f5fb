/**
 * The signed statement: an in-toto Statement v1 (github.com/in-toto/attestation) whose only
 * subject is the merged composefs image, carried in a DSSE envelope (dsse.ts) with payloadType
 * `application/vnd.in-toto+json`:
 *
 *   { "_type": "https://in-toto.io/Statement/v1",
 *     "subject": [ { "name": "NAME:TAG", "digest": { "fsverity-sha256": "<image hex>" } } ],
 *     "predicateType": "https://cfsdist.dev/composefs-image/v1",
 *     "predicate": { "name": "NAME", "tag": "TAG",
 *                    "image":   { "size": <bytes of the EROFS image> },
 *                    "objects": { "count": <unique objects>, "size": <sum of their sizes> },
 *                    "created": "<RFC 3339 UTC>", "expires": "<RFC 3339 UTC>",
 *                    "version": <integer ≥ 1, grows with every statement for NAME:TAG>,
 *                    "config":  { "digest": "sha256:<hex>", "size": <bytes> },   (optional)
 *                    "source":  { "manifest": "sha256:<hex>", "platform": "os/arch" } } }
 *                                                                              (optional)
 *
 * `config` names the OCI image config (bytes as published) that `run` starts the image with;
 * a client fetches those bytes and checks them against it before anything is committed.
 * Statements signed before configs were kept have neither field and still verify (their
 * images then run only with an explicit command).
 *
 * A client accepts a statement only if a trusted key signed it, it names the NAME:TAG asked
 * for, it is not expired (nor created in the future beyond a clock skew), and its version is
 * not older than the last one accepted for that tag — the same version is accepted again only
 * for the same image (anything else is an equivocation).
 */
import { SignError } from './errors.js';
import { encodeEnvelope, parseEnvelope, signEnvelope, verifyEnvelope } from './dsse.js';
import type { PrivateKeyEntry, PublicKeyEntry } from './keys.js';

/** DSSE payloadType of an in-toto statement. */
export const STATEMENT_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
/** in-toto Statement v1 `_type`. */
export const INTOTO_STATEMENT_TYPE = 'https://in-toto.io/Statement/v1';
/** The predicate type of a cfsdist image statement. */
export const PREDICATE_TYPE = 'https://cfsdist.dev/composefs-image/v1';
/** Digest algorithm name of an fs-verity SHA-256 digest in the subject's digest set. */
export const DIGEST_ALGORITHM = 'fsverity-sha256';
/** Default validity of a new statement: 30 days. */
export const DEFAULT_EXPIRY_SECONDS = 30 * 24 * 3600;
/** Tolerated clock skew for `created` in the future. */
export const CLOCK_SKEW_SECONDS = 300;

/** The facts a statement asserts (the predicate, flattened). */
export interface ImageStatement {
  name: string;
  tag: string;
  /** Image fs-verity digest, 64 lowercase hex. */
  image: string;
  imageSize: number;
  objectCount: number;
  objectSize: number;
  /** Seconds since the epoch (whole seconds). */
  created: number;
  expires: number;
  version: number;
  /** The image config: `sha256:<hex>` of its bytes and their length. */
  config?: { digest: string; size: number };
  /** The source image manifest's digest. */
  manifest?: string;
  /** `os/arch[/variant]`. */
  platform?: string;
}

const SHA256 = /^sha256:[0-9a-f]{64}$/;
const PLATFORM = /^[a-z0-9_]+\/[a-z0-9_]+(?:\/[a-z0-9_.]+)?$/;

function rfc3339(sec: number): string {
  return new Date(sec * 1000).toISOString().replace('.000Z', 'Z');
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$/;

function parseTime(v: unknown, what: string, where: string): number {
  if (typeof v !== 'string' || !RFC3339.test(v)) throw new SignError('STATEMENT_MALFORMED', `${where}: ${what} is not an RFC 3339 UTC time`);
  const ms = Date.parse(v);
  if (!Number.isFinite(ms)) throw new SignError('STATEMENT_MALFORMED', `${where}: ${what} ${JSON.stringify(v)} is not a valid time`);
  return Math.floor(ms / 1000);
}

function count(v: unknown, what: string, where: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw new SignError('STATEMENT_MALFORMED', `${where}: ${what} is not an integer ≥ ${min}`);
  return v;
}

/** The in-toto statement JSON bytes for `s`. */
export function statementPayload(s: ImageStatement): Buffer {
  const doc = {
    _type: INTOTO_STATEMENT_TYPE,
    subject: [{ name: `${s.name}:${s.tag}`, digest: { [DIGEST_ALGORITHM]: s.image } }],
    predicateType: PREDICATE_TYPE,
    predicate: {
      name: s.name,
      tag: s.tag,
      image: { size: s.imageSize },
      objects: { count: s.objectCount, size: s.objectSize },
      created: rfc3339(s.created),
      expires: rfc3339(s.expires),
      version: s.version,
      ...(s.config ? { config: { digest: s.config.digest, size: s.config.size } } : {}),
      ...(s.manifest || s.platform ? { source: { ...(s.manifest ? { manifest: s.manifest } : {}), ...(s.platform ? { platform: s.platform } : {}) } } : {}),
    },
  };
  return Buffer.from(JSON.stringify(doc), 'utf8');
}

/** Parse and shape-check a statement payload. */
export function parseStatementPayload(body: Buffer, where: string): ImageStatement {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new SignError('STATEMENT_MALFORMED', `${where}: statement is not JSON (${(err as Error).message})`);
  }
  const o = v as Record<string, unknown>;
  const bad = (m: string): never => {
    throw new SignError('STATEMENT_MALFORMED', `${where}: ${m}`);
  };
  if (typeof o !== 'object' || o === null) bad('statement is not an object');
  if (o._type !== INTOTO_STATEMENT_TYPE) bad(`_type is ${JSON.stringify(o._type)}, expected ${INTOTO_STATEMENT_TYPE}`);
  if (o.predicateType !== PREDICATE_TYPE) bad(`predicateType is ${JSON.stringify(o.predicateType)}, expected ${PREDICATE_TYPE}`);
  const subj = o.subject;
  if (!Array.isArray(subj) || subj.length !== 1) bad('statement must have exactly one subject');
  const s0 = (subj as Record<string, unknown>[])[0];
  const dg = s0?.digest as Record<string, unknown> | undefined;
  const image = dg?.[DIGEST_ALGORITHM];
  if (typeof image !== 'string' || !/^[0-9a-f]{64}$/.test(image)) bad(`subject has no ${DIGEST_ALGORITHM} digest`);
  const p = o.predicate as Record<string, unknown>;
  if (typeof p !== 'object' || p === null) bad('statement has no predicate');
  if (typeof p.name !== 'string' || typeof p.tag !== 'string') bad('predicate has no name/tag');
  if (s0.name !== `${p.name}:${p.tag}`) bad(`subject name ${JSON.stringify(s0.name)} differs from predicate ${p.name}:${p.tag}`);
  const img = p.image as Record<string, unknown> | undefined;
  const objs = p.objects as Record<string, unknown> | undefined;
  if (!img || !objs) bad('predicate lacks image/objects');
  let config: ImageStatement['config'];
  if (p.config !== undefined) {
    const c = p.config as Record<string, unknown>;
    if (typeof c !== 'object' || c === null || typeof c.digest !== 'string' || !SHA256.test(c.digest)) bad('predicate config has no sha256 digest');
    config = { digest: c.digest as string, size: count(c.size, 'config.size', where) };
  }
  let manifest: string | undefined;
  let platform: string | undefined;
  if (p.source !== undefined) {
    const src = p.source as Record<string, unknown>;
    if (typeof src !== 'object' || src === null) bad('predicate source is not an object');
    if (src.manifest !== undefined) {
      if (typeof src.manifest !== 'string' || !SHA256.test(src.manifest)) bad('predicate source.manifest is not a sha256 digest');
      manifest = src.manifest as string;
    }
    if (src.platform !== undefined) {
      if (typeof src.platform !== 'string' || !PLATFORM.test(src.platform)) bad('predicate source.platform is not os/arch[/variant]');
      platform = src.platform as string;
    }
  }
  return {
    ...(config ? { config } : {}),
    ...(manifest ? { manifest } : {}),
    ...(platform ? { platform } : {}),
    name: p.name as string,
    tag: p.tag as string,
    image: image as string,
    imageSize: count(img!.size, 'image.size', where),
    objectCount: count(objs!.count, 'objects.count', where),
    objectSize: count(objs!.size, 'objects.size', where),
    created: parseTime(p.created, 'created', where),
    expires: parseTime(p.expires, 'expires', where),
    version: count(p.version, 'version', where, 1),
  };
}

/** Sign a statement: the DSSE envelope bytes (JSON). */
export function signStatement(s: ImageStatement, keys: PrivateKeyEntry[]): Buffer {
  return encodeEnvelope(signEnvelope(STATEMENT_PAYLOAD_TYPE, statementPayload(s), keys));
}

/** A statement that passed verification. */
export interface VerifiedStatement {
  statement: ImageStatement;
  /** keyid of the trusted key whose signature verified. */
  keyid: string;
  keySource: string;
}

/** What the caller expects of a statement. */
export interface VerifyOptions {
  trusted: PublicKeyEntry[];
  /** The NAME:TAG asked for (checked when given). */
  name?: string;
  tag?: string;
  /** Seconds since the epoch (default: now). */
  now?: number;
  /** Accept an expired statement (only for inspection). */
  allowExpired?: boolean;
}

/**
 * Verify envelope bytes: signature by a trusted key, payload type and shape, subject, validity
 * window. Throws SignError (UNSIGNED, UNKNOWN_KEY, BAD_SIGNATURE, STATEMENT_MALFORMED,
 * WRONG_SUBJECT, EXPIRED, NOT_YET_VALID). Rollback is checked separately (checkVersion).
 */
export function verifyStatement(bytes: Buffer, opts: VerifyOptions, where: string): VerifiedStatement {
  const env = parseEnvelope(bytes, where);
  const v = verifyEnvelope(env, opts.trusted, where);
  if (v.payloadType !== STATEMENT_PAYLOAD_TYPE) throw new SignError('STATEMENT_MALFORMED', `${where}: payloadType ${JSON.stringify(v.payloadType)} is not ${STATEMENT_PAYLOAD_TYPE}`);
  const s = parseStatementPayload(v.body, where);
  if ((opts.name !== undefined && s.name !== opts.name) || (opts.tag !== undefined && s.tag !== opts.tag)) {
    throw new SignError('WRONG_SUBJECT', `${where}: statement is for ${s.name}:${s.tag}, not ${opts.name}:${opts.tag}`);
  }
  const now = opts.now ?? Math.floor(Date.now() / 1000);
  if (!opts.allowExpired && now >= s.expires) throw new SignError('EXPIRED', `${where}: statement for ${s.name}:${s.tag} version ${s.version} expired at ${rfc3339(s.expires)}`);
  if (s.created > now + CLOCK_SKEW_SECONDS) throw new SignError('NOT_YET_VALID', `${where}: statement for ${s.name}:${s.tag} is created in the future (${rfc3339(s.created)})`);
  if (s.expires <= s.created) throw new SignError('STATEMENT_MALFORMED', `${where}: statement expires before it is created`);
  return { statement: s, keyid: v.keyid, keySource: v.keySource };
}

/** The last statement accepted for a tag (rollback floor). */
export interface AcceptedVersion {
  version: number;
  image: string;
}

/** Refuse a statement older than the last accepted one for its tag (ROLLBACK), or the same
 * version naming another image (EQUIVOCATION). */
export function checkVersion(s: ImageStatement, last: AcceptedVersion | undefined, where: string): void {
  if (!last) return;
  if (s.version < last.version) {
    throw new SignError('ROLLBACK', `${where}: rollback refused: statement version ${s.version} for ${s.name}:${s.tag} is older than version ${last.version} accepted before`);
  }
  if (s.version === last.version && s.image !== last.image) {
    throw new SignError('EQUIVOCATION', `${where}: statement version ${s.version} for ${s.name}:${s.tag} names image ${s.image.slice(0, 16)}…, but the same version accepted before named ${last.image.slice(0, 16)}…`);
  }
}

/** Parse a duration like `30d`, `12h`, `90m`, `45s` or a bare number of seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)([smhdw]?)$/.exec(text.trim());
  if (!m) throw new SignError('BAD_DURATION', `invalid duration ${JSON.stringify(text)} (e.g. 30d, 12h, 3600)`);
  const n = Number(m[1]);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[m[2] as '' | 's' | 'm' | 'h' | 'd' | 'w'];
  return n * unit;
}

/** Render seconds-since-epoch as RFC 3339. */
export function formatTime(sec: number): string {
  return rfc3339(sec);
}
