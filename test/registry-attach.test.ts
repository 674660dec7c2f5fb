/**
 * One tag for both worlds, against a real docker-registry: an ordinary image (the Debian family,
 * `skopeo copy`'d in) is converted — imported, signed, and the cfsdist image attached to it as
 * an OCI referrer — while the tag keeps naming the ordinary image byte for byte; a fresh client
 * pulls through the ordinary reference (v1, then v2 as an update); referrers signed by unknown
 * keys are refused; a push never replaces someone else's image without --force. Debian's
 * registry has no referrers API (the `sha256-<hex>` tag fallback is used); a small proxy in
 * front of it answers the referrers API so that path is exercised too.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { cleanup } from './pull-fixtures.js';
import { registryMissing, startRegistry } from './registry-fixtures.js';
import type { RegistryProcess } from './registry-fixtures.js';
import { CLI, notRoot, runCli } from './helpers.js';

const skopeo = spawnSync('sh', ['-c', 'command -v skopeo'], { stdio: 'ignore' }).status === 0;
const skip = registryMissing() || notRoot() || (skopeo ? false : 'skopeo is not installed');
let dir = '';
let reg: RegistryProcess;
let layout = '';
const REPO = 'library/debian';

function cfs(store: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  return runCli(['--store', store, ...args]);
}

function skopeoCopy(from: string, to: string): void {
  const r = spawnSync('skopeo', ['copy', '-q', '--src-tls-verify=false', '--dest-tls-verify=false', from, to], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
}

/** The manifest digest a tag names, as skopeo sees it. */
function skopeoDigest(ref: string): string {
  const r = spawnSync('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', ref], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

/** GET a manifest straight from the registry: digest and body (undefined on 404). */
async function getManifest(host: string, repo: string, ref: string): Promise<{ digest: string; json: Record<string, unknown> } | undefined> {
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${ref}`, { headers: { Accept: 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' } });
  if (res.status === 404) return undefined;
  const body = Buffer.from(await res.arrayBuffer());
  return { digest: 'sha256:' + createHash('sha256').update(body).digest('hex'), json: JSON.parse(body.toString()) as Record<string, unknown> };
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'cfsdist-attach-'));
  reg = await startRegistry({ auth: false });
  const { ensureDebianFamily } = await import('../src/demo/family.js');
  layout = (await ensureDebianFamily()).layout;
  skopeoCopy(`oci:${layout}:v1`, `docker://${reg.host}/${REPO}:12`);
  for (const k of ['publisher', 'stranger']) assert.equal(runCli(['key', 'generate', '--out', join(dir, k)]).status, 0);
});

after(async () => {
  if (skip) return;
  await reg.stop();
  cleanup(dir);
});

