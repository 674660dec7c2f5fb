/**
 * Hostile layers through the whole import: each gives the OCI/umoci behaviour or a clear typed
 * error; nothing is ever written outside the store; a failed import registers no image and no
 * tag and leaves no temporary file.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Store } from '../src/store/store.js';
import { openSource } from '../src/oci/source.js';
import { importImage, readSourceTree } from '../src/oci/import.js';
import { lookup, walk } from '../src/tree/tree.js';
import { CfsError } from '../src/errors.js';
import { tarball, header, fixChecksum, member, type TEntry } from './fixtures/oci/tar-writer.js';
import { writeLayout, type LayoutLayer } from './fixtures/oci/layout-writer.js';
import { HashingSink } from './fixtures/oci/memory-sink.js';

let work: string;
let canary: string;
let store: Store;
let n = 0;
const cwd = process.cwd();

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'cfsdist-hostile-'));
  canary = mkdtempSync(join(tmpdir(), 'cfsdist-canary-'));
  store = await Store.open(join(work, 'store'), { create: true });
  process.chdir(canary); // a relative write would land here
});

after(() => {
  process.chdir(cwd);
  rmSync(work, { recursive: true, force: true });
  rmSync(canary, { recursive: true, force: true });
});

function layout(layers: LayoutLayer[]): string {
  return writeLayout(join(work, `layout-${++n}`), layers);
}

function base(): Buffer {
  return tarball([{ path: './', type: 'dir' }, { path: 'etc/', type: 'dir' }, { path: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n'.repeat(4) }]);
}

async function assertNothingRegistered(): Promise<void> {
  assert.deepEqual(await store.listTags(), [], 'no tag');
  assert.deepEqual(await store.listImages(), [], 'no image');
  assert.deepEqual(readdirSync(store.tmpDir).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
  assert.deepEqual(readdirSync(canary), [], 'nothing outside the store');
}

async function importFails(layers: LayoutLayer[], code: string | RegExp): Promise<void> {
  const src = await openSource(layout(layers));
  await assert.rejects(importImage(src, store, { name: 'hostile', tag: 'x', sync: false }), (err: unknown) => {
    assert.ok(err instanceof CfsError, `typed error expected, got ${String(err)}`);
    if (typeof code === 'string') assert.equal(err.code, code, err.message);
    else assert.match(err.code, code, err.message);
    return true;
  });
  await assertNothingRegistered();
}

test('../ and absolute member names stay inside the image root; nothing is written outside the store', async () => {
  const c = canary.slice(1); // canary without the leading slash
  const entries: TEntry[] = [
    { path: '../../../../../../../../' + c + '/rel-escape', content: 'escape attempt through ..' },
    { path: '/' + c + '/abs-escape', content: 'escape attempt through an absolute path' },
    { path: 'a/../../../' + c + '/mixed', content: 'escape attempt through a/../..' },
    { path: 'evil', type: 'symlink', linkpath: canary },
    { path: 'evil/through-symlink', content: 'a write through an absolute symlink' },
    { path: 'up', type: 'symlink', linkpath: '../../../../../../..' },
    { path: 'up/' + c + '/via-up', content: 'a write through a symlink to ../..' },
  ];
  const spec = layout([{ tar: base() }, { tar: tarball(entries) }]);
  const { tree } = await readSourceTree(await openSource(spec), new HashingSink());
  for (const p of ['rel-escape', 'abs-escape', 'mixed', 'through-symlink', 'via-up']) assert.ok(lookup(tree, c + '/' + p), `${p} is inside the image`);
  assert.equal(lookup(tree, 'evil')!.target!.toString(), canary);
  const okStore = await Store.open(join(work, 'store-ok'), { create: true });
  const r = await importImage(await openSource(spec), okStore, { name: 'hostile', tag: 'paths', sync: false });
  assert.deepEqual(await okStore.getTag('hostile', 'paths'), r.image);
  assert.deepEqual(readdirSync(canary), [], 'the canary directory is untouched');
});

test('duplicate members: the later one wins, as umoci applies them', async () => {
  const spec = layout([{ tar: tarball([{ path: 'f', content: 'first' }, { path: 'f', content: 'second' }, { path: 'f', type: 'symlink', linkpath: 'third' }]) }]);
  const { tree } = await readSourceTree(await openSource(spec), new HashingSink());
  assert.equal(lookup(tree, 'f')!.target!.toString(), 'third');
  assert.equal([...walk(tree)].length, 2);
});

test('a hardlink to a file outside the layer and the layers below fails the import', async () => {
  await importFails([{ tar: base() }, { tar: tarball([{ path: 'x', type: 'link', linkpath: '../../../../etc/shadow' }]) }], 'HARDLINK_TARGET_MISSING');
  await importFails([{ tar: tarball([{ path: 'x', type: 'link', linkpath: canary + '/file' }]) }], 'HARDLINK_TARGET_MISSING');
});

test('truncated and corrupt gzip fail with a typed error', async () => {
  const gz = gzipSync(base());
  await importFails([{ tar: base(), rawBlob: gz.subarray(0, gz.length - 20) }], 'GZIP_TRUNCATED');
  const bad = Buffer.from(gz);
  for (let i = 30; i < 60; i++) bad[i] ^= 0xa5;
  await importFails([{ tar: base(), rawBlob: bad }], /^(GZIP_CORRUPT|GZIP_TRUNCATED|TAR_)/);
});

test('a corrupt or truncated tar fails with a typed error, after earlier layers were read', async () => {
  const t = Buffer.from(base());
  t[600] ^= 0x40; // second header, checksum now wrong
  await importFails([{ tar: base() }, { tar: t }], 'TAR_CHECKSUM');
  await importFails([{ tar: base() }, { tar: base().subarray(0, 1000) }], 'TAR_TRUNCATED');
});

test('a header with an absurd size fails (truncation), without buffering it', async () => {
  const huge = header({ name: Buffer.from('huge'), mode: 0o644, uid: 0, gid: 0, size: 2 ** 40, mtime: 0, flag: '0', base256: true });
  await importFails([{ tar: Buffer.concat([member({ path: 'ok', content: 'x'.repeat(100) }), huge, Buffer.alloc(8192)]) }], 'TAR_TRUNCATED');
  const pax = header({ name: Buffer.from('PaxHeader'), mode: 0o644, uid: 0, gid: 0, size: 2 ** 35, mtime: 0, flag: 'x', base256: true });
  await importFails([{ tar: Buffer.concat([fixChecksum(pax), Buffer.alloc(1024)]) }], 'TAR_HEADER_TOO_LARGE');
});

test('a blob that does not match its digest, or a layer that does not match its diff_id, fails', async () => {
  await importFails([{ tar: base(), tamper: (b) => Buffer.concat([b.subarray(0, b.length - 8), Buffer.from(b.subarray(b.length - 8)).fill(0)]) }], /^(DIGEST_MISMATCH|GZIP_CORRUPT)$/);
  await importFails([{ tar: base(), badDiffId: true }], 'DIGEST_MISMATCH');
  // Tampered uncompressed layer: bytes change, size stays; the digest check catches it.
  await importFails([{ tar: base(), compression: 'none', tamper: (b) => { const c = Buffer.from(b); c[1024 + 600] ^= 1; return c; } }], /^(DIGEST_MISMATCH|TAR_CHECKSUM)$/);
});
