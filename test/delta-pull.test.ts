/**
 * Deltas in the pull pipeline, against a real `cfsdist serve` process: signing a new version
 * makes a delta from the previous one; a client holding the previous image pulls the update as
 * a delta and gets the identical image. A tampered delta, a delta for another base and a delta
 * whose result is not the signed image each fall back to the full image with a notice, and the
 * store ends exactly as after a pull without deltas.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { brotliCompressSync, brotliDecompressSync } from 'node:zlib';
import { computeDelta } from '../src/delta/delta.js';
import { writeImage } from '../src/erofs/writer.js';
import { CLI } from './helpers.js';
import { randomTree } from './random-tree.js';

function cli(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

function ok(args: string[]): string {
  const r = cli(args);
  assert.equal(r.status, 0, `cfsdist ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function makeTree(dir: string, version: number): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, 'etc'), { recursive: true });
  mkdirSync(join(dir, 'usr', 'lib'), { recursive: true });
  for (let i = 0; i < 300; i++) writeFileSync(join(dir, 'usr', 'lib', `lib${i}.so`), `library ${i} `.repeat(20 + (i % 50)));
  writeFileSync(join(dir, 'etc', 'release'), `version ${version}\n`.repeat(10));
  if (version > 1) {
    for (let i = 0; i < 5; i++) writeFileSync(join(dir, 'usr', 'lib', `lib${i}.so`), `updated ${version} library ${i} `.repeat(30));
    writeFileSync(join(dir, 'usr', 'lib', 'new.so'), 'a new library '.repeat(40));
    rmSync(join(dir, 'usr', 'lib', 'lib299.so'));
  }
}

async function serve(store: string): Promise<{ url: string; proc: ChildProcess }> {
  const proc = spawn(process.execPath, [CLI, '--store', store, 'serve', '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start')), 20_000);
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      const m = /(http:\/\/127\.0\.0\.1:\d+)/.exec(l);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
  });
  return { url, proc };
}

/** What a client store holds: tags, images and objects (names only). */
function storeState(dir: string): string {
  const list = (d: string) => readdirSync(join(dir, d), { recursive: true }).map(String).filter((f) => !f.includes('.tmp')).sort();
  return JSON.stringify({ tags: list('tags'), images: list('images'), objects: list('objects') });
}

