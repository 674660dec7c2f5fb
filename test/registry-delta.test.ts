/**
 * Metadata deltas through an OCI registry: a release and an update of one tag pushed to a real
 * docker-registry; the client's update rebuilds the image from the delta layer of the pushed
 * manifest (and its fs-verity digest must equal the signed one); a corrupted delta blob in the
 * registry's storage falls back to the full image with a notice.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, notRoot } from './helpers.js';
import { registryMissing, startRegistry } from './registry-fixtures.js';

const NAME = 'cfsdist/delta-demo';

test('registry: an update pulls the image as a delta; a corrupted delta blob falls back', { skip: notRoot() || registryMissing(), timeout: 300_000 }, async (t) => {
  const { ensureDebianFamily } = await import('../src/demo/family.js');
  const family = await ensureDebianFamily();
  const reg = await startRegistry();
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-registry-delta-'));
  const env = { ...process.env, CFSDIST_REGISTRY_USER: reg.user, CFSDIST_REGISTRY_PASSWORD: reg.password };
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env });
    assert.equal(r.status, 0, `cfsdist ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  try {
    const server = join(work, 'server');
    const key = join(work, 'k');
    const ref = `docker://${reg.host}/${NAME}:latest`;
    run(['key', 'generate', '--out', key]);
    run(['--store', server, '--quiet', 'import', `oci:${family.layout}:v1`, `${NAME}:latest`]);
    run(['--store', server, 'sign', `${NAME}:latest`, '--key', key]);
    run(['--store', server, '--quiet', 'push', `${NAME}:latest`, ref]);
    for (const c of ['a', 'b']) run(['--store', join(work, c), '--quiet', 'pull', ref, '--trust', `${key}.pub`]);

    run(['--store', server, '--quiet', 'import', `oci:${family.layout}:v2`, `${NAME}:latest`]);
    const signed = JSON.parse(run(['--store', server, '--json', 'sign', `${NAME}:latest`, '--key', key]).stdout) as { image: string; deltas: { bytes: number; zpatchBytes?: number }[] };
    assert.equal(signed.deltas.length, 1);
    run(['--store', server, '--quiet', 'push', `${NAME}:latest`, ref]);

    const a = JSON.parse(run(['--store', join(work, 'a'), '--json', '--quiet', 'pull', ref, '--trust', `${key}.pub`]).stdout) as { delta?: { bytes: number }; bytes: { image: number }; wire: { received: number } };
    assert.ok(a.delta, 'the update used the delta');
    // the binary delta where zstd is installed (sign made one), else the tree delta
    assert.equal(a.bytes.image, signed.deltas[0]!.zpatchBytes ?? signed.deltas[0]!.bytes);
    assert.ok(readFileSync(join(work, 'a', 'images', signed.image)).equals(readFileSync(join(server, 'images', signed.image))), 'rebuilt image is byte-identical');
    run(['--store', join(work, 'a'), 'fsck']);
    t.diagnostic(`update received ${a.wire.received} B (delta ${a.delta!.bytes} B)`);

    // corrupt the delta blobs (tree delta and zpatch) in the registry's storage: client b falls
    // back to the full image
    const deltaBlobs = readdirSync(join(server, 'deltas'));
    assert.equal(deltaBlobs.filter((f) => f.endsWith('.delta')).length, 1);
    assert.equal(deltaBlobs.length, signed.deltas[0]!.zpatchBytes ? 2 : 1);
    const { createHash } = await import('node:crypto');
    for (const f of deltaBlobs) {
      const blob = `sha256:${createHash('sha256').update(readFileSync(join(server, 'deltas', f))).digest('hex')}`;
      const stored = readFileSync(reg.blobPath(blob));
      stored[stored.length >> 1] ^= 0x55;
      writeFileSync(reg.blobPath(blob), stored);
    }
    const r = spawnSync(process.execPath, [CLI, '--store', join(work, 'b'), '--json', 'pull', ref, '--trust', `${key}.pub`], { encoding: 'utf8', env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /notice: .*delta.*fetching the full image/);
    const b = JSON.parse(r.stdout) as { delta?: unknown; image: string };
    assert.equal(b.delta, undefined);
    assert.equal(b.image, signed.image);
    run(['--store', join(work, 'b'), 'fsck']);
  } finally {
    await reg.stop();
    rmSync(work, { recursive: true, force: true });
  }
});