test('convert attaches a signed cfsdist image to an ordinary image; the tag and its bytes stay; a second run changes nothing', { skip }, async () => {
  const ref = `docker://${reg.host}/${REPO}:12`;
  const before0 = skopeoDigest(ref);
  const ci = join(dir, 'ci-store');
  const r = cfs(ci, ['convert', ref, '--key', join(dir, 'publisher'), '--json']);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { name: string; tag: string; version: number; signed: boolean; manifest: string; image: string };
  assert.deepEqual([out.name, out.tag, out.version, out.signed, out.manifest], [REPO, '12', 1, true, before0]);
  // The tag still names the ordinary image, and a copy of it is the same image.
  assert.equal(skopeoDigest(ref), before0);
  const copy = join(dir, 'copy');
  skopeoCopy(ref, `oci:${copy}:x`);
  const idx = JSON.parse(readFileSync(join(copy, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  assert.equal(idx.manifests[0]!.digest, before0, 'skopeo copy of the tag gives the same manifest');
  const src = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const orig = src.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'v1')!;
  assert.ok(readFileSync(join(copy, 'blobs', 'sha256', before0.slice(7))).equals(readFileSync(join(layout, 'blobs', 'sha256', orig.digest.slice(7)))), 'manifest bytes identical');
  // The cfsdist image is a referrer of the ordinary manifest (tag fallback: no referrers API).
  const fallback = await getManifest(reg.host, REPO, `sha256-${before0.slice(7)}`);
  assert.ok(fallback, 'referrers index under the sha256-<hex> tag');
  const refs = (fallback.json.manifests as { artifactType: string; digest: string }[]).filter((d) => d.artifactType === 'application/vnd.cfsdist.image.v1');
  assert.equal(refs.length, 1);
  const attached = await getManifest(reg.host, REPO, refs[0]!.digest);
  assert.equal((attached!.json.subject as { digest: string }).digest, before0);
  // Facts also stated under the composefs OCI sealing spec's names: fs-verity digests of the
  // ordinary manifest's bytes and of the config's bytes.
  const { fsverityDigest } = await import('../src/verity/digest.js');
  const manifestBytes = readFileSync(join(copy, 'blobs', 'sha256', before0.slice(7)));
  assert.equal((attached!.json.annotations as Record<string, string>)['composefs.manifest.fsverity-sha256-12'], fsverityDigest(manifestBytes).toString('hex'));
  const cfg = (attached!.json.layers as { mediaType: string; digest: string; annotations?: Record<string, string> }[]).find((l) => l.mediaType === 'application/vnd.oci.image.config.v1+json')!;
  const cfgBytes = Buffer.from(await (await fetch(`http://${reg.host}/v2/${REPO}/blobs/${cfg.digest}`)).arrayBuffer());
  assert.equal(cfg.annotations?.['composefs.config.fsverity-sha256-12'], fsverityDigest(cfgBytes).toString('hex'));
  // Again: nothing new is signed, and the registry's referrers are what they were.
  const again = cfs(ci, ['convert', ref, '--key', join(dir, 'publisher'), '--json']);
  assert.equal(again.status, 0, again.stderr);
  const a2 = JSON.parse(again.stdout) as { version: number; signed: boolean; image: string };
  assert.deepEqual([a2.version, a2.signed, a2.image], [1, false, out.image]);
  assert.equal((await getManifest(reg.host, REPO, `sha256-${before0.slice(7)}`))!.digest, fallback.digest);
  assert.equal(skopeoDigest(ref), before0);
});

test('a fresh client pulls through the ordinary reference; v2 converted later arrives as an update', { skip }, async () => {
  const ref = `docker://${reg.host}/${REPO}:12`;
  const client = join(dir, 'client');
  const p1 = cfs(client, ['pull', ref, '--trust', join(dir, 'publisher.pub'), '--json']);
  assert.equal(p1.status, 0, p1.stderr);
  const s1 = JSON.parse(p1.stdout) as { name: string; tag: string; version: number; image: string; objects: { fetched: number } };
  assert.deepEqual([s1.name, s1.tag, s1.version], [REPO, '12', 1]);
  assert.ok(s1.objects.fetched > 100);
  // The publisher's v2 goes to the same tag; CI converts it: version 2 is attached to it.
  skopeoCopy(`oci:${layout}:v2`, `docker://${reg.host}/${REPO}:12`);
  const c2 = cfs(join(dir, 'ci-store'), ['convert', ref, '--key', join(dir, 'publisher'), '--json']);
  assert.equal(c2.status, 0, c2.stderr);
  assert.equal((JSON.parse(c2.stdout) as { version: number }).version, 2);
  const p2 = cfs(client, ['pull', ref, '--trust', join(dir, 'publisher.pub'), '--json']);
  assert.equal(p2.status, 0, p2.stderr);
  const s2 = JSON.parse(p2.stdout) as { version: number; image: string; objects: { needed: number; present: number; fetched: number } };
  assert.equal(s2.version, 2);
  assert.notEqual(s2.image, s1.image);
  assert.ok(s2.objects.present > 0 && s2.objects.fetched < s2.objects.needed / 2, `update fetched ${s2.objects.fetched} of ${s2.objects.needed}`);
  // The image pulled is the one a local import of the same ordinary image makes.
  const local = join(dir, 'local');
  const imp = cfs(local, ['import', ref, 'x:y', '--json']);
  assert.equal(imp.status, 0, imp.stderr);
  assert.equal((JSON.parse(imp.stdout) as { image: string }).image, s2.image);
});

test('referrers signed by an unknown key are refused, naming what was found; nothing is stored', { skip }, async () => {
  const ref = `docker://${reg.host}/${REPO}:12`;
  const other = join(dir, 'stranger-client');
  const r = cfs(other, ['pull', ref, '--trust', join(dir, 'stranger.pub')]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /signed cfsdist image\(s\) found for library\/debian:12, none acceptable/);
  assert.match(r.stderr, /cfsdist image sha256:[0-9a-f]{64} attached to/);
  const imgs = cfs(other, ['images', '--json']);
  assert.deepEqual(imgs.status === 0 ? JSON.parse(imgs.stdout) : [], []);
});

test('push refuses to replace a tag that names another ordinary image; --force replaces it', { skip }, async () => {
  skopeoCopy(`oci:${layout}:v1`, `docker://${reg.host}/library/other:1`);
  const before0 = skopeoDigest(`docker://${reg.host}/library/other:1`);
  const s = join(dir, 'pusher');
  const tree = join(dir, 'tree');
  mkdirSync(tree);
  writeFileSync(join(tree, 'hello'), 'not the image under that tag\n');
  assert.equal(cfs(s, ['import', `dir:${tree}`, 'library/other:1']).status, 0);
  assert.equal(cfs(s, ['sign', 'library/other:1', '--key', join(dir, 'publisher')]).status, 0);
  const r = cfs(s, ['push', 'library/other:1', `docker://${reg.host}/library/other:1`]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /names the ordinary image sha256:[0-9a-f]{64}, not the one library\/other:1 was imported from .*--force/);
  assert.equal(skopeoDigest(`docker://${reg.host}/library/other:1`), before0, 'the tag is untouched');
  const f = cfs(s, ['push', 'library/other:1', `docker://${reg.host}/library/other:1`, '--force']);
  assert.equal(f.status, 0, f.stderr);
  const now = await getManifest(reg.host, 'library/other', '1');
  assert.equal(now!.json.artifactType, 'application/vnd.cfsdist.image.v1');
});

/** A proxy in front of the registry that also answers the OCI referrers API (from the tag
 * fallback index), counting what clients asked. */
function referrersProxy(upstream: string): Promise<{ server: Server; host: string; referrers: number; fallbackGets: number }> {
  const state = { referrers: 0, fallbackGets: 0 };
  const forward = (req: IncomingMessage, res: ServerResponse, path: string): void => {
    const up = request(`http://${upstream}${path}`, { method: req.method, headers: { ...req.headers, host: upstream } }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const m = /^\/v2\/(.+)\/referrers\/(sha256:[0-9a-f]{64})/.exec(url);
    if (m && req.method === 'GET') {
      state.referrers++;
      void getManifest(upstream, m[1]!, `sha256-${m[2]!.slice(7)}`).then((idx) => {
        const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: (idx?.json.manifests as unknown[]) ?? [] });
        res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
      return;
    }
    if (/\/manifests\/sha256-[0-9a-f]{64}$/.test(url) && req.method === 'GET') state.fallbackGets++;
    forward(req, res, url);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const a = server.address() as { port: number };
      resolve(Object.assign(state, { server, host: `127.0.0.1:${a.port}` }));
    });
  });
}