test('pull uses a delta from the local previous version; bad deltas fall back to the full image', { timeout: 180_000 }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'cfsdist-delta-pull-'));
  const server = join(work, 'server');
  const src = join(work, 'src');
  const key = join(work, 'k');
  let proc: ChildProcess | undefined;
  try {
    makeTree(src, 1);
    ok(['--store', server, '--quiet', 'import', `dir:${src}`, 'app:latest']);
    ok(['key', 'generate', '--out', key]);
    ok(['--store', server, 'sign', 'app:latest', '--key', key]);
    const v1 = readFileSync(join(server, 'tags', 'app', ':latest'), 'utf8').split('\n')[0]!.trim(); // first line: the image digest
    const s = await serve(server);
    proc = s.proc;
    const ref = `${s.url}/app:latest`;
    // clients holding v1: one reference (no delta), one per case
    const clients = ['plain', 'delta', 'tampered', 'wrongbase', 'mismatch', 'zpatchbad'].map((n) => join(work, `client-${n}`));
    for (const c of clients) ok(['--store', c, '--quiet', 'pull', ref, '--trust', `${key}.pub`]);

    makeTree(src, 2);
    ok(['--store', server, '--quiet', 'import', `dir:${src}`, 'app:latest']);
    const signed = JSON.parse(ok(['--store', server, '--json', 'sign', 'app:latest', '--key', key])) as { image: string; deltas: { base: string; bytes: number }[] };
    assert.equal(signed.deltas.length, 1, 'sign made a delta from v1');
    assert.equal(signed.deltas[0]!.base, v1);
    const v2 = signed.image;
    const deltaFile = join(server, 'deltas', `${v1}-${v2}.delta`);
    const good = readFileSync(deltaFile);
    const fullImage = readFileSync(join(server, 'images', v2));

    // reference: no delta
    const plain = JSON.parse(ok(['--store', clients[0]!, '--json', '--quiet', 'pull', ref, '--trust', `${key}.pub`, '--no-delta'])) as { delta?: unknown; bytes: { image: number } };
    assert.equal(plain.delta, undefined);
    assert.equal(plain.bytes.image, fullImage.length);
    const expected = storeState(clients[0]!);

    // dry run shows the delta and its size
    const plan = cli(['--store', clients[1]!, 'pull', '--dry-run', ref, '--trust', `${key}.pub`]);
    assert.match(plan.stdout, /image: (binary )?delta from [0-9a-f]{16}…: .* instead of the full image's/);

    // with the delta
    const viaDelta = JSON.parse(ok(['--store', clients[1]!, '--json', '--quiet', 'pull', ref, '--trust', `${key}.pub`])) as { delta: { base: string; bytes: number }; bytes: { image: number } };
    // where zstd is installed, sign also made a binary delta, and the client prefers it
    const zpatchFile = join(server, 'deltas', `${v1}-${v2}.zpatch`);
    const zpatch = existsSync(zpatchFile) ? readFileSync(zpatchFile) : undefined;
    assert.equal(viaDelta.delta.base, v1);
    assert.equal(viaDelta.bytes.image, zpatch ? zpatch.length : good.length);
    assert.ok(good.length < fullImage.length / 5, `delta ${good.length} B vs image ${fullImage.length} B`);
    assert.ok(readFileSync(join(clients[1]!, 'images', v2)).equals(fullImage), 'rebuilt image is byte-identical');
    assert.equal(storeState(clients[1]!), expected);
    t.diagnostic(`image ${fullImage.length} B moved as a ${viaDelta.bytes.image} B delta (tree delta ${good.length} B, zpatch ${zpatch?.length ?? 'not made: no zstd'} B)`);

    if (zpatch) {
      // a damaged zpatch: the client falls back to the tree delta, with a notice
      const zbad = Buffer.from(zpatch);
      zbad[zbad.length >> 1] ^= 0x40;
      writeFileSync(zpatchFile, zbad);
      const r = cli(['--store', clients[5]!, '--json', 'pull', ref, '--trust', `${key}.pub`]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, /notice: .*binary delta .* unusable .*trying the tree delta/);
      const j = JSON.parse(r.stdout) as { delta?: { bytes: number }; bytes: { image: number } };
      assert.equal(j.bytes.image, good.length, 'the tree delta was used');
      assert.equal(storeState(clients[5]!), expected);
      // the tree-delta cases below run without a zpatch
      rmSync(zpatchFile);
    } else t.diagnostic('zstd not installed: no binary delta to test');

    // bad deltas: each falls back to the full image, with a notice, same final store
    const tampered = Buffer.from(good);
    tampered[tampered.length >> 1] ^= 0x40;
    const other = writeImage(randomTree(3, { entries: 50 }));
    const wrongBase = computeDelta(other, writeImage(randomTree(3, { entries: 60 })))!;
    const raw = brotliDecompressSync(good);
    // a well-formed delta whose result differs from the signed image: edit an inserted line
    const at = raw.indexOf(Buffer.from('version 2'));
    const mismatch = Buffer.from(raw);
    if (at > 0) mismatch.write('version 3', at, 'latin1');
    else mismatch.write(' 100600 ', mismatch.indexOf(Buffer.from(' 100644 '), 80), 'latin1');
    const cases: [string, Buffer][] = [['tampered', tampered], ['wrongbase', wrongBase], ['mismatch', brotliCompressSync(mismatch)]];
    for (const [i, [name, bad]] of cases.entries()) {
      writeFileSync(deltaFile, bad);
      const r = cli(['--store', clients[2 + i]!, '--json', 'pull', ref, '--trust', `${key}.pub`]);
      assert.equal(r.status, 0, `${name}: ${r.stderr}`);
      assert.match(r.stderr, /notice: .*delta.*fetching the full image/, `${name}: a one-line notice`);
      const j = JSON.parse(r.stdout) as { delta?: unknown; bytes: { image: number } };
      assert.equal(j.delta, undefined, name);
      assert.equal(j.bytes.image, fullImage.length, `${name}: the full image was fetched`);
      assert.equal(storeState(clients[2 + i]!), expected, `${name}: store as after a normal pull`);
    }
    writeFileSync(deltaFile, good);
    if (zpatch) writeFileSync(zpatchFile, zpatch);
    for (const c of clients) ok(['--store', c, 'fsck']); // exit 0: every object and image verified
  } finally {
    proc?.kill('SIGTERM');
    rmSync(work, { recursive: true, force: true });
  }
});
