import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { hostArchitecture, openSource, splitPathRef, type LayeredSource } from '../src/oci/source.js';
import { SourceError } from '../src/oci/errors.js';
import { readSourceTree } from '../src/oci/import.js';
import { lookup } from '../src/tree/tree.js';
import { tarball, member } from './fixtures/oci/tar-writer.js';
import { writeLayout } from './fixtures/oci/layout-writer.js';
import { HashingSink } from './fixtures/oci/memory-sink.js';

let work: string;
before(() => {
  work = mkdtempSync(join(tmpdir(), 'cfsdist-sources-'));
});
after(() => rmSync(work, { recursive: true, force: true }));

const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function collect(l: { open(): AsyncIterable<Buffer> }): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of l.open()) parts.push(c);
  return Buffer.concat(parts);
}

async function rejectsCode(p: Promise<unknown>, code: string, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof SourceError, String(e));
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

/** A layout whose index points at a multi-platform index (amd64, arm64/v8, and an attestation). */
function multiPlatformLayout(dir: string): { amd: Buffer; arm: Buffer } {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer): { digest: string; size: number } => {
    writeFileSync(join(blobs, sha(b).slice(7)), b);
    return { digest: sha(b), size: b.length };
  };
  const image = (content: string): { desc: { digest: string; size: number }; tar: Buffer } => {
    const tar = tarball([{ path: 'which', content }]);
    const layer = put(gzipSync(tar));
    const cfg = put(Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [sha(tar)] } })));
    const man = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }] })));
    return { desc: man, tar };
  };
  const amd = image('amd64');
  const arm = image('arm64');
  const idx = put(Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...arm.desc, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...amd.desc, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...amd.desc, platform: { os: 'unknown', architecture: 'unknown' } },
    ],
  })));
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', ...idx, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }] }));
  return { amd: amd.tar, arm: arm.tar };
}

test("oci: a multi-platform index picks this machine's platform by default, --platform picks another", async () => {
  const dir = join(work, 'multi');
  multiPlatformLayout(dir);
  const which = async (platform?: string): Promise<string> => {
    const { tree } = await readSourceTree(await openSource(`oci:${dir}:multi`, { platform }), new HashingSink());
    return lookup(tree, 'which')!.content!.toString();
  };
  // The default is the host's architecture (this fixture has amd64 and arm64 images).
  const host = hostArchitecture();
  if (host === 'amd64' || host === 'arm64') assert.equal(await which(), host);
  else await rejectsCode(which(), 'PLATFORM_NOT_FOUND', new RegExp(`linux/${host}`));
  assert.equal(await which('linux/amd64'), 'amd64');
  assert.equal(await which('linux/arm64'), 'arm64');
  assert.equal(await which('linux/arm64/v8'), 'arm64');
  await rejectsCode(which('linux/s390x'), 'PLATFORM_NOT_FOUND', /linux\/arm64\/v8, linux\/amd64/);
  await rejectsCode(which('linux'), 'BAD_PLATFORM');
  // Without REF: the only image of the index.
  assert.equal(((await openSource(`oci:${dir}`)) as LayeredSource).layers.length, 1);
});

test('oci: REF by name or digest; unknown or missing REF and missing blobs are clear errors', async () => {
  const tar = tarball([{ path: 'f', content: 'x' }]);
  const dir = join(work, 'named');
  const spec = writeLayout(dir, [{ tar }], 'v1');
  const src = (await openSource(spec)) as LayeredSource;
  assert.equal(src.layers.length, 1);
  assert.ok(src.layers[0]!.mediaType.endsWith('+gzip'));
  assert.equal(src.layers[0]!.diffId, sha(tar));
  assert.ok((await collect(src.layers[0]!)).equals(gzipSync(tar)));
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  assert.equal(((await openSource(`oci:${dir}:${index.manifests[0]!.digest}`)) as LayeredSource).layers.length, 1);
  await rejectsCode(openSource(`oci:${dir}:v2`), 'REF_NOT_FOUND', /has: v1/);
  writeLayout(join(work, 'named'), [{ tar }], 'v2'); // index now has only v2; add v1 back by hand
  const idx = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] };
  idx.manifests.push({ ...index.manifests[0]! });
  writeFileSync(join(dir, 'index.json'), JSON.stringify(idx));
  await rejectsCode(openSource(`oci:${dir}`), 'REF_REQUIRED');
  await rejectsCode(openSource(`oci:${join(work, 'nope')}`), 'SOURCE_MISSING');
  await rejectsCode(openSource(`oci:${work}`), 'NOT_OCI_LAYOUT');
  // A layer blob removed from the layout.
  const gone = join(work, 'gone');
  writeLayout(gone, [{ tar }], 't');
  rmSync(join(gone, 'blobs', 'sha256', sha(gzipSync(tar)).slice(7)));
  await rejectsCode(openSource(`oci:${gone}:t`), 'BLOB_MISSING');
});

