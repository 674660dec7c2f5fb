/**
 * Push: send NAME:TAG's signed statement, its image and only the objects the remote lacks
 * (one query round trip decides), objects first, then the image, then the statement — so the
 * remote never names an image it cannot serve in full.
 */
import { readFileSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Store } from '../store/store.js';
import { fromHex, toHex } from '../verity/digest.js';
import { imageFacts } from '../sign/image-facts.js';
import { SignError } from '../sign/errors.js';
import { SignRecords } from '../sign/records.js';
import { parseEnvelope } from '../sign/dsse.js';
import { parseStatementPayload } from '../sign/statement.js';
import { PullError } from './errors.js';
import { batchObjects } from './pull.js';
import type { OutgoingObject, PushTarget, WireStats } from './remote.js';

/** Objects up to this size are read whole. */
const SMALL_READ = 256 * 1024;

/** Options of a push. */
export interface PushOptions {
  store: Store;
  target: PushTarget;
  name: string;
  tag: string;
  /** Uploads in flight (default 4). */
  concurrency?: number;
  onProgress?: (p: { objectsDone: number; objectsTotal: number; bytesDone: number; bytesTotal: number }) => void;
}

/** What a push did. */
export interface PushSummary {
  remote: string;
  name: string;
  tag: string;
  image: string;
  version: number;
  objects: { needed: number; present: number; sent: number };
  bytes: { needed: number; sent: number; image: number };
  wire: WireStats;
  seconds: number;
}

/** Push NAME:TAG (see the file comment). */
export async function push(opts: PushOptions): Promise<PushSummary> {
  const t0 = performance.now();
  const { store, target, name, tag } = opts;
  const records = new SignRecords(store.dir);
  const envelope = await records.readStatement(name, tag);
  if (!envelope) throw new SignError('UNSIGNED', `${name}:${tag} has no signed statement in ${store.dir}; sign it first (cfsdist sign ${name}:${tag} --key KEY)`);
  const where = records.statementPath(name, tag);
  const s = parseStatementPayload(Buffer.from(parseEnvelope(envelope, where).payload, 'base64'), where);
  const image = fromHex(s.image);
  if (!(await store.hasImage(image))) throw new PullError('IMAGE_MISSING', `${name}:${tag}: the signed image ${s.image} is not in the store`);
  const imagePath = store.imagePath(image);
  const imageBytes = await readFile(imagePath);
  const facts = await imageFacts(imageBytes, `image ${s.image}`);
  const wire0 = target.stats();

  const has = await target.has(facts.objects.map((o) => o.digest));
  const missing = facts.objects.filter((_, i) => !has[i]);
  const bytesTotal = missing.reduce((a, o) => a + o.size, 0);
  const prog = { objectsDone: 0, objectsTotal: missing.length, bytesDone: 0, bytesTotal };
  opts.onProgress?.({ ...prog });
  const batches = batchObjects(missing, 16 << 20, 8 << 20, 4096);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < batches.length) {
      const b = batches[next++]!;
      const out: OutgoingObject[] = b.map((o) => ({
        digest: o.digest,
        size: o.size,
        open: async () => {
          if (o.size <= SMALL_READ) {
            // One synchronous read: far cheaper here than a stream's thread-pool round trips.
            const data = readFileSync(store.objects.path(o.digest));
            prog.bytesDone += data.length;
            return [data];
          }
          const rs = await store.objects.open(o.digest);
          return (async function* () {
            for await (const c of rs) {
              prog.bytesDone += (c as Buffer).length;
              yield c as Buffer;
            }
          })();
        },
      }));
      await target.putObjects(out);
      prog.objectsDone += b.length;
      opts.onProgress?.({ ...prog });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency ?? 4, batches.length)) }, worker));
  await target.putImage(image, imagePath);
  const sig = await records.readFsveritySig(image);
  if (sig) await target.putFsveritySignature(image, sig);
  if (target.putDelta) {
    // deltas this store made to the image (sign does), so the remote's clients can update by delta
    const dir = join(store.dir, 'deltas');
    for (const f of await readdir(dir).catch(() => [] as string[])) {
      const kind = f.endsWith(`-${toHex(image)}.delta`) ? 'tree' : f.endsWith(`-${toHex(image)}.zpatch`) ? 'zpatch' : undefined;
      if (!kind || !/^[0-9a-f]{64}-/.test(f)) continue;
      await target.putDelta(fromHex(f.slice(0, 64)), image, await readFile(join(dir, f)), kind);
    }
  }
  if (s.config) await target.putConfig(s.config.digest, await store.readConfig(s.config.digest));
  await target.putStatement(name, tag, envelope);
  const w = target.stats();
  return {
    remote: target.location,
    name,
    tag,
    image: toHex(image),
    version: s.version,
    objects: { needed: facts.count, present: facts.count - missing.length, sent: missing.length },
    bytes: { needed: facts.totalSize, sent: bytesTotal, image: imageBytes.length },
    wire: { received: w.received - wire0.received, sent: w.sent - wire0.sent, requests: w.requests - wire0.requests },
    seconds: (performance.now() - t0) / 1000,
  };
}