test('the referrers API path: through a registry that has it, the pull lists referrers there, not by tag', { skip }, async () => {
  const proxy = await referrersProxy(reg.host);
  try {
    const client = join(dir, 'api-client');
    // Asynchronously: the proxy answers from this process.
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, [CLI, '--store', client, 'pull', `docker://${proxy.host}/${REPO}:12`, '--trust', join(dir, 'publisher.pub'), '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      p.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { version: number }).version, 2);
    assert.ok(proxy.referrers >= 2, `referrers API used (${proxy.referrers} requests)`);
    assert.equal(proxy.fallbackGets, 0, 'no sha256-<hex> tag was read');
  } finally {
    proxy.server.close();
  }
});

test('an unconverted image: by tag refused without --accept-unsigned; by digest built here, the same bytes as an import; recorded and shown as unsigned', { skip }, async () => {
  skopeoCopy(`oci:${layout}:v1`, `docker://${reg.host}/library/plain:1`);
  const digest = skopeoDigest(`docker://${reg.host}/library/plain:1`);
  const c = join(dir, 'unsigned-client');
  const refused = cfs(c, ['pull', `docker://${reg.host}/library/plain:1`, '--trust', join(dir, 'publisher.pub')]);
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /no signed statement .*pull it by digest .*--accept-unsigned/);
  const b = cfs(c, ['pull', `docker://${reg.host}/library/plain@${digest}`, '--json']);
  assert.equal(b.status, 0, b.stderr);
  const built = JSON.parse(b.stdout) as { name: string; tag: string; image: string; signed: boolean; unsignedFrom: string; received: number; layerBytes: number };
  assert.deepEqual([built.name, built.tag, built.signed, built.unsignedFrom], ['library/plain', `sha256-${digest.slice(7)}`, false, `docker://${reg.host}/library/plain@${digest}`]);
  const ratio = built.received / built.layerBytes;
  console.log(`# local build: ${built.received} bytes received for ${built.layerBytes} bytes of compressed layers (${ratio.toFixed(4)}×)`);
  // Every layer crosses the wire once; what else is received (manifest, config, HTTP headers)
  // is a fixed few KiB, not a share of the layers.
  assert.ok(built.received >= built.layerBytes, `${built.received} bytes received for ${built.layerBytes} of layers`);
  assert.ok(built.received - built.layerBytes < 32 * 1024, `overhead ${built.received - built.layerBytes} bytes beyond the layers`);
  // The same bytes a server-side import of that image makes.
  const srv = join(dir, 'server-import');
  const imp = cfs(srv, ['import', `docker://${reg.host}/library/plain:1`, 'plain:1', '--json']);
  assert.equal(imp.status, 0, imp.stderr);
  assert.equal((JSON.parse(imp.stdout) as { image: string }).image, built.image);
  assert.ok(readFileSync(join(c, 'images', built.image)).equals(readFileSync(join(srv, 'images', built.image))));
  // Recorded as unsigned, and inspect says so.
  const ins = cfs(c, ['inspect', `library/plain:sha256-${digest.slice(7)}`]);
  assert.equal(ins.status, 0, ins.stderr);
  assert.match(ins.stdout, new RegExp(`signature +UNSIGNED: built locally from docker://${reg.host}/library/plain@${digest}`));
  // By tag with --accept-unsigned: no trusted attached image, so built here too.
  const t = cfs(c, ['pull', `docker://${reg.host}/library/plain:1`, '--accept-unsigned', '--json']);
  assert.equal(t.status, 0, t.stderr);
  assert.equal((JSON.parse(t.stdout) as { image: string; tag: string }).tag, '1');
});

