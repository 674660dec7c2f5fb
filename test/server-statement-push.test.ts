/**
 * Statement pushes to `cfsdist serve`: racing pushes of one tag are checked and committed one
 * at a time (the newest version wins, and the statement served always goes with the tag's
 * image), and the tag file is the one commit point of the pair — a push interrupted before it
 * leaves the old tag with its old statement, one interrupted after it serves the new pair.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../src/store/store.js';
import { startServer } from '../src/server/server.js';
import type { RunningServer } from '../src/server/server.js';
import { SignRecords, commitStatement, parseEnvelope, parseStatementPayload, loadPrivateKey, signImage } from '../src/sign/index.js';
import { toHex } from '../src/verity/digest.js';
import { makeImageFamily, makeKey } from './pull-fixtures.js';
import type { ImageFamily } from './pull-fixtures.js';

const TOKEN = 'statement-push-token';
let dir: string;
let server: ImageFamily;
let srv: RunningServer;
let store: Store;
/** Envelopes of test/app:live: version 1 → v1, 2 → v2, 3 → v1 again. */
const env: Buffer[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cfsdist-statement-push-'));
  server = await makeImageFamily(join(dir, 'server'));
  const k = await makeKey(join(dir, 'keys'));
  const key = await loadPrivateKey(k.key);
  store = await Store.open(server.storeDir);
  // Signed here (the images must be on the server), then the local tag and records dropped:
  // the pushes below bring them.
  for (const m of [server.v1, server.v2, server.v1]) {
    await store.setTag(server.name, 'live', m.image);
    env.push((await signImage(store, server.name, 'live', key)).envelope);
  }
  rmSync(join(server.storeDir, 'tags', 'test', 'app', ':live'));
  for (const f of [':live.dsse', ':live.history']) rmSync(join(server.storeDir, 'signatures', 'test', 'app', f), { recursive: true });
  srv = await startServer({ store, token: TOKEN });
});

after(async () => {
  await srv?.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(server?.root ?? '/nonexistent', { recursive: true, force: true });
});

function push(bytes: Buffer): Promise<Response> {
  return fetch(`${srv.url}/v1/statements/test/app/live`, { method: 'PUT', body: new Uint8Array(bytes), headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/vnd.dsse.envelope.v1+json' } });
}

/** The statement served for test/app:live and the tag's image. */
async function served(): Promise<{ version: number; image: string; tag: string | undefined }> {
  const r = await fetch(`${srv.url}/v1/statements/test/app/live`);
  assert.equal(r.status, 200);
  const st = parseStatementPayload(Buffer.from(parseEnvelope(Buffer.from(await r.arrayBuffer()), 'served').payload, 'base64'), 'served');
  const tag = await store.getTag('test/app', 'live');
  return { version: st.version, image: st.image, tag: tag && toHex(tag) };
}

test('racing pushes of one tag: the newest version wins, no 500, and the statement served names the tag image', async () => {
  const answers = await Promise.all([push(env[1]!), push(env[2]!), push(env[1]!), push(env[0]!), push(env[2]!), push(env[1]!)]);
  const statuses = answers.map((r) => r.status);
  const bodies = await Promise.all(answers.map((r) => r.text()));
  for (const [i, s] of statuses.entries()) assert.ok(s === 200 || s === 201 || s === 409, `status ${s}: ${bodies[i]}`);
  assert.ok(statuses.filter((s) => s === 201).length >= 1, JSON.stringify(bodies));
  const s = await served();
  assert.equal(s.version, 3);
  assert.equal(s.image, toHex(server.v1.image));
  assert.equal(s.tag, s.image, 'tag and statement name the same image');
  // An older one afterwards is refused, and nothing moves.
  assert.equal((await push(env[1]!)).status, 409);
  assert.deepEqual(await served(), s);
});

test('the tag is the commit point: interrupted before it, the old pair; after it, the new pair', async () => {
  const records = new SignRecords(store.dir);
  const before = await served();
  // Interrupted before the tag: the new statement is in the history, the image is missing so
  // the tag write fails (as a crash there would stop it).
  const ghost = Buffer.alloc(32, 7);
  await assert.rejects(commitStatement(store, records, 'test/app', 'live', ghost, {}, 9, env[1]!));
  assert.deepEqual(await served(), before, 'old tag, old statement');
  // Interrupted after the tag, before the current-statement file: the tag names version 4,
  // whose statement (here: an envelope of v2) is already in the history — served together.
  await records.writeStatementVersion('test/app', 'live', 4, env[1]!);
  await store.setTag('test/app', 'live', server.v2.image, { statement: 4 });
  const r = await fetch(`${srv.url}/v1/statements/test/app/live`);
  assert.ok(Buffer.from(await r.arrayBuffer()).equals(env[1]!), 'the statement the tag names is served');
  assert.equal(toHex((await store.getTag('test/app', 'live'))!), toHex(server.v2.image));
});
