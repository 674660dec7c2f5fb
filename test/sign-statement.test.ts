/**
 * Keys, DSSE envelopes and image statements: what verifies, and every way a statement is
 * refused (unsigned, unknown key, bad signature, edited payload or type, expired, not yet
 * valid, wrong subject, rollback, equivocation); signing a store's tag and verifying it
 * against the local image; the key/sign/verify CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import {
  SignRecords,
  checkVersion,
  generateKeyPair,
  loadPrivateKey,
  loadPublicKey,
  loadTrustedKeys,
  pae,
  parseDuration,
  parseEnvelope,
  signImage,
  signStatement,
  verifyImage,
  verifyStatement,
  writeKeyPair,
  keyIdOf,
} from '../src/sign/index.js';
import type { ImageStatement } from '../src/sign/index.js';
import { Store } from '../src/store/store.js';
import { toHex } from '../src/verity/digest.js';
import { cleanup, makeImageFamily, runCli } from './pull-fixtures.js';

const NOW = 1_700_000_000;

function statement(over: Partial<ImageStatement> = {}): ImageStatement {
  return {
    name: 'library/debian',
    tag: 'bookworm',
    image: 'ab'.repeat(32),
    imageSize: 4096,
    objectCount: 3,
    objectSize: 12345,
    created: NOW - 60,
    expires: NOW + 3600,
    version: 7,
    ...over,
  };
}

async function keys(dir: string, n: string) {
  await writeKeyPair(join(dir, n));
  return { priv: await loadPrivateKey(join(dir, n)), pub: await loadPublicKey(join(dir, n + '.pub')) };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

test('PAE is the DSSE v1 pre-authentication encoding', () => {
  // The example of the DSSE protocol description.
  assert.equal(pae('http://example.com/HelloWorld', Buffer.from('hello world')).toString(), 'DSSEv1 29 http://example.com/HelloWorld 11 hello world');
  assert.equal(pae('', Buffer.alloc(0)).toString(), 'DSSEv1 0  0 ');
});

test('key files: private key is 0600 PKCS#8, keyid is SHA-256 of the SPKI DER, no silent overwrite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-sign-'));
  try {
    const r = await writeKeyPair(join(dir, 'k'));
    assert.equal(statSync(join(dir, 'k')).mode & 0o777, 0o600);
    assert.match(readFileSync(join(dir, 'k'), 'utf8'), /^-----BEGIN PRIVATE KEY-----/);
    assert.match(readFileSync(join(dir, 'k.pub'), 'utf8'), /^-----BEGIN PUBLIC KEY-----/);
    const pub = await loadPublicKey(join(dir, 'k.pub'));
    assert.equal(pub.keyid, r.keyid);
    assert.match(r.keyid, /^[0-9a-f]{64}$/);
    await assert.rejects(writeKeyPair(join(dir, 'k')), (e: Error & { code?: string }) => e.code === 'KEY_EXISTS');
    // an RSA key is refused for statements
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
    writeFileSync(join(dir, 'rsa.pem'), rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    await assert.rejects(loadPrivateKey(join(dir, 'rsa.pem')), (e: Error & { code?: string }) => e.code === 'KEY_TYPE');
    // trust dir + files, unique by keyid
    const t = await loadTrustedKeys([join(dir, 'k.pub'), join(dir, 'k.pub')]);
    assert.equal(t.length, 1);
    assert.equal(keyIdOf(t[0]!.key), r.keyid);
    assert.notEqual(generateKeyPair().keyid, r.keyid);
  } finally {
    cleanup(dir);
  }
});

test('a statement signed by a trusted key verifies; every alteration is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-sign-'));
  try {
    const a = await keys(dir, 'a');
    const b = await keys(dir, 'b');
    const s = statement();
    const env = signStatement(s, [a.priv]);
    const ok = verifyStatement(env, { trusted: [a.pub], name: s.name, tag: s.tag, now: NOW }, 'test');
    assert.deepEqual(ok.statement, s);
    assert.equal(ok.keyid, a.pub.keyid);
    // in-toto Statement v1 inside DSSE
    const e = parseEnvelope(env, 'test');
    assert.equal(e.payloadType, 'application/vnd.in-toto+json');
    const doc = JSON.parse(Buffer.from(e.payload, 'base64').toString());
    assert.equal(doc._type, 'https://in-toto.io/Statement/v1');
    assert.deepEqual(doc.subject, [{ name: 'library/debian:bookworm', digest: { 'fsverity-sha256': s.image } }]);
    assert.equal(doc.predicate.version, 7);

    const opts = { trusted: [a.pub], name: s.name, tag: s.tag, now: NOW };
    // edited payload (a different image), same signature
    const edited = { ...e, payload: Buffer.from(JSON.stringify({ ...doc, subject: [{ ...doc.subject[0], digest: { 'fsverity-sha256': 'cd'.repeat(32) } }] })).toString('base64') };
    assert.equal(codeOf(() => verifyStatement(Buffer.from(JSON.stringify(edited)), opts, 't')), 'BAD_SIGNATURE');
    // edited payload type
    assert.equal(codeOf(() => verifyStatement(Buffer.from(JSON.stringify({ ...e, payloadType: 'text/plain' })), opts, 't')), 'BAD_SIGNATURE');
    // flipped signature bit
    const sig = Buffer.from(e.signatures[0]!.sig, 'base64');
    sig[5]! ^= 1;
    assert.equal(codeOf(() => verifyStatement(Buffer.from(JSON.stringify({ ...e, signatures: [{ ...e.signatures[0], sig: sig.toString('base64') }] })), opts, 't')), 'BAD_SIGNATURE');
    // another key
    assert.equal(codeOf(() => verifyStatement(signStatement(s, [b.priv]), opts, 't')), 'UNKNOWN_KEY');
    // another key claiming the trusted keyid
    const forged = parseEnvelope(signStatement(s, [b.priv]), 't');
    forged.signatures[0]!.keyid = a.pub.keyid;
    assert.equal(codeOf(() => verifyStatement(Buffer.from(JSON.stringify(forged)), opts, 't')), 'BAD_SIGNATURE');
    // no signatures at all
    assert.equal(codeOf(() => verifyStatement(Buffer.from(JSON.stringify({ ...e, signatures: [] })), opts, 't')), 'UNSIGNED');
    // no trusted keys
    assert.equal(codeOf(() => verifyStatement(env, { ...opts, trusted: [] }, 't')), 'NO_TRUST');
    // not JSON
    assert.equal(codeOf(() => verifyStatement(Buffer.from('{'), opts, 't')), 'ENVELOPE_MALFORMED');
    // time window
    assert.equal(codeOf(() => verifyStatement(env, { ...opts, now: s.expires }, 't')), 'EXPIRED');
    assert.equal(codeOf(() => verifyStatement(env, { ...opts, now: s.created - 3600 }, 't')), 'NOT_YET_VALID');
    // subject
    assert.equal(codeOf(() => verifyStatement(env, { ...opts, tag: 'other' }, 't')), 'WRONG_SUBJECT');
    assert.equal(codeOf(() => verifyStatement(env, { ...opts, name: 'library/other' }, 't')), 'WRONG_SUBJECT');
    // a signature by both keys verifies with either trusted
    const both = signStatement(s, [b.priv, a.priv]);
    assert.equal(verifyStatement(both, opts, 't').keyid, a.pub.keyid);
  } finally {
    cleanup(dir);
  }
});

test('rollback: older versions are refused, the same version only for the same image', () => {
  const s = statement({ version: 5 });
  assert.doesNotThrow(() => checkVersion(s, undefined, 't'));
  assert.doesNotThrow(() => checkVersion(s, { version: 4, image: 'ff'.repeat(32) }, 't'));
  assert.doesNotThrow(() => checkVersion(s, { version: 5, image: s.image }, 't'));
  assert.equal(codeOf(() => checkVersion(s, { version: 6, image: s.image }, 't')), 'ROLLBACK');
  assert.equal(codeOf(() => checkVersion(s, { version: 5, image: 'ff'.repeat(32) }, 't')), 'EQUIVOCATION');
  assert.equal(parseDuration('30d'), 30 * 86400);
  assert.equal(parseDuration('90'), 90);
  assert.equal(codeOf(() => parseDuration('soon')), 'BAD_DURATION');
});

test('signImage states the tag\'s image, versions grow, verifyImage checks the local image', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-sign-'));
  try {
    const fam = await makeImageFamily(join(dir, 'store'), { files: 40, large: [1500 * 1024] });
    const store = await Store.open(fam.storeDir);
    const k = await keys(dir, 'k');
    const r1 = await signImage(store, fam.name, 'v1', k.priv);
    assert.equal(r1.statement.version, 1);
    assert.equal(r1.statement.image, toHex(fam.v1.image));
    assert.equal(r1.statement.objectCount, fam.v1.objects.length);
    assert.equal(r1.statement.objectSize, fam.v1.objects.reduce((a, o) => a + o.size, 0));
    assert.equal(r1.statement.imageSize, fam.v1.imageSize);
    assert.equal(r1.statement.expires - r1.statement.created, 30 * 86400);
    const r2 = await signImage(store, fam.name, 'v1', k.priv, { expiresIn: 60 });
    assert.equal(r2.statement.version, 2);
    await assert.rejects(signImage(store, fam.name, 'v1', k.priv, { version: 2 }), (e: Error & { code?: string }) => e.code === 'ROLLBACK');
    assert.equal((await signImage(store, fam.name, 'v1', k.priv, { version: 10 })).statement.version, 10);
    assert.deepEqual(await new SignRecords(store.dir).historyVersions(fam.name, 'v1'), [1, 2, 10]);
    const v = await verifyImage(store, fam.name, 'v1', [k.pub]);
    assert.equal(v.statement.version, 10);
    assert.equal(v.tagMatches, true);
    // the tag moves to v2: the statement still verifies, but no longer matches the tag
    await store.setTag(fam.name, 'v1', fam.v2.image);
    assert.equal((await verifyImage(store, fam.name, 'v1', [k.pub])).tagMatches, false);
    // a corrupt local image is reported
    const p = store.imagePath(fam.v1.image);
    const bytes = readFileSync(p);
    bytes[bytes.length - 1]! ^= 0xff;
    writeFileSync(p, bytes);
    await assert.rejects(verifyImage(store, fam.name, 'v1', [k.pub]), (e: Error & { code?: string }) => e.code === 'IMAGE_MISMATCH' && /corrupt/.test(e.message));
    await assert.rejects(verifyImage(store, fam.name, 'v2', [k.pub]), (e: Error & { code?: string }) => e.code === 'UNSIGNED');
  } finally {
    cleanup(dir);
  }
});

test('CLI: key generate, key trust, sign, verify', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-sign-'));
  try {
    const fam = await makeImageFamily(join(dir, 'store'), { files: 20, large: [] });
    const st = ['--store', fam.storeDir];
    const g = await runCli(['key', 'generate', '--out', join(dir, 'key'), '--json']);
    assert.equal(g.code, 0, g.stderr);
    const keyid = JSON.parse(g.stdout).keyid as string;
    const s = await runCli(['sign', `${fam.name}:v1`, '--key', join(dir, 'key'), '--expires', '2d', '--json', ...st]);
    assert.equal(s.code, 0, s.stderr);
    const sj = JSON.parse(s.stdout);
    assert.equal(sj.version, 1);
    assert.equal(sj.keyid, keyid);
    assert.equal(sj.expires - sj.created, 2 * 86400);
    // without trust: refused
    const v0 = await runCli(['verify', `${fam.name}:v1`, ...st]);
    assert.equal(v0.code, 1);
    assert.match(v0.stderr, /no trusted keys/);
    const v1 = await runCli(['verify', `${fam.name}:v1`, '--trust', join(dir, 'key.pub'), ...st]);
    assert.equal(v1.code, 0, v1.stderr);
    assert.match(v1.stdout, new RegExp(`good signature by ${keyid}`));
    // another key only: unknown key
    await runCli(['key', 'generate', '--out', join(dir, 'other')]);
    const v3 = await runCli(['verify', `${fam.name}:v1`, '--trust', join(dir, 'other.pub'), ...st]);
    assert.equal(v3.code, 1);
    assert.match(v3.stderr, /unknown key/);
    // trusted by default once in STORE/trust
    assert.equal((await runCli(['key', 'trust', join(dir, 'key.pub'), ...st])).code, 0);
    const v2 = await runCli(['verify', `${fam.name}:v1`, '--json', ...st]);
    assert.equal(v2.code, 0, v2.stderr);
    assert.equal(JSON.parse(v2.stdout).ok, true);
    // unsigned tag
    const v4 = await runCli(['verify', `${fam.name}:v2`, ...st]);
    assert.equal(v4.code, 1);
    assert.match(v4.stderr, /no signed statement/);
  } finally {
    cleanup(dir);
  }
});