test('a multi-platform index: import records index and platform manifest; convert attaches to the platform manifest; pull resolves the index', { skip }, async () => {
  skopeoCopy(`oci:${layout}:v1`, `docker://${reg.host}/library/multi:plain`);
  const plain = await getManifest(reg.host, 'library/multi', 'plain');
  const body = await (await fetch(`http://${reg.host}/v2/library/multi/manifests/plain`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })).arrayBuffer();
  const { hostArchitecture } = await import('../src/oci/source.js');
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: plain!.digest, size: body.byteLength, platform: { os: 'linux', architecture: hostArchitecture() } }],
  }));
  const put = await fetch(`http://${reg.host}/v2/library/multi/manifests/1`, { method: 'PUT', headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' }, body: index });
  assert.equal(put.status, 201, await put.text());
  const indexDigest = 'sha256:' + createHash('sha256').update(index).digest('hex');
  const ref = `docker://${reg.host}/library/multi:1`;
  const ci = join(dir, 'multi-ci');
  const c = cfs(ci, ['convert', ref, '--key', join(dir, 'publisher'), '--json']);
  assert.equal(c.status, 0, c.stderr);
  assert.equal((JSON.parse(c.stdout) as { manifest: string }).manifest, plain!.digest);
  const ins = cfs(ci, ['inspect', 'library/multi:1', '--json']);
  assert.equal(ins.status, 0, ins.stderr);
  const facts = JSON.parse(ins.stdout) as { manifest: string; index: string };
  assert.deepEqual([facts.manifest, facts.index], [plain!.digest, indexDigest]);
  assert.equal(skopeoDigest(ref), indexDigest, 'the tag still names the index');
  const client = join(dir, 'multi-client');
  const p = cfs(client, ['pull', ref, '--trust', join(dir, 'publisher.pub'), '--json']);
  assert.equal(p.status, 0, p.stderr);
  assert.equal((JSON.parse(p.stdout) as { version: number }).version, 1);
});
