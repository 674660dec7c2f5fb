/**
 * `cfsdist convert docker://REG/REPO:TAG`: what a CI job runs after `docker push` — import the
 * ordinary image (as the local REPO:TAG, the name a pull gives it), sign it, and attach the
 * cfsdist image to it in the same registry (the tag keeps naming the ordinary image; see
 * RegistryRemote.putStatement). Idempotent: when the store's current statement for REPO:TAG
 * already signs this very image (same fs-verity digest, same source manifest) and is not about
 * to expire, it is pushed again as it is — same manifests, same referrers, nothing changes.
 */
import type { Store } from '../store/store.js';
import type { PrivateKeyEntry } from '../sign/keys.js';
import type { FsveritySigner } from '../sign/fsverity-sig.js';
import type { PushSummary } from '../client/push.js';
import type { ImportResult } from '../oci/import.js';
import type { TransportOptions } from '../client/transport.js';
import { parseRegistryRef } from './ref.js';
import { RegistryError } from './errors.js';

/** Options of convertImage. */
export interface ConvertOptions {
  /** docker://HOST[:PORT]/REPO[:TAG] (a digest reference cannot be attached to a tag). */
  ref: string;
  store: Store;
  key: PrivateKeyEntry;
  fsverity?: FsveritySigner;
  /** Statement validity in seconds (default: sign's). */
  expiresIn?: number;
  platform?: string;
  insecure?: boolean;
  /** CAs, --tls-verify, proxies, --insecure-registry and --creds (src/client/transport.ts). */
  transport?: TransportOptions;
  /** Re-sign even if the current statement already covers the image. */
  resign?: boolean;
  onStep?: (step: 'import' | 'sign' | 'push', detail: string) => void;
}

/** What convertImage did. */
export interface ConvertResult {
  name: string;
  tag: string;
  image: string;
  manifest: string | null;
  version: number;
  /** A new statement was signed (false: the current one already covered this image). */
  signed: boolean;
  imported: Pick<ImportResult, 'layers' | 'entries' | 'objects' | 'objectsNew' | 'imageSize'>;
  push: PushSummary;
}

/** A statement closer than this to expiry is renewed by a re-run. */
const RENEW_SECONDS = 7 * 24 * 3600;

export async function convertImage(o: ConvertOptions): Promise<ConvertResult> {
  const r = parseRegistryRef(o.ref, { insecure: o.insecure, transport: o.transport });
  if (r.digest) throw new RegistryError('BAD_REF', `${o.ref}: convert attaches to a tag; name one (docker://HOST/REPO:TAG)`);
  const name = r.repo;
  const tag = r.tag ?? 'latest';
  const { openSource } = await import('../oci/source.js');
  const { importImage } = await import('../oci/import.js');
  o.onStep?.('import', o.ref);
  const imp = await importImage(await openSource(o.ref, { platform: o.platform, transport: o.transport, insecure: o.insecure }), o.store, { name, tag });
  const image = imp.image.toString('hex');

  const { SignRecords } = await import('../sign/records.js');
  const { parseEnvelope } = await import('../sign/dsse.js');
  const { parseStatementPayload } = await import('../sign/statement.js');
  const { signImage } = await import('../sign/sign-image.js');
  const records = new SignRecords(o.store.dir);
  const current = await records.readStatement(name, tag);
  let version: number | undefined;
  if (current && !o.resign) {
    const s = parseStatementPayload(Buffer.from(parseEnvelope(current, 'statement').payload, 'base64'), `statement of ${name}:${tag}`);
    const fresh = s.expires - Date.now() / 1000 > RENEW_SECONDS;
    if (s.image === image && s.manifest === imp.manifest && fresh) version = s.version;
  }
  let signed = false;
  if (version === undefined) {
    o.onStep?.('sign', `${name}:${tag}`);
    const sr = await signImage(o.store, name, tag, o.key, { fsverity: o.fsverity, expiresIn: o.expiresIn });
    version = sr.statement.version;
    signed = true;
  }

  o.onStep?.('push', o.ref);
  const { RegistryRemote } = await import('./remote.js');
  const { push } = await import('../client/push.js');
  const target = new RegistryRemote(r, { transport: o.transport });
  let summary: PushSummary;
  try {
    summary = await push({ store: o.store, target, name, tag, concurrency: 4 });
  } finally {
    target.close();
  }
  return {
    name,
    tag,
    image,
    manifest: imp.manifest ?? null,
    version,
    signed,
    imported: { layers: imp.layers, entries: imp.entries, objects: imp.objects, objectsNew: imp.objectsNew, imageSize: imp.imageSize },
    push: summary,
  };
}
