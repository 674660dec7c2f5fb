/**
 * TLS end to end with real servers and a CA made here with openssl: a real `docker-registry`
 * serving https (http.tls in its config) and `cfsdist serve --tls-cert/--tls-key`. push, pull
 * and import work with --ca-file and with --tls-verify=false, and fail without the CA with a
 * certificate error that names the host and both ways out. A loopback registry is plain http
 * unless a TLS option is given (ref.ts registryScheme).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanup, makeImageFamily, makeKey, runCli, signTag, PULL_CLI } from './pull-fixtures.js';
import type { ImageFamily } from './pull-fixtures.js';
import { makeTestCa, registryMissing, startRegistry } from './registry-fixtures.js';
import type { RegistryProcess, TestCa } from './registry-fixtures.js';

const tools = ['skopeo', 'umoci', 'openssl'].find((t) => spawnSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' }).status !== 0);
const skip = registryMissing() || (tools ? `${tools} is not installed` : false);
let dir = '';
let ca: TestCa;
let reg: RegistryProcess;
let fam: ImageFamily;
let pub = '';
let creds = '';

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-net-tls-'));
  ca = makeTestCa(dir);
  reg = await startRegistry({ tls: { cert: ca.cert, key: ca.key } });
  creds = `${reg.user}:${reg.password}`;
  fam = await makeImageFamily(join(dir, 'local'), { files: 30 });
  const k = await makeKey(join(dir, 'keys'));
  pub = k.pub;
  await signTag(fam.storeDir, fam.name, 'v1', k.key);
  // An ordinary one-layer image, copied in by skopeo (which skips verification here).
  const root = join(dir, 'rootfs');
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc', 'hello'), 'hello over TLS\n');
  execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', join(dir, 'layer.tar'), '.']);
  const layout = join(dir, 'oci');
  execFileSync('umoci', ['init', '--layout', layout]);
  execFileSync('umoci', ['new', '--image', `${layout}:v1`]);
  execFileSync('umoci', ['raw', 'add-layer', '--image', `${layout}:v1`, join(dir, 'layer.tar')]);
  const r = spawnSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${reg.host}/tls/plain:v1`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

after(async () => {
  await reg?.stop();
  if (dir) cleanup(dir);
});

const certError = (host: string) => new RegExp(`TLS certificate of ${host.replace(/\./g, '\\.')} was not accepted .*--ca-file FILE.*--tls-verify=false`);

test('push and pull over https to a real docker-registry with --ca-file; without the CA a clear certificate error', { skip }, async () => {
  const ref = `docker://${reg.host}/test/app:v1`;
  const noCa = await runCli(['push', `${fam.name}:v1`, ref, '--store', fam.storeDir, '--creds', creds, '--tls-verify', 'true']);
  assert.notEqual(noCa.code, 0);
  assert.match(noCa.stderr, certError(reg.host));
  const pushed = await runCli(['push', `${fam.name}:v1`, ref, '--store', fam.storeDir, '--creds', creds, '--ca-file', ca.caCert]);
  assert.equal(pushed.code, 0, pushed.stderr);
  assert.match(pushed.stdout, /pushed test\/app:v1/);

  const pullNoCa = await runCli(['pull', ref, '--store', join(dir, 'c0'), '--trust', pub, '--creds', creds, '--tls-verify=true']);
  assert.notEqual(pullNoCa.code, 0);
  assert.match(pullNoCa.stderr, certError(reg.host));
  const pulled = await runCli(['pull', ref, '--store', join(dir, 'c1'), '--trust', pub, '--creds', creds, '--ca-file', ca.caCert]);
  assert.equal(pulled.code, 0, pulled.stderr);
  assert.match(pulled.stdout, /pulled test\/app:v1 version 1/);
  const unverified = await runCli(['pull', ref, '--store', join(dir, 'c2'), '--trust', pub, '--creds', creds, '--tls-verify=false']);
  assert.equal(unverified.code, 0, unverified.stderr);
  assert.match(unverified.stdout, /pulled test\/app:v1/);
});

test('NODE_EXTRA_CA_CERTS naming the CA: a pull over https works as the command (bin/cfsdist through sh, which hands the file to cfsdist instead of Node) and as node bin/cfsdist', { skip }, async () => {
  const ref = `docker://${reg.host}/test/app:v1`;
  // The tag exists once the previous test pushed it; push again (idempotent) so this test stands alone.
  const pushed = await runCli(['push', `${fam.name}:v1`, ref, '--store', fam.storeDir, '--creds', creds, '--ca-file', ca.caCert]);
  assert.equal(pushed.code, 0, pushed.stderr);
  const env: NodeJS.ProcessEnv = { ...process.env, NODE_EXTRA_CA_CERTS: ca.caCert };
  delete env.CFSDIST_EXTRA_CA_CERTS;
  const direct = spawnSync(PULL_CLI, ['pull', ref, '--store', join(dir, 'e1'), '--trust', pub, '--creds', creds, '--tls-verify=true'], { encoding: 'utf8', env });
  assert.equal(direct.status, 0, direct.stderr);
  assert.match(direct.stdout, /pulled test\/app:v1/);
  const viaNode = await runCli(['pull', ref, '--store', join(dir, 'e2'), '--trust', pub, '--creds', creds, '--tls-verify=true'], { env: { NODE_EXTRA_CA_CERTS: ca.caCert } });
  assert.equal(viaNode.code, 0, viaNode.stderr);
  // Without the variable the same pull is refused: the CA came from it.
  const without = await runCli(['pull', ref, '--store', join(dir, 'e3'), '--trust', pub, '--creds', creds, '--tls-verify=true'], { env: { NODE_EXTRA_CA_CERTS: '', CFSDIST_EXTRA_CA_CERTS: '' } });
  assert.notEqual(without.code, 0);
  assert.match(without.stderr, certError(reg.host));
  // The Node process the launcher starts (exec: same pid) has the file as CFSDIST_EXTRA_CA_CERTS only.
  const proc = spawn(PULL_CLI, ['daemon', '--store', join(dir, 'e1'), '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  try {
    await new Promise<void>((resolve, reject) => {
      proc.stdout!.once('data', () => resolve());
      proc.once('close', (c) => reject(new Error(`daemon exited ${c}`)));
    });
    const vars = readFileSync(`/proc/${proc.pid}/environ`, 'latin1').split('\0');
    assert.ok(vars.includes(`CFSDIST_EXTRA_CA_CERTS=${ca.caCert}`), 'CFSDIST_EXTRA_CA_CERTS set');
    assert.ok(!vars.some((v) => v.startsWith('NODE_EXTRA_CA_CERTS=')), 'NODE_EXTRA_CA_CERTS unset for Node');
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('close', r));
  }
});

test('import docker:// over https: --ca-file and --tls-verify=false work, no CA is a certificate error', { skip }, async () => {
  const src = `docker://${reg.host}/tls/plain:v1`;
  const bad = await runCli(['import', src, 'plain:v1', '--store', join(dir, 'i0'), '--creds', creds, '--tls-verify', 'true']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, certError(reg.host));
  const good = await runCli(['import', src, 'plain:v1', '--store', join(dir, 'i1'), '--creds', creds, '--ca-file', ca.caCert]);
  assert.equal(good.code, 0, good.stderr);
  assert.match(good.stdout, /^plain:v1 {2}[0-9a-f]{64}/);
  const off = await runCli(['import', src, 'plain:v1', '--store', join(dir, 'i2'), '--creds', creds, '--tls-verify=false']);
  assert.equal(off.code, 0, off.stderr);
  assert.equal(off.stdout.split(/\s+/)[1], good.stdout.split(/\s+/)[1], 'the same image either way');
  const wrongValue = await runCli(['import', src, 'plain:v1', '--store', join(dir, 'i3'), '--tls-verify', 'maybe']);
  assert.notEqual(wrongValue.code, 0);
  assert.match(wrongValue.stderr, /--tls-verify takes true or false/);
});

test('pull https://… from cfsdist serve --tls-cert/--tls-key with --ca-file; without it a certificate error', { skip }, async () => {
  const proc = spawn(process.execPath, [PULL_CLI, 'serve', '--listen', '127.0.0.1:0', '--store', fam.storeDir, '--tls-cert', ca.cert, '--tls-key', ca.key], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exited = new Promise<void>((r) => proc.once('close', () => r()));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      const t = setTimeout(() => reject(new Error(`serve did not start: ${err}`)), 15_000);
      proc.stdout!.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /listening on (https:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) {
          clearTimeout(t);
          resolve(m[1]!);
        }
      });
      proc.once('close', () => reject(new Error(`serve exited: ${err}`)));
    });
    const host = new URL(url).host;
    const bad = await runCli(['pull', `${url}/${fam.name}:v1`, '--store', join(dir, 's0'), '--trust', pub]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, certError(host));
    const good = await runCli(['pull', `${url}/${fam.name}:v1`, '--store', join(dir, 's1'), '--trust', pub, '--ca-file', ca.caCert]);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /pulled test\/app:v1 version 1/);
  } finally {
    proc.kill('SIGTERM');
    await exited;
  }
});
