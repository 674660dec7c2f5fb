/**
 * The kernel's fs-verity builtin signature: the formatted digest layout, PKCS#7 bytes identical
 * to `fsverity sign` for an RSA key, signatures (RSA and ECDSA) that `openssl smime -verify`
 * accepts over the formatted digest and rejects over another, and `cfsdist sign
 * --fsverity-key/--fsverity-cert` writing one for an image in the store, which a pull brings
 * along.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { formattedDigest, loadFsveritySigner, signFsverityDigest, SignRecords } from '../src/sign/index.js';
import { fsverityDigest, toHex } from '../src/verity/digest.js';
import { cleanup, makeImageFamily, runCli, startServe } from './pull-fixtures.js';

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

const NO_OPENSSL = have('openssl') ? false : 'openssl not installed';

/** A self-signed certificate and key made by openssl. */
function makeCert(dir: string, kind: 'rsa' | 'ec'): { key: string; cert: string } {
  const key = join(dir, `${kind}.key`);
  const cert = join(dir, `${kind}.crt`);
  const alg = kind === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  const r = spawnSync('openssl', ['req', '-x509', ...alg, '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=cfsdist ${kind} test`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return { key, cert };
}

/** `openssl smime -verify` of a detached DER signature over `content`. */
function opensslVerifies(sig: string, content: Buffer, cert: string, dir: string): boolean {
  const c = join(dir, `content-${randomBytes(4).toString('hex')}`);
  writeFileSync(c, content);
  const r = spawnSync('openssl', ['smime', '-verify', '-binary', '-inform', 'DER', '-in', sig, '-content', c, '-certfile', cert, '-CAfile', cert, '-purpose', 'any', '-out', '/dev/null'], { encoding: 'utf8' });
  return r.status === 0;
}

test('fsverity_formatted_digest is "FSVerity", le16 alg 1, le16 size 32, digest', () => {
  const d = Buffer.alloc(32, 0xab);
  const f = formattedDigest(d);
  assert.equal(f.length, 44);
  assert.equal(f.subarray(0, 8).toString('latin1'), 'FSVerity');
  assert.equal(f.readUInt16LE(8), 1);
  assert.equal(f.readUInt16LE(10), 32);
  assert.ok(f.subarray(12).equals(d));
});

test('RSA: the PKCS#7 is byte-identical to `fsverity sign`, and openssl verifies it', { skip: NO_OPENSSL || (have('fsverity') ? false : 'fsverity not installed') }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-fvsig-'));
  try {
    const { key, cert } = makeCert(dir, 'rsa');
    const file = join(dir, 'data');
    const data = randomBytes(70_000);
    writeFileSync(file, data);
    const theirs = join(dir, 'theirs.sig');
    const r = spawnSync('fsverity', ['sign', file, theirs, '--key', key, '--cert', cert], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const ours = signFsverityDigest(fsverityDigest(data), await loadFsveritySigner(key, cert));
    assert.ok(ours.equals(readFileSync(theirs)), 'PKCS#7 differs from fsverity sign output');
    const oursPath = join(dir, 'ours.sig');
    writeFileSync(oursPath, ours);
    assert.equal(opensslVerifies(oursPath, formattedDigest(fsverityDigest(data)), cert, dir), true);
    assert.equal(opensslVerifies(oursPath, formattedDigest(fsverityDigest(data.subarray(1))), cert, dir), false);
  } finally {
    cleanup(dir);
  }
});

test('ECDSA P-256 signatures verify with openssl; ed25519 and mismatched certificates are refused', { skip: NO_OPENSSL }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-fvsig-'));
  try {
    const ec = makeCert(dir, 'ec');
    const rsa = makeCert(dir, 'rsa');
    const digest = fsverityDigest(randomBytes(5000));
    const p = join(dir, 'ec.sig');
    writeFileSync(p, signFsverityDigest(digest, await loadFsveritySigner(ec.key, ec.cert)));
    assert.equal(opensslVerifies(p, formattedDigest(digest), ec.cert, dir), true);
    assert.equal(opensslVerifies(p, formattedDigest(Buffer.alloc(32)), ec.cert, dir), false);
    await assert.rejects(loadFsveritySigner(ec.key, rsa.cert), (e: Error & { code?: string }) => e.code === 'KEY_TYPE');
    const gen = await runCli(['key', 'generate', '--out', join(dir, 'ed')]);
    assert.equal(gen.code, 0);
    await assert.rejects(loadFsveritySigner(join(dir, 'ed'), ec.cert), (e: Error & { code?: string }) => e.code === 'KEY_TYPE' || e.code === 'CERT_MALFORMED');
  } finally {
    cleanup(dir);
  }
});

test('cfsdist sign --fsverity-key/--fsverity-cert stores the image\'s kernel signature', { skip: NO_OPENSSL }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'cfsdist-fvsig-'));
  try {
    const fam = await makeImageFamily(join(dir, 'store'), { files: 10, large: [] });
    const { key, cert } = makeCert(dir, 'rsa');
    assert.equal((await runCli(['key', 'generate', '--out', join(dir, 'k')])).code, 0);
    const r = await runCli(['sign', `${fam.name}:v1`, '--key', join(dir, 'k'), '--fsverity-key', key, '--fsverity-cert', cert, '--store', fam.storeDir, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    const path = new SignRecords(fam.storeDir).fsveritySigPath(fam.v1.image);
    assert.equal(out.fsveritySigPath, path);
    assert.equal(toHex(fam.v1.image), out.image);
    assert.equal(opensslVerifies(path, formattedDigest(fam.v1.image), cert, dir), true);
    const bad = await runCli(['sign', `${fam.name}:v1`, '--key', join(dir, 'k'), '--fsverity-key', key, '--store', fam.storeDir]);
    assert.equal(bad.code, 2);
    // It travels with the image: served, and stored by a pull.
    const srv = await startServe(fam.storeDir);
    try {
      const client = join(dir, 'client');
      const p = await runCli(['pull', `${srv.url}/${fam.name}:v1`, '--store', client, '--trust', join(dir, 'k.pub')]);
      assert.equal(p.code, 0, p.stderr);
      assert.ok(readFileSync(new SignRecords(client).fsveritySigPath(fam.v1.image)).equals(readFileSync(path)));
    } finally {
      await srv.stop();
    }
  } finally {
    cleanup(dir);
  }
});
