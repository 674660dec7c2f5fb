import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { decompress, sniffCompression, compressionOfMediaType, type Compression } from '../src/oci/decompress.js';
import { DecompressError, SourceError } from '../src/oci/errors.js';
import { chunked } from './fixtures/oci/tar-writer.js';

const haveZstd = (() => {
  try {
    execFileSync('zstd', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const zstdSkip = haveZstd ? undefined : 'zstd binary not installed (Debian package zstd)';

function zstdSync(b: Buffer): Buffer {
  return execFileSync('zstd', ['-c', '-q', '-3'], { input: b, maxBuffer: 1 << 30 });
}

async function collect(src: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of src) parts.push(c);
  return Buffer.concat(parts);
}

// Compressible but not trivial data: random blocks repeated.
const block = randomBytes(64 << 10);
const plain = Buffer.concat(Array.from({ length: 40 }, (_, i) => (i % 3 ? block : randomBytes(4096))));

test('media types and magic bytes name the compression', () => {
  assert.equal(compressionOfMediaType('application/vnd.oci.image.layer.v1.tar+gzip'), 'gzip');
  assert.equal(compressionOfMediaType('application/vnd.oci.image.layer.nondistributable.v1.tar+zstd'), 'zstd');
  assert.equal(compressionOfMediaType('application/vnd.oci.image.layer.v1.tar'), 'none');
  assert.equal(compressionOfMediaType('application/vnd.docker.image.rootfs.diff.tar.gzip'), 'gzip');
  assert.equal(compressionOfMediaType('application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'), 'gzip');
  assert.equal(compressionOfMediaType('application/octet-stream'), undefined);
  assert.equal(sniffCompression(Buffer.from([0x1f, 0x8b, 8, 0])), 'gzip');
  assert.equal(sniffCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), 'zstd');
  assert.equal(sniffCompression(Buffer.from('./etc')), 'none');
});

test('gzip, multi-member gzip and plain data come out unchanged, whatever the chunking', async () => {
  const small = plain.subarray(0, 20_000);
  const cases: [Buffer, Buffer, Compression, number[][]][] = [
    [gzipSync(plain), plain, 'gzip', [[7, 65536], [1 << 20]]],
    [plain, plain, 'none', [[7, 65536], [1 << 20]]],
    [Buffer.concat([gzipSync(plain.subarray(0, 1000)), gzipSync(plain.subarray(1000))]), plain, 'gzip', [[4096, 1], [1 << 20]]],
    // Byte-by-byte input on a small stream: magic split across chunks.
    [gzipSync(small), small, 'gzip', [[1, 2, 3]]],
    [small, small, 'none', [[1, 2, 3]]],
  ];
  for (const [data, want, fmtWant, chunkings] of cases) {
    for (const sizes of chunkings) {
      let fmt: Compression | undefined;
      const out = await collect(decompress(chunked(data, sizes), { onFormat: (c) => (fmt = c) }));
      assert.equal(fmt, fmtWant);
      assert.ok(out.equals(want));
    }
  }
});

test('zstd layers go through the zstd tool', { skip: zstdSkip }, async () => {
  const zs = zstdSync(plain);
  const out = await collect(decompress(chunked(zs, [3, 70000]), { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }));
  assert.ok(out.equals(plain));
});

test('truncated and corrupt gzip are typed errors', async () => {
  const gz = gzipSync(plain);
  await assert.rejects(collect(decompress(chunked(gz.subarray(0, gz.length - 100)))), (e: unknown) => e instanceof DecompressError && e.code === 'GZIP_TRUNCATED');
  const bad = Buffer.from(gz);
  for (let i = 100; i < 400; i++) bad[i] ^= 0x55;
  await assert.rejects(collect(decompress(chunked(bad), { name: 'sha256:abc' })), (e: unknown) => e instanceof DecompressError && e.code === 'GZIP_CORRUPT' && /sha256:abc/.test(e.message));
  // Only the magic: also truncated.
  await assert.rejects(collect(decompress(chunked(gz.subarray(0, 10)))), (e: unknown) => e instanceof DecompressError);
});

test('truncated and corrupt zstd are typed errors and leave no process behind', { skip: zstdSkip }, async () => {
  const zs = zstdSync(plain);
  await assert.rejects(collect(decompress(chunked(zs.subarray(0, zs.length - 50)))), (e: unknown) => e instanceof DecompressError && e.code === 'ZSTD_CORRUPT');
  const bad = Buffer.from(zs);
  for (let i = 20; i < 300; i++) bad[i] ^= 0x5a;
  await assert.rejects(collect(decompress(chunked(bad))), (e: unknown) => e instanceof DecompressError && e.code === 'ZSTD_CORRUPT');
  // A consumer that stops early: the child is killed and the generator finishes.
  for await (const _c of decompress(chunked(zstdSync(Buffer.concat([plain, plain, plain, plain]))))) break;
});

test('a media type that disagrees with the bytes is refused', async () => {
  await assert.rejects(collect(decompress(chunked(plain), { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' })),
    (e: unknown) => e instanceof DecompressError && e.code === 'COMPRESSION_MISMATCH');
  await assert.rejects(collect(decompress(chunked(gzipSync(plain)), { mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' })),
    (e: unknown) => e instanceof DecompressError && e.code === 'COMPRESSION_MISMATCH');
});

test('an error raised by the source (e.g. a digest mismatch) passes through unchanged', async () => {
  const failing = (data: Buffer) => (async function* () {
    yield data.subarray(0, 5000);
    throw new SourceError('DIGEST_MISMATCH', 'layer digest mismatch');
  })();
  for (const data of haveZstd ? [gzipSync(plain), plain, zstdSync(plain)] : [gzipSync(plain), plain]) {
    await assert.rejects(collect(decompress(failing(data))), (e: unknown) => e instanceof SourceError && e.code === 'DIGEST_MISMATCH');
  }
});

test('gunzip on a worker: same bytes through a small shared ring; blob and diff_id digests checked there', async () => {
  const { inflateOffThread } = await import('../src/oci/inflate.js');
  const { createHash } = await import('node:crypto');
  const sha = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
  const gz = gzipSync(plain);
  // Consume slowly-ish with copies, as the tar reader does (chunks die at the next pull).
  const collectCopy = async (it: AsyncIterable<Buffer>): Promise<Buffer> => {
    const parts: Buffer[] = [];
    for await (const c of it) parts.push(Buffer.from(c));
    return Buffer.concat(parts);
  };
  const out = await collectCopy(inflateOffThread(chunked(gz, [5000, 70000]), { what: 'w', digest: sha(gz), size: gz.length, diffId: sha(plain), ringSize: 300 << 10 }));
  assert.ok(out.equals(plain));
  await assert.rejects(collectCopy(inflateOffThread(chunked(gz), { what: 'w', digest: sha(plain) })), (e: unknown) => e instanceof SourceError && e.code === 'DIGEST_MISMATCH' && /digest/.test(e.message));
  await assert.rejects(collectCopy(inflateOffThread(chunked(gz), { what: 'w', diffId: sha(gz) })), (e: unknown) => e instanceof SourceError && e.code === 'DIGEST_MISMATCH' && /diff_id/.test(e.message));
  await assert.rejects(collectCopy(inflateOffThread(chunked(gz), { what: 'w', size: gz.length + 1 })), (e: unknown) => e instanceof SourceError && e.code === 'SIZE_MISMATCH');
  await assert.rejects(collectCopy(inflateOffThread(chunked(gz.subarray(0, gz.length - 30)), { what: 'w' })), (e: unknown) => e instanceof DecompressError && e.code === 'GZIP_TRUNCATED');
  const bad = Buffer.from(gz);
  for (let i = 100; i < 400; i++) bad[i] ^= 0x55;
  await assert.rejects(collectCopy(inflateOffThread(chunked(bad), { what: 'w' })), (e: unknown) => e instanceof DecompressError && e.code === 'GZIP_CORRUPT');
  // A source error passes through; an early stop ends the worker (the test would hang otherwise).
  await assert.rejects(collectCopy(inflateOffThread((async function* () {
    yield gz.subarray(0, 1000);
    throw new SourceError('READ_FAILED', 'disk on fire');
  })(), { what: 'w' })), (e: unknown) => e instanceof SourceError && e.code === 'READ_FAILED');
  for await (const _c of inflateOffThread(chunked(gz), { what: 'w' })) break;
});