test('oci: a digest that would escape the blobs directory is refused', async () => {
  const dir = join(work, 'evil');
  writeLayout(dir, [{ tar: tarball([{ path: 'f' }]) }], 't');
  const idx = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  idx.manifests[0]!.digest = 'sha256:../../../../etc/passwd';
  writeFileSync(join(dir, 'index.json'), JSON.stringify(idx));
  await rejectsCode(openSource(`oci:${dir}:t`), 'BAD_DIGEST');
});

test('docker-archive: manifest.json, config and layers by byte range, symlinked duplicate layers, REF by tag', async () => {
  const l1 = tarball([{ path: 'etc/', type: 'dir' }, { path: 'etc/one', content: 'first layer content, long enough to be an object in the store' }]);
  const l2 = tarball([{ path: 'etc/two', content: 'second' }]);
  const cfg = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha(l1), sha(l2), sha(l1)] } }));
  const manifest = Buffer.from(JSON.stringify([{ Config: 'cfg.json', RepoTags: ['example.com/app:1.0'], Layers: ['aaa/layer.tar', 'bbb/layer.tar', 'ccc/layer.tar'] }]));
  const archive = Buffer.concat([
    member({ path: 'aaa/', type: 'dir' }),
    member({ path: 'aaa/layer.tar', content: l1 }),
    member({ path: 'bbb/', type: 'dir' }),
    member({ path: 'bbb/layer.tar', content: l2 }),
    member({ path: 'ccc/', type: 'dir' }),
    member({ path: 'ccc/layer.tar', type: 'symlink', linkpath: '../aaa/layer.tar' }),
    member({ path: 'cfg.json', content: cfg }),
    member({ path: 'manifest.json', content: manifest }),
    Buffer.alloc(1024),
  ]);
  const file = join(work, 'save.tar');
  writeFileSync(file, archive);
  for (const spec of [`docker-archive:${file}`, `docker-archive:${file}:example.com/app:1.0`, `docker-archive:${file}:app:1.0`]) {
    const src = (await openSource(spec)) as LayeredSource;
    assert.equal(src.layers.length, 3, spec);
    assert.ok((await collect(src.layers[0]!)).equals(l1));
    assert.ok((await collect(src.layers[1]!)).equals(l2));
    assert.ok((await collect(src.layers[2]!)).equals(l1));
  }
  const { tree } = await readSourceTree(await openSource(`docker-archive:${file}`), new HashingSink());
  assert.ok(lookup(tree, 'etc/one') && lookup(tree, 'etc/two'));
  await rejectsCode(openSource(`docker-archive:${file}:other:2`), 'REF_NOT_FOUND', /example.com\/app:1.0/);
  await rejectsCode(openSource(`docker-archive:${join(work, 'named')}`), 'SOURCE_MISSING');
  writeFileSync(join(work, 'plain.tar'), tarball([{ path: 'x' }]));
  await rejectsCode(openSource(`docker-archive:${join(work, 'plain.tar')}`), 'NOT_DOCKER_ARCHIVE');
});

test('dir: a skopeo directory is a layered image; any other directory is a plain tree', async () => {
  const tar = tarball([{ path: 'hello', content: 'from a skopeo dir' }]);
  const gz = gzipSync(tar);
  const d = join(work, 'skopeo');
  mkdirSync(d);
  const cfg = Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [sha(tar)] } }));
  writeFileSync(join(d, sha(gz).slice(7)), gz);
  writeFileSync(join(d, sha(cfg).slice(7)), cfg);
  writeFileSync(join(d, 'manifest.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfg), size: cfg.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(gz), size: gz.length }] }));
  writeFileSync(join(d, 'version'), 'Directory Transport Version: 1.1\n');
  const src = await openSource(`dir:${d}`);
  assert.equal(src.kind, 'layers');
  const { tree } = await readSourceTree(src, new HashingSink());
  assert.equal(lookup(tree, 'hello')!.content!.toString(), 'from a skopeo dir');
  const plain = join(work, 'plain');
  mkdirSync(join(plain, 'sub'), { recursive: true });
  writeFileSync(join(plain, 'sub', 'file'), 'p');
  const p = await openSource(`dir:${plain}`);
  assert.equal(p.kind, 'directory');
  const t2 = await readSourceTree(p, new HashingSink());
  assert.equal(lookup(t2.tree, 'sub/file')!.content!.toString(), 'p');
});

test('source specs: unknown transports and paths containing colons', async () => {
  await rejectsCode(openSource('ftp://x'), 'BAD_SOURCE');
  // docker:// goes to the registry module, which checks the reference itself.
  await assert.rejects(openSource('docker://registry-without-repo'), (e: unknown) => (e as { code?: string }).code === 'BAD_REF');
  await rejectsCode(openSource('nothing'), 'BAD_SOURCE');
  const colon = join(work, 'a:b');
  mkdirSync(colon);
  assert.deepEqual(splitPathRef(colon), { path: colon });
  assert.deepEqual(splitPathRef(colon + ':tag'), { path: colon, ref: 'tag' });
});
